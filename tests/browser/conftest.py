"""Browser tests of the monitor (web/): a real headless Chromium from Debian's packages, driven by Selenium
through Debian's chromedriver, against a live `opsconductor standalone` (the `make run` path) and the suite's
real sshd on 127.0.0.2-4. One server and one browser for the whole session; every wait is on a condition in the
page with a deadline (WebDriverWait), never a sleep."""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (  # noqa: F401  (e2e_sshd: the suite's sshd on 127.0.0.2-4, a fixture)
    REPO_ROOT,
    VENV_BIN,
    Api,
    Processes,
    clean_env,
    e2e_sshd,
    wait_http_ready,
)
from tests.sshd import TEST_HOSTS, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
ADMIN = ("admin", "Browser-Admin-pw-2026")
PASSWORD = "Browser-User-pw-2026"
SERVING_LINE = re.compile(r"serving http://127\.0\.0\.1:(\d+)")

pytestmark = pytest.mark.slow


@dataclass
class Monitor:
    base_url: str
    admin: Api
    process: object


@pytest.fixture(scope="session")
def monitor(tmp_path_factory) -> Iterator[Monitor]:
    """`opsconductor standalone` on a free port in an empty directory: SQLite, in-process worker and events.
    The admin's rate limit is raised so the 1,000-target setup fits in a minute; the browser's other users
    keep the standard limit."""
    workdir = tmp_path_factory.mktemp("monitor")
    processes = Processes(workdir / "logs")
    env = clean_env(OPSCONDUCTOR_ADMIN_USERNAME=ADMIN[0], OPSCONDUCTOR_ADMIN_PASSWORD=ADMIN[1],
                    RATE_LIMIT_ADMIN="20000 per minute")
    proc = processes.start("monitor", [str(VENV_BIN / "opsconductor"), "standalone", "--host", "127.0.0.1",
                                       "--port", "0"], cwd=workdir, env=env)
    try:
        def serving() -> str | None:
            if not proc.running():
                raise AssertionError(f"standalone exited at start-up\n{proc.logs()}")
            match = SERVING_LINE.search(proc.stderr())
            return match.group(1) if match else None

        base_url = f"http://127.0.0.1:{wait_until(serving, timeout=60, interval=0.05, message='the server URL')}"
        wait_http_ready(base_url, proc, timeout=30)
        admin = Api(base_url)
        admin.login(*ADMIN)
        yield Monitor(base_url, admin, proc)
        admin.close()
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def users(monitor) -> dict[str, str]:
    """An operator and a viewer (usernames by role)."""
    names = {}
    for role in ("operator", "viewer"):
        name = f"{role}-{uuid.uuid4().hex[:6]}"
        monitor.admin.post("/api/users", {"username": name, "password": PASSWORD, "role": role})
        names[role] = name
    return names


@pytest.fixture(scope="session")
def ssh_targets(monitor, e2e_sshd, client_key, ssh_user) -> list[dict]:  # noqa: F811
    """Three SSH targets (127.0.0.2-4, the suite's sshd), registered by the admin."""
    credential = monitor.admin.post("/api/credentials", {
        "name": "browser-key", "username": ssh_user.name, "auth_type": "key", "private_key": client_key.private_key})
    return [monitor.admin.post("/api/targets", {
        "name": f"web-{i}", "ip_address": host, "port": e2e_sshd.port, "credential_id": credential["id"],
        "tags": ["browser", "web"]}) for i, host in enumerate(TEST_HOSTS, start=1)]


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the session (Debian's, with its chromedriver), logging the console and the
    network (to check what URLs the page opened)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed (.ci/run installs them)")
        pytest.skip("apt-get install chromium chromium-driver to run the browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
