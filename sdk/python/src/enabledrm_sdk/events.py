"""The live event stream over ``/ws/executions`` (websocket-client).

The token goes in the ``Authorization`` header (never in the URL). The server answers a
successful subscription with ``{"type": "subscribed"}``; :meth:`EventStream.connect` waits for
it, so an execution started afterwards is seen from its first event.
"""
from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional
from urllib.parse import urlencode

import websocket

from enabledrm_sdk.errors import TransportError, Unauthorized, ValidationError, WaitTimeout, make_error
from enabledrm_sdk.models import Event

if TYPE_CHECKING:  # pragma: no cover
    from enabledrm_sdk._transport import Transport

POLICY_VIOLATION = 1008
NORMAL_CLOSURE = 1000


def events_url(root: str, *, execution_serial: Optional[str] = None, job_serial: Optional[str] = None) -> str:
    """The WebSocket URL for a server root (http→ws, https→wss) with the serial filters."""
    if root.startswith("https://"):
        base = "wss://" + root[len("https://"):]
    elif root.startswith("http://"):
        base = "ws://" + root[len("http://"):]
    else:
        base = root
    query = {k: v for k, v in (("execution_serial", execution_serial), ("job_serial", job_serial)) if v}
    return base + "/ws/executions" + (("?" + urlencode(query)) if query else "")


class EventStreamClosed(TransportError):
    """The server closed the stream before it was subscribed (other than for auth or a bad filter)."""

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(f"event stream closed (code {code}): {reason or 'no reason given'}")
        self.code = code
        self.reason = reason


class EventStream:
    """An open subscription to live execution events. Iterate it for :class:`Event` objects;
    iteration ends when the server closes the socket. ``filters`` holds what the server confirmed."""

    def __init__(self, ws: websocket.WebSocket, timeout: Optional[float], filters: Dict[str, Any]) -> None:
        self._ws = ws
        self.timeout = timeout
        self.filters = filters
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason: str = ""

    @classmethod
    def connect(cls, transport: Transport, *, execution_serial: Optional[str] = None,
                job_serial: Optional[str] = None, timeout: Optional[float] = None,
                connect_timeout: Optional[float] = 30.0) -> EventStream:
        token = transport.token
        if not token:
            raise Unauthorized(401, "unauthorized", "The event stream needs a token: log in first", {})
        url = events_url(transport.root, execution_serial=execution_serial, job_serial=job_serial)
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
        stream = cls(ws, timeout, {})
        try:
            first = stream._receive(connect_timeout)
        except BaseException:
            stream.close()
            raise
        if first is None:
            code, reason = stream.close_code, stream.close_reason
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
        if first.get("type") == "subscribed":
            stream.filters = dict(first.get("data") or {})
        else:  # an older server without the confirmation: keep the event for the caller
            stream._pending = first
        return stream

    _pending: Optional[Dict[str, Any]] = None

    def _receive(self, timeout: Optional[float]) -> Optional[Dict[str, Any]]:
        """The next JSON message, or None once the socket is closed (close code/reason recorded)."""
        if self.closed:
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
        self.close_code, self.close_reason = code, reason
        self.closed = True
        try:  # the closing handshake is done (websocket-client answered the server's close frame): drop the socket
            self._ws.shutdown()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass

    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting up to ``timeout`` seconds (default: the stream's timeout);
        None when the stream is closed."""
        if self._pending is not None:
            message, self._pending = self._pending, None
        else:
            message = self._receive(self.timeout if timeout is None else timeout)
        if message is None:
            return None
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
            try:
                self._ws.close(status=NORMAL_CLOSURE, timeout=2)
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
