"""The live event stream over ``/ws/executions`` (websocket-client).

The token goes in the ``Authorization`` header (never in the URL). The server answers a
successful subscription with ``{"type": "subscribed"}``; :meth:`EventStream.connect` waits for
it, so an execution started afterwards is seen from its first event.

Every execution event carries ``data.seq`` (1, 2, 3 … per execution). The stream remembers the last
seq it yielded per execution and never yields one at or below it again. When the connection drops
(not when the caller closes it, and not on a 1008 close: a refused token or filter), it reconnects
with capped backoff; a stream filtered by one execution reconnects with ``since=<last seq>`` and so
misses nothing. A server ``resume`` message (sent with a 1013 close to a client too slow for its
queue) names where to go on from; the stream reconnects from there. Streams filtered by job, or not
at all, reconnect too, but seq is per execution and the server resumes only one execution per
socket: events committed while such a stream was away are not replayed (``positions`` says where
each execution stood; open ``events(execution_serial=…, since=…)`` to fetch them).
"""
from __future__ import annotations

import json
import struct
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Set, Tuple
from urllib.parse import urlencode

import websocket

from enabledrm_sdk.errors import (
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    ValidationError,
    WaitTimeout,
    make_error,
)
from enabledrm_sdk.models import Event

if TYPE_CHECKING:  # pragma: no cover
    from enabledrm_sdk._transport import Transport

POLICY_VIOLATION = 1008
NORMAL_CLOSURE = 1000
TRY_AGAIN_LATER = 1013
RECONNECT_FIRST_DELAY = 0.1  # seconds; doubled after each failed attempt up to ``max_reconnect_delay``


def events_url(root: str, *, execution_serial: Optional[str] = None, job_serial: Optional[str] = None,
               since: Optional[int] = None, include_output: bool = False) -> str:
    """The WebSocket URL for a server root (http→ws, https→wss) with the serial filters, the seq to
    resume after (one execution only) and ``include=output``."""
    if root.startswith("https://"):
        base = "wss://" + root[len("https://"):]
    elif root.startswith("http://"):
        base = "ws://" + root[len("http://"):]
    else:
        base = root
    query: Dict[str, Any] = {k: v for k, v in (("execution_serial", execution_serial), ("job_serial", job_serial))
                             if v}
    if since is not None:
        query["since"] = since
    if include_output:
        query["include"] = "output"
    return base + "/ws/executions" + (("?" + urlencode(query)) if query else "")


class EventStreamClosed(TransportError):
    """The server closed the stream before it was subscribed (other than for auth or a bad filter)."""

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(f"event stream closed (code {code}): {reason or 'no reason given'}")
        self.code = code
        self.reason = reason


Opener = Callable[[Optional[int]], Tuple[websocket.WebSocket, Optional[Dict[str, Any]]]]


