"""Live output end to end: a real Celery worker running branches over a real sshd publishes what they
print as branch_output events and keeps it readable from any offset, while they run and after; the
values of secrets never leave the worker; a branch printing 50 MB holds up no other branch."""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.engine_helpers import (
    branch_row,
    branch_rows,
    command,
    describe_execution,
    step_rows,
    unique,
    wait_execution_done,
)
from tests.sshd import TEST_KEY_PASSPHRASE

pytestmark = pytest.mark.usefixtures("default_worker")

PASSPHRASE = TEST_KEY_PASSPHRASE


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file the remote command waits for: the test decides when the branch goes on."""
    path = Path("/tmp") / f"opsc-gate-{secrets.token_hex(4)}"
    yield path
    path.unlink(missing_ok=True)


def _outputs(events: list[dict], branch_serial: str, stream: str = "stdout") -> list[dict]:
    return [e["data"] for e in events if e["type"] == "branch_output" and e["data"]["branch_serial"] == branch_serial
            and e["data"]["stream"] == stream]


def _text(events: list[dict], branch_serial: str, stream: str = "stdout") -> str:
    return "".join(e["data"] for e in _outputs(events, branch_serial, stream))


def _output(api, branch_serial: str, **query: object) -> dict:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return api.call("GET", f"/api/executions/branch/{branch_serial}/output?{params}", 200)


def test_output_is_live_while_the_branch_runs_and_reads_the_same_after(api, engine_db, ssh_targets, events, gate):
    body = api.run([command("first", "echo one"),
                    command("second", f"printf 'two '; while [ ! -e {gate} ]; do sleep 0.05; done; "
                                      "echo three; echo oops >&2")], [ssh_targets[0]["id"]])
    serial = body["execution_serial"]
    branch = body["branches"][0]["branch_serial"]

    # the first action's line and the second's unfinished one arrive while the second action waits
    events.wait(serial, lambda evs: _text(evs, branch) == "one\ntwo ", timeout=15, message="the live output")
    assert _output(api, branch) == {"branch_serial": branch, "stream": "stdout", "offset": 0, "data": "one\ntwo ",
                                    "next_offset": 8, "running": True, "truncated": False}
    assert _output(api, branch, offset=4)["data"] == "two "
    assert _output(api, branch, stream="stderr")["data"] == ""

    gate.touch()
    assert wait_execution_done(engine_db, serial, timeout=15).status == "completed", \
        describe_execution(engine_db, serial)
    after = _output(api, branch, offset=8)  # on from where the running branch's read left off
    assert after == {"branch_serial": branch, "stream": "stdout", "offset": 8, "data": "three\n", "next_offset": 14,
                     "running": False, "truncated": False}
    assert _output(api, branch, stream="stderr")["data"] == "oops\n"

    received = events.wait(serial, lambda evs: evs[-1]["type"] == "execution_completed")
    outputs = _outputs(received, branch)
    assert [e["offset"] for e in outputs] == [sum(len(o["data"].encode()) for o in outputs[:i])
                                              for i in range(len(outputs))]
    assert _text(received, branch) == "one\ntwo three\n" == branch_rows(engine_db, serial)[0].result_output
    assert {e["job_serial"] for e in outputs} == {serial.split(".")[0]}
    kinds = [e["type"] for e in received if e["data"].get("branch_serial") == branch]
    assert kinds.index("branch_completed") > max(i for i, kind in enumerate(kinds) if kind == "branch_output")


def test_output_of_unknown_and_malformed_branches(api):
    assert api.call("GET", "/api/executions/branch/J20990001.0001.0001/output", 404)["error"] == "not_found"
    assert api.call("GET", "/api/executions/branch/nope/output", 422)["details"]["field"] == "branch_serial"
    # query parameters are a 400, as on every route
    assert api.call("GET", "/api/executions/branch/J20990001.0001.0001/output?stream=stdin", 400)["details"][
        "field"] == "stream"
    assert api.call("GET", "/api/executions/branch/J20990001.0001.0001/output?offset=-1", 400)["details"][
        "field"] == "offset"


def test_secrets_never_leave_the_worker(api, engine_db, sshd, ssh_user, events, default_worker):
    """The target's password, a key's passphrase and a secret parameter, printed whole and split across
    two reads (a pause between the halves lets a flush happen), show as **** in the stored result, the
    step rows, the branch_output events and the output endpoint."""
    token = f"tok-{secrets.token_hex(8)}"
    password = ssh_user.password
    by_password = api.target(ip="127.0.0.3", port=sshd.port, credential_id=api.credential(password=password))
    key = sshd.new_client_key("ed25519", passphrase=PASSPHRASE)
    key_credential = api.call("POST", "/api/credentials", 201, {
        "name": unique("cred"), "username": ssh_user.name, "auth_type": "key", "private_key": key.private_key,
        "passphrase": PASSPHRASE})["id"]
    by_key = api.target(ip="127.0.0.4", port=sshd.port, credential_id=key_credential)

    def halves(value: str) -> str:  # the command text never holds the value whole
        return f"'{value[:5]}' '{value[5:]}'"

    job = api.job([
        command("token", 'echo "token=$OC_PARAM_TOKEN"; echo "$OC_PARAM_TOKEN" >&2'),
        command("split", 'printf %s "$OC_PARAM_TOKEN" | head -c 7; sleep 0.3; printf %s "$OC_PARAM_TOKEN" | '
                         'tail -c +8; echo'),
        command("credential", f"printf 'pw=%s%s\\n' {halves(password)}; printf 'pp=%s%s\\n' {halves(PASSPHRASE)}"),
    ], [by_password["id"], by_key["id"]], parameters=[{"name": "TOKEN", "secret": True}])
    body = api.call("POST", f"/api/jobs/{job['id']}/execute", 201, {"parameters": {"TOKEN": token}})
    serial = body["execution_serial"]
    assert wait_execution_done(engine_db, serial, timeout=20).status == "completed", \
        describe_execution(engine_db, serial)
    received = events.wait(serial, lambda evs: evs[-1]["type"] == "execution_completed")

    # each target's own credential is masked; the other's is no secret of this branch
    credential_lines = {by_password["id"]: (password, f"pw=****\npp={PASSPHRASE}\n"),
                        by_key["id"]: (PASSPHRASE, f"pw={password}\npp=****\n")}
    for branch in body["branches"]:
        own, lines = credential_lines[branch["target_id"]]
        expected = f"token=****\n****\n{lines}"
        row = branch_row(engine_db, branch["id"])
        assert row.result_output == expected and row.result_error == "****\n"
        assert [(s.stdout, s.stderr) for s in step_rows(engine_db, branch["id"])] == \
            [("token=****\n", "****\n"), ("****\n", ""), (lines, "")]
        branch_serial = branch["branch_serial"]
        assert _text(received, branch_serial) == expected and _text(received, branch_serial, "stderr") == "****\n"
        assert _output(api, branch_serial)["data"] == expected
        assert _output(api, branch_serial, stream="stderr")["data"] == "****\n"
        published = json.dumps([e for e in received if e["data"].get("branch_serial") == branch_serial])
        assert token not in published and own not in published
    assert token not in default_worker.log_text() and password not in default_worker.log_text()


FLOOD_BYTES = 50_000_000
QUICK_BOUND = 5.0  # seconds from execute to branch_completed for a one-line command beside the flood


def test_a_branch_printing_50_mb_holds_up_no_other_branch(api, engine_db, engine_settings, ssh_targets, events):
    # 50 MB in 1 MB bursts a tenth of a second apart: it floods for 5 s or more, whatever this machine's speed
    flood = api.run([command("flood", f"for i in $(seq {FLOOD_BYTES // 1_000_000}); do head -c 1000000 /dev/zero | "
                                      "tr '\\0' x; sleep 0.1; done; echo; echo done >&2")], [ssh_targets[0]["id"]])
    flood_serial = flood["execution_serial"]
    flood_branch = flood["branches"][0]
    events.wait(flood_serial, lambda evs: len(_outputs(evs, flood_branch["branch_serial"])) >= 3, timeout=15,
                message="the flood to be printing")

    started = time.monotonic()
    quick = api.run([command("quick", "echo quick")], [ssh_targets[1]["id"]])
    events.wait(quick["execution_serial"], lambda evs: any(e["type"] == "branch_completed" for e in evs),
                timeout=QUICK_BOUND, message="the quick branch's branch_completed")
    took = time.monotonic() - started
    still_flooding = branch_row(engine_db, flood_branch["id"]).status == "running"

    assert wait_execution_done(engine_db, flood_serial, timeout=120).status == "completed", \
        describe_execution(engine_db, flood_serial)
    assert still_flooding, f"the flood ended before the quick branch did ({took:.2f}s): nothing was measured"
    print(f"quick branch completed {took:.2f}s after its execute, beside a branch printing 50 MB")
    received = events.wait(flood_serial, lambda evs: evs[-1]["type"] == "execution_completed")
    outputs = _outputs(received, flood_branch["branch_serial"])
    total = FLOOD_BYTES + 1
    assert outputs[-1]["offset"] + len(outputs[-1]["data"]) == total
    assert sum(len(o["data"]) for o in outputs) == total  # every byte once, in order
    # coalesced: 64 KiB chunks, and a smaller one where a burst ends and the 100 ms flush takes it
    assert len(outputs) <= total // (64 * 1024) + FLOOD_BYTES // 1_000_000 + 5

    cap = engine_settings.output_cap_bytes
    row = branch_row(engine_db, flood_branch["id"])
    assert row.result_output.startswith("x" * (cap // 2)) and "bytes truncated by OpsConductor" in row.result_output
    assert row.result_error == "done\n"
    head = _output(api, flood_branch["branch_serial"])
    assert head["truncated"] and head["next_offset"] == total and head["data"] == row.result_output
    tail = _output(api, flood_branch["branch_serial"], offset=total - 10)
    assert tail == {"branch_serial": flood_branch["branch_serial"], "stream": "stdout", "offset": total - 10,
                    "data": "x" * 9 + "\n", "next_offset": total, "running": False, "truncated": False}
    middle = _output(api, flood_branch["branch_serial"], offset=total // 2)  # dropped by the cap
    assert middle["truncated"] and middle["offset"] == total - (cap - cap // 2)
