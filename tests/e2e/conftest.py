"""End-to-end fixtures: real processes (honcho + gunicorn + celery, `opsconductor standalone`),
real PostgreSQL / Redis / sshd, real HTTP and WebSocket clients. No mocks, no sleeps as
synchronisation: every wait is on an observable condition with a deadline, and every subprocess
(with its whole process tree) is torn down in a finalizer, TERM first, then KILL.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import redis
import websocket

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.conftest import PG_ADMIN_DSN, scratch_database  # noqa: E402
from tests.processes import ManagedProcess, Processes  # noqa: E402,F401  (e2e tests import them from here)
from tests.sshd import (  # noqa: E402
    TEST_HOSTS,
    SshdServer,
    free_port,
    wait_until,
)

REPO_ROOT = _REPO_ROOT
# honcho, gunicorn, celery, opsconductor: the project's venv (`make install`), else the one running pytest
VENV_BIN = (REPO_ROOT / ".venv" / "bin" if (REPO_ROOT / ".venv" / "bin" / "honcho").exists()
            else Path(sys.executable).parent)
E2E_REDIS_DB = int(os.environ.get("TEST_E2E_REDIS_DB", "14"))  # not tests/conftest.py's 13, not the benchmark's 12

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

# Environment variables that would change which mode / database / broker a child process uses.
APP_ENV_VARS = (
    "DATABASE_URL", "REDIS_URL", "OPSCONDUCTOR_EMBEDDED", "OPSCONDUCTOR_VAR_DIR", "JWT_SECRET_KEY",
    "OPSCONDUCTOR_SECRET_KEY", "OPSCONDUCTOR_ADMIN_USERNAME", "OPSCONDUCTOR_ADMIN_PASSWORD",
    "OPSCONDUCTOR_SKIP_MIGRATE", "PORT", "WEB_WORKERS", "WEB_THREADS", "WORKER_CONCURRENCY", "WORKER_QUEUES",
    "BEAT_SCHEDULE_FILE", "CELERY_BROKER_URL", "METRICS_ENABLED", "METRICS_TOKEN", "WORKER_METRICS_PORT",
    "WORKER_METRICS_HOST", "PROMETHEUS_MULTIPROC_DIR",
)


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without any OpsConductor setting, PATH starting with the venv."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV_VARS}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def assert_utc(value: Any) -> None:
    assert isinstance(value, str) and RFC3339_Z.match(value), f"not an RFC 3339 UTC timestamp: {value!r}"


# --------------------------------------------------------------------------- processes


def wait_http_ready(base_url: str, proc: ManagedProcess | None = None, timeout: float = 60.0,
                    path: str = "/readyz") -> None:
    """Wait until GET ``path`` answers 200; fail at once (with the logs) when the process died."""

    def ready() -> bool:
        if proc is not None and not proc.running():
            raise AssertionError(f"{proc.name} exited before it was ready\n{proc.logs()}")
        try:
            return httpx.get(base_url + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=timeout, interval=0.1, message=f"{base_url}{path} to answer 200")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{proc.logs() if proc else ''}") from None


# --------------------------------------------------------------------------- HTTP


class Api:
    """A thin httpx client for /api: checks status codes and returns JSON."""

    def __init__(self, base_url: str, token: str | None = None):
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.token = token

    def close(self) -> None:
        self.http.close()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def login(self, username: str, password: str) -> dict:
        body = self.request("POST", "/api/auth/login", json={"username": username, "password": password},
                            expect=200)
        self.token = body["access_token"]
        return body

    def request(self, method: str, path: str, *, expect: int | tuple[int, ...] = 200, **kwargs) -> Any:
        response = self.http.request(method, path, headers={**self.headers(), **kwargs.pop("headers", {})},
                                     **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in expected, f"{method} {path} -> {response.status_code} {response.text}"
        return response.json() if response.content else None

    def get(self, path: str, **kwargs) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, expect: int | tuple[int, ...] = 201, **kwargs) -> Any:
        return self.request("POST", path, json=json, expect=expect, **kwargs)

    def wait_execution_done(self, execution_serial: str, timeout: float = 30.0) -> dict:
        """Poll the execution by serial until it leaves queued/running."""

        def done():
            body = self.get(f"/api/executions/serial/{execution_serial}")
            return body if body["status"] != "running" else None

        return wait_until(done, timeout=timeout, interval=0.1, message=f"execution {execution_serial} to finish")


# --------------------------------------------------------------------------- the Procfile stack


@dataclass
class HonchoStack:
    base_url: str
    honcho: ManagedProcess
    api: Api  # not signed in
    env: dict[str, str]  # what every process was given, to start more of them alike
    processes: Processes


@contextmanager
def honcho_stack(tmp: Path, admin: tuple[str, str], **env: str) -> Iterator[HonchoStack]:
    """`honcho -f Procfile start` (web, worker, beat) with fresh secrets, `admin` as the administrator and
    ``env`` (DATABASE_URL, REDIS_URL, …) on a free PORT; answered once the web process serves, every process
    stopped afterwards."""
    port = free_port()
    env = clean_env(**{
        "JWT_SECRET_KEY": secrets.token_urlsafe(48), "OPSCONDUCTOR_SECRET_KEY": secrets.token_urlsafe(48),
        "OPSCONDUCTOR_ADMIN_USERNAME": admin[0], "OPSCONDUCTOR_ADMIN_PASSWORD": admin[1], "PORT": str(port),
        "HEARTBEAT_SECONDS": "0.5", "BEAT_SCHEDULE_FILE": str(tmp / "beat-schedule"),  # not the shared /tmp one
        **env})
    processes = Processes(tmp / "logs")
    try:
        honcho = processes.start("honcho", [str(VENV_BIN / "honcho"), "-f", "Procfile", "start"], cwd=REPO_ROOT,
                                 env=env)
        base_url = f"http://127.0.0.1:{port}"
        wait_http_ready(base_url, honcho, timeout=60)
        honcho.remember_tree()
        api = Api(base_url)
        try:
            yield HonchoStack(base_url, honcho, api, env, processes)
        finally:
            api.close()
    finally:
        processes.stop_all()


# --------------------------------------------------------------------------- WebSocket


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws/executions" + (f"?{query}" if query else "")


class EventSocket:
    """A websocket-client connection to /ws/executions that reads JSON messages with deadlines."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                 sockopt: tuple[tuple[int, int, int], ...] = ()):
        header = [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.ws = websocket.create_connection(url, header=header, timeout=timeout, sockopt=sockopt)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass

    def __enter__(self) -> EventSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_json(self, message: Any) -> None:
        self.ws.send(json.dumps(message))

    def next_frame(self, timeout: float) -> tuple[int, bytes]:
        """The next text/binary/close frame as (opcode, payload); pings are answered by the library."""
        self.ws.settimeout(timeout)
        while True:
            frame = self.ws.recv_frame()
            if frame.opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY,
                                websocket.ABNF.OPCODE_CLOSE):
                return frame.opcode, frame.data
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                self.ws.pong(frame.data)

    def next_json(self, timeout: float = 10.0) -> dict:
        opcode, data = self.next_frame(timeout)
        assert opcode == websocket.ABNF.OPCODE_TEXT, f"expected a text message, got opcode {opcode} {data!r}"
        return json.loads(data)

    def close_code(self, timeout: float = 10.0) -> int:
        """Wait for the server's close frame and return its status code (no message must come first)."""
        return self.close_frame(timeout)[0]

    def close_frame(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the server's close frame: (status code, reason); no message must come first."""
        try:
            opcode, data = self.next_frame(timeout)
        except websocket.WebSocketConnectionClosedException as exc:
            raise AssertionError("connection dropped without a close frame") from exc
        assert opcode == websocket.ABNF.OPCODE_CLOSE, f"expected a close frame, got {data!r}"
        assert len(data) >= 2, f"close frame without a status code: {data!r}"
        return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", "replace")

    def collect_until(self, stop: Callable[[dict], bool], timeout: float = 30.0) -> list[dict]:
        """Messages in arrival order up to and including the first one for which ``stop`` is true."""
        deadline = time.monotonic() + timeout
        events: list[dict] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s; events so far: {events}")
            try:
                event = self.next_json(timeout=remaining)
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"timed out after {timeout}s; events so far: {events}") from None
            events.append(event)
            if stop(event):
                return events


