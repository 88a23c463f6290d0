"""Nothing lost, nothing stuck, nothing run twice: duplicate deliveries, a broker that is down at
commit time, a worker killed mid-command, and branches finishing at the same instant. Real
PostgreSQL, Redis, Celery worker/beat subprocesses and sshd."""
from __future__ import annotations

import os
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from api.dispatch import Dispatcher
from common.db import Database
from common.models import Job
from common.services.executions import claim_branch, close_if_done, finish_and_close, finish_branch, start_execution
from common.services.jobs import create_job, update_job
from common.services.targets import create_target
from common.statuses import BranchStatus, ErrorType
from common.task_names import RUN_BRANCH
from tests.integration.engine_helpers import (
    SWEEP_INTERVAL_SECONDS,
    WORKER_LOST_SECONDS,
    admin_id,
    branch_row,
    branch_rows,
    command,
    describe_execution,
    execution_row,
    job_row,
    run_together,
    sleep_marker,
    step_rows,
    unique,
    wait_execution_done,
    wait_for,
)
from tests.sshd import find_processes

pytestmark = pytest.mark.usefixtures("default_worker")


@pytest.fixture
def remote_file():
    """A path on the target host (the sshd runs on this machine), removed afterwards."""
    path = Path(f"/tmp/{unique('opsc-engine')}.log")
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def reap_marker():
    """Kills, by PID, remote commands a test left behind on purpose (a killed worker's `sleep`)."""
    markers: list[str] = []
    yield markers.append
    for marker in markers:
        for pid in find_processes(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _not_claimable(worker, branch_id: int):
    return lambda: worker.count(rf"branch not claimable .* branch_id={branch_id}\b") >= 1


def test_duplicate_delivery_runs_the_command_once(make_api, engine_db, ssh_targets, events, producer,
                                                  default_worker, remote_file):
    api = make_api(None)  # commits and publishes, sends nothing: this test does the sending
    body = api.run([command("append", f"echo ran >> {remote_file}; sleep 0.3")], [ssh_targets[0]["id"]])
    branch_id = body["branches"][0]["id"]
    branch_serial = body["branches"][0]["branch_serial"]

    for _ in range(2):
        producer.send_task(RUN_BRANCH, args=[branch_id], queue="default")

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)
    wait_for(_not_claimable(default_worker, branch_id), 10, message="the second delivery to be handled",
             describe=default_worker.log_tail)
    assert execution.status == "completed"
    assert _lines(remote_file) == ["ran"]
    assert default_worker.count(rf"branch finished branch={branch_serial} ") == 1
    received = events.wait(body["execution_serial"], lambda evs: evs and evs[-1]["type"] == "execution_completed")
    assert [e["type"] for e in received if e["data"].get("branch_serial") == branch_serial] == \
        ["branch_started", "branch_completed"]


def test_branches_queued_while_the_broker_is_down_are_dispatched_by_the_sweep(
        make_api, engine_settings, engine_db, ssh_targets, start_celery, default_worker):
    api = make_api(Dispatcher.from_settings(engine_settings.with_overrides(redis_url="redis://127.0.0.1:1/0")))

    body = api.run([command("hello", "echo hello")], [t["id"] for t in ssh_targets])  # 201: committed anyway

    serial = body["execution_serial"]
    assert [(b.status, b.dispatched_at) for b in branch_rows(engine_db, serial)] == [("queued", None)] * 3

    beat = start_celery("beat")  # the sweep runs in the beat process itself

    execution = wait_execution_done(engine_db, serial, timeout=20, logs=default_worker.log_tail)
    assert execution.status == "completed"
    branches = branch_rows(engine_db, serial)
    assert all(b.status == "completed" and b.dispatched_at is not None and b.result_output == "hello\n"
               for b in branches)
    assert beat.count(r"sweep redispatched=3 ") >= 1


