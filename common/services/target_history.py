"""Per-target performance and execution history, at branch level.

A branch's time is its `queued_at`: set when its execution is created and never null, so a branch
still queued (or cancelled before it started) is placed and counted like any other, and a target's
branches belong to a period exactly when their executions do. Counting rules are analytics', and so
is the source: branch roll-ups for the period's whole hours, raw rows for the rest. The newest 10 and
the history list read branch rows, which retention keeps (it prunes their outputs, steps and events).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import CompoundSelect, Integer, bindparam, func, select, union_all
from sqlalchemy.orm import Session

from common import serials
from common.errors import BadRequest, NotFound
from common.models import Branch, BranchRollup, Execution, Job, Target
from common.services.analytics import add_up, average, branch_counts, rolled_branch_counts, success_rate, timed_branches
from common.services.rollups import Hours, raw_legs, rolled_leg

RECENT = 10
MAX_DAYS = 365


def _target(session: Session, target_serial: str):
    """(id, target_serial, name) of a target, archived ones included."""
    serials.require("target_serial", target_serial)
    row = session.execute(select(Target.id, Target.target_serial, Target.name)
                          .where(Target.target_serial == target_serial)).first()
    if row is None:
        raise NotFound("Target not found", {"target_serial": target_serial})
    return row


def _newest_first():
    # the (target_id, queued_at, id) index read backwards: no sort step
    return Branch.queued_at.desc(), Branch.id.desc()


def _execution_serial(branch_serial: str) -> str:
    return branch_serial.rsplit(".", 1)[0]


@dataclass(frozen=True)
class RecentBranch:
    branch_serial: str
    execution_serial: str
    job_serial: str
    status: str
    duration: float | None
    started_at: datetime | None


@dataclass(frozen=True)
class TargetPerformance:
    target_serial: str
    target_name: str
    period_days: int
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None
    average_duration: float | None
    recent_executions: list[RecentBranch]


def target_performance(session: Session, target_serial: str, *, days: int, now: datetime) -> TargetPerformance:
    """Branches of the target queued in [now - days, now]: counts, success rate, average `duration` of
    finished branches, and the newest 10. Three statements: target, aggregate (a union of the target's
    roll-ups over the whole hours and raw rows, as in analytics), newest 10."""
    if not 1 <= days <= MAX_DAYS:
        raise BadRequest("Invalid days", {"field": "days", "expected_format": f"1..{MAX_DAYS}", "received": days})
    target = _target(session, target_serial)
    hours = Hours.of(now - timedelta(days=days), now)
    window = (Branch.target_id == target.id, Branch.queued_at >= hours.start, Branch.queued_at <= now)
    total, successful, failed, timed, seconds = add_up(
        session.execute(_performance_statement(), {**hours.params(), "target_id": target.id}).all())
    recent_rows = session.execute(
        select(Branch.branch_serial, Branch.status, Branch.duration, Branch.started_at)
        .where(*window).order_by(*_newest_first()).limit(RECENT))
    recent = [RecentBranch(serial, _execution_serial(serial), serial.split(".")[0], status, duration, started_at)
              for serial, status, duration, started_at in recent_rows]
    return TargetPerformance(target_serial=target.target_serial, target_name=target.name, period_days=days,
                             total_executions=total, successful_executions=successful, failed_executions=failed,
                             success_rate=success_rate(successful, successful + failed),
                             average_duration=average(seconds, timed), recent_executions=recent)


@functools.cache
def _performance_statement() -> CompoundSelect:
    """A target's (bound as `target_id`) branch counts and timed durations over a period."""
    target_id = bindparam("target_id", type_=Integer())
    return union_all(
        *(select(*branch_counts(Branch.status), *timed_branches(Branch.status, Branch.duration))
          .join(Execution, Execution.id == Branch.execution_id).where(Branch.target_id == target_id, *where)
          for where in raw_legs(Branch.queued_at, Execution.rolled_up_at)),
        select(*rolled_branch_counts(BranchRollup))
        .where(BranchRollup.target_id == target_id, *rolled_leg(BranchRollup.hour)))


@dataclass(frozen=True)
class HistoryItem:
    branch_serial: str
    execution_serial: str
    job_serial: str
    job_name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    exit_code: int | None


@dataclass(frozen=True)
class TargetHistory:
    target_serial: str
    total: int
    limit: int
    offset: int
    executions: list[HistoryItem]


def target_history(session: Session, target_serial: str, *, limit: int, offset: int) -> TargetHistory:
    """Every branch that ran (or is to run) on the target, newest first, one page. Three statements:
    target, count, page joined to its jobs for their names."""
    target = _target(session, target_serial)
    total = session.scalar(select(func.count()).select_from(Branch).where(Branch.target_id == target.id)) or 0
    rows = session.execute(
        select(Branch.branch_serial, Job.job_serial, Job.name, Branch.status, Branch.started_at,
               Branch.completed_at, Branch.exit_code)
        .join(Execution, Execution.id == Branch.execution_id)
        .join(Job, Job.id == Execution.job_id)
        .where(Branch.target_id == target.id)
        .order_by(*_newest_first()).limit(limit).offset(offset))
    items = [HistoryItem(serial, _execution_serial(serial), job_serial, job_name, status, started, completed, code)
             for serial, job_serial, job_name, status, started, completed, code in rows]
    return TargetHistory(target_serial=target.target_serial, total=total, limit=limit, offset=offset, executions=items)