def assert_execution_events(events: list[dict], *, execution_serial: str, job_serial: str,
                            branches: Mapping[str, str], status: str = "completed") -> None:
    """The reference's event stream for one execution: started first, each branch started before it
    completed, completed last; every event {type, data} with the reference's fields."""
    for event in events:
        assert set(event) == {"type", "data"}, event
        assert isinstance(event["data"], dict), event
        assert event["data"]["execution_serial"] == execution_serial, event
    types = [e["type"] for e in events]
    assert types[0] == "execution_started", types
    assert types[-1] == "execution_completed", types
    assert types.count("execution_started") == 1 and types.count("execution_completed") == 1, types
    assert sorted(types[1:-1]) == ["branch_completed"] * len(branches) + ["branch_started"] * len(branches), types

    started = events[0]["data"]
    assert started["job_serial"] == job_serial
    assert started["status"] == "running", started
    assert_utc(started["started_at"])

    done = events[-1]["data"]
    assert done["job_serial"] == job_serial
    assert done["status"] == status, done
    assert_utc(done["completed_at"])

    for branch_serial, target_serial in branches.items():
        positions = {kind: [i for i, e in enumerate(events)
                            if e["type"] == kind and e["data"].get("branch_serial") == branch_serial]
                     for kind in ("branch_started", "branch_completed")}
        assert len(positions["branch_started"]) == 1, (branch_serial, types)
        assert len(positions["branch_completed"]) == 1, (branch_serial, types)
        assert positions["branch_started"][0] < positions["branch_completed"][0], (branch_serial, types)
        b_started = events[positions["branch_started"][0]]["data"]
        assert b_started["target_serial_ref"] == target_serial
        assert b_started["status"] == "running", b_started
        b_done = events[positions["branch_completed"][0]]["data"]
        for key in ("branch_serial", "execution_serial", "target_serial_ref", "status", "exit_code",
                    "completed_at"):
            assert key in b_done, (key, b_done)
        assert b_done["target_serial_ref"] == target_serial
        if status == "completed":
            assert b_done["status"] == "completed", b_done
            assert b_done["exit_code"] == 0, b_done
        assert_utc(b_done["completed_at"])