def test_worker_killed_mid_command_is_failed_as_worker_lost_and_never_run_again(
        api, engine_db, sshd, ssh_credential, producer, start_celery, default_worker, remote_file, reap_marker):
    queue = unique("victim")
    target = api.target(ip="127.0.0.2", port=sshd.port, credential_id=ssh_credential, queue=queue)
    victim = start_celery("worker", queues=[queue])
    start_celery("beat")  # the sweep runs in the beat process, whatever worker dies
    marker = sleep_marker()
    reap_marker(marker)
    body = api.run([command("first", "echo one"), command("long", f"echo start >> {remote_file}; sleep 30 {marker}")],
                   [target["id"]])
    serial = body["execution_serial"]
    branch_id = body["branches"][0]["id"]
    branch_serial = body["branches"][0]["branch_serial"]
    wait_for(lambda: branch_row(engine_db, branch_id).status == "running" and _lines(remote_file) == ["start"], 15,
             message="the command to start", describe=lambda: describe_execution(engine_db, serial))

    victim.kill()
    killed_at = time.monotonic()

    wait_for(lambda: branch_row(engine_db, branch_id).status != "running", WORKER_LOST_SECONDS + 5,
             message="the lost branch to be failed", describe=lambda: describe_execution(engine_db, serial)
             + "\n" + default_worker.log_tail())
    # within the heartbeat deadline plus one sweep round (and a little scheduling slack)
    assert time.monotonic() - killed_at < WORKER_LOST_SECONDS + SWEEP_INTERVAL_SECONDS + 3
    branch = branch_row(engine_db, branch_id)
    assert (branch.status, branch.error_type, branch.worker) == ("failed", "worker_lost", victim.runtime_name)
    assert "not retried" in branch.result_error
    assert wait_execution_done(engine_db, serial).status == "failed"
    # the step that ended before the worker died was committed when it ended, and its output is readable
    assert [(s.action_name, s.status, s.stdout) for s in step_rows(engine_db, branch_id)] == \
        [("first", "completed", "one\n")]
    assert api.call("GET", f"/api/executions/branch/{branch_serial}/output", 200)["data"] == "one\n"

    # Its message is delivered again (a successor on the same queue, the task sent once more):
    # the branch is not queued any more, so nothing runs.
    successor = start_celery("worker", queues=[queue])
    producer.send_task(RUN_BRANCH, args=[branch_id], queue=queue)
    wait_for(_not_claimable(successor, branch_id), 10, message="the redelivery to be handled",
             describe=successor.log_tail)
    assert _lines(remote_file) == ["start"]
    again = branch_row(engine_db, branch_id)
    assert (again.status, again.error_type, again.worker, again.completed_at) == \
        ("failed", "worker_lost", victim.runtime_name, branch.completed_at)


BRANCHES = 12


@pytest.fixture(scope="module")
def race_job(engine_db) -> int:
    """A job on BRANCHES local targets, made through the services (nothing here is dispatched)."""
    with engine_db.session() as session:
        targets = [create_target(session, {"name": unique("race"), "connection": "local"}, user_id=None,
                                 role="admin") for _ in range(BRANCHES)]
        job = create_job(session, {"name": unique("race"), "target_ids": [t.id for t in targets],
                                   "actions": [{"action_type": "command", "action_name": "noop",
                                                "action_parameters": {"command": "true"},
                                                "timeout_seconds": None, "continue_on_error": False}]},
                         user_id=admin_id(session), role="admin")
        return job.id


