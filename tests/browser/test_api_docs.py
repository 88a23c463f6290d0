"""The API explorer (/api/docs) in a real Chromium: Swagger UI renders every operation of /api/openapi.json under
the page's Content-Security-Policy, a call without a token is refused, and a token pasted into Authorize makes
the same "Try it out" call succeed; every request stays on this server and no token is put in a URL."""
from __future__ import annotations

import json

from selenium.webdriver.common.by import By

from tests.browser.conftest import PASSWORD
from tests.browser.page import csp_violations, element, wait

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
ME = "#operations-auth-auth_me_get"


def status_of_last_call(driver) -> str | None:
    cells = driver.find_elements(By.CSS_SELECTOR, f"{ME} .live-responses-table tr.response .response-col_status")
    return cells[0].text.split()[0] if cells and cells[0].text.strip() else None


def execute_me(driver) -> None:
    """Press Execute on GET /api/auth/me and wait for the answer shown under it."""
    driver.execute_script("document.querySelectorAll(arguments[0]).forEach(b => b.click())",
                          f"{ME} .btn-clear")  # the previous answer, if any
    wait(driver, lambda d: status_of_last_call(d) is None, "the previous answer to be cleared")
    element(driver, f"{ME} button.execute").click()
    wait(driver, status_of_last_call, "the call's answer")


def test_swagger_ui_lists_every_operation_and_a_pasted_token_authorizes_try_it_out(
        monitor, browser, users, screenshots):
    document = monitor.admin.get("/api/openapi.json")
    operations = sum(len(METHODS & set(item)) for item in document["paths"].values())
    browser.get_log("performance")  # from here on
    browser.get(f"{monitor.base_url}/api/docs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) == operations,
         f"all {operations} operations to be rendered")
    assert "OpsConductor API" in element(browser, ".info .title").text

    element(browser, f"{ME} .opblock-summary-control").click()
    element(browser, f"{ME} button.try-out__btn").click()
    execute_me(browser)
    assert status_of_last_call(browser) == "401"

    token = monitor.admin.post("/api/auth/login", {"username": users["viewer"], "password": PASSWORD},
                               expect=200)["access_token"]
    element(browser, ".auth-wrapper button.authorize").click()
    dialog = element(browser, ".dialog-ux .modal-ux")
    bearer = next(c for c in dialog.find_elements(By.CSS_SELECTOR, ".auth-container")
                  if "bearerAuth" in c.find_element(By.TAG_NAME, "h4").text)
    bearer.find_element(By.CSS_SELECTOR, "input").send_keys(token)
    bearer.find_element(By.CSS_SELECTOR, "button.authorize").click()
    wait(browser, lambda d: "Logout" in bearer.text, "the token to be accepted by the dialog")
    dialog.find_element(By.CSS_SELECTOR, "button.btn-done").click()
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, ".dialog-ux"), "the dialog to close")

    execute_me(browser)
    assert status_of_last_call(browser) == "200"
    body = element(browser, f"{ME} .live-responses-table tr.response .response-col_description").text
    assert users["viewer"] in body and '"role": "viewer"' in body
    browser.execute_script("document.querySelector(arguments[0]).scrollIntoView()", ME)
    browser.save_screenshot(str(screenshots / "api-docs.png"))

    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert f"{monitor.base_url}/api/openapi.json" in urls and f"{monitor.base_url}/api/auth/me" in urls
    assert [url for url in urls if not url.startswith((monitor.base_url + "/", "data:"))] == []
    assert not [url for url in urls if token in url]
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    assert csp_violations(browser) == []
