"""Execution analytics over a period and per-job metrics.

Counting rules, shared with target_history: an execution (or branch) belongs to a period by its
start time, in [now - period, now]; `successful` = completed; `failed` = finished without success
(failed, cancelled, timed_out); a running (or queued) one is counted in the totals but not in the
rates; success_rate = successful / finished x 100 rounded to 2 places, None when nothing finished.
`now` is always a parameter so that tests can pin it; routes pass utcnow().
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, ColumnExpressionArgument, Float, case, cast, func, select
from sqlalchemy.orm import Session

from common import serials
from common.errors import BadRequest, NotFound
from common.models import Branch, Execution, Job, Target
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


def avg_where(value: ColumnExpressionArgument[Any], condition: ColumnElement[bool]) -> ColumnElement[float]:
    return func.avg(case((condition, cast(value, Float)), else_=None))


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


def _execution_seconds(session: Session) -> ColumnElement[Any]:
    """completed_at - started_at in seconds, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", Execution.completed_at - Execution.started_at)
    return (func.julianday(Execution.completed_at) - func.julianday(Execution.started_at)) * 86400.0


def _execution_counts() -> tuple[ColumnElement[int], ColumnElement[int], ColumnElement[int]]:
    status = Execution.status
    return (func.count(), count_where(status == ExecutionStatus.COMPLETED.value), count_where(status.in_(_EXEC_FAILED)))


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


def _sql_bucket(session: Session, fine: str) -> ColumnElement:
    """Execution start truncated to the hour or day in SQL; coarser buckets are rolled up from days in
    Python (a day lies in exactly one UTC week and month), which keeps the SQL portable."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(fine, Execution.started_at)
    return func.strftime("%Y-%m-%d %H:00:00" if fine == "hour" else "%Y-%m-%d 00:00:00", Execution.started_at)


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
    GROUP BY hour (group_by=hour) or day (the rest) over the (started_at, status) index."""
    start = period_start(period, now)
    first = bucket_start(start, group_by)
    fine = "hour" if group_by == "hour" else "day"
    sql_bucket = _sql_bucket(session, fine).label("bucket")
    stmt = (select(sql_bucket, *_execution_counts())
            .where(Execution.started_at >= start, Execution.started_at <= now)
            .group_by(sql_bucket))
    buckets: dict[datetime, Bucket] = {}
    cursor = first
    while cursor <= now:
        buckets[cursor] = Bucket(bucket_label(cursor, group_by))
        cursor = next_bucket(cursor, group_by)
    for fine_start, total, successful, failed in session.execute(stmt):
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
    `duration`. Three statements: the job, the execution aggregate, the per-target aggregate."""
    serials.require("job_serial", job_serial)
    start = period_start(period, now)
    job = session.execute(select(Job.id, Job.job_serial, Job.name).where(Job.job_serial == job_serial)).first()
    if job is None:
        raise NotFound("Job not found", {"job_serial": job_serial})
    in_period = (Execution.job_id == job.id, Execution.started_at >= start, Execution.started_at <= now)

    timed = Execution.status.in_(_EXEC_FINISHED) & Execution.completed_at.is_not(None)
    total, successful, failed, avg_seconds = session.execute(
        select(*_execution_counts(), avg_where(_execution_seconds(session), timed)).where(*in_period)).one()

    per_target = (
        select(Target.target_serial, Target.name, *branch_counts(Branch.status),
               avg_where(Branch.duration, branch_finished(Branch.status)))
        .select_from(Branch)
        .join(Execution, Execution.id == Branch.execution_id)
        .join(Target, Target.id == Branch.target_id)
        .where(*in_period)
        .group_by(Target.id, Target.target_serial, Target.name)
        .order_by(Target.id))
    targets = [TargetMetrics(serial, name, count, success_rate(ok, ok + bad), round_seconds(avg))
               for serial, name, count, ok, bad, avg in session.execute(per_target)]
    return JobMetrics(job_serial=job.job_serial, job_name=job.name, period=period, total_executions=total,
                      successful_executions=successful, failed_executions=failed,
                      success_rate=success_rate(successful, successful + failed),
                      average_duration=round_seconds(avg_seconds), target_performance=targets)
