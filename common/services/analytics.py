"""Execution analytics over a period and per-job metrics.

Counting rules, shared with target_history: an execution (or branch) belongs to a period by its
start time, in [now - period, now]; `successful` = completed; `failed` = finished without success
(failed, cancelled, timed_out); a running (or queued) one is counted in the totals but not in the
rates; success_rate = successful / finished x 100 rounded to 2 places, None when nothing finished.
`now` is always a parameter so that tests can pin it; routes pass utcnow().

Closed executions are counted from the hourly roll-ups (common/services/rollups.py), the period's
ragged edges and executions not rolled up yet from raw rows: the figures are those of the raw rows,
whatever retention pruned and however long the history.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Float,
    Integer,
    Select,
    bindparam,
    case,
    cast,
    func,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from common import serials
from common.errors import BadRequest, NotFound
from common.models import Branch, BranchRollup, Execution, ExecutionRollup, Job, JobRollup, Target
from common.services.rollups import Hours, dialect, execution_seconds, raw_legs, rolled_leg, sum_where, truncate
from common.statuses import BRANCH_TERMINAL, EXECUTION_TERMINAL, BranchStatus, ExecutionStatus

PERIODS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
GROUPS = ("hour", "day", "week", "month")

_EXEC_FAILED = sorted(s.value for s in EXECUTION_TERMINAL - {ExecutionStatus.COMPLETED})
_EXEC_FINISHED = sorted(s.value for s in EXECUTION_TERMINAL)
_BRANCH_FAILED = sorted(s.value for s in BRANCH_TERMINAL - {BranchStatus.COMPLETED})
_BRANCH_FINISHED = sorted(s.value for s in BRANCH_TERMINAL)


# ---------------------------------------------------------------- shared arithmetic


def success_rate(successful: int, finished: int) -> float | None:
    return round(successful * 100.0 / finished, 2) if finished else None


def round_seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """COUNT of rows meeting `condition`, portable (no FILTER clause needed)."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def branch_counts(status) -> tuple[ColumnElement[int], ColumnElement[int], ColumnElement[int]]:
    """(total, successful, failed) aggregates over branch rows."""
    return (func.count(), count_where(status == BranchStatus.COMPLETED.value),
            count_where(status.in_(_BRANCH_FAILED)))


def branch_finished(status) -> ColumnElement[bool]:
    return status.in_(_BRANCH_FINISHED)


def period_start(period: str, now: datetime) -> datetime:
    if period not in PERIODS:
        raise BadRequest("Invalid period", {"field": "period", "expected_format": "|".join(PERIODS),
                                            "received": period})
    return now - PERIODS[period]


def _execution_counts() -> tuple[ColumnElement[int], ColumnElement[int], ColumnElement[int]]:
    status = Execution.status
    return (func.count(), count_where(status == ExecutionStatus.COMPLETED.value), count_where(status.in_(_EXEC_FAILED)))


def _rolled_counts(count: Any, status: Any, failed: list[str]
                   ) -> tuple[ColumnElement[int], ColumnElement[int], ColumnElement[int]]:
    """(total, successful, failed) summed over roll-up rows, whose `count` column counts rows of `status`."""
    return (func.coalesce(func.sum(count), 0), sum_where(count, status == ExecutionStatus.COMPLETED.value),
            sum_where(count, status.in_(failed)))


def rolled_branch_counts(rollup: type[BranchRollup]) -> tuple[ColumnElement[Any], ...]:
    """(total, successful, failed, timed, seconds) over branch roll-up rows, the raw legs' counterpart of
    branch_counts plus timed_branches."""
    finished = branch_finished(rollup.status)
    return (*_rolled_counts(rollup.branches, rollup.status, _BRANCH_FAILED), sum_where(rollup.timed, finished),
            sum_where(rollup.seconds, finished))


def timed_branches(status, duration) -> tuple[ColumnElement[int], ColumnElement[Any]]:
    """(count, sum) of the durations of finished branches: their average, over any union of legs."""
    timed = branch_finished(status) & duration.is_not(None)
    return count_where(timed), sum_where(cast(duration, Float), timed)


