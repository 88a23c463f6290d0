"""/ws/executions against a real server (`opsconductor.standalone.build(settings).start(...)` in this
process: werkzeug threaded server, in-process Celery worker, in-process event bus, SQLite):
authentication by header, `?token=` or a first message, 1008 otherwise; serial filters."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from socket import create_connection

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token

from api import ws as ws_module
from opsconductor.standalone import Embedded, build
from tests.conftest import JWT_SECRET, PASSWORD, make_settings
from tests.e2e.conftest import Api, EventSocket, assert_execution_events, wait_http_ready, ws_url
from tests.sshd import wait_until

pytestmark = pytest.mark.slow

POLICY_VIOLATION = 1008
ADMIN = "ws-admin"


@dataclass
class Server:
    embedded: Embedded
    base_url: str
    api: Api
    tokens: dict

    def url(self, query: str = "") -> str:
        return ws_url(self.base_url, query)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ws-embedded")
    settings = make_settings(f"sqlite:///{tmp / 'opsconductor.db'}", embedded=True, var_dir=str(tmp),
                             admin_username=ADMIN, admin_password=PASSWORD)
    embedded = build(settings).start("127.0.0.1", 0)
    worker_threads = list(embedded._threads)
    port = embedded.port
    api = None
    try:
        base_url = f"http://127.0.0.1:{embedded.port}"
        wait_http_ready(base_url, timeout=30)
        api = Api(base_url)
        tokens = api.login(ADMIN, PASSWORD)
        yield Server(embedded=embedded, base_url=base_url, api=api, tokens=tokens)
    finally:
        if api is not None:
            api.close()
        embedded.stop()
    # a consumer left running would take the next in-process instance's tasks (the memory transport
    # is shared by the whole process): stop() must really stop the worker and the server
    for thread in worker_threads:
        thread.join(timeout=15)
    assert not [t.name for t in worker_threads if t.is_alive()]
    wait_until(lambda: not _accepts(port), timeout=5, message="the stopped server to release its port")


def _accepts(port: int) -> bool:
    try:
        create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def local_job(server) -> dict:
    target = server.api.post("/api/targets", {"name": "ws-local", "connection": "local"})
    job = server.api.post("/api/jobs", {
        "name": "ws filter job", "job_type": "command", "target_ids": [target["id"]],
        "actions": [{"action_type": "command", "action_name": "hello",
                     "action_parameters": {"command": "echo ws-ok"}}]})
    job["target"] = target
    return job


def _authorize(mode: str, token: str, query: str = "") -> tuple[str, dict, dict | None]:
    """(query string, headers, first message) for one way of presenting a token."""
    if mode == "header":
        return query, {"Authorization": f"Bearer {token}"}, None
    if mode == "query":
        return "&".join(p for p in (query, f"token={token}") if p), {}, None
    assert mode == "first_message"
    return query, {}, {"action": "auth", "token": token}


def _connect(server: Server, mode: str, token: str, query: str = "") -> EventSocket:
    q, headers, first = _authorize(mode, token, query)
    socket = EventSocket(server.url(q), headers=headers)
    if first is not None:
        socket.send_json(first)
    return socket


# --------------------------------------------------------------------------- authentication

AUTH_MODES = ("header", "query", "first_message")


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_access_token_is_accepted(server, mode):
    with _connect(server, mode, server.tokens["access_token"]) as socket:
        assert socket.next_json(timeout=10) == {"type": "subscribed", "data": {}}


def test_no_token_and_no_message_is_closed_with_1008(server):
    started = time.monotonic()
    with EventSocket(server.url()) as socket:
        assert socket.close_code(timeout=ws_module.AUTH_WAIT_SECONDS + 10) == POLICY_VIOLATION
    assert ws_module.AUTH_WAIT_SECONDS - 0.5 <= time.monotonic() - started < ws_module.AUTH_WAIT_SECONDS + 2


@pytest.mark.parametrize("first_message", ["hello", '{"action": "subscribe"}', '{"action": "auth"}', "[]"])
def test_no_token_and_a_first_message_that_is_not_auth_is_closed_with_1008(server, first_message):
    with EventSocket(server.url()) as socket:
        socket.ws.send(first_message)
        assert socket.close_code(timeout=10) == POLICY_VIOLATION


def _expired_token(server: Server) -> str:
    with server.embedded.app.app_context():
        return create_access_token(identity="1", expires_delta=timedelta(seconds=-60))


def _forged_token(server: Server) -> str:
    """A well-formed access token for the admin, signed with the wrong key."""
    claims = pyjwt.decode(server.tokens["access_token"], options={"verify_signature": False})
    return pyjwt.encode(claims, "not-the-" + JWT_SECRET, algorithm="HS256")


BAD_TOKENS = {
    "garbage": lambda s: "garbage.not.a.jwt",
    "refresh_token": lambda s: s.tokens["refresh_token"],
    "expired": _expired_token,
    "forged": _forged_token,
}


@pytest.mark.parametrize("mode", AUTH_MODES)
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_bad_token_is_closed_with_1008(server, kind, mode):
    token = BAD_TOKENS[kind](server)
    with _connect(server, mode, token) as socket:
        assert socket.close_code(timeout=10) == POLICY_VIOLATION


def test_token_of_a_disabled_user_is_closed_with_1008(server):
    user = server.api.post("/api/users", {"username": "ws-operator", "password": PASSWORD, "role": "operator"})
    operator = Api(server.base_url)
    try:
        token = operator.login("ws-operator", PASSWORD)["access_token"]
    finally:
        operator.close()
    with _connect(server, "header", token) as socket:
        assert socket.next_json(timeout=10)["type"] == "subscribed"
    server.api.request("PATCH", f"/api/users/{user['id']}", json={"is_active": False}, expect=200)
    for mode in AUTH_MODES:
        with _connect(server, mode, token) as socket:
            assert socket.close_code(timeout=10) == POLICY_VIOLATION, mode


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize("query", [
    "execution_serial=garbage",
    "execution_serial=J20260001",  # a job serial is not an execution serial
    "execution_serial=J20260001.0001.0001",  # nor is a branch serial
    "execution_serial=J20260001.1",
    "job_serial=J2026",
    "job_serial=J20260001.0001",
])
def test_malformed_filter_is_refused(server, query):
    with _connect(server, "header", server.tokens["access_token"], query) as socket:
        assert socket.close_code(timeout=10) == POLICY_VIOLATION


def test_execution_serial_filter_delivers_only_that_execution(server, local_job):
    api = server.api
    job_serial = local_job["job_serial"]
    target_serial = local_job["target"]["target_serial"]
    count = len(api.get(f"/api/jobs/{job_serial}/executions"))
    first_serial = f"{job_serial}.{count + 1:04d}"
    second_serial = f"{job_serial}.{count + 2:04d}"  # execution numbers are allocated in order

    with _connect(server, "header", api.token, f"execution_serial={second_serial}") as filtered, \
            _connect(server, "query", api.token, f"job_serial={job_serial}") as by_job:
        # an execution not made yet: its stream starts before its first event
        assert filtered.next_json() == {"type": "subscribed", "data": {"execution_serial": second_serial, "since": 0}}
        assert by_job.next_json() == {"type": "subscribed", "data": {"job_serial": job_serial}}

        first = api.post(f"/api/jobs/{job_serial}/execute")
        assert first["execution_serial"] == first_serial
        first_events = by_job.collect_until(
            lambda e: e["type"] == "execution_completed" and e["data"]["execution_serial"] == first_serial)
        assert_execution_events(first_events, execution_serial=first_serial, job_serial=job_serial,
                                branches={b["branch_serial"]: target_serial for b in first["branches"]})

        second = api.post(f"/api/jobs/{job_serial}/execute")
        assert second["execution_serial"] == second_serial
        second_events = by_job.collect_until(lambda e: e["type"] == "execution_completed")
        branches = {b["branch_serial"]: target_serial for b in second["branches"]}
        assert_execution_events(second_events, execution_serial=second_serial, job_serial=job_serial,
                                branches=branches)

        # The first execution's events reached every subscription before the second's did: had the
        # filter let them through, they would come first here.
        filtered_events = filtered.collect_until(lambda e: e["type"] == "execution_completed")
        assert_execution_events(filtered_events, execution_serial=second_serial, job_serial=job_serial,
                                branches=branches)
        assert filtered_events == second_events


def test_job_serial_filter_delivers_nothing_of_other_jobs(server, local_job):
    api = server.api
    other = api.post("/api/jobs", {
        "name": "ws other job", "job_type": "command", "target_ids": [local_job["target"]["id"]],
        "actions": [{"action_type": "command", "action_name": "other",
                     "action_parameters": {"command": "echo other"}}]})
    with _connect(server, "first_message", api.token, f"job_serial={local_job['job_serial']}") as mine, \
            _connect(server, "header", api.token, f"job_serial={other['job_serial']}") as theirs:
        assert mine.next_json()["type"] == "subscribed"
        assert theirs.next_json()["type"] == "subscribed"
        foreign = api.post(f"/api/jobs/{other['job_serial']}/execute")
        theirs.collect_until(lambda e: e["type"] == "execution_completed")
        own = api.post(f"/api/jobs/{local_job['job_serial']}/execute")
        events = mine.collect_until(lambda e: e["type"] == "execution_completed")
    assert {e["data"]["execution_serial"] for e in events} == {own["execution_serial"]}
    assert foreign["execution_serial"] not in {e["data"]["execution_serial"] for e in events}


def test_many_concurrent_sockets_all_receive_the_events(server, local_job):
    """Each socket has its own queue on the bus: every one of them gets the whole stream."""
    api = server.api
    sockets = [_connect(server, AUTH_MODES[i % 3], api.token, f"job_serial={local_job['job_serial']}")
               for i in range(8)]
    try:
        for socket in sockets:
            assert socket.next_json()["type"] == "subscribed"
        execution = api.post(f"/api/jobs/{local_job['job_serial']}/execute")
        results: dict[int, list] = {}

        def read(i: int, socket: EventSocket) -> None:
            results[i] = socket.collect_until(lambda e: e["type"] == "execution_completed")

        threads = [threading.Thread(target=read, args=(i, s)) for i, s in enumerate(sockets)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=40)
        assert len(results) == len(sockets)
        branches = {b["branch_serial"]: local_job["target"]["target_serial"] for b in execution["branches"]}
        for events in results.values():
            assert_execution_events(events, execution_serial=execution["execution_serial"],
                                    job_serial=local_job["job_serial"], branches=branches)
    finally:
        for socket in sockets:
            socket.close()


def test_resuming_an_execution_whose_events_were_pruned_is_refused_with_the_reason(server, local_job):
    from sqlalchemy import update

    from common.models import Execution, utcnow

    serial = server.api.post(f"/api/jobs/{local_job['job_serial']}/execute")["execution_serial"]
    with server.embedded.runtime.db.session() as session:  # as retention leaves it (tests/api/test_retention.py)
        session.execute(update(Execution).where(Execution.execution_serial == serial).values(pruned_at=utcnow()))
    with _connect(server, "header", server.api.token, f"execution_serial={serial}&since=0") as socket:
        code, reason = socket.close_frame(timeout=10)
    assert (code, reason) == (POLICY_VIOLATION, "events pruned (RETENTION_DAYS): read the execution from the API")
    with _connect(server, "header", server.api.token, f"execution_serial={serial}") as socket:  # no resume: fine
        assert socket.next_json()["type"] == "subscribed"
