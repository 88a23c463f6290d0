"""KeyCache: one parse per credential however many branches connect at once; failures are not
kept; the cache is bounded."""
from __future__ import annotations

import threading

import pytest

from tests.sshd import wait_until
from worker.runners.base import ConnectError
from worker.runners.ssh import KeyCache


def test_concurrent_callers_share_one_parse():
    cache = KeyCache()
    loads: list[int] = []
    release = threading.Event()
    key = object()

    def load():
        loads.append(1)
        release.wait(10)
        return key

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("cred-1", load))) for _ in range(16)]
    for t in threads:
        t.start()
    wait_until(lambda: loads, timeout=10, message="the first parse to start")
    release.set()
    for t in threads:
        t.join(10)
    assert len(loads) == 1
    assert results == [key] * 16


def test_a_failed_parse_is_not_kept():
    cache = KeyCache()
    attempts: list[int] = []

    def bad():
        attempts.append(1)
        raise ConnectError("auth_failed", "wrong passphrase")

    for _ in range(2):
        with pytest.raises(ConnectError):
            cache.get("cred-2", bad)
    assert len(attempts) == 2 and len(cache) == 0


def test_least_recently_used_key_is_dropped_beyond_the_size():
    cache = KeyCache(size=2)
    loads: list[str] = []

    def loader(name):
        return lambda: loads.append(name) or name

    cache.get("a", loader("a"))
    cache.get("b", loader("b"))
    cache.get("a", loader("a"))  # hit: "a" becomes the most recent
    cache.get("c", loader("c"))  # evicts "b"
    cache.get("a", loader("a"))
    cache.get("b", loader("b"))
    assert loads == ["a", "b", "c", "b"] and len(cache) == 2
