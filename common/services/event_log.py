"""The execution event log: every event an execution's transactions commit, numbered 1, 2, 3 … per
execution, so a monitor can resume after any disconnect and tell a gap from silence.

`record` is the last thing a transaction does before its commit: it bumps the execution's counter
row (a row lock until that commit, so a later seq always commits later) and writes the events with
their seq, which it also sets in each event's data for the publish that follows the commit. Live
delivery stays Redis pub/sub (or the in-process bus); this table is what a monitor reads to fill a
gap or to resume with `since`. `branch_output` events are not recorded: their `offset` is their
cursor, and the bytes are readable from the output endpoint.

Kept as long as the execution's steps and outputs (RETENTION_DAYS): a few small rows per branch,
pruned with the rest of an old execution's bulk."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, text
from sqlalchemy.orm import Session

from common.models import Execution, ExecutionEvent, utcnow

Event = tuple[str, dict[str, Any]]
Executor = Session | Connection

_EV = cast(Table, ExecutionEvent.__table__)
_E = cast(Table, Execution.__table__)

# one statement takes the execution's counter row (made on its first event) and n numbers from it
_BUMP = text("""
    INSERT INTO execution_event_counters (execution_id, last_seq)
    SELECT id, :n FROM executions WHERE execution_serial = :serial
    ON CONFLICT (execution_id) DO UPDATE SET last_seq = execution_event_counters.last_seq + excluded.last_seq
    RETURNING execution_id, last_seq""")
_INSERT = insert(_EV).values(execution_id=bindparam("e_id"), seq=bindparam("e_seq"), type=bindparam("e_type"),
                             data=bindparam("e_data"), created_at=bindparam("e_at"))


def record(session: Executor, events: list[Event]) -> list[Event]:
    """Number and store ``events`` in the caller's transaction, which must commit right after. Sets
    ``data["seq"]`` on each recorded event and returns the list. Executions are taken in serial order,
    so two transactions that both touch executions A and B never wait on each other in a cycle."""
    by_execution: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event[1].get("execution_serial"):
            by_execution[event[1]["execution_serial"]].append(event)
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for serial in sorted(by_execution):
        items = by_execution[serial]
        bumped = session.execute(_BUMP, {"n": len(items), "serial": serial}).first()
        if bumped is None:  # no such execution: nothing to number it by (events are hints; never fail the caller)
            continue
        execution_id, last = bumped
        for seq, (kind, data) in enumerate(items, start=last - len(items) + 1):
            rows.append({"e_id": execution_id, "e_seq": seq, "e_type": kind, "e_data": dict(data), "e_at": now})
            data["seq"] = seq
    if rows:
        session.execute(_INSERT, rows)
    return events


def events_after(session: Executor, execution_serial: str, since: int, limit: int = 1000) -> list[Event]:
    """The execution's recorded events with seq > since, in order, as published (seq in data)."""
    query = (select(_EV.c.seq, _EV.c.type, _EV.c.data).join(_E, _E.c.id == _EV.c.execution_id)
             .where(_E.c.execution_serial == execution_serial, _EV.c.seq > since).order_by(_EV.c.seq).limit(limit))
    return [(row.type, {**row.data, "seq": row.seq}) for row in session.execute(query)]


def pruned(session: Executor, execution_serial: str) -> bool:
    """Whether the execution's history, its events with it, was pruned (RETENTION_DAYS)."""
    return session.execute(select(_E.c.pruned_at).where(_E.c.execution_serial == execution_serial)).scalar() is not None


def last_seq(session: Executor, execution_serial: str) -> int | None:
    """The execution's latest seq (0 before its first event), or None when there is no such execution."""
    row = session.execute(select(_E.c.id, func.coalesce(func.max(_EV.c.seq), 0))
                          .select_from(_E).outerjoin(_EV, _EV.c.execution_id == _E.c.id)
                          .where(_E.c.execution_serial == execution_serial).group_by(_E.c.id)).first()
    return None if row is None else int(row[1])

