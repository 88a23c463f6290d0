"""A running branch's output, readable by offset while it runs.

Offsets count the bytes of one stream of a branch (stdout or stderr: its actions' output one after
the other, secrets already masked) from 0. While the branch runs, its worker appends each flushed
chunk here; the API reads from any offset. A stream keeps what its stored result will keep, the
first and the last OUTPUT_CAP_BYTES / 2 bytes (common.output.OutputView), so a branch printing
gigabytes costs the store no more than the row its result goes to. Once the branch has ended the API
reads the stored result instead, in the same offsets; a finished stream stays here FINISHED_TTL
seconds more, for readers that saw the branch running a moment before.

Redis holds the streams when REDIS_URL is set (workers and API processes on many hosts); memory
does in the embedded default, where worker and API are one process sharing one store."""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from common.config import Settings
from common.errors import Unavailable
from common.output import OutputCollector, OutputView

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
RUNNING_TTL = 24 * 3600  # seconds, renewed by every chunk: what a dead worker left goes away by itself
FINISHED_TTL = 120  # seconds a stream is kept after its branch's result was committed
PAUSE_SECONDS = 5.0  # after a failed write, live output waits this long before it tries Redis again
Chunk = tuple[str, str, int, bytes]  # branch serial, stream, offset, data


class OutputStore(Protocol):
    """Where the chunks of running branches live between the worker that prints and the API that reads."""

    def available(self) -> bool:
        """Whether writes (and the output events beside them) are worth trying now."""

    def append(self, branch_serial: str, stream: str, offset: int, data: bytes) -> None:
        """Add the chunk starting at byte `offset` (chunks of a stream come in order). Never raises."""

    def append_many(self, chunks: list[Chunk]) -> None:
        """`append` each, in one write. Never raises."""

    def finish(self, branch_serial: str) -> None:
        """The branch's result is committed: keep its streams FINISHED_TTL seconds more."""

    def view(self, branch_serial: str, stream: str) -> OutputView | None:
        """What is kept of the stream, or None when nothing was (not printed yet, or long finished);
        raises Unavailable when the store cannot be read."""

    def close(self) -> None: ...


class LocalOutputStore:
    """In memory, for the embedded default (worker and API in one process)."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._lock = threading.Lock()
        self._streams: dict[tuple[str, str], OutputCollector] = {}
        self._finished: collections.deque[tuple[float, str]] = collections.deque()

    def available(self) -> bool:
        return True

    def append(self, branch_serial: str, stream: str, offset: int, data: bytes) -> None:
        self.append_many([(branch_serial, stream, offset, data)])

    def append_many(self, chunks: list[Chunk]) -> None:
        with self._lock:
            for branch_serial, stream, _, data in chunks:
                self._streams.setdefault((branch_serial, stream), OutputCollector(self._cap)).feed(data)

    def finish(self, branch_serial: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._finished.append((now + FINISHED_TTL, branch_serial))
            while self._finished and self._finished[0][0] <= now:
                _, gone = self._finished.popleft()
                for stream in STREAMS:
                    self._streams.pop((gone, stream), None)

    def view(self, branch_serial: str, stream: str) -> OutputView | None:
        with self._lock:
            collector = self._streams.get((branch_serial, stream))
            if collector is None:
                return None
            head, tail = collector.parts()
            return OutputView(head, tail, collector.total_bytes)

    def close(self) -> None:
        pass


@dataclass
class _Written:
    """What a worker has written of one stream: how much head, and the sizes of the tail's chunks."""

    head: int = 0
    chunks: collections.deque[int] = field(default_factory=collections.deque)
    tail: int = 0
    broken: bool = False  # a chunk was lost: later ones would land at the wrong offsets


