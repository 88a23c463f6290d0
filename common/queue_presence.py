"""Which queues have a live worker. Every worker process announces the queues it consumes every
HEARTBEAT_SECONDS; the API tells from it whether a target's queue has anyone to run its branches
(an agent host that is down leaves them `queued`, which looks like a slow queue unless it is said).

Redis holds one sorted set per queue: worker name -> when its announcement expires, in Redis's own
clock (agent hosts' clocks may be off); and an index of the queues announced (queue -> when its latest
announcement expires), so that listing them is one command, not a SCAN of the whole keyspace (which
also holds the broker's, the limiter's and every running stream's keys). A worker that stops cleanly
leaves at once; one that was killed drops out WORKER_LOST_SECONDS after its last announcement. Without
Redis (the embedded default) the one in-process worker takes every queue."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from common.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "opsconductor:queue-workers:"
INDEX_KEY = "opsconductor:queues-announced"
EMBEDDED_WORKER = "embedded"
PAUSE_SECONDS = 5.0  # after a failed read, reads report "unknown" this long without asking Redis

# KEYS: the index, then one set per queue; ARGV: worker, seconds the announcement lasts, then the queues' names
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
local lasts = math.ceil(ttl) + 1
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  redis.call('EXPIRE', KEYS[i], lasts)
  local latest = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
  if not latest or tonumber(latest) < now + ttl then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i + 1])
  end
end
if redis.call('TTL', KEYS[1]) < lasts then
  redis.call('EXPIRE', KEYS[1], lasts)
end
return #KEYS - 1
"""
# KEYS: the index, then one set per queue; ARGV: worker, then the queues' names. A queue no one else announced
# leaves the index with it.
_LEAVE = """
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return #KEYS - 1
"""
# KEYS: the index; returns the queues whose latest announcement has not expired
_ANNOUNCED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
# KEYS: one set per queue; returns, per key, the workers whose announcement has not expired
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf')
end
return out
"""


class QueuePresence(Protocol):
    def announce(self, worker: str, queues: Iterable[str]) -> None:
        """``worker`` consumes ``queues`` now (raises when the store is away: the caller retries)."""

    def leave(self, worker: str, queues: Iterable[str]) -> None:
        """``worker`` stops consuming ``queues``."""

    def workers(self, queues: Iterable[str]) -> dict[str, list[str]] | None:
        """The live workers of each queue (sorted names); None when that cannot be known now."""

    def announced_queues(self) -> list[str]:
        """Every queue some worker announced lately, with or without targets on it."""

    def close(self) -> None: ...


class RedisQueuePresence:
    def __init__(self, url: str, ttl: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # a target read waits at most a second for this answer, and shows null rather than fail
        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1,
                                           retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._ttl = max(1.0, ttl)
        self._paused_until = 0.0
        self._announce = self._redis.register_script(_ANNOUNCE)
        self._leave = self._redis.register_script(_LEAVE)
        self._announced = self._redis.register_script(_ANNOUNCED)
        self._live = self._redis.register_script(_LIVE)

    def announce(self, worker: str, queues: Iterable[str]) -> None:
        names = sorted(set(queues))
        if names:
            self._announce(keys=[INDEX_KEY, *(KEY_PREFIX + q for q in names)], args=[worker, f"{self._ttl:g}", *names])

    def leave(self, worker: str, queues: Iterable[str]) -> None:
        names = sorted(set(queues))
        if names:
            self._leave(keys=[INDEX_KEY, *(KEY_PREFIX + q for q in names)], args=[worker, *names])

    def workers(self, queues: Iterable[str]) -> dict[str, list[str]] | None:
        names = sorted(set(queues))
        if not names:
            return {}
        live = self._read(lambda: self._live(keys=[KEY_PREFIX + q for q in names]))
        return None if live is None else {q: sorted(ws) for q, ws in zip(names, live, strict=True)}

    def announced_queues(self) -> list[str]:
        """Every queue whose latest announcement has not expired, and that was not left by all who announced it."""
        return sorted(self._read(lambda: self._announced(keys=[INDEX_KEY])) or [])

    def _read(self, script: Callable[[], Any]) -> Any:
        """A read reports what it knows: Redis away is "unknown" (None), never an error. After a failure
        reads are not tried for PAUSE_SECONDS, so that a Redis that hangs costs one request a second's
        wait, not every target read."""
        if time.monotonic() < self._paused_until:
            return None
        try:
            return script()
        except Exception as exc:
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            log.warning("queue presence unavailable (%s); not asked again for %.0f s", type(exc).__name__,
                        PAUSE_SECONDS)
            return None

    def close(self) -> None:
        self._redis.close()


class EmbeddedQueuePresence:
    """The embedded default: its in-process worker runs the branches of every queue."""

    def announce(self, worker: str, queues: Iterable[str]) -> None:
        return None

    def leave(self, worker: str, queues: Iterable[str]) -> None:
        return None

    def workers(self, queues: Iterable[str]) -> dict[str, list[str]] | None:
        return {q: [EMBEDDED_WORKER] for q in sorted(set(queues))}

    def announced_queues(self) -> list[str]:
        return []

    def close(self) -> None:
        return None


def make_queue_presence(settings: Settings) -> RedisQueuePresence | EmbeddedQueuePresence:
    """An announcement lasts WORKER_LOST_SECONDS: the silence after which a branch's worker counts as dead."""
    if settings.redis_url:
        return RedisQueuePresence(settings.redis_url, ttl=max(settings.worker_lost_seconds,
                                                               2 * settings.heartbeat_seconds))
    return EmbeddedQueuePresence()
