"""Attacks that need the whole platform running: the embedded default (`opsconductor standalone` as
a subprocess in a fresh directory: werkzeug server, a real Celery worker on the in-memory transport,
SQLite; a subprocess because a second embedded platform in one process never gets its tasks, see
tests/sdk/conftest.py) and a hostile SSH server that records every secret offered to it.

- The worker checks a credential's scope again right before it authenticates (rows edited by hand
  or written before the rule): off-list fails the branch as `credential_not_allowed`, no secret
  leaves, the hostile server is not even connected to.
- A secret is never sent before the host key matched its pin.
- Open WebSockets follow their user: deactivation, a password or role change closes them with 1008
  within 10 s, and any socket closes when its token expires."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jwt as pyjwt
import paramiko
import pytest
from sqlalchemy import create_engine, text

from api import ws as ws_module
from tests.conftest import PASSWORD
from tests.e2e.conftest import Api, EventSocket, ws_url
from tests.sdk.conftest import UNLIMITED, LiveServer, live_server
from tests.security.capture_ssh import CaptureServer

STORED_SECRET = "the-stored-secret-Zq81"
POLICY_VIOLATION = 1008


@dataclass
class Platform:
    server: LiveServer
    api: Api

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def sql(self, statement: str, **params) -> None:
        engine = create_engine(f"sqlite:///{self.server.workdir / 'var' / 'opsconductor.db'}")
        try:
            with engine.begin() as conn:
                conn.execute(text(statement), params)
        finally:
            engine.dispose()

    def jwt_secret(self) -> str:
        return json.loads((self.server.workdir / "var" / "secrets.json").read_text())["jwt_secret_key"]

    def run(self, job_id: int) -> dict:
        """Execute as the admin and return the finished branch."""
        execution = self.api.post(f"/api/jobs/{job_id}/execute")
        done = self.api.wait_execution_done(execution["execution_serial"], timeout=60)
        return self.api.get(f"/api/executions/branch/{done['branches'][0]['branch_serial']}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    with live_server(tmp_path_factory.mktemp("security-live"), RATE_LIMIT_ADMIN=UNLIMITED,
                     RATE_LIMIT_STANDARD=UNLIMITED, RATE_LIMIT_LOGIN=UNLIMITED, SSH_CONNECT_TIMEOUT="5") as server:
        api = Api(server.base_url)
        try:
            api.login(server.admin_username, server.admin_password)
            yield Platform(server=server, api=api)
        finally:
            api.close()


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer("127.0.0.1") as server:
        yield server


def _credential_and_job(platform: Platform, name: str, **target) -> tuple[dict, dict, dict]:
    cred = platform.api.post("/api/credentials", {"name": name, "username": "deploy", "auth_type": "password",
                                                  "password": STORED_SECRET})
    host = platform.api.post("/api/targets", {"name": name, "credential_id": cred["id"], **target})
    job = platform.api.post("/api/jobs", {"name": name, "target_ids": [host["id"]], "actions": [
        {"action_type": "command", "action_name": "id", "action_parameters": {"command": "id"}}]})
    return cred, host, job


# ------------------------------------------------------------------ the worker's credential check

def test_a_hand_edited_target_gets_no_secret(platform, capture):
    """An admin paired the credential with 192.0.2.10:22; the row is then moved to the hostile server
    behind the API's back. The worker refuses before it connects."""
    _, host, job = _credential_and_job(platform, "hand-edited", ip_address="192.0.2.10")
    platform.sql("UPDATE targets SET ip_address = '127.0.0.1', port = :port WHERE id = :id",
                 port=capture.port, id=host["id"])
    branch = platform.run(job["id"])
    assert (branch["status"], branch["error_type"]) == ("failed", "credential_not_allowed"), branch
    assert "not allowed" in branch["result_error"] and STORED_SECRET not in branch["result_error"]
    assert capture.captured.connections == 0 and capture.captured.secrets_offered == 0


def test_an_operator_row_from_before_the_rule_gets_no_secret(platform, capture):
    """A target an operator wrote before allowed_hosts existed: no admin pairing, address off the list."""
    _, host, job = _credential_and_job(platform, "legacy-row", ip_address="127.0.0.1", port=capture.port)
    platform.sql("UPDATE targets SET credential_grant = NULL WHERE id = :id", id=host["id"])
    branch = platform.run(job["id"])
    assert branch["error_type"] == "credential_not_allowed", branch
    assert capture.captured.connections == 0 and capture.captured.secrets_offered == 0


