"""The execution engine end to end with real parts: the Flask API (PostgreSQL, Celery producer on
Redis, Redis event bus), a real Celery worker subprocess, and OpenSSH sshd on 127.0.0.2-4."""
from __future__ import annotations

import re
import socket

import pytest

from common.hostkeys import fingerprint
from tests.integration.engine_helpers import (
    branch_rows,
    command,
    describe_execution,
    execution_row,
    sleep_marker,
    step_rows,
    wait_execution_done,
    wait_for,
)
from tests.sshd import TEST_HOSTS, SshdServer, find_processes, free_port

pytestmark = pytest.mark.usefixtures("default_worker")

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
HOST_OF_CONNECTION = "$(echo $SSH_CONNECTION | cut -d' ' -f3)"  # the address the target was reached on
EVENT_TYPES = ("execution_started", "branch_started", "branch_completed", "execution_completed")


def _count(events: list[dict], event_type: str) -> int:
    return sum(e["type"] == event_type for e in events)


def _ids(targets: list[dict]) -> list[int]:
    return [t["id"] for t in targets]


def test_execute_on_three_hosts_runs_every_action_and_publishes_events_in_order(
        api, engine_db, ssh_targets, events, default_worker):
    job = api.job([command("where", f"echo step1 {HOST_OF_CONNECTION}"),
                   command("who", "echo step2 $(id -un)")], _ids(ssh_targets))

    body = api.execute(job["id"])

    year = body["started_at"][:4]
    serial = body["execution_serial"]
    assert re.fullmatch(rf"J{year}\d{{4,}}\.0001", serial), serial
    assert serial == f"{job['job_serial']}.0001"
    assert body["execution_number"] == 1
    assert body["status"] == "running"
    assert body["trigger"] == "manual"
    assert RFC3339_Z.match(body["started_at"])
    assert [b["branch_serial"] for b in body["branches"]] == [f"{serial}.0001", f"{serial}.0002", f"{serial}.0003"]
    assert [b["branch_id"] for b in body["branches"]] == ["001", "002", "003"]
    assert [b["target_serial_ref"] for b in body["branches"]] == [t["target_serial"] for t in ssh_targets]
    assert [b["target_id"] for b in body["branches"]] == _ids(ssh_targets)
    assert {b["status"] for b in body["branches"]} == {"queued"}

    execution = wait_execution_done(engine_db, serial, logs=default_worker.log_tail)
    assert execution.status == "completed", describe_execution(engine_db, serial)
    assert execution.completed_at is not None
    branches = branch_rows(engine_db, serial)
    for branch, host in zip(branches, TEST_HOSTS, strict=True):
        assert (branch.status, branch.exit_code, branch.error_type) == ("completed", 0, None)
        assert branch.started_at is not None and branch.completed_at is not None and branch.duration >= 0
        steps = step_rows(engine_db, branch.id)
        assert [(s.position, s.action_name, s.status, s.exit_code) for s in steps] == \
            [(1, "where", "completed", 0), (2, "who", "completed", 0)]
        assert steps[0].stdout == f"step1 {host}\n"
        assert steps[1].stdout == "step2 opsc-test\n"
        assert branch.result_output == f"step1 {host}\nstep2 opsc-test\n"
    assert api.get_job(job["id"])["status"] == "completed"

    received = events.wait(serial, lambda evs: _count(evs, "branch_completed") == 3
                           and _count(evs, "execution_completed") == 1, message="all events of the execution")
    received = [e for e in received if e["type"] != "branch_output"]  # live output: not numbered, tested apart
    types = [e["type"] for e in received]
    assert types[0] == "execution_started", types
    assert [_count(received, t) for t in EVENT_TYPES] == [1, 3, 3, 1], types
    for b in body["branches"]:
        mine = [e["type"] for e in received if e["data"].get("branch_serial") == b["branch_serial"]]
        assert mine == ["branch_started", "branch_completed"], (b["branch_serial"], types)
    closing_at = types.index("execution_completed")
    assert "branch_started" not in types[closing_at:] and "branch_completed" in types[:closing_at], types
    for event in received:
        assert set(event) == {"type", "data"}
    started = received[0]["data"]
    assert started["execution_serial"] == serial and started["job_serial"] == job["job_serial"]
    assert started["status"] == "running" and RFC3339_Z.match(started["started_at"])
    completed_branches = {e["data"]["branch_serial"]: e["data"] for e in received if e["type"] == "branch_completed"}
    for b in body["branches"]:
        data = completed_branches[b["branch_serial"]]
        assert data["execution_serial"] == serial
        assert data["target_serial_ref"] == b["target_serial_ref"]
        assert (data["status"], data["exit_code"]) == ("completed", 0)
        assert RFC3339_Z.match(data["completed_at"])
    final = received[closing_at]["data"]
    assert (final["execution_serial"], final["job_serial"], final["status"]) == (serial, job["job_serial"], "completed")
    assert RFC3339_Z.match(final["completed_at"])
    # numbered in commit order, gapless: execution_completed has the last number (on the raw channel
    # finishers publish after their own commits, so arrival order may differ; the WebSocket sorts)
    by_seq = sorted(received, key=lambda e: e["data"]["seq"])
    assert [e["data"]["seq"] for e in by_seq] == list(range(1, len(received) + 1))
    assert by_seq[-1]["type"] == "execution_completed"
    assert final["branch_count"] == 3