# --------------------------------------------------------------------------- PostgreSQL / Redis


def pg_tables(database_url: str) -> list[str]:
    name = database_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={name}"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return sorted(r[0] for r in cur.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def empty_pg_url() -> Iterator[str]:
    """A brand-new, EMPTY PostgreSQL database (no schema): the stack must migrate it itself."""
    with scratch_database("opsc_e2e") as url:
        yield url


@pytest.fixture(scope="module")
def e2e_redis_url(tmp_path_factory) -> Iterator[str]:
    """Redis database E2E_REDIS_DB on a private redis-server, emptied before use.

    A database number alone does not isolate a stack: Redis pub/sub channels are server-wide, and
    every OpsConductor stack publishes on the one "opsconductor:events" channel, so a benchmark or
    another test run on 127.0.0.1:6379 would deliver its events (same serials: J20260001.0001...) to
    this stack's WebSocket. A redis-server of our own keeps broker, limits and events private.
    """
    tmp = tmp_path_factory.mktemp("redis")
    port = free_port()
    processes = Processes(tmp / "logs")
    try:
        server = processes.start("redis-server", [
            shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(tmp), "--databases", "16"], cwd=tmp, env=clean_env())
        url = f"redis://127.0.0.1:{port}/{E2E_REDIS_DB}"
        client = redis.Redis.from_url(url, socket_timeout=2)

        def answers() -> bool:
            if not server.running():
                raise AssertionError(f"redis-server exited\n{server.logs()}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout=10, interval=0.02, message="private redis-server to answer PING")
        client.flushdb()
        client.close()
        yield url
    finally:
        processes.stop_all()


# --------------------------------------------------------------------------- sshd


@pytest.fixture(scope="session")
def e2e_sshd(ssh_user, client_key) -> Iterator[SshdServer]:
    """One private sshd on 127.0.0.2-4: three distinct SSH hosts, trusting ``client_key``."""
    with SshdServer(TEST_HOSTS) as server:
        server.authorize(client_key.public_line)
        yield server