class EventStream:
    """An open subscription to live execution events. Iterate it for :class:`Event` objects; it
    reconnects by itself when the connection drops (see the module's docstring), and iteration ends
    when the server closes it with 1008 (a refused token or filter), when the caller closes it, or
    when a stream filtered by one execution has yielded its ``execution_completed`` and then loses
    its connection. ``filters`` holds what the server confirmed; ``positions`` the last seq yielded
    per execution; ``reconnects`` how many times it reconnected."""

    def __init__(self, ws: websocket.WebSocket, timeout: Optional[float], filters: Dict[str, Any], *,
                 opener: Optional[Opener] = None, execution_serial: Optional[str] = None,
                 max_reconnect_delay: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._ws: Optional[websocket.WebSocket] = ws
        self.timeout = timeout
        self.filters = filters
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason: str = ""
        self.positions: Dict[str, int] = {}
        self.reconnects = 0
        self._opener = opener  # None: no reconnecting
        self._execution_serial = execution_serial
        self._finished: Set[str] = set()  # executions whose execution_completed was yielded
        self._resume_from: Optional[Dict[str, int]] = None  # the positions of a server "resume" message
        self._max_reconnect_delay = max_reconnect_delay
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def connect(cls, transport: Transport, *, execution_serial: Optional[str] = None,
                job_serial: Optional[str] = None, timeout: Optional[float] = None,
                connect_timeout: Optional[float] = 30.0, since: Optional[int] = None,
                include_output: bool = False, reconnect: bool = True,
                max_reconnect_delay: float = 5.0) -> EventStream:
        """Open the stream; raises what the server refused it for (``Unauthorized``,
        ``ValidationError``, ``EventStreamClosed``, ``TransportError``)."""

        def opener(resume_after: Optional[int]) -> Tuple[websocket.WebSocket, Optional[Dict[str, Any]]]:
            return cls._open(transport, execution_serial=execution_serial, job_serial=job_serial,
                             since=resume_after, include_output=include_output, connect_timeout=connect_timeout)

        ws, first = opener(since)
        stream = cls(ws, timeout, {}, opener=opener if reconnect else None, execution_serial=execution_serial,
                     max_reconnect_delay=max_reconnect_delay)
        if first is not None and first.get("type") == "subscribed":
            stream.filters = {k: v for k, v in (first.get("data") or {}).items() if k != "since"}
            stream._accept(first)
        elif first is not None:  # an older server without the confirmation: keep the event for the caller
            stream._pending = first
        if execution_serial and since is not None:
            stream.positions[execution_serial] = since
        return stream

    @classmethod
    def _open(cls, transport: Transport, *, execution_serial: Optional[str], job_serial: Optional[str],
              since: Optional[int], include_output: bool, connect_timeout: Optional[float],
              ) -> Tuple[websocket.WebSocket, Optional[Dict[str, Any]]]:
        """One connection, up to the server's first message (normally ``subscribed``)."""
        token = transport.token
        if not token:
            raise Unauthorized(401, "unauthorized", "The event stream needs a token: log in first", {})
        url = events_url(transport.root, execution_serial=execution_serial, job_serial=job_serial, since=since,
                         include_output=include_output)
        try:
            ws = websocket.create_connection(url, timeout=connect_timeout,
                                             header=[f"Authorization: Bearer {token}"])
        except websocket.WebSocketBadStatusException as exc:
            body: Any = None
            raw = getattr(exc, "resp_body", None)
            if raw:
                try:
                    body = json.loads(raw)
                except (ValueError, TypeError):
                    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            raise make_error(exc.status_code, body, getattr(exc, "resp_headers", None) or {}) from exc
        except (OSError, websocket.WebSocketException) as exc:
            raise TransportError(f"cannot open {url.split('?')[0]}: {exc}") from exc
        probe = cls(ws, None, {})
        try:
            first = probe._receive(connect_timeout)
        except BaseException:
            probe.close()
            raise
        if first is None:
            code, reason = probe.close_code, probe.close_reason
            if code == POLICY_VIOLATION and "auth" in reason.lower():
                raise Unauthorized(401, "unauthorized", reason or "authentication required", {"close_code": code})
            if code == POLICY_VIOLATION:
                details: Dict[str, Any] = {"close_code": code}
                lowered = reason.lower()
                for name, value in (("execution_serial", execution_serial), ("job_serial", job_serial)):
                    if value and (name in lowered or name.replace("_", " ") in lowered):
                        details.update(field=name, received=value)
                        break
                raise ValidationError(422, "validation_error", reason or "invalid filter", details)
            raise EventStreamClosed(code, reason)
        return ws, first

    _pending: Optional[Dict[str, Any]] = None

    def _receive(self, timeout: Optional[float]) -> Optional[Dict[str, Any]]:
        """The next JSON message, or None once the socket is closed (close code/reason recorded)."""
        if self.closed or self._ws is None:
            return None
        self._ws.settimeout(timeout)
        while True:
            try:
                opcode, frame = self._ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException as exc:
                raise WaitTimeout(f"no event within {timeout}s") from exc
            except websocket.WebSocketConnectionClosedException:
                self._mark_closed(None, "connection closed")
                return None
            except (OSError, websocket.WebSocketException) as exc:
                self._mark_closed(None, str(exc))
                if self._opener is not None:
                    return None  # a dropped connection: the caller reconnects
                raise TransportError(f"event stream failed: {exc}") from exc
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data or b""
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                self._mark_closed(code, data[2:].decode("utf-8", "replace"))
                return None
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                raw = frame.data.decode("utf-8", "replace") if isinstance(frame.data, bytes) else frame.data
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    return message
            # ping/pong frames: websocket-client already answered pings; keep reading

    def _mark_closed(self, code: Optional[int], reason: str) -> None:
        """The socket is gone: record why; the stream itself ends only if it will not reconnect."""
        self.close_code, self.close_reason = code, reason
        ws, self._ws = self._ws, None
        if ws is not None:
            try:  # the closing handshake is done (websocket-client answered the server's close frame): drop it
                ws.shutdown()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
        if not self._will_reconnect():
            self.closed = True

    def _will_reconnect(self) -> bool:
        if self._opener is None or self.closed or self.close_code == POLICY_VIOLATION:
            return False
        # one execution, and its last event is out: nothing more will come
        return not (self._execution_serial and self._execution_serial in self._finished)

    def _resume_after(self) -> Optional[int]:
        """``since`` for the next connection: only a stream on one execution can resume exactly."""
        if not self._execution_serial:
            return None
        resume = self._resume_from or {}
        if self._execution_serial in resume:
            return resume[self._execution_serial]
        return self.positions.get(self._execution_serial)

    def _reconnect(self, deadline: Optional[float]) -> None:
        """Open a new connection with capped backoff until one is subscribed; WaitTimeout at the
        deadline. A refused token or filter (``Unauthorized``, ``ValidationError``) is raised."""
        assert self._opener is not None
        delay = 0.0 if self._resume_from is not None else RECONNECT_FIRST_DELAY
        while True:
            if deadline is not None and self._clock() + delay >= deadline:
                raise WaitTimeout(f"no event within {self.timeout}s (reconnecting: {self.close_reason or 'dropped'})")
            if delay:
                self._sleep(delay)
            try:
                ws, first = self._opener(self._resume_after())
            except (TransportError, ServerError, RateLimited, WaitTimeout) as exc:  # refused, reset, 5xx, 1011 …
                self.close_reason = str(exc)
                delay = min(max(delay, RECONNECT_FIRST_DELAY) * 2, self._max_reconnect_delay)
                continue
            if self.closed:  # closed by the caller meanwhile (another thread)
                ws.close(status=NORMAL_CLOSURE, timeout=2)
                return
            self._ws, self._resume_from = ws, None
            self.reconnects += 1
            if first is not None and first.get("type") != "subscribed":
                self._pending = first
            elif first is not None:
                self._accept(first)
            return

    def _accept(self, message: Dict[str, Any]) -> bool:
        """Whether to yield this message: control messages and repeated seqs are consumed here."""
        kind, data = message.get("type"), message.get("data")
        data = data if isinstance(data, dict) else {}
        if kind == "subscribed":  # a one-execution stream is told where it starts: a resume goes on from there
            since = data.get("since")
            if self._execution_serial and isinstance(since, int) and not isinstance(since, bool):
                self.positions.setdefault(self._execution_serial, since)
            return False
        if kind == "resume":  # too slow: the server closes next (1013) and says where to go on from
            since = data.get("since")
            if isinstance(since, dict):
                self._resume_from = {k: v for k, v in since.items() if isinstance(k, str) and isinstance(v, int)}
            return False
        serial, seq = data.get("execution_serial"), data.get("seq")
        if isinstance(serial, str) and isinstance(seq, int) and not isinstance(seq, bool):
            if seq <= self.positions.get(serial, 0):
                return False  # already yielded (a replay overlapping what was delivered live)
            self.positions[serial] = seq
            if kind == "execution_completed":
                self._finished.add(serial)
        return True

    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting up to ``timeout`` seconds (default: the stream's timeout), across
        reconnects; None when the stream has ended."""
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else self._clock() + wait
        while True:
            if self._pending is not None:
                message: Optional[Dict[str, Any]] = self._pending
                self._pending = None
            elif self.closed:
                return None
            elif self._ws is None:
                self._reconnect(deadline)
                continue
            else:
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"no event within {wait}s")
                message = self._receive(remaining)
            if message is None:
                if self.closed:
                    return None
                continue  # dropped: reconnect
            if self._accept(message):
                return Event(message)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        event = self.next()
        if event is None:
            raise StopIteration
        return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            ws, self._ws = self._ws, None
            try:
                if ws is not None:
                    ws.close(status=NORMAL_CLOSURE, timeout=2)
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"EventStream({state}, filters={self.filters!r})"


__all__ = ["EventStream", "EventStreamClosed", "events_url"]
