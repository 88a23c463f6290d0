"""Live output in the worker (worker/live_output.py): each stream masked, coalesced into branch_output
events (64 KiB or 100 ms, whichever first), written to the store before its event; and the Redis store
(common/live_output.py) keeping what the stored result keeps."""
from __future__ import annotations

import random
import time

import pytest
import redis

from common.events import LocalEventBus
from common.live_output import FINISHED_TTL, LocalOutputStore, RedisOutputStore
from common.output import OutputCollector, OutputView
from worker.live_output import FLUSH_BYTES, FLUSH_SECONDS, LiveOutput
from worker.runners.base import StepRecorder

BRANCH = "J20260042.0001.0001"


@pytest.fixture
def bus():
    return LocalEventBus()


@pytest.fixture
def store():
    return LocalOutputStore(cap=1024 * 1024)


@pytest.fixture
def live(bus, store):
    live = LiveOutput(store, bus, cap=1024 * 1024)
    yield live
    live.close()


def _outputs(subscription, until: float) -> list[dict]:
    """branch_output events until the deadline, or until none has come for a while."""
    events: list[dict] = []
    while time.monotonic() < until:
        event = subscription.get(timeout=max(0.0, min(0.5, until - time.monotonic())))
        if event is None:
            break
        if event["type"] == "branch_output":
            events.append(event["data"])
    return events


def test_a_line_is_published_within_the_flush_interval_while_the_command_goes_on(live, bus, store):
    subscription = bus.subscribe(include_output=True)
    output = live.open(BRANCH, "J20260042.0001")
    recorder = StepRecorder(1024, output)
    fed_at = time.monotonic()
    recorder.out.feed(b"step one done\n")  # then the command works on, printing nothing

    event = subscription.get(timeout=5)
    took = time.monotonic() - fed_at
    assert event is not None and event["type"] == "branch_output"
    assert event["data"] == {"execution_serial": "J20260042.0001", "job_serial": "J20260042",
                             "branch_serial": BRANCH, "stream": "stdout", "offset": 0, "data": "step one done\n"}
    assert took < FLUSH_SECONDS + 0.4, f"published {took:.3f}s after it was printed"
    assert store.view(BRANCH, "stdout") == OutputView(b"step one done\n", b"", 14)


def test_large_output_goes_out_in_64_kib_chunks_cut_between_characters(live, bus, store):
    subscription = bus.subscribe(include_output=True)
    output = live.open(BRANCH, "J20260042.0001")
    recorder = StepRecorder(10 * 1024 * 1024, output)
    data = ("é" * 150_000 + "x").encode()  # 300,001 bytes of 2-byte characters
    for start in range(0, len(data), 4096):
        recorder.out.feed(data[start:start + 4096])
    recorder.result(0, None, None)
    output.close()

    events = _outputs(subscription, time.monotonic() + 5)
    assert all(e["stream"] == "stdout" for e in events)
    sizes = [len(e["data"].encode()) for e in events]
    assert [e["offset"] for e in events] == [sum(sizes[:i]) for i in range(len(events))]  # contiguous
    assert "".join(e["data"] for e in events).encode() == data
    assert all(len(e["data"].encode()) <= FLUSH_BYTES for e in events)
    assert len(events) <= len(data) // (FLUSH_BYTES - 1) + 2  # coalesced: not one event per read
    assert output.stdout.text() == data.decode()


def test_secrets_split_across_reads_never_reach_events_steps_store_or_result(live, bus, store):
    subscription = bus.subscribe(include_output=True)
    output = live.open(BRANCH, "J20260042.0001")
    output.hide(["hunter2-password", "tok3n"])
    recorder = StepRecorder(1024, output)
    for piece in (b"pw=hunter2-pa", b"ssword tok", b"3n\n"):
        recorder.out.feed(piece)
    recorder.err.feed(b"tok3")
    step = recorder.result(0, None, None)  # the end of the command releases what was held back, masked
    output.stderr.note("[opsconductor] gave up on tok3n\n")
    output.close()

    assert step.stdout == "pw=**** ****\n" and step.stderr == "tok3"
    events = _outputs(subscription, time.monotonic() + 5)
    text = {s: "".join(e["data"] for e in events if e["stream"] == s) for s in ("stdout", "stderr")}
    assert text == {"stdout": "pw=**** ****\n", "stderr": "tok3\n[opsconductor] gave up on ****\n"}
    assert output.stdout.text() == text["stdout"] and output.stderr.text() == text["stderr"]
    for stream in ("stdout", "stderr"):
        assert store.view(BRANCH, stream).read(0).data == text[stream]  # type: ignore[union-attr]