def test_the_control_an_allowed_pairing_does_reach_the_server(platform, capture):
    """Proves the capture works: the admin's own pairing sends the password (and the server refuses it)."""
    _, _, job = _credential_and_job(platform, "allowed", ip_address="127.0.0.1", port=capture.port)
    branch = platform.run(job["id"])
    assert branch["error_type"] == "auth_failed", branch
    assert capture.captured.passwords and set(capture.captured.passwords) == {STORED_SECRET}


def test_no_secret_before_the_host_key_matched_its_pin(platform, capture):
    cred, host, job = _credential_and_job(platform, "pinned", ip_address="127.0.0.1", port=capture.port)
    impostor = paramiko.RSAKey.generate(2048)
    platform.sql("UPDATE targets SET host_key = :key, host_key_fingerprint = 'x' WHERE id = :id",
                 key=f"{impostor.get_name()} {impostor.get_base64()}", id=host["id"])
    branch = platform.run(job["id"])
    assert (branch["status"], branch["error_type"]) == ("failed", "host_key_mismatch"), branch
    assert capture.captured.connections == 1  # it did connect: the refusal came from the key, not the scope
    assert capture.captured.secrets_offered == 0


# ------------------------------------------------------------------ what an anonymous scrape shows

def test_an_anonymous_metrics_scrape_names_nothing_of_the_fleet(platform, capture):
    """/metrics answers without a token while METRICS_TOKEN is unset (README: Security), so its labels must come
    from closed sets: after a branch that offered a password, no name, address, serial or secret in it."""
    _, host, job = _credential_and_job(platform, "scraped-fleet-host", ip_address="127.0.0.1", port=capture.port)
    branch = platform.run(job["id"])
    assert branch["error_type"] == "auth_failed", branch
    response = httpx.get(f"{platform.base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert 'opsconductor_branches_finished_total{error_type="auth_failed",status="failed"}' in response.text
    for value in (STORED_SECRET, "scraped-fleet-host", "deploy", "127.0.0.1", host["target_serial"],
                  job["job_serial"], branch["branch_serial"], platform.server.admin_username):
        assert value not in response.text, value


# ------------------------------------------------------------------ open WebSockets follow their user

def _user(platform: Platform, name: str, role: str = "operator") -> tuple[int, str]:
    user = platform.api.post("/api/users", {"username": name, "password": PASSWORD, "role": role})
    token = Api(platform.base_url)
    try:
        return user["id"], token.login(name, PASSWORD)["access_token"]
    finally:
        token.close()


def _subscribed(platform: Platform, token: str) -> EventSocket:
    socket = EventSocket(ws_url(platform.base_url), headers={"Authorization": f"Bearer {token}"})
    assert socket.next_json(timeout=10)["type"] == "subscribed"
    return socket


@pytest.mark.parametrize("change", [{"is_active": False}, {"password": "another-password-1"},
                                    {"role": "viewer"}])
def test_a_users_open_socket_closes_when_the_user_changes(platform, change):
    user_id, token = _user(platform, f"watcher-{next(iter(change))}")
    with _subscribed(platform, token) as socket:
        platform.api.request("PATCH", f"/api/users/{user_id}", json=change)
        changed = time.monotonic()
        assert socket.close_code(timeout=15) == POLICY_VIOLATION
        assert time.monotonic() - changed <= 10.0
    with EventSocket(ws_url(platform.base_url), headers={"Authorization": f"Bearer {token}"}) as again:
        assert again.close_code(timeout=10) == POLICY_VIOLATION  # and the token cannot open a new one


def test_an_unchanged_users_socket_stays_open(platform):
    """The control: across a revalidation round (a job that outlasts it), the socket stays and relays it."""
    _, token = _user(platform, "steady")
    with _subscribed(platform, token) as socket:
        local = platform.api.post("/api/targets", {"name": "steady-local", "connection": "local"})
        seconds = ws_module.REVALIDATE_SECONDS + 1
        job = platform.api.post("/api/jobs", {"name": "steady", "target_ids": [local["id"]], "actions": [
            {"action_type": "command", "action_name": "x", "action_parameters": {"command": f"sleep {seconds}"}}]})
        platform.api.post(f"/api/jobs/{job['id']}/execute")
        events = socket.collect_until(lambda e: e["type"] == "execution_completed", timeout=seconds + 30)
        assert events[-1]["data"]["status"] == "completed"
        assert socket.ws.connected


def test_a_socket_closes_when_its_token_expires(platform):
    _, issued = _user(platform, "short-lived")
    claims = pyjwt.decode(issued, options={"verify_signature": False})
    token = pyjwt.encode({**claims, "exp": int(time.time()) + 2}, platform.jwt_secret(), algorithm="HS256")
    with _subscribed(platform, token) as socket:
        assert socket.close_code(timeout=2 + ws_module.REVALIDATE_SECONDS + 5) == POLICY_VIOLATION
