"""/ws/executions: live execution events for authenticated monitors, filtered by serial.

Authentication: an `Authorization: Bearer` header, `?token=`, or a first message
`{"action": "auth", "token": ...}` (browsers cannot set headers); otherwise the socket is closed
with 1008. Each socket gets its own queue on this process's event bus subscription.

Every execution event carries `data.seq` (1, 2, 3 … per execution, in commit order; see
common/services/event_log.py). A socket delivers each execution's events once and in seq order,
filling any gap from the event log; `?execution_serial=…&since=N` first replays the events after N.
A socket that watches one execution starts after its latest event; others start each execution at
the first event they see. `?include=output` adds `branch_output` events (not numbered: their
`offset` is their cursor). A client too slow for its queue gets a `resume` event naming its last
seq per execution and a 1013 close, never a silent gap.

Client messages are capped at MAX_MESSAGE_BYTES for the socket's whole life (app.py passes it to
simple-websocket): beyond it the socket is closed with 1009 as soon as the cap is crossed, without
reading the rest of the frame. Only the first message (auth) means anything; later ones are ignored."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable

from flask import Blueprint, request
from flask_jwt_extended import decode_token
from simple_websocket import ConnectionClosed
from sqlalchemy.exc import SQLAlchemyError

from api.context import platform
from api.endpoint import load_json
from api.extensions import sock
from api.ws_writer import SerialSocket, frame_of
from common import metrics, serials
from common.events import OUTPUT, RESYNC, Subscription
from common.services import event_log, users

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
AUTH_WAIT_SECONDS = 10.0
MAX_MESSAGE_BYTES = 16 * 1024  # an auth message is a few hundred bytes
IDLE_POLL_SECONDS = 0.5
SUBSCRIBE_WAIT_SECONDS = 5.0
QUIET_CATCHUP_SECONDS = 5.0  # an open execution silent this long is checked against the log for lost events
REVALIDATE_SECONDS = 5.0  # how late a revoked token or a deactivated user loses its socket (issue 9: ≤ 10 s)
RETRY_SECONDS = 1.0  # how soon a gap the event log could not fill is tried again
MAX_PENDING_BYTES = 4 << 20  # written for a client and not yet taken by it: beyond this it is too slow
OUTPUT_PENDING_BYTES = 256 << 10  # beyond this, output chunks are skipped rather than held


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.args.get("token")


def _claims_for(token: str | None) -> dict | None:
    """The verified claims of a usable access token, or None."""
    if not token:
        return None
    try:
        claims = decode_token(token)
    except Exception:
        return None
    if claims.get("type") != "access" or _refusal(claims) is not None:
        return None
    return claims


def _refusal(claims: dict) -> str | None:
    """Why the token no longer stands for an active user (expired, revoked, disabled …), or None."""
    if time.time() >= claims.get("exp", 0):
        return "token expired"
    with platform().db.session(read_only=True) as session:
        user, reason = users.token_user(session, claims)
    if user is not None:
        return None
    return "token revoked" if reason == "revoked" else f"user {reason}"


def _first_message_token(ws) -> str | None:
    """The token of a first message `{"action": "auth", "token": ...}`, else None (refused with 1008):
    not JSON, or JSON nested too deep to parse safely (it raised RecursionError, a 500 written into
    the upgraded socket)."""
    try:
        raw = ws.receive(timeout=AUTH_WAIT_SECONDS)
        message = load_json(raw) if raw else None
    except (ValueError, TypeError):
        return None
    if isinstance(message, dict) and message.get("action") == "auth":
        token = message.get("token")
        return token if isinstance(token, str) else None
    return None


def _filters() -> dict[str, str]:
    filters = {}
    for kind in ("execution_serial", "job_serial"):
        value = request.args.get(kind)
        if value:
            serials.require(kind, value)
            filters[kind] = value
    return filters


def _since(filters: dict[str, str]) -> int | None:
    """``?since=<seq>``: resume one execution after the last event received."""
    value = request.args.get("since")
    if value is None:
        return None
    if "execution_serial" not in filters:
        raise ValueError("since needs execution_serial: seq numbers are per execution")
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise ValueError("since must be the seq of the last event received (0 or more)")
    return int(value)


def _include_output() -> bool:
    value = request.args.get("include", "")
    kinds = {part for part in value.split(",") if part}
    if kinds - {"output"}:
        raise ValueError("include takes only 'output'")
    return "output" in kinds


def _matches(event: dict, filters: dict[str, str]) -> bool:
    data = event.get("data") or {}
    return all(data.get(key) == value for key, value in filters.items())


class SeqRelay:
    """Delivers each execution's events exactly once, in seq order. Events reach this process in
    the order their publishers sent them, which is not always commit order (each worker publishes
    after its own commit); one that runs ahead is held until the events before it arrive, or, after
    `gap_wait` seconds, until they are read from the event log, where a seq seen live guarantees
    every smaller one is committed. Events without a seq (branch_output) pass straight through."""

    FORGET_DONE_SECONDS = 60.0  # how long a closed execution's late duplicates are still recognised

    def __init__(self, send: Callable[[dict], None], fetch: Callable[[str, int], list[dict]],
                 gap_wait: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self._send = metrics.counting_sends(send)  # counted on /metrics
        self._fetch = fetch  # (execution_serial, after) -> its recorded events with seq > after, in order
        self._gap_wait = gap_wait
        self._clock = clock
        self._last: dict[str, int] = {}  # execution serial -> the last seq delivered
        self._held: dict[str, dict[int, dict]] = {}
        self._gap_since: dict[str, float] = {}
        self._touched: dict[str, float] = {}  # when each open execution last delivered (or was checked)
        self._done: dict[str, float] = {}

    def start_at(self, execution_serial: str, seq: int) -> None:
        """Deliver this execution's events after ``seq`` (a resume, or "from now on")."""
        self._last[execution_serial] = seq
        self._touched[execution_serial] = self._clock()

    def positions(self) -> dict[str, int]:
        """The last seq delivered per execution still open: where a client resumes."""
        return dict(self._last)

    def push(self, event: dict) -> None:
        data = event.get("data") or {}
        serial, seq = data.get("execution_serial"), data.get("seq")
        if not isinstance(serial, str) or not isinstance(seq, int):
            self._send(event)
            return
        if serial not in self._last:
            if serial in self._done:
                return  # a late copy of an event of an execution already delivered to its end
            self._last[serial] = seq - 1  # first seen: this socket watches it from here
            self._touched[serial] = self._clock()
        if seq <= self._last[serial]:
            return
        self._held.setdefault(serial, {})[seq] = event
        self._drain(serial)

    def _drain(self, serial: str) -> None:
        held = self._held.get(serial, {})
        while self._last.get(serial) is not None and self._last[serial] + 1 in held:
            event = held.pop(self._last[serial] + 1)
            self._last[serial] += 1
            self._touched[serial] = self._clock()
            self._send(event)
            if event.get("type") == "execution_completed":
                self._close(serial)
        if held:
            self._gap_since.setdefault(serial, self._clock())
        else:
            self._held.pop(serial, None)
            self._gap_since.pop(serial, None)

    def _close(self, serial: str) -> None:
        self._last.pop(serial, None)
        self._gap_since.pop(serial, None)
        self._touched.pop(serial, None)
        self._done[serial] = self._clock()

    def catch_up(self, serial: str) -> None:
        """Read from the log what came after the last delivered seq; raises if the log cannot be read
        (the gap stays, and is tried again)."""
        while serial in self._last:
            before = self._last[serial]
            events = self._fetch(serial, before)
            for event in events:
                self.push(event)
            held = self._held.get(serial)
            if held and self._last.get(serial) == before:  # the log lacks them (pruned): say so, go on after
                log.warning("events %d..%d of %s are gone from the log; skipping them", before + 1,
                            min(held) - 1, serial)
                self._last[serial] = min(held) - 1
                self._drain(serial)
            if len(events) < 1000 or self._last.get(serial, before) == before:
                break

    def resync(self) -> None:
        """Catch up every open execution: the bus may have lost events (Redis restarted, a publish failed)."""
        for serial in list(self._last):
            self.catch_up(serial)

    def check_quiet(self, seconds: float) -> None:
        """Catch up the open executions that delivered nothing for ``seconds``: a publish may have been
        lost with nothing after it to reveal the gap (other executions' events say nothing of it)."""
        now = self._clock()
        for serial in [s for s, at in self._touched.items() if now - at >= seconds]:
            self._touched[serial] = now
            self._try(serial, now)

    def flush_due(self) -> None:
        now = self._clock()
        for serial in [s for s, since in self._gap_since.items() if now - since >= self._gap_wait]:
            self._try(serial, now)
        for serial in [s for s, at in self._done.items() if now - at >= self.FORGET_DONE_SECONDS]:
            del self._done[serial]

    def _try(self, serial: str, now: float) -> None:
        """catch_up, or, when the log cannot be read (the database is away), again in a second."""
        try:
            self.catch_up(serial)
        except Exception as exc:
            log.warning("event log unreadable for %s (%s); trying again", serial, type(exc).__name__)
            if serial in self._gap_since:
                self._gap_since[serial] = now + RETRY_SECONDS - self._gap_wait

    def next_due(self) -> float | None:
        return min((since + self._gap_wait for since in self._gap_since.values()), default=None)


