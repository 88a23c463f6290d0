"""The production shape end to end: `honcho -f Procfile start` (gunicorn web, celery worker, celery
beat) on an EMPTY PostgreSQL database and a Redis database of its own; a job on three sshd hosts
executed over real HTTP, every event received in order on a WebSocket, results read back by serial."""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    EventSocket,
    HonchoStack,
    assert_execution_events,
    assert_utc,
    honcho_stack,
    pg_tables,
    ws_url,
)
from tests.sshd import TEST_HOSTS, wait_until

pytestmark = pytest.mark.slow

ADMIN = ("e2e-admin", "e2e-admin-" + secrets.token_urlsafe(12))
EXPECTED_TABLES = {"alembic_version", "users", "credentials", "targets", "jobs", "executions", "branches"}


@pytest.fixture(scope="module")
def stack(empty_pg_url, e2e_redis_url, tmp_path_factory) -> Iterator[HonchoStack]:
    assert pg_tables(empty_pg_url) == [], "the stack must start on an empty database"
    with honcho_stack(tmp_path_factory.mktemp("procfile"), ADMIN, DATABASE_URL=empty_pg_url, REDIS_URL=e2e_redis_url,
                      WEB_WORKERS="2") as running:
        yield running


def test_procfile_has_started_web_worker_and_beat_and_migrated_the_empty_database(stack, empty_pg_url):
    assert EXPECTED_TABLES <= set(pg_tables(empty_pg_url))
    ready = httpx.get(stack.base_url + "/readyz", timeout=5).json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    # honcho reports each Procfile process as started; the worker and beat log their readiness
    wait_until(lambda: all(f"{name} started" in stack.honcho.stdout() or f"{name}.1 started" in stack.honcho.stdout()
                           for name in ("web", "worker", "beat")),
               timeout=10, message="honcho to report web, worker and beat started")
    wait_until(lambda: "ready." in stack.honcho.stdout(), timeout=30, message="the celery worker to be ready")
    wait_until(lambda: "beat: Starting" in stack.honcho.stdout(), timeout=30, message="celery beat to start")


def test_job_on_three_sshd_targets_streams_events_in_order_and_reads_back_by_serial(
        stack, e2e_sshd, client_key, ssh_user):
    api = stack.api
    login = api.login(*ADMIN)
    assert login["access_token"] and login["refresh_token"]

    credential = api.post("/api/credentials", {"name": "e2e-key", "username": ssh_user.name, "auth_type": "key",
                                               "private_key": client_key.private_key})
    assert "private_key" not in credential
    targets = [api.post("/api/targets", {"name": f"e2e-host-{i}", "ip_address": host, "port": e2e_sshd.port,
                                         "credential_id": credential["id"], "tags": ["e2e"]})
               for i, host in enumerate(TEST_HOSTS, start=1)]
    job = api.post("/api/jobs", {
        "name": "E2E three hosts", "job_type": "command", "target_ids": [t["id"] for t in targets],
        "actions": [
            {"action_type": "command", "action_name": "where",
             "action_parameters": {"command": 'echo "e2e-one $SSH_CONNECTION"'}},
            {"action_type": "command", "action_name": "who",
             "action_parameters": {"command": "printf 'e2e-two %s\\n' \"$(id -un)\""}},
        ]})
    job_serial = job["job_serial"]

    with EventSocket(ws_url(stack.base_url, f"job_serial={job_serial}"),
                     headers={"Authorization": f"Bearer {api.token}"}) as socket:
        subscribed = socket.next_json(timeout=10)
        assert subscribed == {"type": "subscribed", "data": {"job_serial": job_serial}}

        execution = api.post(f"/api/jobs/{job_serial}/execute")
        execution_serial = execution["execution_serial"]
        assert execution_serial == f"{job_serial}.0001"
        assert len(execution["branches"]) == 3
        branches = {b["branch_serial"]: b["target_serial_ref"] for b in execution["branches"]}
        assert set(branches.values()) == {t["target_serial"] for t in targets}

        events = socket.collect_until(lambda e: e["type"] == "execution_completed", timeout=60)
    assert_execution_events(events, execution_serial=execution_serial, job_serial=job_serial, branches=branches)

    # The results, by serial
    detail = api.get(f"/api/executions/serial/{execution_serial}")
    assert detail["execution_serial"] == execution_serial
    assert detail["status"] == "completed"
    assert detail["trigger"] == "manual"
    assert_utc(detail["started_at"])
    assert_utc(detail["completed_at"])
    assert {k: detail["job"][k] for k in ("id", "job_serial", "name")} == {
        "id": job["id"], "job_serial": job_serial, "name": "E2E three hosts"}
    assert sorted(b["branch_serial"] for b in detail["branches"]) == sorted(branches)
    assert all(b["status"] == "completed" and b["exit_code"] == 0 for b in detail["branches"]), detail["branches"]

    by_target = {t["id"]: t for t in targets}
    for summary in detail["branches"]:
        branch = api.get(f"/api/executions/branch/{summary['branch_serial']}")
        target = by_target[branch["target_id"]]
        assert branch["branch_serial"] == summary["branch_serial"]
        assert branch["execution_serial"] == execution_serial
        assert branch["status"] == "completed"
        assert branch["exit_code"] == 0
        assert branch["target_serial_ref"] == target["target_serial"]
        assert_utc(branch["completed_at"])
        # the command really ran over SSH on that address, as the test user, both actions in order
        output = branch["result_output"]
        assert re.search(rf"^e2e-one \S+ \d+ {re.escape(target['ip_address'])} {e2e_sshd.port}$", output, re.M), output
        assert f"e2e-two {ssh_user.name}" in output, output
        assert output.index("e2e-one") < output.index("e2e-two"), output
        assert [s["action_name"] for s in branch["steps"]] == ["where", "who"]
        assert all(s["status"] == "completed" and s["exit_code"] == 0 for s in branch["steps"]), branch["steps"]
        assert branch["target"]["id"] == target["id"]
        assert branch["target"]["target_serial"] == target["target_serial"]
        assert branch["target"]["name"] == target["name"]
        assert branch["target"]["ip_address"] == target["ip_address"]


def test_query_token_is_accepted_and_kept_out_of_the_access_log(stack):
    token = stack.api.login(*ADMIN)["access_token"]
    with EventSocket(ws_url(stack.base_url, f"token={token}")) as socket:
        assert socket.next_json(timeout=10) == {"type": "subscribed", "data": {}}
    # gunicorn's access log format must not carry query strings: a marker request proves which
    # format is in use and that the log has been flushed up to here
    marker = secrets.token_hex(8)
    assert httpx.get(f"{stack.base_url}/healthz?token={token}&marker={marker}", timeout=5).status_code == 200
    wait_until(lambda: '"GET /healthz" 200' in stack.honcho.stdout(), timeout=15,
               message="gunicorn to log the marker request")
    log = stack.honcho.stdout()
    assert token not in log
    assert marker not in log
    assert "token=" not in log
