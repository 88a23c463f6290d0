"""Rollout brakes: an execution's `max_concurrency` and `max_errors`, and a target's
`max_concurrent_runs` across every execution.

A branch under a limit is *held*: `queued` with no `dispatched_at`, so no message for it exists and
nothing polls for it. It is *released* (marked dispatched, then sent after commit) when a slot frees:
right after a branch of its execution, or on its target, finishes, in the finisher's transaction
(and by the sweep, as a safety net for a finisher that died between its two transactions). The
guarantee itself is enforced at claim time, under a row lock on the execution or the target: a claim
that would exceed a limit is put back to held, so a released branch that lost a race only waits for
the next slot. Slots are running branches; a dead worker's branches end `worker_lost` by the sweep,
which frees their slots.

The error budget: once more branches than `max_errors` have ended `failed` or `timed_out` (a
failed command, unreachable, auth, lost link, lost worker: every failure; not a cancel), the queued
branches end `skipped` with `error_type: rollout_stopped`, running ones finish, and the execution
ends `failed` with `stop_reason` set and a `rollout_stopped` event. At exactly `max_errors`
failures it goes on."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select, update

from common.models import Branch, Execution, Target, utcnow
from common.statuses import BranchStatus, ErrorType

LIMIT = re.compile(r"^([0-9]{1,6})(%?)\Z", re.ASCII)

_B, _E, _T = (cast(Table, m.__table__) for m in (Branch, Execution, Target))
_QUEUED, _RUNNING = str(BranchStatus.QUEUED), str(BranchStatus.RUNNING)
_ERRORS = [str(BranchStatus.FAILED), str(BranchStatus.TIMED_OUT)]
_active = _B.c.status.in_([_QUEUED, _RUNNING])  # the partial indexes' predicate: they serve the counts

Event = tuple[str, dict[str, Any]]
Send = list[tuple[int, str]]  # (branch id, queue) released: the caller sends them after commit


def check_limit(value: str, *, minimum: int) -> str:
    """A count ("10") or a percentage of the branches ("25%"); raises ValueError saying what is wrong."""
    match = LIMIT.match(value)
    if match is None:
        raise ValueError('must be a count like "10" or a percentage of the branches like "25%"')
    number, percent = int(match.group(1)), bool(match.group(2))
    if number < minimum or (percent and number > 100):
        raise ValueError(f"must be at least {minimum}" + (" and at most 100%" if percent else ""))
    return value


def concurrency_limit(spec: str | None, branches: int) -> int | None:
    """How many branches may run at once: a percentage rounds up, and is at least 1."""
    if spec is None:
        return None
    number, percent = _parse(spec)
    return max(1, math.ceil(branches * number / 100)) if percent else number


def error_budget(spec: str | None, branches: int) -> int | None:
    """How many failed branches are tolerated: a percentage rounds down ("10%" of 15 is 1)."""
    if spec is None:
        return None
    number, percent = _parse(spec)
    return branches * number // 100 if percent else number


def _parse(spec: str) -> tuple[int, bool]:
    match = LIMIT.match(spec)
    if match is None:  # stored values were validated on the way in
        raise ValueError(f"not a rollout limit: {spec!r}")
    return int(match.group(1)), bool(match.group(2))


@dataclass(frozen=True)
class Brakes:
    """What a claimed branch's finish must look after (nothing, for most branches)."""

    execution_id: int
    target_id: int
    branch_id: int
    execution_limited: bool  # max_concurrency or max_errors set
    target_limited: bool  # max_concurrent_runs set

    @property
    def any(self) -> bool:
        return self.execution_limited or self.target_limited


def held_at_start(max_concurrency: str | None, target_limit: int | None) -> bool:
    """Whether a new branch waits for release instead of being sent with its execution."""
    return max_concurrency is not None or target_limit is not None


