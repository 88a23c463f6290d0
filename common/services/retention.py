"""History kept on purpose: executions that ended before a cutoff lose their bulky parts (branch outputs,
steps, events) in short batches; their execution and branch rows stay.

Why the rows stay: they are small once their outputs are gone (serials, statuses, times, exit codes),
and everything that addresses history reads them: lookups and search by serial, a target's history,
retries of an old execution, the exact edges of an analytics period. Counts live on in the hourly
roll-ups either way (common/services/rollups.py), so analytics never change when history is pruned.

Why batches: each transaction touches about BATCH rows and commits, so no lock is held for long and
readers never wait; between batches the pruner rests in proportion to the work it did, leaving the
database to the platform. Several pruners at once (two beats, a beat and `opsconductor prune`) are
safe: a batch claims its executions with a conditional update (pruned_at IS NULL), so each is pruned
by one of them, and everything after the claim is idempotent.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, or_, select, update

from common.db import Database
from common.models import Branch, BranchStep, EventCounter, Execution, ExecutionEvent, utcnow

BATCH = 2000  # branches plus events per transaction, about (steps come with their branches)
CANDIDATES = 150  # executions looked at per batch (each has a branch and a few events at least)
REST = 2.0  # seconds of pause per second of pruning: the pruner works a third of the time at most

_AGE = re.compile(r"^\s*(\d+)\s*([hdw]?)\s*$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), "": timedelta(days=1)}


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `2w` or a bare number of days, as `opsconductor prune --older-than` takes it."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"expected an age like 30d, 12h or 2w, got {text!r}")
    age = int(match.group(1)) * _UNITS[match.group(2)]
    if age < timedelta(hours=1):  # what monitors may still be resuming from, or reading the output of
        raise ValueError(f"the age must be at least 1h, got {text!r}")
    return age


@dataclass
class PruneCounts:
    executions: int = 0  # executions whose history was pruned
    outputs: int = 0  # branches whose result_output / result_error were cleared
    steps: int = 0  # branch_steps rows deleted
    events: int = 0  # execution_events rows deleted

    def add(self, other: PruneCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def _old(cutoff: datetime):
    return Execution.completed_at < cutoff, Execution.pruned_at.is_(None)


def prunable(db: Database, cutoff: datetime) -> PruneCounts:
    """What prune(cutoff) would remove now: the dry run."""
    old = select(Execution.id).where(*_old(cutoff))
    branches = select(Branch.id).where(Branch.execution_id.in_(old))
    with db.connection() as conn:
        def count(stmt) -> int:
            return conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()

        counts = PruneCounts(
            executions=count(old),
            outputs=count(branches.where(or_(Branch.result_output.is_not(None), Branch.result_error.is_not(None)))),
            steps=count(select(BranchStep.id).where(BranchStep.branch_id.in_(branches))),
            events=count(select(ExecutionEvent.seq).where(ExecutionEvent.execution_id.in_(old))))
        conn.rollback()
    return counts


def prune(db: Database, cutoff: datetime, *, batch: int = BATCH, rest: float = REST,
          stop: threading.Event | None = None) -> PruneCounts:
    """Prune the history of every execution that ended before `cutoff`, oldest first, a batch per
    transaction, until none is left or `stop` is set. Returns what was removed."""
    stop = stop or threading.Event()
    total = PruneCounts()
    while not stop.is_set():
        began = time.monotonic()
        with db.connection() as conn:
            _unhurried(conn)
            chosen = _next_executions(conn, cutoff, batch)
            if len(chosen) == 1 and chosen[0][1] > batch:
                conn.rollback()  # a large execution: its own batches, several transactions
                total.add(_prune_large(db, chosen[0][0], batch, rest, stop))
                continue
            if chosen:
                total.add(_prune_executions(conn, [execution_id for execution_id, _ in chosen]))
            conn.commit()
        if not chosen:
            break
        stop.wait(rest * (time.monotonic() - began))
    return total


def _unhurried(conn: Connection) -> None:
    """A prune's commit need not wait for its WAL flush: one lost in a crash is done again next time."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


