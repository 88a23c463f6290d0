"""The monitor in a real browser against a live embedded server and real sshd targets: sign-in, a job created
and run from the page whose cells turn green without a reload, a failing branch's stderr, cancel, retry, what a
viewer cannot see, the search box for every kind of serial, the Content-Security-Policy, token refresh and
sign-out on 401. Screenshots of the execution page and the dashboard go to docs/screenshots/."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import httpx
from selenium.webdriver.common.by import By

from tests.browser.conftest import ADMIN, PASSWORD
from tests.browser.page import (
    absent,
    cells,
    csp_violations,
    element,
    go,
    search,
    sign_in,
    wait,
)

# an action that fails on one host only (the sshd address it reached), so one execution shows both colours
DEPLOY = ('sleep 1; case "$SSH_CONNECTION" in *" 127.0.0.3 "*) echo "no space left on device while unpacking" >&2; '
          'exit 28;; esac; echo "deployed on $SSH_CONNECTION"')


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = attributes
            self.scripts.append((attributes, ""))
        if tag == "style" or "style" in attributes:
            self.inline_styles.append(tag)
        self.handlers += [name for name in attributes if name.startswith("on")]

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None and data.strip():
            attrs, _ = self.scripts[-1]
            self.scripts[-1] = (attrs, data)


def test_page_has_a_strict_content_security_policy_and_no_inline_script(monitor, browser):
    response = httpx.get(f"{monitor.base_url}/", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = {d.split()[0]: d.split()[1:] for d in response.headers["content-security-policy"].split("; ")}
    print("Content-Security-Policy:", response.headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    host = monitor.base_url.removeprefix("http://")
    assert policy["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in value for values in policy.values() for value in values)
    assert response.headers["x-content-type-options"] == "nosniff"

    tags = _Tags()
    tags.feed(response.text)
    assert tags.scripts and all(attrs.get("src") and not text for attrs, text in tags.scripts), tags.scripts
    assert tags.inline_styles == [] and tags.handlers == []
    for path in ("/web/js/main.js", "/sdk/index.js", "/web/vendor/preact.module.js", "/web/app.css"):
        asset = httpx.get(f"{monitor.base_url}{path}", timeout=10)
        assert asset.status_code == 200, path
        assert "content-security-policy" in asset.headers
    assert httpx.get(f"{monitor.base_url}/web/../api/app.py", timeout=10).status_code == 404
    assert httpx.get(f"{monitor.base_url}/sdk/../package.json", timeout=10).status_code == 404

    # in the browser: the page runs, and a script injected into it is refused
    browser.get(f"{monitor.base_url}/")
    element(browser, "#sign-in")
    browser.execute_script("""try {
        const s = document.createElement('script'); s.textContent = 'window.__inlineRan = true';
        document.body.append(s);
      } catch (e) { window.__refused = String(e) }""")
    assert browser.execute_script("return window.__inlineRan") is None
    assert csp_violations(browser), "the browser did not report refusing the injected script"
    assert browser.execute_script("return document.querySelectorAll('script:not([src])').length") <= 1  # refused one


def test_sign_in(monitor, browser):
    browser.get(f"{monitor.base_url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    element(browser, "#username").send_keys(ADMIN[0])
    browser.find_element(By.ID, "password").send_keys("not-the-password")
    browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    alert = element(browser, "#sign-in .error")
    assert "Invalid username or password" in alert.text
    sign_in(browser, monitor.base_url, *ADMIN)
    element(browser, "#dashboard")
    wait(browser, lambda d: d.find_element(By.ID, "live-state").text == "● live", "the dashboard's live stream")
    assert json.loads(browser.execute_script("return sessionStorage.getItem('opsconductor.monitor.session')"))["user"][
        "role"] == "admin"


def test_operator_creates_and_runs_a_job_and_cells_turn_green_without_reload(monitor, browser, users, ssh_targets):
    sign_in(browser, monitor.base_url, users["operator"], PASSWORD)
    browser.find_element(By.LINK_TEXT, "Jobs").click()
    element(browser, "#new-job").click()
    element(browser, "#job-name").send_keys("Browser hello")
    browser.find_element(By.CSS_SELECTOR, "textarea[name=action-text]").send_keys(
        'sleep 1.5; echo "hello from $(hostname) via $SSH_CONNECTION"')
    browser.find_element(By.CSS_SELECTOR, "input[name=action-name]").send_keys("hello")
    for target in ssh_targets:
        element(browser, f"input[name=target][data-name='{target['name']}']").click()
    browser.find_element(By.ID, "create-job").click()
    element(browser, "#run-job").click()
    element(browser, "#run-submit").click()

    page = element(browser, "#execution[data-status=running], #execution[data-status=completed]")
    serial = page.get_attribute("data-serial")
    assert re.fullmatch(r"J\d{8}\.0001", serial), serial
    browser.execute_script("window.__sameDocument = true")  # gone if anything reloads the page
    wait(browser, lambda d: len(cells(d)) == 3, "three cells")
    seen = [cells(browser)]
    wait(browser, lambda d: seen.append(cells(d)) or seen[-1] == ["completed"] * 3, "every cell green", timeout=60)
    assert any(state != ["completed"] * 3 for state in seen), "the cells were never seen before they turned green"
    assert browser.execute_script("return window.__sameDocument") is True
    assert element(browser, "#progress-label").text == "3 of 3 finished"
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#execution").get_attribute("data-status") == "completed",
         "the execution to show completed")

    browser.find_element(By.CSS_SELECTOR, "#cells .cell").click()
    output = element(browser, "#branch-panel pre.stdout")
    assert "hello from" in output.text and "127.0.0.2" in output.text
    assert csp_violations(browser) == []


def test_failing_branch_shows_its_stderr_and_retry_failed(monitor, browser, users, ssh_targets, screenshots):
    job = monitor.admin.post("/api/jobs", {
        "name": "Deploy release", "job_type": "command", "target_ids": [t["id"] for t in ssh_targets],
        "actions": [{"action_type": "command", "action_name": "deploy", "action_parameters": {"command": DEPLOY}}]})
    sign_in(browser, monitor.base_url, users["operator"], PASSWORD)
    search(browser, job["job_serial"])
    element(browser, "#run-job").click()
    element(browser, "#run-submit").click()
    page = element(browser, "#execution[data-serial]")
    serial = page.get_attribute("data-serial")
    wait(browser, lambda d: sorted(cells(d)) == ["completed", "completed", "failed"], "two green cells, one red",
         timeout=60)
    failed = cells(browser).index("failed")
    browser.find_elements(By.CSS_SELECTOR, "#cells .cell")[failed].click()
    panel = element(browser, f"#branch-panel[data-serial='{serial}.{failed + 1:04d}'][data-status=failed]")
    stderr = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#branch-panel pre.stderr"), "stderr shown")
    assert "no space left on device while unpacking" in stderr[0].text
    assert "28" in panel.text and "command_failed" in panel.text
    wait(browser, lambda d: d.find_element(By.ID, "execution").get_attribute("data-status") == "failed",
         "the execution to end failed")
    browser.save_screenshot(str(screenshots / "execution.png"))

    element(browser, "#retry-failed").click()
    retry = f"{job['job_serial']}.0002"
    wait(browser, lambda d: d.find_element(By.ID, "execution").get_attribute("data-serial") == retry, "the retry")
    wait(browser, lambda d: cells(d) == ["failed"], "the retry to run the failed host only", timeout=60)
    assert element(browser, "#execution .facts").text.count(serial) == 1  # "Retry of J….0001"


def test_cancel_a_running_execution(monitor, browser, users, ssh_targets):
    job = monitor.admin.post("/api/jobs", {
        "name": "Long sleep", "job_type": "command", "target_ids": [t["id"] for t in ssh_targets[:2]],
        "actions": [{"action_type": "command", "action_name": "wait", "action_parameters": {"command": "sleep 60"}}]})
    sign_in(browser, monitor.base_url, users["operator"], PASSWORD)
    search(browser, job["job_serial"])
    element(browser, "#run-job").click()
    element(browser, "#run-submit").click()
    wait(browser, lambda d: cells(d) == ["running", "running"], "both branches running", timeout=30)
    element(browser, "#cancel").click()
    element(browser, "#confirm-cancel").click()
    wait(browser, lambda d: cells(d) == ["cancelled", "cancelled"], "both cells cancelled", timeout=30)
    wait(browser, lambda d: d.find_element(By.ID, "execution").get_attribute("data-status") == "cancelled",
         "the execution to show cancelled")
    assert absent(browser, "#cancel")
    assert monitor.admin.get(f"/api/jobs/{job['job_serial']}/executions")[0]["status"] == "cancelled"


def test_viewer_sees_no_mutating_controls(monitor, browser, users, ssh_targets):
    job = monitor.admin.get("/api/jobs?name=Browser%20hello")["data"][0]
    sign_in(browser, monitor.base_url, users["viewer"], PASSWORD)
    go(browser, "#/jobs")
    element(browser, "#jobs table")
    assert absent(browser, "#new-job")
    search(browser, job["job_serial"])
    element(browser, "#job-executions table")
    assert absent(browser, "#run-job")
    search(browser, f"{job['job_serial']}.0001")
    wait(browser, lambda d: cells(d) == ["completed"] * 3, "the execution's cells")
    assert absent(browser, "#cancel") and absent(browser, "#retry-failed") and absent(browser, "#confirm-cancel")
    go(browser, "#/jobs/new")
    assert "can read jobs but not create them" in element(browser, "main section").text
    assert absent(browser, "#job-form")


def test_jobs_list_sorts_filters_and_pages(monitor, browser, users, ssh_targets):
    for i in range(21):  # past one page of 20
        monitor.admin.post("/api/jobs", {"name": f"bulk job {i:02d}", "job_type": "command",
                                         "actions": [{"action_type": "command", "action_name": "noop",
                                                      "action_parameters": {"command": "true"}}]})
    sign_in(browser, monitor.base_url, users["viewer"], PASSWORD)
    go(browser, "#/jobs")
    names = lambda d: [r.text for r in d.find_elements(By.CSS_SELECTOR, "#jobs tbody td:nth-child(2) a")]  # noqa: E731
    wait(browser, lambda d: len(names(d)) == 20, "a page of 20 jobs")
    element(browser, "button.sort[data-sort=name]").click()  # by name, descending first
    wait(browser, lambda d: names(d) and names(d) == sorted(names(d), reverse=True) and names(d)[0] != "bulk job 00",
         "jobs sorted by name, descending")
    element(browser, "button.sort[data-sort=name]").click()
    wait(browser, lambda d: names(d)[0] == "Browser hello" and names(d) == sorted(names(d)),
         "jobs sorted by name, ascending")
    assert "Page 1 of 2" in element(browser, "#jobs .pager").text
    browser.find_element(By.XPATH, "//nav[@class='pager']/button[contains(., 'Next')]").click()
    wait(browser, lambda d: "page=2" in d.execute_script("return location.hash") and "Page 2 of 2" in
         d.find_element(By.CSS_SELECTOR, "#jobs .pager").text, "the second page")
    element(browser, "#job-filter").send_keys("bulk job 1")
    wait(browser, lambda d: sorted(names(d)) == [f"bulk job {i}" for i in range(10, 20)], "the jobs named like it")


def test_search_jumps_to_each_kind_of_serial(monitor, browser, users, ssh_targets):
    job = monitor.admin.get("/api/jobs?name=Browser%20hello")["data"][0]
    execution = f"{job['job_serial']}.0001"
    branch = f"{execution}.0002"
    target = ssh_targets[0]["target_serial"]
    sign_in(browser, monitor.base_url, users["viewer"], PASSWORD)

    search(browser, target)
    wait(browser, lambda d: target in d.find_element(By.CSS_SELECTOR, "#target h1").text, "the target's page")
    element(browser, "#performance .tiles")
    wait(browser, lambda d: execution in d.find_element(By.ID, "history").text, "the target's history")
    search(browser, job["job_serial"].lower())  # serials are taken in any case
    wait(browser, lambda d: job["job_serial"] in d.find_element(By.CSS_SELECTOR, "#job h1").text, "the job's page")
    search(browser, execution)
    element(browser, f"#execution[data-serial='{execution}']")
    wait(browser, lambda d: len(cells(d)) == 3, "the execution's cells")
    search(browser, branch)
    element(browser, f"#branch-panel[data-serial='{branch}']")
    assert browser.execute_script("return location.hash") == f"#/executions/{execution}?branch={branch}"
    search(browser, "browser hello")
    results = element(browser, "#search-results")
    wait(browser, lambda d: job["job_serial"] in results.text, "name search results")


def test_signed_out_when_the_api_answers_401(monitor, browser, users):
    name = f"revoked-{users['operator']}"
    user = monitor.admin.post("/api/users", {"username": name, "password": PASSWORD, "role": "operator"})
    sign_in(browser, monitor.base_url, name, PASSWORD)
    monitor.admin.request("PATCH", f"/api/users/{user['id']}", json={"password": PASSWORD + "-changed"})
    browser.find_element(By.LINK_TEXT, "Jobs").click()
    ended = element(browser, "#session-ended")
    assert "Sign in again" in ended.text
    assert browser.execute_script("return sessionStorage.getItem('opsconductor.monitor.session')") is None


def test_token_is_refreshed_before_expiry_and_never_put_in_a_url(monitor, browser, users):
    sign_in(browser, monitor.base_url, users["viewer"], PASSWORD)
    browser.get_log("performance")  # from here on
    key = "opsconductor.monitor.session"
    stored = json.loads(browser.execute_script("return sessionStorage.getItem(arguments[0])", key))
    stored["expiresAt"] = int(browser.execute_script("return Date.now()")) + 20_000  # inside the refresh margin
    browser.execute_script("sessionStorage.setItem(arguments[0], arguments[1])", key, json.dumps(stored))
    browser.refresh()

    def refreshed(_driver):
        now = json.loads(browser.execute_script("return sessionStorage.getItem(arguments[0])", key) or "null")
        return now if now and now["accessToken"] != stored["accessToken"] else None

    fresh = wait(browser, refreshed, "the access token to be refreshed")
    assert fresh["refreshToken"] == stored["refreshToken"] and fresh["expiresAt"] > stored["expiresAt"]
    wait(browser, lambda d: d.find_element(By.ID, "live-state").text == "● live", "the dashboard's live stream")

    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    assert any("/ws/executions" in url for url in urls) and any("/api/auth/refresh" in url for url in urls), urls
    for token in (stored["accessToken"], stored["refreshToken"], fresh["accessToken"]):
        assert not [url for url in urls if token in url]
    assert not [url for url in urls if "token=" in url]
    assert csp_violations(browser) == []


def test_dashboard_shows_failures_history_and_charts(monitor, browser):
    sign_in(browser, monitor.base_url, *ADMIN)
    wait(browser, lambda d: d.find_element(By.ID, "live-state").text == "● live", "the dashboard's live stream")
    wait(browser, lambda d: "Deploy release" in d.find_element(By.ID, "last-failures").text, "the last failures")
    element(browser, "#recent table")
    element(browser, "svg.chart rect.bar")
    assert int(element(browser, "#total-executions").text) >= 4
    assert csp_violations(browser) == []