def release(conn: Connection, *, execution_id: int | None = None, target_id: int | None = None) -> Send:
    """Mark as dispatched as many held branches as free slots allow, oldest first: of an execution
    (its max_concurrency), or on a target (its max_concurrent_runs; with ``execution_id`` too, only
    that execution's branches, for its start). The caller commits, then sends them."""
    in_flight = _active & ((_B.c.status == _RUNNING) | _B.c.dispatched_at.is_not(None))
    if target_id is None:
        assert execution_id is not None, "release needs an execution or a target"
        scope = pick = _B.c.execution_id == execution_id
        row = conn.execute(select(_E.c.max_concurrency, _E.c.stop_reason, _E.c.status,
                                  _count(scope, in_flight).label("busy"), _size(execution_id).label("total"))
                           .where(_E.c.id == execution_id)).one()
        if row.status != "running" or row.stop_reason is not None or row.max_concurrency is None:
            return []  # nothing of it is held by the execution (a target's limit holds its own)
        limit, busy = concurrency_limit(row.max_concurrency, row.total), row.busy
        order = [_B.c.branch_number]
    else:
        scope = _B.c.target_id == target_id
        pick = scope if execution_id is None else scope & (_B.c.execution_id == execution_id)
        limit, busy = conn.execute(select(_T.c.max_concurrent_runs, _count(scope, in_flight))
                                   .where(_T.c.id == target_id)).one()
        order = [_B.c.queued_at, _B.c.id]
    if limit is not None and limit - busy <= 0:
        return []
    # skip_locked: a concurrent finisher releasing from the same queue takes the next ones, not the same
    held = (select(_B.c.id).where(pick, _B.c.status == _QUEUED, _B.c.dispatched_at.is_(None)).order_by(*order)
            .limit(None if limit is None else limit - busy).with_for_update(skip_locked=True))
    rows = conn.execute(update(_B).where(_B.c.id.in_(held.scalar_subquery()), _B.c.status == _QUEUED)
                        .values(dispatched_at=utcnow()).returning(_B.c.id, _B.c.queue)).all()
    return sorted((r.id, r.queue) for r in rows)


def _count(*where: Any) -> Any:
    return select(func.count()).where(*where).scalar_subquery()


def _size(execution_id: Any) -> Any:
    """An execution's branch count: numbered 1…N, so the unique index answers without counting rows."""
    return select(func.max(_B.c.branch_number)).where(_B.c.execution_id == execution_id).scalar_subquery()


def over_limits(conn: Connection, claimed: list[Brakes]) -> set[int]:
    """Of branches just claimed in this transaction, those that make their execution or target exceed
    its limit (the latest arrivals); the caller puts them back with `hold_again`. Row locks on the
    executions and targets, in id order, make concurrent claimers count one after another; NO KEY
    UPDATE locks, so the foreign-key checks of event rows written meanwhile do not wait on them."""
    over: set[int] = set()
    executions = sorted({b.execution_id for b in claimed if b.execution_limited})
    targets = sorted({b.target_id for b in claimed if b.target_limited})
    lock = conn.dialect.name == "postgresql"  # SQLite's writers are serialised already
    if executions:
        query = select(_E.c.id, _E.c.max_concurrency).where(_E.c.id.in_(executions)).order_by(_E.c.id)
        rows = conn.execute(query.with_for_update(key_share=True) if lock else query)
        # an error budget alone limits no claim
        capped = {row.id: row.max_concurrency for row in rows if row.max_concurrency is not None}
        if capped:  # counted after the locks are held: each statement sees what committed before it
            scope = _B.c.execution_id == _E.c.id
            counts = conn.execute(select(_E.c.id, _size(_E.c.id), _count(scope, _active, _B.c.status == _RUNNING))
                                  .where(_E.c.id.in_(capped))).all()
            for execution_id, total, running in counts:
                over |= _overflow(conn, _B.c.execution_id == execution_id,
                                  concurrency_limit(capped[execution_id], total), running)
    if targets:
        query = select(_T.c.id, _T.c.max_concurrent_runs).where(_T.c.id.in_(targets)).order_by(_T.c.id)
        for row in conn.execute(query.with_for_update(key_share=True) if lock else query).all():
            over |= _overflow(conn, _B.c.target_id == row.id, row.max_concurrent_runs)
    return over


def _overflow(conn: Connection, scope: Any, limit: int | None, running: int | None = None) -> set[int]:
    """The running branches of ``scope`` beyond ``limit``, latest first to go (``running``: their
    count, when known, spares the query in the usual case of no overflow)."""
    if limit is None or (running is not None and running <= limit):
        return set()
    ids = conn.execute(select(_B.c.id).where(scope, _B.c.status == _RUNNING)
                       .order_by(_B.c.started_at, _B.c.queued_at, _B.c.id)).scalars().all()
    return set(ids[limit:])


