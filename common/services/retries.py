"""Retrying an execution: a new execution of the same job, running the actions its parent ran, on the
targets whose branches did not complete (or on all of them), under the same rules as execute."""
from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from common import serials
from common.errors import Conflict, NotFound, ValidationFailed
from common.models import Execution, Job
from common.services.executions import Event, execution_started_event, start_execution
from common.statuses import BranchStatus, ExecutionStatus


def retry_execution(session: Session, execution_serial: str, *, only: Literal["failed", "all"] = "failed",
                    role: str, user_id: int | None) -> tuple[Execution, list[Event]]:
    """`failed`: every target whose branch is not completed (failed, timed out, cancelled, skipped, worker
    lost); `all`: every target of the parent. The retry keeps the parent's actions, parameters and rollout
    policy. Returns the new execution (trigger `retry`) and its event."""
    serials.require("execution_serial", execution_serial)
    parent = session.scalar(select(Execution).where(Execution.execution_serial == execution_serial)
                            .options(selectinload(Execution.branches)))
    if parent is None:
        raise NotFound("Execution not found", {"execution_serial": execution_serial})
    if parent.status == ExecutionStatus.RUNNING:
        raise Conflict(f"Execution {execution_serial} is still running; retry it once it has finished "
                       "(or cancel it first)", {"execution_serial": execution_serial, "status": parent.status})
    branches = [b for b in parent.branches if only == "all" or b.status != BranchStatus.COMPLETED]
    if not branches:
        raise ValidationFailed(f"Nothing to retry: every branch of {execution_serial} completed; "
                               "send only: all to run it again on every target",
                               {"field": "only", "received": only, "execution_serial": execution_serial})
    job = session.get_one(Job, parent.job_id)
    execution = start_execution(session, job, role=role, target_ids=[b.target_id for b in branches],
                                trigger="retry", user_id=user_id, actions=parent.actions, retry_of=parent,
                                max_concurrency=parent.max_concurrency, max_errors=parent.max_errors)
    return execution, [execution_started_event(execution, job.job_serial)]
