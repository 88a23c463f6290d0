"""A running branch's output as it is printed: masked, kept for its result, and published live.

Each stream of a branch (stdout, stderr) passes through one `StreamTap` on its way from the runner's
read loop to the step that records it: the tap masks secrets first (common/masking.py), so nothing
after it ever sees one, then keeps the head and tail the branch's stored result is made of, and
coalesces the bytes into `branch_output` events: a chunk goes out when 64 KiB are waiting (from the
reading thread) or 100 ms after its first byte arrived (from the process's one `Flusher` thread,
since a command that prints a line and then works for an hour must not sit on it). Each chunk is
written to the OutputStore before its event is published, so a client that reads the output
endpoint at an event's offset finds the bytes. The events are hints like every event, and are not
numbered: a client resumes from the last offset it saw, through the endpoint."""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterable

from common.events import EventBus, publish_events
from common.live_output import OutputStore
from common.masking import StreamMasker
from common.output import OutputCollector, decode_output, utf8_complete_length

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
FLUSH_BYTES = 64 * 1024


class Flusher:
    """One thread per worker process that flushes chunks no 64 KiB flush has sent within FLUSH_SECONDS.
    It sleeps until the earliest deadline; with nothing printing it does not wake at all."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, StreamTap]] = []
        self._order = itertools.count()  # ties on a deadline never compare taps
        self._thread: threading.Thread | None = None
        self._stopped = False

    def schedule(self, tap: StreamTap, at: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (at, next(self._order), tap))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="output-flusher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._stopped:
                    return
                _, _, tap = heapq.heappop(self._due)
            try:
                tap.flush_due()
            except Exception:  # a bug here must not stop every other branch's output
                log.exception("output flush failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


class StreamTap:
    """One stream of one running branch. `feed` and `end` are called by the runner, through the step's
    collector (worker/runners/base.py), and return the masked bytes the step records."""

    def __init__(self, owner: BranchOutput, name: str, cap: int) -> None:
        self.name = name
        self.collected = OutputCollector(cap)  # the branch's result for this stream
        self._owner = owner
        self._masker = StreamMasker(())
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._offset = 0  # of the first pending byte in the stream
        self._scheduled = False
        self._ends_line = True

    def hide(self, secrets: Iterable[str]) -> None:
        """Mask these values from here on (set before the command's first byte arrives)."""
        self._masker = StreamMasker(secrets)

    def feed(self, data: bytes) -> bytes:
        masked = self._masker.feed(data)
        self._add(masked)
        return masked

    def end(self) -> bytes:
        """A command ended: its step records what the masker still holds (a possible secret's start,
        masked on its own), while the branch's stream keeps holding it, since the next action's
        output may complete the secret."""
        return self._masker.mask(self._masker.pending)

    def finish(self) -> None:
        """The branch's last command ended (or the worker speaks): what was held back is certain now."""
        self._add(self._masker.flush())

    def mask(self, text: str) -> str:
        return self._masker.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def note(self, text: str) -> None:
        """The worker's own words (why a step ended, why nothing ran), masked too, on a line of their own."""
        self.finish()
        with self._lock:
            separator = "" if self._ends_line else "\n"
        self._add((separator + self.mask(text)).encode("utf-8", "surrogateescape"))

    def text(self) -> str | None:
        """The stored result: head and tail around the marker, None when nothing was printed."""
        return self.collected.text() if self.collected.total_bytes else None

    def _add(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self.collected.feed(data)
            self._ends_line = data.endswith(b"\n")
            self._pending += data
            while len(self._pending) >= FLUSH_BYTES:
                # cut where a character ends, so every event's text decodes whole
                self._send(utf8_complete_length(self._pending[:FLUSH_BYTES]) or FLUSH_BYTES)
            if self._pending and not self._scheduled:
                self._scheduled = True
                self._owner.flusher.schedule(self, time.monotonic() + FLUSH_SECONDS)

    def flush_due(self) -> None:
        """Its time is up: send what waits, to the last byte."""
        with self._lock:
            self._scheduled = False
            self._send(len(self._pending))

    def _send(self, size: int) -> None:  # with the lock held: one stream's chunks leave in order
        if size <= 0:
            return
        chunk = bytes(self._pending[:size])
        del self._pending[:size]
        offset, self._offset = self._offset, self._offset + size
        self._owner.send(self.name, offset, chunk)


class BranchOutput:
    """The two streams of one running branch; `close` sends the last bytes, before the branch's end is
    published, and `finished` lets the store forget them once the result is committed."""

    def __init__(self, live: LiveOutput, branch_serial: str, execution_serial: str) -> None:
        self.branch_serial = branch_serial
        self.flusher = live.flusher
        self._live = live
        self._ids = {"execution_serial": execution_serial, "job_serial": branch_serial.split(".")[0],
                     "branch_serial": branch_serial}
        self.stdout = StreamTap(self, "stdout", live.cap)
        self.stderr = StreamTap(self, "stderr", live.cap)

    def hide(self, secrets: Iterable[str]) -> None:
        """Values neither stream may show (the target's password, secret parameters)."""
        secrets = list(secrets)
        self.stdout.hide(secrets)
        self.stderr.hide(secrets)

    def send(self, stream: str, offset: int, chunk: bytes) -> None:
        store = self._live.store
        store.append(self.branch_serial, stream, offset, chunk)
        if not store.available():  # Redis is away: its events would wait on it too; the result is stored anyway
            return
        publish_events(self._live.events, [("branch_output", {**self._ids, "stream": stream, "offset": offset,
                                                              "data": decode_output(chunk)})])

    def close(self) -> None:
        for tap in (self.stdout, self.stderr):
            tap.finish()
            tap.flush_due()

    def finished(self) -> None:
        self._live.store.finish(self.branch_serial)


class LiveOutput:
    """What a worker process needs for every branch's live output: the store, the bus, the flusher."""

    def __init__(self, store: OutputStore, events: EventBus, cap: int) -> None:
        self.store = store
        self.events = events
        self.cap = cap
        self.flusher = Flusher()

    def open(self, branch_serial: str, execution_serial: str) -> BranchOutput:
        return BranchOutput(self, branch_serial, execution_serial)

    def close(self) -> None:
        self.flusher.stop()
        self.store.close()
