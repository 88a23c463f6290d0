"""A worker process's announcement of the queues it consumes (common/queue_presence.py), every
HEARTBEAT_SECONDS from a thread of its own, from the moment it consumes until it stops."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from common.queue_presence import QueuePresence

log = logging.getLogger(__name__)


class PresenceAnnouncer:
    def __init__(self, presence: QueuePresence, worker: str, queues: Callable[[], list[str]], interval: float):
        """``queues`` is asked before each announcement: a queue added at run time is announced too."""
        self._presence = presence
        self._worker = worker
        self._queues = queues
        self._interval = interval
        self._stop = threading.Event()
        self._announced: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="queue-presence", daemon=True)

    def start(self) -> PresenceAnnouncer:
        self._thread.start()
        return self

    def announce(self) -> None:
        queues = self._queues()
        self._presence.announce(self._worker, queues)
        gone = sorted(set(self._announced) - set(queues))
        if gone:
            self._presence.leave(self._worker, gone)
        self._announced = queues

    def _loop(self) -> None:
        failing = False
        while True:
            try:
                self.announce()
                if failing:
                    log.info("queue presence announced again worker=%s queues=%s", self._worker,
                             ",".join(self._announced))
                failing = False
            except Exception as exc:  # Redis away: the queue looks unserved until it answers again
                if not failing:
                    log.warning("queue presence could not be announced (%s); retrying", type(exc).__name__)
                failing = True
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        """Stop announcing and leave at once, so the queue shows no worker without waiting for expiry."""
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self._presence.leave(self._worker, self._announced)
        except Exception as exc:
            log.warning("queue presence: could not leave (%s); it expires by itself", type(exc).__name__)