def hold_again(conn: Connection, branch_ids: set[int]) -> None:
    """A claim undone: the branch waits, held, for the next free slot."""
    if branch_ids:
        conn.execute(update(_B).where(_B.c.id.in_(sorted(branch_ids)), _B.c.status == _RUNNING)
                     .values(status=_QUEUED, started_at=None, heartbeat_at=None, worker=None, dispatched_at=None))


def spend_budget(conn: Connection, execution_id: int) -> list[Event]:
    """Stop the rollout once its failures exceed max_errors: queued branches end skipped (once)."""
    row = conn.execute(select(_E.c.max_errors, _E.c.stop_reason, _E.c.execution_serial, _E.c.status)
                       .where(_E.c.id == execution_id)).one()
    if row.max_errors is None or row.stop_reason is not None or row.status != "running":
        return []
    by_status = select(_B.c.status, func.count()).where(_B.c.execution_id == execution_id).group_by(_B.c.status)
    counts: dict[str, int] = dict(conn.execute(by_status).all())
    total, errors = sum(counts.values()), sum(counts.get(s, 0) for s in _ERRORS)
    budget = error_budget(row.max_errors, total)
    if budget is None or errors <= budget:
        return []
    reason = (f"rollout stopped: {errors} of {total} branches failed, more than max_errors {row.max_errors} "
              f"({budget} allowed); branches not yet started were skipped")
    now = utcnow()
    # branches first, then the execution: the order a claim locks them in, so the two never deadlock
    skipped = conn.execute(update(_B).where(_B.c.execution_id == execution_id, _B.c.status == _QUEUED)
                           .values(status=str(BranchStatus.SKIPPED), error_type=str(ErrorType.ROLLOUT_STOPPED),
                                   completed_at=now, result_error=reason)
                           .returning(_B.c.branch_serial, _B.c.target_serial_ref)).all()
    stopped = conn.execute(update(_E).where(_E.c.id == execution_id, _E.c.stop_reason.is_(None),
                                            _E.c.status == "running")
                           .values(stop_reason=reason)).rowcount
    from common.services.executions import branch_completed  # the one shape of that event (imports this module)

    said = [("rollout_stopped", {"execution_serial": row.execution_serial, "reason": reason, "errors": errors,
                                 "max_errors": row.max_errors, "skipped": len(skipped)})] if stopped else []
    return said + [branch_completed(serial, target, BranchStatus.SKIPPED, None, ErrorType.ROLLOUT_STOPPED, now, None)
                   for serial, target in sorted(skipped)]


def after_finish(conn: Connection, brakes: Brakes) -> tuple[list[Event], Send]:
    """What a finished branch frees: its execution's budget is checked, then the next held branches of
    its execution and of its target are released. The caller commits, then publishes and sends."""
    events: list[Event] = []
    send: Send = []
    if brakes.execution_limited:
        events += spend_budget(conn, brakes.execution_id)
        send += release(conn, execution_id=brakes.execution_id)
    if brakes.target_limited:
        send += release(conn, target_id=brakes.target_id)
    return events, send


def rebalance(conn: Connection) -> tuple[list[Event], Send]:
    """The sweep's safety net: every running execution with brakes, and every limited target with
    held branches, gets the after_finish a finisher may have died before doing."""
    events: list[Event] = []
    send: Send = []
    executions = conn.execute(select(_E.c.id).where(_E.c.status == "running", (_E.c.max_concurrency.is_not(None))
                                                    | (_E.c.max_errors.is_not(None)))).scalars().all()
    for execution_id in executions:
        more_events, more = after_finish(conn, Brakes(execution_id, 0, 0, True, False))
        events += more_events
        send += more
    targets = conn.execute(select(_B.c.target_id).join(_T, _T.c.id == _B.c.target_id)
                           .where(_T.c.max_concurrent_runs.is_not(None), _B.c.status == _QUEUED,
                                  _B.c.dispatched_at.is_(None)).distinct()).scalars().all()
    for target_id in targets:
        send += release(conn, target_id=target_id)
    return events, send