class _Stream:
    """One socket's events, taken from two threads. The bus's listener hands each batch to `direct`,
    which relays and writes it at once without ever waiting: when the socket's lock is taken, or a
    resync needs the database, the batch is queued instead. The socket's own thread does the rest:
    the queue, gaps filled from the event log, quiet checks, and blocking writes of what a slow
    client left pending (under the lock, so frames leave in the order they were relayed)."""

    def __init__(self, ws, subscription: Subscription, filters: dict[str, str]):
        self.ws = ws
        self.sock: SerialSocket = ws.sock
        self.subscription = subscription
        self.filters = filters
        self.lock = threading.Lock()
        self.relay = SeqRelay(self._add, _fetch_after)
        self.max_pending = MAX_PENDING_BYTES
        self.too_slow = False
        self.closing = False  # the socket's thread says its last (a resume, a close): the bus's thread writes no more
        self._frames: list[bytes] = []
        self._frame_bytes = 0

    def _add(self, event: dict) -> None:
        frame = frame_of(event)
        self._frames.append(frame)
        self._frame_bytes += len(frame)

    def _take_frames(self) -> bytes:
        data, self._frames, self._frame_bytes = b"".join(self._frames), [], 0
        return data

    def stop(self) -> None:
        """Before the socket's last words: a `direct` call the bus's thread began before `direct` was
        cleared would otherwise write events after a resume (or a close) that says they were not sent."""
        self.subscription.direct = None
        with self.lock:
            self.closing = True

    def take(self, events: list[dict]) -> None:
        for event in events:
            if event["type"] == RESYNC:
                _guarded(self.relay.resync)
            elif _matches(event, self.filters):
                self.relay.push(event)

    def direct(self, events: list[dict]) -> bool:
        """In the bus's thread: relay and write ``events`` now, or False to have them queued."""
        if any(event["type"] == RESYNC for event in events) or not self.lock.acquire(blocking=False):
            return False
        try:
            if self.too_slow or self.closing or not self.ws.connected:
                return True
            if self.sock.pending > self.max_pending:  # these stay unrelayed: the client resumes before them
                self.too_slow = True
                self.subscription.wake()
                return True
            for event in events:
                if event["type"] == OUTPUT and self.sock.pending + self._frame_bytes > OUTPUT_PENDING_BYTES:
                    if self._frame_bytes:  # this batch's frames count too: a burst of output is one batch
                        self.sock.try_send(self._take_frames())
                    if self.sock.pending > OUTPUT_PENDING_BYTES:
                        self.subscription.output_skipped += 1  # its offsets show the gap; the endpoint has the bytes
                        continue
                if _matches(event, self.filters):
                    self.relay.push(event)
            data = self._take_frames()
            if data:
                self.sock.try_send(data)
            if self.sock.pending or self.relay.next_due() is not None:
                self.subscription.wake()  # a write to finish, or a gap to fill on time
            return True
        except Exception:  # never into the bus's thread; the socket's own round looks again
            log.exception("websocket relay failed")
            self.subscription.wake()
            return True
        finally:
            self.lock.release()

    def round(self) -> bool:
        """In the socket's thread: what was queued, due gaps, and a blocking write of everything
        relayed or pending. False once the socket is gone."""
        with self.lock:
            self.take(self.subscription.get_many(timeout=0))
            self.relay.flush_due()
            return self.write()

    def write(self) -> bool:
        data = self._take_frames()
        if not self.ws.connected:
            return False
        if data or self.sock.pending:
            try:
                self.sock.send(data)
            except OSError:
                return False
        return True