def _next_executions(conn: Connection, cutoff: datetime, batch: int) -> list[tuple[int, int]]:
    """The oldest executions to prune, as (id, size in branches plus events), as many as fit in a batch
    (at least one)."""
    branches = select(func.max(Branch.branch_number)).where(Branch.execution_id == Execution.id).scalar_subquery()
    events = select(EventCounter.last_seq).where(EventCounter.execution_id == Execution.id).scalar_subquery()
    rows = conn.execute(
        select(Execution.id, func.coalesce(branches, 0) + func.coalesce(events, 0))
        .where(*_old(cutoff)).order_by(Execution.completed_at).limit(min(batch, CANDIDATES))).all()
    chosen: list[tuple[int, int]] = []
    size = 0
    for execution_id, weight in rows:
        if chosen and size + weight > batch:
            break
        chosen.append((execution_id, weight))
        size += weight
    return chosen


def _prune_branches(conn: Connection, branch_ids) -> PruneCounts:
    """Steps deleted and outputs cleared for these branches (ids or a subquery of them)."""
    steps = conn.execute(delete(BranchStep).where(BranchStep.branch_id.in_(branch_ids))).rowcount
    outputs = conn.execute(
        update(Branch).where(Branch.id.in_(branch_ids),
                             or_(Branch.result_output.is_not(None), Branch.result_error.is_not(None)))
        .values(result_output=None, result_error=None)).rowcount
    return PruneCounts(outputs=outputs, steps=steps)


def _mark_pruned(conn: Connection, execution_ids: list[int]) -> list[int]:
    """The claim: those of these executions that no other pruner marked (a concurrent one waits for the
    other's commit, then finds them marked)."""
    return list(conn.execute(update(Execution).where(Execution.id.in_(execution_ids), Execution.pruned_at.is_(None))
                             .values(pruned_at=utcnow()).returning(Execution.id)).scalars())


def _prune_executions(conn: Connection, execution_ids: list[int]) -> PruneCounts:
    """Small executions, whole, in the caller's transaction: claimed first, then pruned."""
    claimed = _mark_pruned(conn, execution_ids)
    if not claimed:
        return PruneCounts()
    counts = _prune_branches(conn, select(Branch.id).where(Branch.execution_id.in_(claimed)))
    counts.events = conn.execute(delete(ExecutionEvent).where(ExecutionEvent.execution_id.in_(claimed))).rowcount
    counts.executions = len(claimed)
    return counts


def _prune_large(db: Database, execution_id: int, batch: int, rest: float, stop: threading.Event) -> PruneCounts:
    """One execution larger than a batch: its branches by branch number, then its events by seq, a batch
    per transaction; marked pruned last, so an interrupted run starts it again (what is done is skipped)."""
    counts = PruneCounts()
    with db.connection() as conn:
        last_seq = conn.execute(select(func.max(ExecutionEvent.seq))
                                .where(ExecutionEvent.execution_id == execution_id)).scalar() or 0
        conn.rollback()
    after = 0
    while not stop.is_set():
        began = time.monotonic()
        with db.connection() as conn:
            _unhurried(conn)
            rows = conn.execute(select(Branch.id, Branch.branch_number)
                                .where(Branch.execution_id == execution_id, Branch.branch_number > after)
                                .order_by(Branch.branch_number).limit(batch)).all()
            if not rows:
                conn.rollback()
                break
            counts.add(_prune_branches(conn, [branch_id for branch_id, _ in rows]))
            conn.commit()
        after = rows[-1][1]
        stop.wait(rest * (time.monotonic() - began))
    seq = 0
    while not stop.is_set() and seq < last_seq:
        began = time.monotonic()
        with db.connection() as conn:
            _unhurried(conn)
            counts.events += conn.execute(delete(ExecutionEvent).where(
                ExecutionEvent.execution_id == execution_id, ExecutionEvent.seq > seq,
                ExecutionEvent.seq <= seq + batch)).rowcount
            conn.commit()
        seq += batch
        stop.wait(rest * (time.monotonic() - began))
    if not stop.is_set():
        with db.connection() as conn:
            _unhurried(conn)
            counts.executions = len(_mark_pruned(conn, [execution_id]))
            conn.commit()
    return counts
