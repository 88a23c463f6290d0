"""Live servers for the SDK suites: `opsconductor standalone` (the embedded default `make run` starts)
as a subprocess in a fresh directory: real HTTP, real WebSocket, in-process worker, SQLite.

- `sdk_server`: rate limits high enough never to interfere.
- `limited_server`: standard users limited to 3 requests a minute, for the 429 tests; the fixture
  `limited_tokens` creates two viewers (one per SDK suite) and logs them in, which uses exactly the
  3 anonymous requests this server allows per minute from 127.0.0.1 (admin login + 2 viewer logins).

A subprocess rather than `build(...).start()` in this process: Celery's in-memory transport is
shared by the whole process, so a second embedded platform here would race the ones other test
modules start for tasks.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.processes import ManagedProcess
from tests.sshd import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SDK_PYTHON_SRC = REPO_ROOT / "sdk" / "python" / "src"
SDK_JS = REPO_ROOT / "sdk" / "js"
VENV_BIN = Path(sys.executable).parent

try:  # installed by `make test` (pip install -e ./sdk/python); else straight from the source tree
    import enabledrm_sdk  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(SDK_PYTHON_SRC))

ADMIN_USERNAME = "sdk-admin"
ADMIN_PASSWORD = "sdk-admin-password-1"
VIEWER_PASSWORD = "sdk-viewer-password-1"
SERVING_LINE = re.compile(r"serving (http://127\.0\.0\.1:\d+)")

# settings a developer's shell may carry that would point the child at another database or broker
APP_ENV_VARS = (
    "DATABASE_URL", "REDIS_URL", "OPSCONDUCTOR_EMBEDDED", "OPSCONDUCTOR_VAR_DIR", "JWT_SECRET_KEY",
    "OPSCONDUCTOR_SECRET_KEY", "OPSCONDUCTOR_ADMIN_USERNAME", "OPSCONDUCTOR_ADMIN_PASSWORD", "RATE_LIMIT_STANDARD",
    "RATE_LIMIT_ADMIN", "RATE_LIMIT_LOGIN", "RATE_LIMITS_ENABLED", "PORT",
)


@dataclass
class LiveServer:
    base_url: str
    admin_username: str
    admin_password: str
    workdir: Path
    process: ManagedProcess
    extra: dict = field(default_factory=dict)

    def logs(self) -> str:
        return self.process.logs()

    def admin_token(self) -> str:
        response = httpx.post(f"{self.base_url}/api/auth/login",
                              json={"username": self.admin_username, "password": self.admin_password}, timeout=10)
        response.raise_for_status()
        return response.json()["access_token"]


@contextmanager
def live_server(workdir: Path, **limits: str) -> Iterator[LiveServer]:
    """`opsconductor standalone` on a free port with these settings, stopped (whole tree) afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV_VARS}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONUNBUFFERED="1",
        OPSCONDUCTOR_EMBEDDED="1",
        OPSCONDUCTOR_VAR_DIR=str(workdir / "var"),
        OPSCONDUCTOR_ADMIN_USERNAME=ADMIN_USERNAME,
        OPSCONDUCTOR_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **limits,
    )
    process = ManagedProcess("standalone", [str(VENV_BIN / "opsconductor"), "standalone", "--host", "127.0.0.1",
                                            "--port", "0"], cwd=workdir, env=env, log_dir=workdir)
    server = LiveServer("", ADMIN_USERNAME, ADMIN_PASSWORD, workdir, process)

    def serving() -> bool:
        if not process.running():
            raise RuntimeError(f"opsconductor standalone exited\n{server.logs()}")
        match = SERVING_LINE.search(process.stdout() + process.stderr())
        if match:
            server.base_url = match.group(1)
        return bool(match)

    def healthy() -> bool:
        try:
            return httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, timeout=60, interval=0.05, message="opsconductor standalone to print its address")
        wait_until(healthy, timeout=60, interval=0.05, message="opsconductor standalone to be healthy")
        yield server
    finally:
        process.stop()


UNLIMITED = "100000 per minute"


@pytest.fixture(scope="session")
def sdk_server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("sdk-server"), RATE_LIMIT_ADMIN=UNLIMITED,
                     RATE_LIMIT_STANDARD=UNLIMITED, RATE_LIMIT_LOGIN=UNLIMITED) as server:
        yield server


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("sdk-limited"), RATE_LIMIT_ADMIN=UNLIMITED,
                     RATE_LIMIT_STANDARD="3 per minute", RATE_LIMIT_LOGIN=UNLIMITED) as server:
        yield server


@pytest.fixture(scope="session")
def limited_tokens(limited_server) -> dict[str, str]:
    """Viewer tokens on the limited server, one per suite, each with its own 3-a-minute budget untouched."""
    admin = limited_server.admin_token()
    headers = {"Authorization": f"Bearer {admin}"}
    tokens = {}
    for name in ("python", "js"):
        username = f"limited-{name}"
        created = httpx.post(f"{limited_server.base_url}/api/users", headers=headers, timeout=10,
                             json={"username": username, "password": VIEWER_PASSWORD, "role": "viewer"})
        assert created.status_code == 201, created.text
        login = httpx.post(f"{limited_server.base_url}/api/auth/login", timeout=10,
                           json={"username": username, "password": VIEWER_PASSWORD})
        assert login.status_code == 200, login.text
        tokens[name] = login.json()["access_token"]
    return tokens
