"""Which queues have a live worker. Every worker process announces the queues it consumes every
HEARTBEAT_SECONDS; the API tells from it whether a target's queue has anyone to run its branches
(an agent host that is down leaves them `queued`, which looks like a slow queue unless it is said).

Redis holds one sorted set per queue: worker name -> when its announcement expires, in Redis's own
clock (agent hosts' clocks may be off). A worker that stops cleanly leaves at once; one that was
killed drops out WORKER_LOST_SECONDS after its last announcement. Without Redis (the embedded
default) the one in-process worker takes every queue."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from common.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "opsconductor:queue-workers:"
EMBEDDED_WORKER = "embedded"

# KEYS: one set per queue; ARGV: worker, seconds the announcement lasts
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2])) + 1)
end
return #KEYS
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
        self._announce = self._redis.register_script(_ANNOUNCE)
        self._live = self._redis.register_script(_LIVE)

    def announce(self, worker: str, queues: Iterable[str]) -> None:
        keys = [KEY_PREFIX + q for q in sorted(set(queues))]
        if keys:
            self._announce(keys=keys, args=[worker, f"{self._ttl:g}"])

    def leave(self, worker: str, queues: Iterable[str]) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            for queue in set(queues):
                pipe.zrem(KEY_PREFIX + queue, worker)
            pipe.execute()

    def workers(self, queues: Iterable[str]) -> dict[str, list[str]] | None:
        names = sorted(set(queues))
        if not names:
            return {}
        try:
            live = self._live(keys=[KEY_PREFIX + q for q in names])
        except Exception as exc:  # a read reports what it knows; Redis away is "unknown", never an error
            log.warning("queue presence unavailable (%s)", type(exc).__name__)
            return None
        return {q: sorted(ws) for q, ws in zip(names, live, strict=True)}

    def announced_queues(self) -> list[str]:
        """Every queue some worker announced lately (its set has not expired)."""
        try:
            return sorted(k.removeprefix(KEY_PREFIX) for k in self._redis.scan_iter(match=KEY_PREFIX + "*", count=500))
        except Exception as exc:
            log.warning("queue presence unavailable (%s)", type(exc).__name__)
            return []

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
