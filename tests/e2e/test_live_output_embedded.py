"""Live output in the embedded default (`opsconductor standalone`: in-process worker, event bus and output
store, SQLite): a WebSocket with `?include=output` gets the branch_output events, one without does not,
the output endpoint reads the running branch, and a secret parameter shows as **** everywhere."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Api, EventSocket, ws_url
from tests.sdk.conftest import live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    # a subprocess: a second embedded platform in this process would share Celery's in-memory transport
    # and task registry with the ones other modules start
    with live_server(tmp_path_factory.mktemp("live-embedded")) as server:
        client = Api(server.base_url)
        try:
            client.login(server.admin_username, server.admin_password)
            yield client
        finally:
            client.close()


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file the command waits for (the server runs on this host); the action's timeout is the backstop."""
    path = Path("/tmp") / f"opsc-gate-{secrets.token_hex(4)}"
    yield path
    path.unlink(missing_ok=True)


def _socket(api: Api, query: str) -> EventSocket:
    socket = EventSocket(ws_url(api.base_url, query), headers=api.headers())
    assert socket.next_json()["type"] == "subscribed"
    return socket


def test_a_running_branch_is_watched_live_on_the_socket_and_read_from_the_endpoint(api, gate):
    token = f"tok-{secrets.token_hex(6)}"
    target = api.post("/api/targets", {"name": "live-local", "connection": "local"})
    job = api.post("/api/jobs", {
        "name": "live output", "target_ids": [target["id"]], "parameters": [{"name": "TOKEN", "secret": True}],
        "actions": [{"action_type": "command", "action_name": "talk", "timeout_seconds": 30, "action_parameters": {
            "command": f'echo "token=$OC_PARAM_TOKEN"; while [ ! -e {gate} ]; do sleep 0.05; done; echo bye'}}]})
    job_filter = f"job_serial={job['job_serial']}"
    with _socket(api, f"{job_filter}&include=output") as watching, _socket(api, job_filter) as plain:
        execution = api.post(f"/api/jobs/{job['id']}/execute", {"parameters": {"TOKEN": token}})
        branch = execution["branches"][0]["branch_serial"]

        first = watching.collect_until(lambda e: e["type"] == "branch_output")[-1]["data"]
        assert first == {"execution_serial": execution["execution_serial"], "job_serial": job["job_serial"],
                         "branch_serial": branch, "stream": "stdout", "offset": 0, "data": "token=****\n"}
        live = api.get(f"/api/executions/branch/{branch}/output")
        assert (live["data"], live["next_offset"], live["running"]) == ("token=****\n", 11, True)

        gate.touch()
        seen = watching.collect_until(lambda e: e["type"] == "execution_completed")
        assert [e["data"]["data"] for e in seen if e["type"] == "branch_output"] == ["bye\n"]
        assert not [e for e in plain.collect_until(lambda e: e["type"] == "execution_completed")
                    if e["type"] == "branch_output"]

    after = api.get(f"/api/executions/branch/{branch}/output?offset=11")
    assert (after["offset"], after["data"], after["next_offset"], after["running"]) == (11, "bye\n", 15, False)
    stored = api.get(f"/api/executions/branch/{branch}")
    assert stored["result_output"] == "token=****\nbye\n" and token not in str(stored)