@pytest.mark.parametrize("path", ["finish_and_close", "tightest"])
@pytest.mark.parametrize("scenario", ["all_complete", "one_fails", "two_finishers_per_branch"])
def test_branches_finishing_at_the_same_instant_close_the_execution_exactly_once(pg_url, engine_db, race_job,
                                                                                 scenario, path):
    """`finish_and_close` is what workers and the sweep call; `tightest` opens every finisher's
    transaction before the barrier, so the finishing updates themselves run at the same instant."""
    db = Database(pg_url, pool_size=2 * BRANCHES + 2, max_overflow=0)
    try:
        with db.session() as session:
            execution = start_execution(session, session.get(Job, race_job), role="admin")
            serial, branch_ids = execution.execution_serial, [b.id for b in execution.branches]
        for branch_id in branch_ids:
            with db.session() as session:
                assert claim_branch(session, branch_id, "race-test")[0] is not None

        calls: list[tuple[int, BranchStatus, int | None]] = []
        for i, branch_id in enumerate(branch_ids):
            if scenario == "one_fails" and i == 3:
                calls.append((branch_id, BranchStatus.FAILED, 1))
            else:
                calls.append((branch_id, BranchStatus.COMPLETED, 0))
            if scenario == "two_finishers_per_branch":  # e.g. the worker and the lost-worker sweep
                calls.append((branch_id, BranchStatus.FAILED, None))
        def finish(index: int, go) -> list:
            branch_id, status, code = calls[index]
            error_type = None if status == BranchStatus.COMPLETED else ErrorType.COMMAND_FAILED
            if path == "finish_and_close":
                go()
                return finish_and_close(db, branch_id, status, exit_code=code, error_type=error_type)
            with db.session() as session:
                session.connection()  # connected and in a transaction before the race starts
                go()
                events, execution_id = finish_branch(session, branch_id, status, exit_code=code,
                                                     error_type=error_type)
            if execution_id is not None:  # as finish_and_close does: check for the close after commit
                with db.session() as session:
                    events += close_if_done(session, execution_id)
            return events

        results = run_together([partial(finish, i) for i in range(len(calls))])
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors

        emitted = [event for r in results for event in r]
        closing = [data for kind, data in emitted if kind == "execution_completed"]
        finished = sorted(data["branch_serial"] for kind, data in emitted if kind == "branch_completed")
        assert len(closing) == 1, closing
        assert finished == sorted(b.branch_serial for b in branch_rows(engine_db, serial))  # each exactly once

        row = execution_row(engine_db, serial)
        statuses = [b.status for b in branch_rows(engine_db, serial)]
        assert "running" not in statuses
        expected = "completed" if set(statuses) == {"completed"} else "failed"
        if scenario == "all_complete":
            assert expected == "completed"
        if scenario == "one_fails":
            assert statuses.count("failed") == 1 and expected == "failed"
        assert row.status == expected == closing[0]["status"]
        assert row.completed_at is not None
        naive = row.completed_at.replace(tzinfo=None)
        assert closing[0]["completed_at"] == naive.isoformat(timespec="milliseconds" if naive.microsecond
                                                             else "seconds") + "Z"  # the time set, once
        assert job_row(engine_db, race_job).status == expected
    finally:
        db.dispose()


def test_execution_whose_closing_check_never_ran_is_closed_by_the_sweep(engine_db, race_job, start_celery,
                                                                        default_worker, events):
    """The process that finished the last branch died between its commit and its closing check."""
    with engine_db.session() as session:
        execution = start_execution(session, session.get(Job, race_job), role="admin")
        serial, branch_ids = execution.execution_serial, [b.id for b in execution.branches]
    for branch_id in branch_ids:
        with engine_db.session() as session:
            claim_branch(session, branch_id, "died-before-closing")
            finish_branch(session, branch_id, BranchStatus.COMPLETED, exit_code=0)  # and no close_if_done
    assert execution_row(engine_db, serial).status == "running"

    start_celery("beat")  # the sweep runs in the beat process

    closed = wait_execution_done(engine_db, serial, timeout=20, logs=default_worker.log_tail)
    assert closed.status == "completed" and closed.completed_at is not None
    received = events.wait(serial, lambda evs: any(e["type"] == "execution_completed" for e in evs),
                           message="execution_completed from the sweep")
    assert [e["data"]["status"] for e in received if e["type"] == "execution_completed"] == ["completed"]


def test_editing_a_job_never_changes_an_execution_already_started(engine_db, race_job):
    with engine_db.session() as session:
        execution = start_execution(session, session.get(Job, race_job), role="admin")
        branch_id = execution.branches[0].id
    with engine_db.session() as session:
        update_job(session, str(race_job), {"actions": [{"action_type": "command", "action_name": "edited",
                                                         "action_parameters": {"command": "echo edited"},
                                                         "timeout_seconds": None, "continue_on_error": False}]},
                   user_id=admin_id(session), role="admin")
    with engine_db.session() as session:
        work, _ = claim_branch(session, branch_id, "snapshot-test")
    assert [(a["action_name"], a["parameters"]) for a in work.actions] == [("noop", {"command": "true"})]
