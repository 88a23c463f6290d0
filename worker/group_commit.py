"""Group commit for the branch lifecycle's writes: claims, host-key pins and finishes.

At full fan-out a worker claims and finishes hundreds of branches a second, each in a transaction
of its own (checkout, BEGIN, statements, COMMIT): round trips and commits, not work. Here the
threads that claim (or finish) at the same moment share one transaction: the first becomes the
leader and writes everything queued, the others wait for it; whoever queued while it wrote leads
the next batch. Nothing waits for a batch to fill, so a lone claim or finish costs what it did.

Each branch still changes state through its own conditional update (claimed once, finished
once, whatever else runs). A batch that fails is written again one branch at a time, so one bad
row cannot take its neighbours down; a batch the database cannot take yet (an outage, a restart)
is tried again with backoff for `retry_for` seconds, so work already done on a target is not lost
to it. The leader publishes the batch's events right after its commit, in order and in one round
trip."""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from common.db import Database, retry_on_disconnect, while_unavailable
from common.metrics import GROUP_COMMIT_BATCH
from common.services import event_log, rollout
from common.services import executions as svc
from common.services.dispatch import Send, dispatch_branches
from common.statuses import BranchStatus

log = logging.getLogger(__name__)


def _in_seq_order(events: list[svc.Event]) -> list[svc.Event]:
    """Each execution's events by seq (execution_completed, when a batch closed one, is last)."""
    return sorted(events, key=lambda event: event[1].get("seq", 0))


@dataclass(eq=False)
class _Request:
    wake: threading.Event = field(default_factory=threading.Event, init=False)
    leads: bool = field(default=False, init=False)
    error: BaseException | None = field(default=None, init=False)