def average(seconds: float, timed: int) -> float | None:
    """Mean of `timed` values summing to `seconds`, rounded; None when there are none."""
    return round_seconds(seconds / timed) if timed else None


def add_up(rows: Sequence[Any]) -> list[Any]:
    """Column sums of the partial aggregates that the legs of a union return (NULL as 0)."""
    return [sum(v or 0 for v in column) for column in zip(*rows, strict=True)] if rows else []


# ---------------------------------------------------------------- buckets


def bucket_start(moment: datetime, group_by: str) -> datetime:
    """Start of the UTC bucket holding `moment`: the hour, the midnight, the Monday, the 1st."""
    moment = moment.astimezone(UTC)
    if group_by == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if group_by == "day":
        return day
    if group_by == "week":
        return day - timedelta(days=day.weekday())
    if group_by == "month":
        return day.replace(day=1)
    raise BadRequest("Invalid group_by", {"field": "group_by", "expected_format": "|".join(GROUPS),
                                          "received": group_by})


def next_bucket(start: datetime, group_by: str) -> datetime:
    if group_by == "hour":
        return start + timedelta(hours=1)
    if group_by == "day":
        return start + timedelta(days=1)
    if group_by == "week":
        return start + timedelta(weeks=1)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def bucket_label(start: datetime, group_by: str) -> str:
    if group_by == "hour":
        return start.strftime("%Y-%m-%dT%H:00:00Z")
    if group_by == "month":
        return start.strftime("%Y-%m")
    return start.strftime("%Y-%m-%d")


@functools.cache
def _analytics_statement(dialect: str, fine: str) -> CompoundSelect:
    """Execution counts per hour or day (`fine`): coarser buckets are rolled up from days in Python (a
    day lies in exactly one UTC week and month), which keeps the SQL portable."""
    raw_bucket = truncate(dialect, Execution.started_at, fine)
    rolled_bucket = truncate(dialect, ExecutionRollup.hour, fine)
    return union_all(
        *(select(raw_bucket, *_execution_counts()).where(*where).group_by(raw_bucket)
          for where in raw_legs(Execution.started_at, Execution.rolled_up_at)),
        select(rolled_bucket, *_rolled_counts(ExecutionRollup.executions, ExecutionRollup.status, _EXEC_FAILED))
        .where(*rolled_leg(ExecutionRollup.hour)).group_by(rolled_bucket))


