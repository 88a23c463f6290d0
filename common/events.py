"""The event bus: publish after commit, fan out to every subscriber in every API process.

Events are hints, the database is the truth: a failed publish is logged and never fails the caller.
Redis pub/sub carries events between processes and hosts; the in-process bus serves the embedded
default. Each process keeps one subscriber connection and fans out to a queue per local listener.
Pub/sub may lose messages (a Redis restart, a failed publish): execution events are numbered and
recorded in the database (common/services/event_log.py), and every (re)subscription tells the
listeners to RESYNC, so they read what they may have missed from there."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from common.output import decode_output

log = logging.getLogger(__name__)

CHANNEL = "opsconductor:events"
OUTPUT = "branch_output"  # live output: only to subscriptions that ask for it
OUTPUT_BACKLOG = 256  # a subscription this far behind skips output chunks (up to 64 KiB each) instead of holding them
OUTPUT_PREFIX = b"\x00output\n"  # an output event on the wire (JSON never starts so)
RESYNC = "_resync"  # to listeners only: the bus (re)subscribed, and events may have been missed before
Event = tuple[str, dict[str, Any]]


class WireEvent(dict):
    """An event with its JSON text, encoded once per process: each socket sends the text as it is
    (and the WebSocket relay keeps the frame it made of it in `frame`)."""

    __slots__ = ("text", "frame")

    def __init__(self, event: dict[str, Any], text: str | None = None):
        super().__init__(event)
        self.text = text if text is not None else json.dumps(event)
        self.frame: bytes | None = None


def event_text(event: dict[str, Any]) -> str:
    return event.text if isinstance(event, WireEvent) else json.dumps(event)


class Subscription:
    """One listener's queue. Bounded so a stalled WebSocket cannot grow memory without end: once
    full it is `overflowed` and receives nothing more (its listener must say so and stop). Events
    arrive in batches (what the bus read at once): one wake-up per batch, not one per event, is
    what lets a process serve hundreds of sockets."""

    def __init__(self, hub: _Hub, maxsize: int = 10000, include_output: bool = False):
        self._hub = hub
        self.include_output = include_output  # branch_output too: a flood of it fills no other queue
        self.maxsize = maxsize
        self._items: deque[dict[str, Any]] = deque()
        self._ready = threading.Condition(threading.Lock())
        self.overflowed = False
        self.output_skipped = 0
        self.output_backlog = OUTPUT_BACKLOG
        self._woken = False
        # Set by a listener that can take a batch at once in the bus's thread (the WebSocket relay):
        # returns False when it cannot now, and the batch is queued instead.
        self.direct: Callable[[list[dict[str, Any]]], bool] | None = None

    def offer(self, events: list[dict[str, Any]]) -> None:
        """Take a batch (called by the bus): handed to `direct` when it is set and nothing waits in
        the queue before it, else queued. Output beyond the backlog is skipped, anything beyond the
        bound overflows the subscription."""
        if self.overflowed:
            return
        if not self.include_output:
            events = [event for event in events if event.get("type") != OUTPUT]
            if not events:
                return
        direct = self.direct
        if direct is not None and not self._items and direct(events):
            return
        with self._ready:
            for event in events:
                if event.get("type") == OUTPUT and len(self._items) >= self.output_backlog:
                    self.output_skipped += 1  # its offsets show the gap; the output endpoint has the bytes
                    continue
                if len(self._items) >= self.maxsize:
                    self.overflowed = True
                    break
                self._items.append(event)
            self._ready.notify()

    def wake(self) -> None:
        """End the listener's current `wait` (it has work that came another way)."""
        with self._ready:
            self._woken = True
            self._ready.notify()

    def wait(self, timeout: float | None) -> None:
        """Until something is queued, `wake` is called, or ``timeout``."""
        with self._ready:
            if not self._items and not self._woken:
                self._ready.wait(timeout)
            self._woken = False

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        events = self.get_many(timeout, limit=1)
        return events[0] if events else None

    def get_many(self, timeout: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """What is queued, up to ``limit`` (waiting up to ``timeout`` for the first)."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            items = self._items
            return [items.popleft() for _ in range(min(limit, len(items)))]

    def close(self) -> None:
        self._hub.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Hub:
    def __init__(self):
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def add(self, include_output: bool = False) -> Subscription:
        sub = Subscription(self, include_output=include_output)
        with self._lock:
            self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def wants_output(self) -> bool:
        return any(sub.include_output for sub in self._subs)

    def deliver(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(events)


class EventBus(Protocol):
    """What publishers (API, workers, maintenance) and listeners (WebSockets) need of a bus."""

    def publish_many(self, events: list[Event]) -> None:
        """Publish in order; never raises (a failed publish is logged: the database has the truth).
        A branch_output event's ``data`` may be bytes: listeners receive it as text."""

    def subscribe(self, include_output: bool = False) -> Subscription: ...

    def wait_ready(self, timeout: float) -> bool:
        """Whether every event published from now on reaches this process's subscriptions."""

    def close(self) -> None: ...


class LocalEventBus:
    """In-process bus for the embedded default: publishers and listeners share one process."""

    def __init__(self):
        self._hub = _Hub()

    def publish_many(self, events: list[Event]) -> None:
        wants_output = self._hub.wants_output()
        self._hub.deliver([WireEvent({"type": event_type, "data": _text_output(event_type, data)})
                           for event_type, data in events if event_type != OUTPUT or wants_output])

    def subscribe(self, include_output: bool = False) -> Subscription:
        return self._hub.add(include_output)

    def wait_ready(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


def _wire(event_type: str, data: dict[str, Any]) -> bytes:
    """An event as published. Output comes as bytes (`data["data"]`) and travels as them, after a
    line of JSON for the rest: JSON-escaping a flood of output in the worker took a third of its
    time, for API processes that mostly have no one asking for output."""
    raw = data.get("data") if event_type == OUTPUT else None
    if isinstance(raw, bytes | bytearray):
        meta = {key: value for key, value in data.items() if key != "data"}
        return OUTPUT_PREFIX + json.dumps(meta).encode() + b"\n" + raw
    return json.dumps({"type": event_type, "data": data}, ensure_ascii=False).encode()


def _text_output(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """What listeners see: output as text."""
    raw = data.get("data") if event_type == OUTPUT else None
    return {**data, "data": decode_output(raw)} if isinstance(raw, bytes | bytearray) else data


def _unwire(message: bytes, wants_output: bool) -> WireEvent | None:
    """The event a published message holds; None for output no subscription here asks for. Raises
    ValueError for anything that is not an event (listeners read both keys, in the bus's thread too)."""
    if message.startswith(OUTPUT_PREFIX):
        if not wants_output:
            return None
        meta, _, raw = message[len(OUTPUT_PREFIX):].partition(b"\n")
        return WireEvent({"type": OUTPUT, "data": _text_output(OUTPUT, {**json.loads(meta), "data": raw})})
    text = message.decode()
    event = json.loads(text)
    if not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
        raise ValueError("not an event")
    return WireEvent(event, text)


class RedisEventBus:
    """Redis pub/sub: workers publish, each API process runs one listener thread (started lazily,
    reconnecting with capped backoff) and fans out to its local subscriptions."""

    BATCH = 500  # events handed to the subscriptions at once
    IDLE_SECONDS = 0.25  # how long the listener waits for a message before it looks who asks for output
    READ_SECONDS = 5.0  # a message Redis has begun to send is read whole unless Redis stalls this long

    def __init__(self, url: str, channel: str = CHANNEL):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                           health_check_interval=30)
        # pub/sub ignores database numbers: scope the channel to ours so stacks sharing a server stay apart
        self._channel = f"{channel}:{self._redis.connection_pool.connection_kwargs.get('db', 0)}"
        # output on a channel of its own, joined only while a subscription here asks for it: a flood
        # read by processes that have no use for it got them disconnected at Redis's pub/sub limit
        self._output_channel = f"{self._channel}:output"
        self._hub = _Hub()
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._output_ready = threading.Event()

    def publish_many(self, events: list[Event]) -> None:
        """In order, in one round trip (a group commit's worth of branches at once)."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for event_type, data in events:
                pipe.publish(self._output_channel if event_type == OUTPUT else self._channel, _wire(event_type, data))
            pipe.execute()
        except Exception:
            log.warning("event publish failed for %d events", len(events), exc_info=True)

    def subscribe(self, include_output: bool = False) -> Subscription:
        sub = self._hub.add(include_output)
        self._ensure_listener()
        return sub

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._ready.wait(timeout):
            return False
        return not self._hub.wants_output() or self._output_ready.wait(max(0.0, deadline - time.monotonic()))

    def _ensure_listener(self) -> None:
        with self._listener_lock:
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen, name="event-listener", daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self._redis.pubsub()
            joined = False  # the output channel
            try:
                pubsub.subscribe(self._channel)
                backoff = 0.1
                while not self._stop.is_set():
                    if joined != self._hub.wants_output():
                        joined = not joined
                        if joined:
                            pubsub.subscribe(self._output_channel)
                        else:
                            self._output_ready.clear()
                            pubsub.unsubscribe(self._output_channel)
                    self._hub.deliver(self._read_batch(pubsub))
            except Exception:
                self._ready.clear()
                self._output_ready.clear()
                log.warning("event listener lost Redis; reconnecting in %.1fs", backoff, exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _read_batch(self, pubsub) -> list[dict[str, Any]]:
        """What Redis has sent (waiting up to IDLE_SECONDS for the first message), up to BATCH events."""
        batch: list[dict[str, Any]] = []
        message = self._next_message(pubsub, self.IDLE_SECONDS)
        while message is not None:
            if message["type"] == "subscribe" and message["channel"] == self._output_channel.encode():
                self._output_ready.set()
            elif message["type"] == "subscribe":
                self._ready.set()  # confirmed by Redis: from here on nothing published is missed
                batch.append({"type": RESYNC, "data": {}})  # but before it, something may have been
            elif message["type"] == "message":
                try:
                    event = _unwire(message["data"], self._hub.wants_output())
                except (ValueError, TypeError, AttributeError):
                    log.warning("dropping malformed event")
                else:
                    if event is not None:
                        batch.append(event)
            if len(batch) >= self.BATCH:
                break  # before reading another: a message read is a message delivered
            message = self._next_message(pubsub, 0)
        return batch

    def _next_message(self, pubsub, wait: float) -> dict[str, Any] | None:
        """The next message if one begins within `wait` seconds, read whole once begun. redis-py (8.1)
        applies get_message's timeout to every read of a message: with 0 it gave up on a 64 KiB one
        Redis had sent only part of yet (busy a moment, or a flood outrunning us) and reconnected,
        and every message in flight was lost, in the middle of a branch's output."""
        if not pubsub.connection.can_read(timeout=wait):
            pubsub.check_health()  # idle: a PING now and then finds a connection that died silently
            return None
        return pubsub.get_message(timeout=self.READ_SECONDS)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=3)
        self._redis.close()


def publish_events(bus: EventBus | None, events: list[Event]) -> None:
    """Publish in order; buses never raise (a failed publish is logged by the bus)."""
    if bus is not None and events:
        bus.publish_many(events)


def make_event_bus(settings) -> EventBus:
    return RedisEventBus(settings.redis_url) if settings.redis_url else LocalEventBus()
