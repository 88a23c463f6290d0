"""Cron schedules fire against real PostgreSQL: each tick once, even with two maintenance loops racing
on a due job; ticks missed while the platform was down fire once on its return; archived jobs never
fire; and end to end, a real beat process fires a cron job that a real worker runs on sshd."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from common.broker import LossWitness
from common.cron import next_tick
from common.models import Branch, Job, Target, utcnow
from common.services.executions import close_if_done, finish_branch
from common.services.jobs import archive_job, create_job
from common.services.targets import create_target
from common.statuses import BranchStatus
from tests.integration.engine_helpers import (
    admin_id,
    command,
    describe_execution,
    end_execution,
    executions_of,
    job_row,
    run_together,
    unique,
    wait_execution_done,
    wait_for,
)
from worker.maintenance import Maintenance

EVERY_MINUTE = {"cron": "* * * * *", "timezone": "UTC"}


class Sent:
    """The broker side of `send`, recorded: the firing is the subject here, not the run."""

    def __init__(self) -> None:
        self.items: list = []

    def __call__(self, name: str, items: list) -> None:
        self.items.append((name, items))


def _loop(engine_settings, engine_db) -> Maintenance:
    return Maintenance(engine_settings, engine_db, None, Sent(), LossWitness("memory://"))


def _wait_clear_of_a_minute_boundary(margin: int = 20) -> None:
    """Until the next every-minute tick is at least `margin` seconds away: the test's own steps then
    never meet a real tick."""
    while datetime.now(UTC).second > 60 - margin:
        time.sleep(0.5)


def _set_next_run_at(engine_db, job_id: int, moment: datetime) -> None:
    with engine_db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(next_run_at=moment))


@pytest.fixture
def cron_job(engine_db) -> Iterator[int]:
    """A job on one local target with an every-minute schedule, made through the services; its
    executions are ended and the job archived afterwards, so no later beat keeps firing it."""
    with engine_db.session() as session:
        target = create_target(session, {"name": unique("cron"), "connection": "local"}, user_id=None, role="admin")
        job = create_job(session, {"name": unique("cron"), "target_ids": [target.id], "schedule": EVERY_MINUTE,
                                   "actions": [{"action_type": "command", "action_name": "noop",
                                                "action_parameters": {"command": "true"},
                                                "timeout_seconds": None, "continue_on_error": False}]},
                         user_id=admin_id(session), role="admin")
        job_id = job.id
    yield job_id
    for execution in executions_of(engine_db, job_id):
        end_execution(engine_db, execution.execution_serial)
    with engine_db.session() as session:
        if session.get_one(Job, job_id).archived_at is None:
            archive_job(session, str(job_id))


def test_two_maintenance_loops_racing_on_a_due_tick_fire_it_exactly_once(engine_settings, engine_db, cron_job):
    loops = [_loop(engine_settings, engine_db), _loop(engine_settings, engine_db)]
    rounds = 5
    for _ in range(rounds):
        _set_next_run_at(engine_db, cron_job, utcnow() - timedelta(seconds=1))
        fired = run_together([lambda go, loop=loop: (go(), loop.fire_due_jobs())[1] for loop in loops])
        assert sorted(fired) == [0, 1], fired  # both saw the job due; one conditional update won

    executions = executions_of(engine_db, cron_job)
    assert [e.execution_number for e in executions] == list(range(1, rounds + 1))
    writer = job_row(engine_db, cron_job).updated_by
    assert all(e.trigger == "schedule" and e.triggered_by == writer for e in executions)
    assert sum(len(loop.send.items) for loop in loops) == rounds  # each firing's branches sent once
    row = job_row(engine_db, cron_job)
    assert utcnow() < row.next_run_at <= utcnow() + timedelta(minutes=1)
    assert row.next_run_at.second == 0 and row.status == "running"


def test_ticks_missed_while_down_fire_once_and_the_next_is_after_now(engine_settings, engine_db, cron_job):
    _wait_clear_of_a_minute_boundary()
    _set_next_run_at(engine_db, cron_job, utcnow() - timedelta(hours=3))  # 180 ticks missed
    loop = _loop(engine_settings, engine_db)

    start = utcnow()
    assert loop.fire_due_jobs() == 1
    assert loop.fire_due_jobs() == 0  # the next tick is after now, not the one after the oldest missed

    assert len(executions_of(engine_db, cron_job)) == 1
    row = job_row(engine_db, cron_job)
    assert row.next_run_at == next_tick("* * * * *", "UTC", start) > utcnow()


def test_a_finished_run_leaves_the_job_scheduled_for_its_next_tick(engine_settings, engine_db, cron_job):
    _set_next_run_at(engine_db, cron_job, utcnow() - timedelta(seconds=1))
    assert _loop(engine_settings, engine_db).fire_due_jobs() == 1
    [execution] = executions_of(engine_db, cron_job)
    assert job_row(engine_db, cron_job).status == "running"

    with engine_db.session() as session:
        branch_id = session.scalar(select(Branch.id).where(Branch.execution_id == execution.id))
        _, execution_id = finish_branch(session, branch_id, BranchStatus.COMPLETED, exit_code=0)
    with engine_db.session() as session:
        [(name, data)] = close_if_done(session, execution.id)
    assert (name, data["status"], execution_id) == ("execution_completed", "completed", execution.id)
    assert job_row(engine_db, cron_job).status == "scheduled"  # the outcome stays on the execution


def test_archived_cron_jobs_never_fire(engine_settings, engine_db, cron_job):
    _set_next_run_at(engine_db, cron_job, utcnow() - timedelta(minutes=5))
    with engine_db.session() as session:
        archive_job(session, str(cron_job))

    assert _loop(engine_settings, engine_db).fire_due_jobs() == 0
    assert executions_of(engine_db, cron_job) == []


def test_a_tick_that_cannot_start_is_spent_and_shows_failed(engine_settings, engine_db, cron_job):
    with engine_db.session() as session:
        [target_id] = session.get_one(Job, cron_job).target_ids
        session.execute(update(Target).where(Target.id == target_id).values(enabled=False))
    _set_next_run_at(engine_db, cron_job, utcnow() - timedelta(seconds=1))
    loop = _loop(engine_settings, engine_db)

    assert loop.fire_due_jobs() == 0
    assert loop.fire_due_jobs() == 0  # spent: not tried again every second until the next tick

    row = job_row(engine_db, cron_job)
    assert executions_of(engine_db, cron_job) == [] and row.status == "failed"
    assert row.next_run_at > utcnow()


@pytest.mark.usefixtures("default_worker")
def test_a_beat_fires_a_cron_job_that_a_worker_runs_on_sshd(api, engine_db, ssh_targets, start_celery,
                                                            default_worker):
    beats = [start_celery("beat"), start_celery("beat")]
    # fired now rather than at the next minute: a tick a moment ago, not too close to the one after it
    # (waited for before the job exists, so its own first tick cannot come while the test forces one)
    _wait_clear_of_a_minute_boundary(margin=25)
    job = api.job([command("tick", "echo cron-tick")], [ssh_targets[0]["id"]], schedule=EVERY_MINUTE)
    try:
        assert job["status"] == "scheduled" and job["schedule"] == EVERY_MINUTE
        forced = utcnow() - timedelta(seconds=1)
        _set_next_run_at(engine_db, job["id"], forced)

        [execution] = wait_for(lambda: executions_of(engine_db, job["id"]), 15, message="the cron execution",
                               describe=lambda: "\n".join(b.log_tail(1500) for b in beats) + default_worker.log_tail())
        assert execution.trigger == "schedule" and execution.started_at >= forced
        done = wait_execution_done(engine_db, execution.execution_serial, logs=default_worker.log_tail)
        assert done.status == "completed", describe_execution(engine_db, execution.execution_serial)

        fetched = wait_for(lambda: (j := api.get_job(job["id"]))["status"] == "scheduled" and j, 10,
                           message="the job back to scheduled")
        tick = datetime.fromisoformat(fetched["next_run_at"].replace("Z", "+00:00"))
        assert forced < tick <= execution.started_at + timedelta(minutes=1) and tick.second == 0
        assert (fetched["execution_count"], fetched["schedule"]) == (1, EVERY_MINUTE)
        assert [e.id for e in executions_of(engine_db, job["id"]) if e.started_at < tick] == [execution.id]
    finally:
        api.call("DELETE", f"/api/jobs/{job['id']}", 204)