def _refuse(ws, code: int, message: str) -> None:
    """Close from our side. Under werkzeug (the embedded server) the handshake's socket would then
    wait for the client's close reply while the client waits for EOF; ending our write side lets
    browsers and Node see the close code at once."""
    ws.close(reason=code, message=message[:120])
    if getattr(ws, "mode", None) == "werkzeug":
        try:
            ws.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@sock.route("/ws/executions", bp=bp)
def executions_stream(ws):
    ws.sock = SerialSocket(ws.sock)
    try:
        filters = _filters()
        since, include_output = _since(filters), _include_output()
    except Exception as exc:
        _refuse(ws, POLICY_VIOLATION, str(getattr(exc, "message", exc) or "invalid filter"))
        return
    try:
        claims = _claims_for(_bearer())
        if claims is None and not request.headers.get("Authorization") and "token" not in request.args:
            claims = _claims_for(_first_message_token(ws))
    except SQLAlchemyError:  # the token cannot be checked now: "try again later", not a 500 in the socket
        log.warning("websocket refused: database unavailable", exc_info=True)
        _refuse(ws, TRY_AGAIN_LATER, "database unavailable")
        return
    if claims is None:
        _refuse(ws, POLICY_VIOLATION, "authentication required")
        return
    bus = platform().events
    if bus is None:
        _refuse(ws, 1011, "events unavailable")
        return
    with bus.subscribe(include_output=include_output) as subscription:
        # "subscribed" promises delivery of every later event: with Redis, the process's listener
        # (started lazily by the first subscriber, or reconnecting) must be subscribed first.
        if not bus.wait_ready(SUBSCRIBE_WAIT_SECONDS):
            _refuse(ws, 1011, "events unavailable")
            return
        stream = _Stream(ws, subscription, filters)
        try:
            start = _starting_point(filters.get("execution_serial"), since)
        except SQLAlchemyError:
            log.warning("websocket refused: database unavailable", exc_info=True)
            _refuse(ws, TRY_AGAIN_LATER, "database unavailable")
            return
        except _Pruned as exc:  # a resume would wait for events that are gone: say so instead
            _refuse(ws, POLICY_VIOLATION, str(exc))
            return
        # where a one-execution stream starts: a client dropped before its first event resumes from here
        confirmed = filters if start is None else {**filters, "since": start}
        ws.send(json.dumps({"type": "subscribed", "data": confirmed}))
        log.info("websocket subscribed user=%s filters=%s since=%s", claims.get("username"), filters, since)
        if start is not None:
            stream.relay.start_at(filters["execution_serial"], start)
            if since is not None:
                _guarded(stream.relay.catch_up, filters["execution_serial"])
        _relay(ws, stream, claims)