class GroupCommit:
    """The leader/follower queue; subclasses say how a batch is written (_write_batch) and how
    one request is written alone (_write_one)."""

    kind = "write"  # the metric's label: what the batches hold

    def __init__(self, db: Database, *, publish: Callable[[list[svc.Event]], None] | None = None,
                 max_batch: int = 64, retry_for: float = 0.0):
        self._db = db
        self._publish = publish
        self._max_batch = max_batch
        self._retry_for = retry_for  # how long a batch waits out a database outage before it fails
        self._lock = threading.Lock()
        self._queued: list[_Request] = []
        self._leading = False
        self.batches = 0  # transactions written in batches, and the requests in them (tests read these)
        self.requests = 0

    def _submit(self, request: _Request) -> None:
        with self._lock:
            self._queued.append(request)
            if not self._leading:
                self._leading = request.leads = True
        if not request.leads:
            request.wake.wait()  # set when written, or when handed the lead
        if request.leads:
            self._lead()
        if request.error is not None:
            raise request.error

    def _lead(self) -> None:
        with self._lock:
            batch, self._queued = self._queued[:self._max_batch], self._queued[self._max_batch:]
        try:
            self._write(batch)
        except BaseException as exc:  # shutting down mid-write: no waiter may take silence for success
            for request in batch:
                request.error = request.error or exc
            raise
        finally:
            with self._lock:
                successor = self._queued[0] if self._queued else None
                if successor is None:
                    self._leading = False
                else:
                    successor.leads = True
            for request in batch:
                request.leads = False
                request.wake.set()
            if successor is not None:
                successor.wake.set()

    def _write(self, batch: list[_Request]) -> None:
        try:
            while_unavailable(lambda: self._write_batch(batch), budget=self._retry_for,
                              what=f"{type(self).__name__} of {len(batch)}")
            self.batches += 1
            self.requests += len(batch)
            GROUP_COMMIT_BATCH.labels(self.kind).observe(len(batch))
        except Exception:
            log.warning("batch of %d writes failed; writing them one by one", len(batch), exc_info=True)
            for request in batch:
                try:
                    retry_on_disconnect(functools.partial(self._write_one, request))
                except Exception as exc:
                    request.error = exc
        if self._publish is not None:
            events = [event for request in batch if request.error is None for event in self._events(request)]
            self._publish(_in_seq_order(events))

    def _write_batch(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def _write_one(self, request: Any) -> None:
        raise NotImplementedError

    def _events(self, request: Any) -> list[svc.Event]:
        return []


@dataclass(eq=False)
class _Claim(_Request):
    branch_id: int
    result: tuple[svc.ClaimedBranch | None, list[svc.Event]] = field(default_factory=lambda: (None, []),
                                                                       init=False)


class Claimer(GroupCommit):
    kind = "claim"

    def __init__(self, db: Database, worker: str, **kwargs: Any):
        super().__init__(db, **kwargs)
        self._worker = worker

    def claim(self, branch_id: int) -> tuple[svc.ClaimedBranch | None, list[svc.Event]]:
        """svc.claim_branch, shared with whoever claims at the same time. Its branch_started event
        is published already (when this claimer was given `publish`)."""
        request = _Claim(branch_id)
        self._submit(request)
        return request.result

    def _write_batch(self, batch: list[_Claim]) -> None:
        with self._db.connection() as conn:
            claimed = svc.claim_branches(conn, [r.branch_id for r in batch], self._worker)
            event_log.record(conn, [event for _, events in claimed.values() for event in events])
            conn.commit()
        for request in batch:  # a branch queued twice in one batch (duplicate delivery) is claimed once
            request.result = claimed.pop(request.branch_id, (None, []))

    def _write_one(self, request: _Claim) -> None:
        with self._db.connection() as conn:
            request.result = svc.claim_branch(conn, request.branch_id, self._worker)
            event_log.record(conn, request.result[1])
            conn.commit()

    def _events(self, request: _Claim) -> list[svc.Event]:
        return request.result[1]


@dataclass(eq=False)
class _Finish(_Request):
    branch_id: int
    status: BranchStatus
    outcome: dict[str, Any]
    brakes: rollout.Brakes | None = None
    events: list[svc.Event] = field(default_factory=list, init=False)
    published: int = field(default=0, init=False)  # how many of `events` went out right after their commit


class Finisher(GroupCommit):
    kind = "finish"

    def __init__(self, db: Database, *, send: Send | None = None, **kwargs: Any):
        super().__init__(db, **kwargs)
        self._send = send  # for the held branches a finish releases (rollout limits)

    def finish(self, branch_id: int, status: BranchStatus, *, brakes: rollout.Brakes | None = None,
               **outcome: Any) -> list[svc.Event]:
        """svc.finish_and_close, shared with whoever finishes at the same time. Returns this
        branch's events (and execution_completed if its execution closed), published already
        when this finisher was given `publish`. With ``brakes``, the slot it frees goes to the next
        held branch and its execution's error budget is checked, in the same batch."""
        request = _Finish(branch_id, status, outcome, brakes)
        self._submit(request)
        return request.events

    def _write_batch(self, batch: list[_Finish]) -> None:
        closing: dict[int, _Finish] = {}  # each touched execution, and the request its closing event goes to
        with self._db.connection() as conn:
            # in id order, so two batches (or a batch and a heartbeat) never wait on each other in a cycle
            for request in sorted(batch, key=lambda r: r.branch_id):
                request.events, execution_id = svc.finish_branch(conn, request.branch_id, request.status,
                                                                 **request.outcome)
                if execution_id is not None:
                    closing[execution_id] = request
            released = self._after_finish(conn, [r for r in batch if r.brakes is not None and r.events])
            event_log.record(conn, [event for request in batch for event in request.events])
            conn.commit()
            self._publish_committed(batch)  # before the close checks and the broker: monitors wait on neither
            for execution_id, request in closing.items():
                try:
                    request.events += svc.close_when_done(conn, execution_id)
                except Exception:  # finished and committed; the sweep closes what this could not
                    log.warning("close check failed execution_id=%s", execution_id, exc_info=True)
                    break
        if released and self._send is not None:
            dispatch_branches(self._db, self._send, released)

    def _publish_committed(self, batch: list[_Finish]) -> None:
        if self._publish is None:
            return
        self._publish(_in_seq_order([event for request in batch for event in request.events]))
        for request in batch:
            request.published = len(request.events)

    @staticmethod
    def _after_finish(conn: Connection, finished: list[_Finish]) -> list[tuple[int, str]]:
        """Budgets checked and freed slots handed on, once per execution and target of the batch, in
        the finishing transaction; under a savepoint, so a failure leaves only this to the sweep."""
        executions = {r.brakes.execution_id: r for r in reversed(finished) if r.brakes and r.brakes.execution_limited}
        targets = sorted({r.brakes.target_id for r in finished if r.brakes and r.brakes.target_limited})
        if not executions and not targets:
            return []
        released: list[tuple[int, str]] = []
        stopped: list[tuple[_Finish, list[svc.Event]]] = []
        try:
            with conn.begin_nested():
                for execution_id, request in sorted(executions.items()):
                    stopped.append((request, rollout.spend_budget(conn, execution_id)))
                    released += rollout.release(conn, execution_id=execution_id)
                for target_id in targets:
                    released += rollout.release(conn, target_id=target_id)
        except Exception:
            log.warning("rollout step failed for %d finished branches; the sweep does it", len(finished),
                        exc_info=True)
            return []
        for request, events in stopped:  # recorded and published with its execution's finishes
            request.events += events
        return released

    def _write_one(self, request: _Finish) -> None:
        request.events = svc.finish_and_close(self._db, request.branch_id, request.status, **request.outcome)
        request.published = 0

    def _events(self, request: _Finish) -> list[svc.Event]:
        return request.events[request.published:]


@dataclass(eq=False)
class _Pin(_Request):
    target_id: int
    host_key: str
    fingerprint: str


class Pinner(GroupCommit):
    """Trust on first use, before the first command runs; a cold fan-out pins a key per target."""

    kind = "pin"

    def pin(self, target_id: int, host_key: str, fingerprint: str) -> None:
        self._submit(_Pin(target_id, host_key, fingerprint))

    def _write_batch(self, batch: list[_Pin]) -> None:
        with self._db.connection() as conn:
            for request in sorted(batch, key=lambda r: r.target_id):
                svc.pin_host_key(conn, request.target_id, request.host_key, request.fingerprint)
            conn.commit()

    def _write_one(self, request: _Pin) -> None:
        self._write_batch([request])
