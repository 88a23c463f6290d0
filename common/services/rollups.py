"""Hourly roll-ups: written once per execution as it closes, read by analytics and target performance.

Why: the raw rows of old executions lose their bulky parts to retention, and counting millions of them
for a 90-day chart is slow. An execution is counted into the roll-ups by the transaction that closes
it (record_closed); `executions.rolled_up_at` marks it, through a conditional update, so a retried or
repeated call never counts it twice.

Reading a period [start, end] (`Hours`): the whole UTC hours inside it come from the roll-ups, plus
the raw rows of executions not rolled up yet (running ones, or closed by a process that predates
roll-ups: the maintenance loop rolls those up); the ragged edges before the first and after the last
whole hour come from raw rows, so a period that starts at 10:30:00 still counts to the second. Each
part is one leg of a UNION ALL: one statement, each leg on its own index. The readers build their
statements once per dialect, with the period as bound parameters (`Hours.params`): building these
unions anew cost more than running them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.models import Branch, BranchRollup, Execution, ExecutionRollup, JobRollup, utcnow
from common.models.base import UTCDateTime
from common.statuses import ExecutionStatus

Executor = Session | Connection
HOUR = timedelta(hours=1)


def dialect(session: Executor) -> str:
    return session.dialect.name if isinstance(session, Connection) else session.get_bind().dialect.name


def truncate(dialect: str, moment: Any, unit: str) -> ColumnElement[Any]:
    """`moment` truncated to the UTC hour or day in SQL, in the form a UTCDateTime column stores (SQLite
    keeps SQLAlchemy's text layout, so a truncated value compares equal to a bound one)."""
    if dialect == "postgresql":
        return func.date_trunc(unit, moment)
    return func.strftime("%Y-%m-%d %H:00:00.000000" if unit == "hour" else "%Y-%m-%d 00:00:00.000000", moment)


def execution_seconds(dialect: str) -> ColumnElement[Any]:
    """completed_at - started_at of an execution in seconds, on either backend."""
    if dialect == "postgresql":
        return func.extract("epoch", Execution.completed_at - Execution.started_at)
    return (func.julianday(Execution.completed_at) - func.julianday(Execution.started_at)) * 86400.0


# ---------------------------------------------------------------- writing


def record_closed(session: Executor, execution_id: int) -> None:
    """Count an execution into the roll-ups; called by close_if_done in the transaction that closed it."""
    roll_up(session, [execution_id])


def roll_up_stragglers(session: Executor, limit: int = 1000) -> int:
    """Roll up closed executions that are not yet (closed by a process running older code, or before a
    crash between two statements it cannot have: they share a transaction). The maintenance loop calls
    it; analytics is exact either way, this only keeps the raw part small."""
    ids = session.execute(select(Execution.id).where(Execution.rolled_up_at.is_(None),
                                                     Execution.status != ExecutionStatus.RUNNING.value)
                          .order_by(Execution.started_at).limit(limit)).scalars().all()
    return roll_up(session, list(ids)) if ids else 0


def roll_up(session: Executor, execution_ids: Sequence[int]) -> int:
    """Add these closed executions to the roll-ups, each at most once: only those this call marks are
    counted. Rows are upserted in key order (job, hour, target, status; the all-jobs row last) so that
    concurrent closes lock shared roll-up rows in one order and never deadlock. Returns how many."""
    marked = list(session.execute(
        update(Execution)
        .where(Execution.id.in_(execution_ids), Execution.rolled_up_at.is_(None),
               Execution.status != ExecutionStatus.RUNNING.value)
        .values(rolled_up_at=utcnow()).returning(Execution.id)
        .execution_options(synchronize_session=False)).scalars())
    if not marked:
        return 0
    name = dialect(session)
    insert = postgresql.insert if name == "postgresql" else sqlite.insert
    seconds = execution_seconds(name)
    hour = truncate(name, Execution.started_at, "hour")
    jobs = (select(Execution.job_id, hour, Execution.status, func.count(), func.count(Execution.completed_at),
                   func.coalesce(func.sum(seconds), 0.0))
            .where(Execution.id.in_(marked)).group_by(Execution.job_id, hour, Execution.status)
            .order_by(Execution.job_id, hour, Execution.status))
    b_hour = truncate(name, Branch.queued_at, "hour")
    branches = (select(Execution.job_id, b_hour, Branch.target_id, Branch.status, func.count(),
                       func.count(Branch.duration), func.coalesce(func.sum(Branch.duration), 0.0))
                .join(Execution, Execution.id == Branch.execution_id)
                .where(Branch.execution_id.in_(marked))
                .group_by(Execution.job_id, b_hour, Branch.target_id, Branch.status)
                .order_by(Execution.job_id, b_hour, Branch.target_id, Branch.status))
    everything = (select(hour, Execution.status, func.count()).where(Execution.id.in_(marked))
                  .group_by(hour, Execution.status).order_by(hour, Execution.status))
    for table, keys, sums, rows in (
            (JobRollup, ("job_id", "hour", "status"), ("executions", "timed", "seconds"), jobs),
            (BranchRollup, ("job_id", "hour", "target_id", "status"), ("branches", "timed", "seconds"), branches),
            (ExecutionRollup, ("hour", "status"), ("executions",), everything)):
        upsert = insert(table).from_select([*keys, *sums], rows)
        session.execute(upsert.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: getattr(table, name) + getattr(upsert.excluded, name) for name in sums}))
    return len(marked)


# ---------------------------------------------------------------- reading


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


# the period of a reading statement, bound when it runs (Hours.params)
START, END, FIRST, STOP = (bindparam(name, type_=UTCDateTime()) for name in ("start", "end", "first", "stop"))


def raw_legs(moment: Any, rolled_up_at: Any) -> list[tuple[ColumnElement[bool], ...]]:
    """WHERE clauses of the raw legs, disjoint: the two edges, and the whole hours' rows that are not in
    the roll-ups yet. `moment` is the row's time, `rolled_up_at` its execution's mark."""
    return [(moment >= START, moment < FIRST, moment <= END),
            (moment >= STOP, moment <= END),
            (moment >= FIRST, moment < STOP, rolled_up_at.is_(None))]


def rolled_leg(hour: Any) -> tuple[ColumnElement[bool], ...]:
    """WHERE clause of the roll-up leg."""
    return (hour >= FIRST, hour < STOP)


@dataclass(frozen=True)
class Hours:
    """A period [start, end] split into the whole UTC hours [first, stop) read from roll-ups and the
    edges [start, first) and [stop, end] read from raw rows (first == stop: no whole hour)."""

    start: datetime
    end: datetime
    first: datetime
    stop: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Hours:
        first = _floor_hour(start)
        if first < start:
            first += HOUR
        return cls(start, end, first, max(_floor_hour(end), first))

    def params(self) -> dict[str, datetime]:
        """The values of START, END, FIRST and STOP."""
        return {"start": self.start, "end": self.end, "first": self.first, "stop": self.stop}


def sum_where(value: Any, condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """SUM of `value` over rows meeting `condition`, 0 when none."""
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)
