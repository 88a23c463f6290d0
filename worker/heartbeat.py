"""One heartbeat thread per worker process: keeps every running branch of this process alive in
the database and delivers cancel requests to the branches they concern."""
from __future__ import annotations

import logging
import threading

from common.db import Database
from common.services.executions import heartbeat

log = logging.getLogger(__name__)


class HeartbeatMonitor:
    def __init__(self, db: Database, interval: float):
        self._db = db
        self._interval = interval
        self._lock = threading.Lock()
        self._running: dict[int, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

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

    def beat(self) -> None:
        with self._lock:
            running = dict(self._running)
        if not running:
            return
        with self._db.session() as session:
            cancelled = heartbeat(session, list(running))
        for branch_id in cancelled:
            running[branch_id].set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat failed; retrying", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
