"""A running branch's output as it is printed: masked, kept for its result, and published live.

Each stream of a branch (stdout, stderr) passes through one `StreamTap` on its way from the runner's
read loop to the step that records it: the tap masks secrets first (common/masking.py), so nothing
after it ever sees one, then keeps the head and tail the branch's stored result is made of, and
coalesces the bytes into `branch_output` events: a chunk goes out when 64 KiB are waiting (from the
reading thread) or 100 ms after its first byte arrived (from the process's one `Flusher` thread,
since a command that prints a line and then works for an hour must not sit on it), handed to the
process's one `Sender` thread. Each chunk is written to the OutputStore before its event is
published, so a client that reads the output endpoint at an event's offset finds the bytes. The
events are hints like every event, and are not numbered: a client resumes from the last offset it
saw, through the endpoint."""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterable

from common.events import Event, EventBus, publish_events
from common.live_output import OutputStore
from common.masking import StreamMasker
from common.output import OutputCollector, utf8_complete_length

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


class Sender:
    """One thread per worker process that writes live output to the store, then publishes its events.
    A branch's reading thread hands a chunk over and reads on; the sender writes what waits, from
    every stream, in one store write and one publish: a 100-host flood was a Redis MULTI and a
    PUBLISH per 64 KiB from 100 threads. What waits is bounded: past MAX_WAITING bytes a reading
    thread waits its turn (the command's output then waits in SSH's window, as it did on Redis)."""

    MAX_WAITING = 8 << 20
    CLOSE_WAIT_SECONDS = 30.0  # a branch's end waits this long at most for its last chunks

    def __init__(self, store: OutputStore, events: EventBus) -> None:
        self._store = store
        self._events = events
        self._cond = threading.Condition()
        self._waiting: list[tuple[BranchOutput, str, int, bytes]] = []
        self._bytes = 0
        self._queued = 0  # chunks handed over so far
        self._sent = 0  # chunks written and published (or given up on) so far
        self._thread: threading.Thread | None = None
        self._stopped = False

    def put(self, owner: BranchOutput, stream: str, offset: int, chunk: bytes) -> int:
        """Hand a chunk over; returns its number, for `wait_sent`."""
        with self._cond:
            while self._bytes > self.MAX_WAITING and not self._stopped:
                self._cond.wait()
            self._waiting.append((owner, stream, offset, chunk))
            self._bytes += len(chunk)
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="output-sender", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._queued

    def wait_sent(self, number: int) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._sent >= number or self._stopped, self.CLOSE_WAIT_SECONDS):
                log.warning("live output still unsent after %.0f s; the branch ends without it",
                            self.CLOSE_WAIT_SECONDS)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._stopped)
                if self._stopped:
                    return
                batch, self._waiting = self._waiting, []
            try:
                self._send(batch)
            except Exception:  # a bug here must not stop every other branch's output
                log.exception("live output send failed")
            with self._cond:
                self._bytes -= sum(len(chunk) for *_, chunk in batch)
                self._sent += len(batch)
                self._cond.notify_all()

    def _send(self, batch: list[tuple[BranchOutput, str, int, bytes]]) -> None:
        runs: dict[tuple[str, str], list[tuple[int, bytes]]] = {}  # a stream's chunks are consecutive
        for owner, stream, offset, chunk in batch:
            runs.setdefault((owner.branch_serial, stream), []).append((offset, chunk))
        self._store.append_many([(serial, stream, chunks[0][0], b"".join(c for _, c in chunks))
                                 for (serial, stream), chunks in runs.items()])
        if self._store.available():  # Redis is away: its events would wait on it too; results are stored anyway
            publish_events(self._events, [owner.event(stream, offset, chunk) for owner, stream, offset, chunk in batch])

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


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
        self._last = 0  # the number of its last chunk handed to the sender

    def hide(self, secrets: Iterable[str]) -> None:
        """Values neither stream may show (the target's password, secret parameters)."""
        secrets = list(secrets)
        self.stdout.hide(secrets)
        self.stderr.hide(secrets)

    def send(self, stream: str, offset: int, chunk: bytes) -> None:
        self._last = self._live.sender.put(self, stream, offset, chunk)

    def event(self, stream: str, offset: int, chunk: bytes) -> Event:
        return "branch_output", {**self._ids, "stream": stream, "offset": offset, "data": chunk}  # bytes: see the bus

    def close(self) -> None:
        """Send the last bytes and wait until they are out: the branch's end is published after them."""
        for tap in (self.stdout, self.stderr):
            tap.finish()
            tap.flush_due()
        if self._last:
            self._live.sender.wait_sent(self._last)

    def finished(self) -> None:
        self._live.store.finish(self.branch_serial)


class LiveOutput:
    """What a worker process needs for every branch's live output: the store, the bus, the flusher."""

    def __init__(self, store: OutputStore, events: EventBus, cap: int) -> None:
        self.store = store
        self.events = events
        self.cap = cap
        self.flusher = Flusher()
        self.sender = Sender(store, events)

    def open(self, branch_serial: str, execution_serial: str) -> BranchOutput:
        return BranchOutput(self, branch_serial, execution_serial)

    def close(self) -> None:
        self.flusher.stop()
        self.sender.stop()
        self.store.close()