def _relay(ws, stream: _Stream, claims: dict) -> None:
    subscription = stream.subscription
    if not stream.round():  # a resume's replay, and what came meanwhile, before anything newer
        return
    subscription.direct = stream.direct
    try:
        _serve(ws, stream, claims)
    finally:
        stream.stop()


def _serve(ws, stream: _Stream, claims: dict) -> None:
    subscription, relay = stream.subscription, stream.relay
    revalidate_at = time.monotonic() + REVALIDATE_SECONDS
    while ws.connected:
        now = time.monotonic()
        if now >= revalidate_at:  # a password, role or status change, or expiry, ends the socket
            try:
                refusal = _refusal(claims)
            except SQLAlchemyError:  # the database is away: keep the socket, look again next round
                log.warning("websocket revalidation failed; retrying", exc_info=True)
                refusal = None
            if refusal is not None:
                log.info("websocket closed user=%s reason=%s", claims.get("username"), refusal)
                stream.stop()
                _refuse(ws, POLICY_VIOLATION, refusal)
                return
            revalidate_at = now + REVALIDATE_SECONDS
        if subscription.overflowed or stream.too_slow:
            _too_slow(ws, stream, claims)
            return
        with stream.lock:
            relay.check_quiet(QUIET_CATCHUP_SECONDS)
            due = relay.next_due()
        wait = IDLE_POLL_SECONDS if due is None else max(0.0, min(IDLE_POLL_SECONDS, due - now))
        subscription.wait(wait)
        if not stream.round():
            return
        try:
            ws.receive(timeout=0)  # notices a client close; client messages are otherwise ignored
        except ConnectionClosed:
            return


class _Pruned(Exception):
    pass


def _starting_point(execution_serial: str | None, since: int | None) -> int | None:
    """Where a socket watching one execution starts: after ``since``, or after its latest event."""
    if execution_serial is None:
        return None
    with platform().db.session(read_only=True) as session:
        if since is not None:
            if event_log.pruned(session, execution_serial):
                raise _Pruned("events pruned (RETENTION_DAYS): read the execution from the API")
            return since
        last = event_log.last_seq(session, execution_serial)
    # not made yet: all its events come after this, the first one too, even if its publish is lost
    return 0 if last is None else last


def _fetch_after(execution_serial: str, after: int) -> list[dict]:
    with platform().db.session(read_only=True) as session:
        return [{"type": kind, "data": data} for kind, data in event_log.events_after(session, execution_serial, after)]


def _guarded(catch_up: Callable[..., None], *args: str) -> None:
    """Reading the log needs the database; while it is away the gap stays and is tried again."""
    try:
        catch_up(*args)
    except SQLAlchemyError:
        log.warning("websocket could not read the event log; retrying", exc_info=True)


def _too_slow(ws, stream: _Stream, claims: dict) -> None:
    """The client reads slower than events come: close with 1013, telling it where to resume."""
    stream.stop()
    with stream.lock:
        positions = stream.relay.positions()
        if not stream.write():  # everything up to those positions goes first
            return
    log.warning("websocket too slow user=%s; closed at %s", claims.get("username"), positions)
    try:
        ws.send(json.dumps({"type": "resume", "data": {"since": positions}}))
    except ConnectionClosed:
        return
    reason = "too slow" + (f"; resume with since={next(iter(positions.values()))}" if len(positions) == 1 else "")
    _refuse(ws, TRY_AGAIN_LATER, reason)