def test_failing_action_stops_the_branch(api, engine_db, ssh_targets, default_worker):
    body = api.run([command("fails", "echo before; echo oops >&2; exit 3"), command("never", "echo never")],
                   _ids(ssh_targets[:1]))

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "failed"
    [branch] = branch_rows(engine_db, body["execution_serial"])
    assert (branch.status, branch.error_type, branch.exit_code) == ("failed", "command_failed", 3)
    steps = step_rows(engine_db, branch.id)
    assert [(s.action_name, s.status, s.exit_code, s.stdout, s.stderr) for s in steps] == \
        [("fails", "failed", 3, "before\n", "oops\n")]
    assert execution_row(engine_db, body["execution_serial"]).completed_at is not None


def test_nul_bytes_in_output_are_stored_as_replacement_characters(api, engine_db, ssh_targets, default_worker):
    """PostgreSQL text cannot hold NUL: output with one must still be recorded, not lose the branch."""
    body = api.run([command("nul", r"printf 'a\000b'; printf 'c\000' >&2"), command("last", r"printf 'x\000y'")],
                   _ids(ssh_targets[:1]))

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "completed", describe_execution(engine_db, body["execution_serial"])
    [branch] = branch_rows(engine_db, body["execution_serial"])
    assert (branch.result_output, branch.result_error) == ("a\ufffdbx\ufffdy", "c\ufffd")
    steps = step_rows(engine_db, branch.id)
    assert [(s.stdout, s.stderr) for s in steps] == [("a\ufffdb", "c\ufffd"), ("x\ufffdy", "")]


def test_continue_on_error_runs_the_next_action(api, engine_db, ssh_targets, default_worker):
    body = api.run([command("fails", "exit 5", continue_on_error=True), command("after", "echo after")],
                   _ids(ssh_targets[:1]))

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "completed"
    [branch] = branch_rows(engine_db, body["execution_serial"])
    assert (branch.status, branch.error_type, branch.exit_code) == ("completed", None, 0)
    steps = step_rows(engine_db, branch.id)
    assert [(s.action_name, s.status, s.exit_code, s.stdout) for s in steps] == \
        [("fails", "failed", 5, ""), ("after", "completed", 0, "after\n")]


def test_one_failed_branch_fails_the_execution(api, engine_db, ssh_targets, default_worker):
    fail_on_second_host = f'case " $SSH_CONNECTION " in *" {TEST_HOSTS[1]} "*) echo no; exit 7;; esac; echo ok'
    body = api.run([command("maybe", fail_on_second_host)], _ids(ssh_targets))

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "failed"
    branches = branch_rows(engine_db, body["execution_serial"])
    assert [(b.status, b.error_type, b.exit_code, b.result_output) for b in branches] == [
        ("completed", None, 0, "ok\n"), ("failed", "command_failed", 7, "no\n"), ("completed", None, 0, "ok\n")]
    job = api.get_job(body["execution_serial"].split(".")[0])
    assert job["status"] == "failed"


def test_action_timeout_ends_the_branch_timed_out(api, engine_db, ssh_targets, default_worker):
    marker = sleep_marker()
    body = api.run([command("slow", f"echo started; sleep 30 {marker}", timeout=1), command("never", "echo no")],
                   _ids(ssh_targets[:1]))

    execution = wait_execution_done(engine_db, body["execution_serial"], timeout=15, logs=default_worker.log_tail)

    assert execution.status == "failed"
    [branch] = branch_rows(engine_db, body["execution_serial"])
    assert (branch.status, branch.error_type) == ("timed_out", "timeout")
    assert branch.duration < 10
    steps = step_rows(engine_db, branch.id)
    assert [(s.action_name, s.status, s.error_type, s.stdout) for s in steps] == \
        [("slow", "timed_out", "timeout", "started\n")]
    wait_for(lambda: not find_processes(marker), 5, message="the timed-out remote command to be killed")