class RedisOutputStore:
    """Three keys per stream: the head (a string APPENDed up to half the cap), the tail (a list of
    chunks, trimmed from the left while the rest still covers half the cap) and the total. Each chunk
    is written in one MULTI (with the other chunks written at the same time), so a reader (GET,
    LRANGE, GET in one MULTI too) never sees half a chunk."""

    def __init__(self, url: str, cap: int) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # no retries, short timeouts: a read loop waiting on Redis would hold up the command's own output
        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        self._paused_until = 0.0
        self._head_cap = cap // 2
        self._tail_cap = cap - cap // 2
        self._lock = threading.Lock()
        self._written: dict[tuple[str, str], _Written] = {}  # the streams this process writes

    @staticmethod
    def _keys(branch_serial: str, stream: str) -> tuple[str, str, str]:
        base = f"opsconductor:output:{branch_serial}:{stream}"
        return f"{base}:head", f"{base}:tail", f"{base}:total"

    def available(self) -> bool:
        """False for PAUSE_SECONDS after a failed write: Redis is away, and waiting on it costs every stream."""
        return time.monotonic() >= self._paused_until

    def append(self, branch_serial: str, stream: str, offset: int, data: bytes) -> None:
        self.append_many([(branch_serial, stream, offset, data)])

    def append_many(self, chunks: list[Chunk]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        used: list[_Written] = []
        with self._lock:
            for branch_serial, stream, offset, data in chunks:
                written = self._written.setdefault((branch_serial, stream), _Written())
                if written.broken or not self.available():
                    written.broken = True
                    continue
                self._add(pipe, written, branch_serial, stream, offset, data)
                used.append(written)
        if not used:
            return
        try:
            pipe.execute()
        except Exception:  # live output is a convenience: the branch and its stored result go on
            with self._lock:
                for written in used:
                    written.broken = True
                self._paused_until = time.monotonic() + PAUSE_SECONDS
            log.warning("live output not stored for %d chunks; pausing live output for %.0f s", len(used),
                        PAUSE_SECONDS, exc_info=True)

    def _add(self, pipe, written: _Written, branch_serial: str, stream: str, offset: int, data: bytes) -> None:
        room = max(self._head_cap - written.head, 0)
        head, rest = data[:room], data[room:]
        written.head += len(head)
        drop = 0
        if rest:
            written.chunks.append(len(rest))
            written.tail += len(rest)
            while written.chunks and written.tail - written.chunks[0] >= self._tail_cap:
                written.tail -= written.chunks.popleft()
                drop += 1
        head_key, tail_key, total_key = self._keys(branch_serial, stream)
        if head:
            pipe.append(head_key, head)
        if rest:
            pipe.rpush(tail_key, rest)
        if drop:
            pipe.ltrim(tail_key, drop, -1)
        pipe.set(total_key, offset + len(data), ex=RUNNING_TTL)
        pipe.expire(head_key, RUNNING_TTL)
        pipe.expire(tail_key, RUNNING_TTL)

    def finish(self, branch_serial: str) -> None:
        with self._lock:
            for stream in STREAMS:
                self._written.pop((branch_serial, stream), None)
        pipe = self._redis.pipeline(transaction=False)
        for stream in STREAMS:
            for key in self._keys(branch_serial, stream):
                pipe.expire(key, FINISHED_TTL)
        try:
            pipe.execute()
        except Exception:
            log.warning("live output not expired branch=%s (it expires by itself)", branch_serial, exc_info=True)

    def view(self, branch_serial: str, stream: str) -> OutputView | None:
        head_key, tail_key, total_key = self._keys(branch_serial, stream)
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(head_key)
        pipe.lrange(tail_key, 0, -1)
        pipe.get(total_key)
        try:
            head, chunks, total = pipe.execute()
        except Exception as exc:  # not "nothing printed yet": a client reading on from 0 would get duplicates
            log.warning("live output unreadable branch=%s stream=%s", branch_serial, stream, exc_info=True)
            raise Unavailable("Live output cannot be read now (Redis unreachable); retry shortly",
                              {"branch_serial": branch_serial, "stream": stream}) from exc
        if total is None:
            return None
        tail = b"".join(chunks)
        tail = tail[len(tail) - self._tail_cap:] if len(tail) > self._tail_cap else tail
        return OutputView(head or b"", tail, int(total))

    def close(self) -> None:
        self._redis.close()


def make_output_store(settings: Settings) -> OutputStore:
    if settings.redis_url:
        return RedisOutputStore(settings.redis_url, settings.output_cap_bytes)
    return LocalOutputStore(settings.output_cap_bytes)
