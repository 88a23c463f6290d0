"""One heartbeat thread per worker process: keeps every running branch of this process alive in
the database, records the remote process group each one is running now (so a branch whose worker
dies can have its commands killed), and delivers cancel requests to the branches they concern."""
from __future__ import annotations

import logging
import threading
import time

from common.db import Database
from common.services.executions import heartbeat, record_remote_pids

log = logging.getLogger(__name__)


class HeartbeatMonitor:
    def __init__(self, db: Database, interval: float):
        self._db = db
        self._interval = interval
        self._lock = threading.Lock()
        self._running: dict[int, threading.Event] = {}
        self._pids: dict[int, int | None] = {}  # remote PIDs not yet written
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def register(self, branch_id: int) -> threading.Event:
        """Returns the branch's cancel event."""
        cancel = threading.Event()
        with self._lock:
            self._running[branch_id] = cancel
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="branch-heartbeat", daemon=True)
                self._thread.start()
        return cancel

    def unregister(self, branch_id: int) -> None:
        with self._lock:
            self._running.pop(branch_id, None)
            self._pids.pop(branch_id, None)

    def remote_pid(self, branch_id: int, pid: int | None) -> None:
        """The process group of the action the branch runs now (None: it ended); written at once by
        this thread in a heartbeat transaction, with whatever other PIDs arrived while it wrote."""
        with self._lock:
            if branch_id in self._running:
                self._pids[branch_id] = pid
        self._wake.set()

    def beat(self, *, pids_only: bool = False) -> None:
        """Mark this process's branches alive and deliver cancels; with ``pids_only`` (woken by a new
        action, between beats) just write the remote PIDs that arrived."""
        with self._lock:
            running = dict(self._running)
            pids, self._pids = self._pids, {}
        if not running or (pids_only and not pids):
            return
        try:
            with self._db.session() as session:
                if pids_only:
                    record_remote_pids(session, pids)
                    return
                cancelled = heartbeat(session, list(running), pids)
        except BaseException:
            with self._lock:  # written next time, unless a newer value came meanwhile
                self._pids = {**{b: p for b, p in pids.items() if b in self._running}, **self._pids}
            raise
        for branch_id in cancelled:
            running[branch_id].set()

    def _loop(self) -> None:
        next_beat = time.monotonic() + self._interval
        while not self._stop.is_set():
            woken = self._wake.wait(max(0.0, next_beat - time.monotonic()))
            self._wake.clear()
            due = time.monotonic() >= next_beat
            if due:
                next_beat = time.monotonic() + self._interval
            try:
                self.beat(pids_only=woken and not due)
            except Exception:
                log.warning("heartbeat failed; retrying", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