def test_connect_failures_are_classified(api, engine_db, sshd, stranger_key, default_worker):
    wrong_key = api.credential(private_key=stranger_key.private_key)
    wrong_password = api.credential(password="not-the-password")
    closed_port = free_port(("127.0.0.2",))
    targets = [api.target(ip="127.0.0.2", port=sshd.port, credential_id=wrong_key),
               api.target(ip="127.0.0.3", port=sshd.port, credential_id=wrong_password),
               api.target(ip="127.0.0.2", port=closed_port, credential_id=wrong_key)]
    body = api.run([command("noop", "true")], _ids(targets))

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "failed"
    branches = branch_rows(engine_db, body["execution_serial"])
    assert [(b.status, b.error_type) for b in branches] == [
        ("failed", "auth_failed"), ("failed", "auth_failed"), ("failed", "unreachable")]
    assert all(not step_rows(engine_db, b.id) for b in branches)  # no action ever started
    assert "refused" in branches[2].result_error


@pytest.fixture
def rekeyable_sshd(ssh_user, client_key):
    """A private sshd on 127.0.0.5 that this test restarts with a new host key."""
    with SshdServer(("127.0.0.5",)) as server:
        server.authorize(client_key.public_line)
        yield server


def test_changed_host_key_fails_as_host_key_mismatch(api, engine_db, rekeyable_sshd, ssh_credential,
                                                     default_worker):
    target = api.target(ip="127.0.0.5", port=rekeyable_sshd.port, credential_id=ssh_credential)
    assert target["host_key_fingerprint"] is None
    job = api.job([command("hello", "echo hello")], [target["id"]])

    first = api.execute(job["id"])
    assert wait_execution_done(engine_db, first["execution_serial"], logs=default_worker.log_tail).status == "completed"
    pinned = api.get_target(target["id"])["host_key_fingerprint"]
    assert pinned == fingerprint(rekeyable_sshd.host_key_line)

    rekeyable_sshd.restart(new_host_key=True)
    second = api.execute(job["id"])

    assert wait_execution_done(engine_db, second["execution_serial"], logs=default_worker.log_tail).status == "failed"
    [branch] = branch_rows(engine_db, second["execution_serial"])
    assert (branch.status, branch.error_type) == ("failed", "host_key_mismatch")
    assert not step_rows(engine_db, branch.id)
    assert api.get_target(target["id"])["host_key_fingerprint"] == pinned  # the pin is never replaced silently


def test_queue_routes_branches_to_the_workers_consuming_it(api, engine_db, sshd, ssh_credential, ssh_targets,
                                                           start_celery, default_worker):
    agent_target = api.target(ip="127.0.0.4", port=sshd.port, credential_id=ssh_credential, queue="agent-x")
    body = api.run([command("hello", "echo hello")], [ssh_targets[0]["id"], agent_target["id"]])
    serial = body["execution_serial"]

    # The default-queue branch finishing is the sync point: the same worker has had its chance at both.
    wait_for(lambda: branch_rows(engine_db, serial)[0].status == "completed", 15,
             message="the default-queue branch", describe=lambda: describe_execution(engine_db, serial))
    routed = branch_rows(engine_db, serial)[1]
    assert (routed.status, routed.worker, routed.queue) == ("queued", None, "agent-x")
    assert routed.dispatched_at is not None
    assert execution_row(engine_db, serial).status == "running"

    agent = start_celery("worker", queues=["agent-x"])

    execution = wait_execution_done(engine_db, serial, logs=agent.log_tail)
    assert execution.status == "completed"
    default_branch, routed = branch_rows(engine_db, serial)
    assert routed.status == "completed" and routed.result_output == "hello\n"
    assert routed.worker == agent.runtime_name
    assert default_branch.worker == default_worker.runtime_name


def test_local_target_runs_on_the_worker_host(api, engine_db, default_worker):
    target = api.target(connection="local")
    body = api.run([command("whereami", "echo $(hostname) $(id -un)"), command("pid", "echo $PPID")],
                   [target["id"]])

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "completed", describe_execution(engine_db, body["execution_serial"])
    [branch] = branch_rows(engine_db, body["execution_serial"])
    steps = step_rows(engine_db, branch.id)
    # this host, not the sshd login user: it ran in the worker's process tree, and the root worker
    # switched to the default LOCAL_RUN_AS account
    assert steps[0].stdout == f"{socket.gethostname()} nobody\n"
    assert branch.worker == default_worker.runtime_name


