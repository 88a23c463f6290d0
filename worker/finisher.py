"""Group commit for finishing branches.

At full fan-out a worker finishes hundreds of branches a second, each in a transaction of its own
(checkout, BEGIN, UPDATE, INSERT, COMMIT, then the close check): round trips and commits, not
work. Here the threads that finish at the same moment share one transaction: the first becomes
the leader and writes everything queued, the others wait for it; whoever queued while it wrote
leads the next batch. Nothing waits for a batch to fill, so a lone finish costs what it did.

Each branch is still finished by its own conditional update (exactly once, whatever else runs),
and every execution the batch touched gets the usual close check after the commit. A batch that
fails is written again one branch at a time, so one bad row cannot take its neighbours down."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from common.db import Database, retry_on_disconnect
from common.services import executions as svc
from common.statuses import BranchStatus

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Finish:
    branch_id: int
    status: BranchStatus
    outcome: dict[str, Any]
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    events: list[svc.Event] = field(default_factory=list)
    error: BaseException | None = None


class Finisher:
    def __init__(self, db: Database, max_batch: int = 64):
        self._db = db
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queued: list[_Finish] = []
        self._leading = False
        self.batches = 0  # transactions written (a test reads these)
        self.finished = 0

    def finish(self, branch_id: int, status: BranchStatus, **outcome: Any) -> list[svc.Event]:
        """svc.finish_and_close, shared with whoever finishes at the same time. Returns this
        branch's events (and execution_completed if its execution closed)."""
        request = _Finish(branch_id, status, outcome)
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
        return request.events

    def _lead(self) -> None:
        with self._lock:
            batch, self._queued = self._queued[:self._max_batch], self._queued[self._max_batch:]
        try:
            self._write(batch)
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

    def _write(self, batch: list[_Finish]) -> None:
        try:
            closing = self._finish_all(batch)
        except Exception:
            log.warning("batch of %d finishes failed; writing them one by one", len(batch), exc_info=True)
            for request in batch:
                self._write_one(request)
            return
        for execution_id, request in closing.items():
            try:
                with self._db.connection() as conn:
                    if svc.none_active(conn, execution_id):
                        request.events += svc.close_if_done(conn, execution_id)
                        conn.commit()
            except Exception:  # finished and committed; the sweep closes what this could not
                log.warning("close check failed execution_id=%s", execution_id, exc_info=True)

    def _finish_all(self, batch: list[_Finish]) -> dict[int, _Finish]:
        """One transaction, rows in id order (two batches never wait on each other in a cycle).
        Returns each touched execution with the request its closing event goes to."""
        closing: dict[int, _Finish] = {}
        with self._db.connection() as conn:
            for request in sorted(batch, key=lambda r: r.branch_id):
                request.events, execution_id = svc.finish_branch(conn, request.branch_id, request.status,
                                                                 **request.outcome)
                if execution_id is not None:
                    closing[execution_id] = request
            conn.commit()
        self.batches += 1
        self.finished += len(batch)
        return closing

    def _write_one(self, request: _Finish) -> None:
        try:
            request.events = retry_on_disconnect(lambda: svc.finish_and_close(
                self._db, request.branch_id, request.status, **request.outcome))
        except Exception as exc:
            request.error = exc
