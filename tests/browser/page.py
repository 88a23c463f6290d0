"""Helpers that drive the monitor like a person: sign in, follow links, type in the search box; and read what the
page shows (cells by status, the branch panel). Waits are WebDriverWait on a condition, with a deadline."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 20  # seconds: the deadline of a wait in the page


def wait(driver, condition: Callable[[Any], Any], message: str, timeout: float = WAIT) -> Any:
    """The condition's first truthy value; a stale element (the page re-rendered it) counts as not yet."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def element(driver, css: str, timeout: float = WAIT):
    return wait(driver, lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0], f"{css} to appear", timeout)


def absent(driver, css: str) -> bool:
    return not driver.find_elements(By.CSS_SELECTOR, css)


def sign_in(driver, base_url: str, username: str, password: str) -> None:
    """A fresh tab state (no stored session), then the sign-in form."""
    driver.get(f"{base_url}/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    element(driver, "#username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    wait(driver, lambda d: username in d.find_element(By.ID, "current-user").text, f"{username} to be signed in")


def go(driver, hash_: str) -> None:
    """Follow an in-app link (the page is not reloaded)."""
    driver.execute_script("location.hash = arguments[0]", hash_)


def search(driver, text: str) -> None:
    box = element(driver, "#serial-search")
    box.clear()
    box.send_keys(text, Keys.ENTER)


def cells(driver) -> list[str]:
    """Each branch cell's status, in branch order."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#cells .cell')].map(c => (c.className.match(/s-(\\w+)/) || [])[1])")



def dataset(driver, css: str) -> dict[str, str]:
    return driver.execute_script("return Object.assign({}, document.querySelector(arguments[0]).dataset)", css)


PROBLEMS = ("Content Security Policy", "TrustedHTML", "TrustedScript", "Invalid frame header")


def csp_violations(driver) -> list[dict]:
    """Console entries since the last call that report a Content-Security-Policy or Trusted Types refusal, or a
    WebSocket the server broke (a reply written after its close frame)."""
    return [e for e in driver.get_log("browser") if any(problem in e["message"] for problem in PROBLEMS)]