def test_cancel_kills_the_running_remote_processes(api, engine_db, ssh_targets, events, default_worker):
    marker = sleep_marker()
    body = api.run([command("long", f"sleep 60 {marker}"), command("never", "echo never")], _ids(ssh_targets))
    serial = body["execution_serial"]
    wait_for(lambda: all(b.status == "running" for b in branch_rows(engine_db, serial)), 15,
             message="all branches running", describe=lambda: describe_execution(engine_db, serial))
    # one remote sleep per host (the login shell may exec it, so count at least the sleeps)
    wait_for(lambda: len(find_processes(f"sleep 60 {marker}")) >= 3, 10, message="the remote sleeps to start")

    response = api.cancel(serial)
    assert response["execution_serial"] == serial

    execution = wait_execution_done(engine_db, serial, timeout=8, logs=default_worker.log_tail)
    assert execution.status == "cancelled"
    branches = branch_rows(engine_db, serial)
    assert [(b.status, b.error_type) for b in branches] == [("cancelled", "cancelled")] * 3
    assert all(b.duration < 8 for b in branches)
    for branch in branches:
        assert [(s.action_name, s.status) for s in step_rows(engine_db, branch.id)] == [("long", "cancelled")]
    wait_for(lambda: not find_processes(marker), 3, message="no remote process with the marker",
             describe=lambda: f"left: {find_processes(marker)}")
    assert api.get_job(serial.split(".")[0])["status"] == "cancelled"
    received = events.wait(serial, lambda evs: _count(evs, "branch_completed") == 3
                           and _count(evs, "execution_completed") == 1, message="the cancel events")
    assert {e["data"]["status"] for e in received if e["type"] in ("branch_completed", "execution_completed")} \
        == {"cancelled"}


def test_cancel_of_queued_branches_ends_them_at_once(api, engine_db, sshd, ssh_credential, default_worker):
    nobody = f"nobody-{sshd.port}"
    targets = [api.target(ip=host, port=sshd.port, credential_id=ssh_credential, queue=nobody)
               for host in TEST_HOSTS]
    body = api.run([command("never", "echo never")], _ids(targets))
    assert {b["status"] for b in body["branches"]} == {"queued"}

    response = api.cancel(body["execution_serial"])

    assert response["status"] == "cancelled"
    assert [(b["status"], b["error_type"]) for b in response["branches"]] == [("cancelled", "cancelled")] * 3
    assert response["completed_at"] is not None
    branches = branch_rows(engine_db, body["execution_serial"])
    assert all(b.started_at is None and b.worker is None for b in branches)
    assert all(not step_rows(engine_db, b.id) for b in branches)
    # cancelling again is harmless
    assert api.cancel(body["execution_serial"])["status"] == "cancelled"


def test_each_step_is_committed_when_its_action_ends_and_says_why_it_ended(api, engine_db, ssh_targets,
                                                                         default_worker):
    """A worker dying during action k must not take step k-1 with it; a timeout says so in words."""
    marker = sleep_marker()
    body = api.run([command("first", "echo one"), command("second", f"echo two; sleep 30 {marker}", timeout=3)],
                   _ids(ssh_targets[:1]))
    serial = body["execution_serial"]
    [branch] = branch_rows(engine_db, serial)
    wait_for(lambda: find_processes(marker), 15, message="the second action to start",
             describe=lambda: describe_execution(engine_db, serial))
    steps = wait_for(lambda: step_rows(engine_db, branch.id), 5, message="the first step's row",
                     describe=lambda: describe_execution(engine_db, serial))
    assert [(s.action_name, s.status, s.stdout) for s in steps] == [("first", "completed", "one\n")]

    wait_execution_done(engine_db, serial, timeout=15, logs=default_worker.log_tail)
    [branch] = branch_rows(engine_db, serial)
    assert (branch.status, branch.error_type) == ("timed_out", "timeout")
    last = step_rows(engine_db, branch.id)[-1]
    assert last.action_name == "second" and "[opsconductor] command did not finish within 3s" in last.stderr
    assert "command did not finish within 3s" in branch.result_error
    assert "remote process group" in branch.result_error  # what the runner did about it