def _as_utc(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class Bucket:
    date: str
    executions: int = 0
    successful: int = 0
    failed: int = 0

    @property
    def success_rate(self) -> float | None:
        return success_rate(self.successful, self.successful + self.failed)


@dataclass(frozen=True)
class ExecutionAnalytics:
    period: str
    group_by: str
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None
    data: list[Bucket]


def execution_analytics(session: Session, *, period: str, group_by: str, now: datetime) -> ExecutionAnalytics:
    """Execution counts by start time over [now - period, now], in dense UTC buckets (empty ones with
    zeros) from the bucket holding the period's start to the one holding `now`. One statement: a
    GROUP BY hour (group_by=hour) or day (the rest) over the all-jobs roll-ups of the period's whole
    hours (at most 3 rows an hour) and the raw rows of its edges and of running executions."""
    start = period_start(period, now)
    first = bucket_start(start, group_by)
    stmt = _analytics_statement(dialect(session), "hour" if group_by == "hour" else "day")
    buckets: dict[datetime, Bucket] = {}
    cursor = first
    while cursor <= now:
        buckets[cursor] = Bucket(bucket_label(cursor, group_by))
        cursor = next_bucket(cursor, group_by)
    for fine_start, total, successful, failed in session.execute(stmt, Hours.of(start, now).params()):
        bucket = buckets[bucket_start(_as_utc(fine_start), group_by)]
        bucket.executions += total
        bucket.successful += successful
        bucket.failed += failed
    data = list(buckets.values())
    successful = sum(b.successful for b in data)
    failed = sum(b.failed for b in data)
    return ExecutionAnalytics(period=period, group_by=group_by, total_executions=sum(b.executions for b in data),
                              successful_executions=successful, failed_executions=failed,
                              success_rate=success_rate(successful, successful + failed), data=data)


# ---------------------------------------------------------------- per job


@dataclass(frozen=True)
class TargetMetrics:
    target_serial: str
    target_name: str
    executions: int
    success_rate: float | None
    average_duration: float | None


@dataclass(frozen=True)
class JobMetrics:
    job_serial: str
    job_name: str
    period: str
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None
    average_duration: float | None
    target_performance: list[TargetMetrics]


def job_metrics(session: Session, job_serial: str, *, period: str, now: datetime) -> JobMetrics:
    """A job's executions started in [now - period, now], with its branches grouped per target.
    `average_duration` is the wall time of finished executions; per target it is the branches'
    `duration`. Three statements: the job, the execution aggregate, the per-target aggregate; each a
    union of the job's roll-ups over the period's whole hours and raw rows (see execution_analytics)."""
    serials.require("job_serial", job_serial)
    hours = Hours.of(period_start(period, now), now)
    job = session.execute(select(Job.id, Job.job_serial, Job.name).where(Job.job_serial == job_serial)).first()
    if job is None:
        raise NotFound("Job not found", {"job_serial": job_serial})
    executions, per_target = _job_statements(dialect(session))
    params = {**hours.params(), "job_id": job.id}
    total, successful, failed, timed_count, seconds = add_up(session.execute(executions, params).all())
    # SUM over bigint is numeric on PostgreSQL (a Decimal here): back to int
    targets = [TargetMetrics(serial, name, int(count), success_rate(int(ok), int(ok + bad)),
                             average(seconds_sum, int(timed_sum)))
               for serial, name, count, ok, bad, timed_sum, seconds_sum in session.execute(per_target, params)]
    return JobMetrics(job_serial=job.job_serial, job_name=job.name, period=period, total_executions=total,
                      successful_executions=successful, failed_executions=failed,
                      success_rate=success_rate(successful, successful + failed),
                      average_duration=average(seconds, timed_count), target_performance=targets)


@functools.cache
def _job_statements(dialect: str) -> tuple[CompoundSelect, Select]:
    """The execution aggregate and the per-target aggregate of one job (bound as `job_id`)."""
    job_id = bindparam("job_id", type_=Integer())
    raw = [(Execution.job_id == job_id, *where) for where in raw_legs(Execution.started_at, Execution.rolled_up_at)]
    timed = Execution.status.in_(_EXEC_FINISHED) & Execution.completed_at.is_not(None)
    executions = union_all(
        *(select(*_execution_counts(), count_where(timed), sum_where(cast(execution_seconds(dialect), Float), timed))
          .where(*where) for where in raw),
        select(*_rolled_counts(JobRollup.executions, JobRollup.status, _EXEC_FAILED), func.sum(JobRollup.timed),
               func.sum(JobRollup.seconds)).where(JobRollup.job_id == job_id, *rolled_leg(JobRollup.hour)))
    legs = union_all(
        *(select(Branch.target_id, *branch_counts(Branch.status), *timed_branches(Branch.status, Branch.duration))
          .join(Execution, Execution.id == Branch.execution_id).where(*where).group_by(Branch.target_id)
          for where in raw),
        select(BranchRollup.target_id, *rolled_branch_counts(BranchRollup))
        .where(BranchRollup.job_id == job_id, *rolled_leg(BranchRollup.hour)).group_by(BranchRollup.target_id),
    ).subquery()
    per_target = (
        select(Target.target_serial, Target.name, *(func.sum(column) for column in list(legs.c)[1:]))
        .join(legs, legs.c.target_id == Target.id)
        .group_by(Target.id, Target.target_serial, Target.name)
        .order_by(Target.id))
    return executions, per_target
