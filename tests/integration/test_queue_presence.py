"""Queue presence against the run's real Redis: announcements, leaving, expiry in Redis's clock, a
worker's announcer following its queues, and "unknown" (never an error) when Redis does not answer."""
from __future__ import annotations

import socket
import time
import uuid

import pytest
import redis

from common.queue_presence import KEY_PREFIX, RedisQueuePresence
from tests.faults.harness import RedisServer
from tests.sshd import free_port, wait_until
from worker.presence import PresenceAnnouncer


def _queues(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"q{i}-{tag}" for i in range(n)]


def test_announce_leave_and_who_serves_which_queue(redis_url):
    a, b, c = _queues(3)
    presence = RedisQueuePresence(redis_url, ttl=30)
    try:
        presence.announce("w1@east", [a, b])
        presence.announce("w2@east", [a])
        assert presence.workers([a, b, c]) == {a: ["w1@east", "w2@east"], b: ["w1@east"], c: []}
        assert {a, b} <= set(presence.announced_queues()) and c not in presence.announced_queues()
        presence.leave("w1@east", [a, b])
        assert presence.workers([a, b]) == {a: ["w2@east"], b: []}
        assert presence.workers([]) == {}
    finally:
        presence.close()


def test_a_silent_worker_expires_and_its_queue_key_goes_with_it(redis_url):
    (queue,) = _queues(1)
    presence = RedisQueuePresence(redis_url, ttl=1)
    client = redis.Redis.from_url(redis_url)
    try:
        presence.announce("killed@east", [queue])
        announced = time.monotonic()
        assert presence.workers([queue]) == {queue: ["killed@east"]}
        wait_until(lambda: presence.workers([queue]) == {queue: []}, timeout=3, interval=0.05,
                   message="the announcement to expire")
        assert time.monotonic() - announced >= 0.9  # not before its time
        wait_until(lambda: not client.exists(KEY_PREFIX + queue), timeout=4, interval=0.1,
                   message="the queue's key to expire")
    finally:
        presence.close()
        client.close()


def test_redis_not_answering_is_unknown_not_an_error():
    presence = RedisQueuePresence(f"redis://127.0.0.1:{free_port()}/0", ttl=5)
    try:
        start = time.monotonic()
        assert presence.workers(["default"]) is None
        assert presence.announced_queues() == []
        assert time.monotonic() - start < 3
    finally:
        presence.close()


def test_a_redis_that_hangs_costs_one_read_a_seconds_wait_not_every_read():
    """A listener that never answers (the link to Redis cut, Redis stopped): the first read waits out its
    1 s timeout and says "unknown"; the reads after it, for PAUSE_SECONDS, say so at once."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections queue in its backlog, unanswered
        presence = RedisQueuePresence(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", ttl=5)
        try:
            start = time.monotonic()
            assert presence.workers(["default"]) is None
            first = time.monotonic() - start
            start = time.monotonic()
            assert presence.workers(["default"]) is None
            assert presence.announced_queues() == []
            after = time.monotonic() - start
        finally:
            presence.close()
    assert 0.9 <= first < 3, first
    assert after < 0.1, after


def test_the_announcer_follows_the_workers_queues_and_leaves_when_stopped(redis_url):
    a, b = _queues(2)
    consumed = [a, b]
    presence = RedisQueuePresence(redis_url, ttl=30)
    announcer = PresenceAnnouncer(presence, "w@agent", lambda: list(consumed), interval=0.05).start()
    try:
        wait_until(lambda: presence.workers([a, b]) == {a: ["w@agent"], b: ["w@agent"]}, timeout=3,
                   message="both queues announced")
        consumed.remove(b)  # e.g. `celery control cancel_consumer`
        wait_until(lambda: presence.workers([a, b]) == {a: ["w@agent"], b: []}, timeout=3,
                   message="the dropped queue left")
        announcer.stop()
        assert presence.workers([a]) == {a: []}  # at once, not after the 30 s expiry
    finally:
        announcer.stop()
        presence.close()


@pytest.fixture
def own_redis(tmp_path, processes) -> str:
    """A redis-server of this test's own: its command counts are this test's alone."""
    server = RedisServer(tmp_path, processes)
    server.start()
    return server.url


def test_listing_the_announced_queues_is_one_command_whatever_the_keyspace(own_redis):
    client = redis.Redis.from_url(own_redis)
    presence = RedisQueuePresence(own_redis, ttl=30)
    try:
        with client.pipeline(transaction=False) as pipe:  # the broker's, the limiter's and the output's keys
            for n in range(20_000):
                pipe.set(f"other:{n}", "x")
            pipe.execute()
        presence.announce("w@east", ["dc-east", "default"])
        assert presence.announced_queues() == ["dc-east", "default"]
        client.config_resetstat()
        assert presence.announced_queues() == ["dc-east", "default"]
        calls = {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()}
        calls.pop("config|resetstat", None)
        # one script, and inside it one clock reading and one range: no SCAN over the 20,000 other keys
        assert calls == {"evalsha": 1, "time": 1, "zrangebyscore": 1}, calls
        presence.leave("w@east", ["dc-east"])
        assert presence.announced_queues() == ["default"]  # left by its only worker: gone at once
    finally:
        presence.close()
        client.close()