def test_no_secret_means_bytes_pass_as_they_come(live, bus):
    output = live.open(BRANCH, "J20260042.0001")
    recorder = StepRecorder(1024, output)
    recorder.out.feed(b"abc")
    assert recorder.out.text() == "abc"  # nothing held back


# ------------------------------------------------------------------------------------ Redis store

@pytest.fixture
def redis_store(redis_url):
    store = RedisOutputStore(redis_url, cap=100)
    yield store
    store.close()


@pytest.fixture
def serial() -> str:
    """A branch serial of the test's own: the Redis database outlives the test."""
    return f"J2026{random.randint(1000, 9999)}.{random.randint(1000, 9999)}.0001"


def test_redis_keeps_what_the_stored_result_keeps(redis_store, serial):
    reference = OutputCollector(100)
    offset = 0
    for i in range(60):
        chunk = f"line {i:03d} {'x' * (i % 13)}\n".encode()
        redis_store.append(serial, "stdout", offset, chunk)
        reference.feed(chunk)
        offset += len(chunk)
    head, tail = reference.parts()
    assert redis_store.view(serial, "stdout") == OutputView(head, tail, reference.total_bytes)
    assert redis_store.view(serial, "stdout").read(0).data == reference.text()  # type: ignore[union-attr]
    assert redis_store.view(serial, "stderr") is None


def test_redis_memory_is_bounded_whatever_is_printed(redis_store, redis_url, serial):
    for i in range(1000):
        redis_store.append(serial, "stderr", i * 20, b"0123456789abcdefghi\n")
    client = redis.Redis.from_url(redis_url)
    base = f"opsconductor:output:{serial}:stderr"
    assert client.strlen(f"{base}:head") == 50
    assert client.llen(f"{base}:tail") <= 4  # chunks covering the last 50 bytes, and no more
    assert int(client.get(f"{base}:total")) == 20_000
    client.close()


def test_a_finished_branch_is_kept_a_little_while(redis_store, redis_url, serial):
    redis_store.append(serial, "stdout", 0, b"bye\n")
    redis_store.finish(serial)
    client = redis.Redis.from_url(redis_url)
    ttl = client.ttl(f"opsconductor:output:{serial}:stdout:total")
    assert 0 < ttl <= FINISHED_TTL
    assert redis_store.view(serial, "stdout") == OutputView(b"bye\n", b"", 4)
    client.close()


def test_a_redis_that_does_not_answer_never_fails_the_branch_and_reads_as_unavailable(serial):
    from common.errors import Unavailable

    store = RedisOutputStore("redis://127.0.0.1:1/0", cap=100)
    store.append(serial, "stdout", 0, b"lost\n")  # logged, not raised
    assert not store.available()  # paused: later chunks do not wait on it
    store.finish(serial)
    with pytest.raises(Unavailable, match="cannot be read now"):  # not "nothing printed": no reread from 0
        store.view(serial, "stdout")


def test_a_secret_split_across_two_actions_is_masked_in_the_branch_output(live, bus, store):
    output = live.open(BRANCH, "J20260042.0001")
    output.hide(["hunter2"])
    first = StepRecorder(1024, output)
    first.out.feed(b"pw=hunt")  # the first action ends mid-secret
    step_one = first.result(0, None, None)
    second = StepRecorder(1024, output)
    second.out.feed(b"er2\n")
    step_two = second.result(0, None, None)
    output.close()

    # each step records its own text: the first ends with the possible start, the second with the mask
    assert (step_one.stdout, step_two.stdout) == ("pw=hunt", "****\n")
    assert output.stdout.text() == "pw=****\n"  # the branch's result: the two actions' output as one stream
    assert store.view(BRANCH, "stdout") == OutputView(b"pw=****\n", b"", 8)

