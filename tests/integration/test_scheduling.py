"""Scheduled jobs fire once at their time, with trigger "schedule", even with two schedulers (two
real `celery beat` processes, each running the maintenance loop) racing to fire them; a past
scheduled_at is refused."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.models import Job
from tests.integration.engine_helpers import (
    command,
    describe_execution,
    executions_of,
    job_row,
    wait_execution_done,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("default_worker")

FIRED = r"scheduled job fired "


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_scheduled_job_runs_once_at_its_time_even_with_two_schedulers(api, engine_db, ssh_targets, start_celery,
                                                                      default_worker, redis_url):
    beats = [start_celery("beat"), start_celery("beat")]  # started: each has its maintenance loop running
    scheduled_at = datetime.now(UTC) + timedelta(seconds=2)
    job = api.job([command("tick", "echo tick")], [t["id"] for t in ssh_targets], scheduled_at=_iso(scheduled_at))
    assert job["status"] == "scheduled" and job["execution_count"] == 0
    scheduled_at = datetime.fromisoformat(job["scheduled_at"].replace("Z", "+00:00"))  # as stored

    [execution] = wait_for(lambda: executions_of(engine_db, job["id"]), 15, message="the scheduled execution",
                           describe=lambda: "\n".join(b.log_tail(1500) for b in beats) + default_worker.log_tail())

    assert execution.trigger == "schedule"
    with engine_db.session() as session:  # a firing acts on the authority of the actions' last writer
        writer = session.get(Job, job["id"]).updated_by
    assert writer is not None and execution.triggered_by == writer
    assert execution.execution_serial == f"{job['job_serial']}.0001"
    assert scheduled_at <= execution.started_at < scheduled_at + timedelta(seconds=5)
    done = wait_execution_done(engine_db, execution.execution_serial, logs=default_worker.log_tail)
    assert done.status == "completed", describe_execution(engine_db, execution.execution_serial)

    # both schedulers were polling when the job fell due; exactly one of them fired it
    assert sorted(b.count(FIRED) for b in beats) == [0, 1], "\n".join(b.log_tail(1500) for b in beats)
    assert len(executions_of(engine_db, job["id"])) == 1
    row = job_row(engine_db, job["id"])
    assert row.execution_count == 1 and row.status == "completed"
    fetched = api.get_job(job["id"])
    assert (fetched["execution_count"], fetched["status"]) == (1, "completed")


def test_scheduled_at_in_the_past_is_refused(api, ssh_targets):
    past = _iso(datetime.now(UTC) - timedelta(minutes=1))
    body = {"name": "too-late", "actions": [command("tick", "echo tick")], "target_ids": [ssh_targets[0]["id"]],
            "scheduled_at": past}

    error = api.call("POST", "/api/jobs", 422, body)

    assert error["error"] == "validation_error"
    assert error["details"]["field"] == "scheduled_at"
