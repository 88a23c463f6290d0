"""/ws/executions: live execution events for authenticated monitors, filtered by serial.

Authentication: an `Authorization: Bearer` header, `?token=`, or a first message
`{"action": "auth", "token": ...}` (browsers cannot set headers); otherwise the socket is closed
with 1008. Each socket gets its own queue on this process's event bus subscription.

Client messages are capped at MAX_MESSAGE_BYTES for the socket's whole life (app.py passes it to
simple-websocket): beyond it the socket is closed with 1009 as soon as the cap is crossed, without
reading the rest of the frame. Only the first message (auth) means anything; later ones are ignored."""
from __future__ import annotations

import json
import logging
import socket
import time

from flask import Blueprint, request
from flask_jwt_extended import decode_token
from simple_websocket import ConnectionClosed
from sqlalchemy.exc import SQLAlchemyError

from api.context import platform
from api.endpoint import load_json
from api.extensions import sock
from common import serials
from common.services import users

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
AUTH_WAIT_SECONDS = 10.0
MAX_MESSAGE_BYTES = 16 * 1024  # an auth message is a few hundred bytes
IDLE_POLL_SECONDS = 0.5
SUBSCRIBE_WAIT_SECONDS = 5.0
REVALIDATE_SECONDS = 5.0  # how late a revoked token or a deactivated user loses its socket (issue 9: ≤ 10 s)


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


def _matches(event: dict, filters: dict[str, str]) -> bool:
    data = event.get("data") or {}
    return all(data.get(key) == value for key, value in filters.items())


class OrderedRelay:
    """Keeps execution_completed behind its branches' branch_completed events. Each branch is
    published by the worker that finished it, right after its own commit, so the worker that closed
    the execution can publish first; this holds execution_completed until every branch_completed
    was relayed, or `hold_seconds` passed (a monitor that joined mid-execution never sees them all)."""

    def __init__(self, send, hold_seconds: float = 1.0, clock=time.monotonic):
        self._send = send
        self._hold = hold_seconds
        self._clock = clock
        self._seen: dict[str, int] = {}
        self._held: dict[str, tuple[float, dict]] = {}

    def push(self, event: dict) -> None:
        data = event.get("data") or {}
        serial = data.get("execution_serial")
        if event.get("type") == "branch_completed" and serial:
            self._send(event)
            self._seen[serial] = self._seen.get(serial, 0) + 1
            held = self._held.get(serial)
            if held and self._seen[serial] >= held[1]["data"].get("branch_count", 0):
                self._release(serial)
        elif event.get("type") == "execution_completed" and serial:
            if self._seen.get(serial, 0) >= data.get("branch_count", 0):
                self._send(event)
                self._seen.pop(serial, None)
            else:
                self._held[serial] = (self._clock() + self._hold, event)
        else:
            self._send(event)

    def flush_due(self) -> None:
        now = self._clock()
        for serial in [s for s, (due, _) in self._held.items() if due <= now]:
            self._release(serial)

    def next_due(self) -> float | None:
        return min((due for due, _ in self._held.values()), default=None)

    def _release(self, serial: str) -> None:
        _, event = self._held.pop(serial)
        self._seen.pop(serial, None)
        self._send(event)


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
    try:
        filters = _filters()
    except Exception as exc:
        _refuse(ws, POLICY_VIOLATION, str(getattr(exc, "message", "invalid filter")))
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
    with bus.subscribe() as subscription:
        # "subscribed" promises delivery of every later event: with Redis, the process's listener
        # (started lazily by the first subscriber, or reconnecting) must be subscribed first.
        wait_ready = getattr(bus, "wait_ready", None)
        if wait_ready is not None and not wait_ready(SUBSCRIBE_WAIT_SECONDS):
            _refuse(ws, 1011, "events unavailable")
            return
        ws.send(json.dumps({"type": "subscribed", "data": filters}))
        log.info("websocket subscribed user=%s filters=%s", claims.get("username"), filters)
        relay = OrderedRelay(lambda event: ws.send(json.dumps(event)))
        revalidate_at = time.monotonic() + REVALIDATE_SECONDS
        while ws.connected:
            if time.monotonic() >= revalidate_at:  # a password, role or status change, or expiry, ends the socket
                try:
                    refusal = _refusal(claims)
                except SQLAlchemyError:  # the database is away: keep the socket, look again next round
                    log.warning("websocket revalidation failed; retrying", exc_info=True)
                    refusal = None
                if refusal is not None:
                    log.info("websocket closed user=%s reason=%s", claims.get("username"), refusal)
                    _refuse(ws, POLICY_VIOLATION, refusal)
                    break
                revalidate_at = time.monotonic() + REVALIDATE_SECONDS
            due = relay.next_due()
            wait = IDLE_POLL_SECONDS if due is None else max(0.0, min(IDLE_POLL_SECONDS, due - time.monotonic()))
            event = subscription.get(timeout=wait)
            if event is not None and _matches(event, filters):
                relay.push(event)
            relay.flush_due()
            try:
                ws.receive(timeout=0)  # notices a client close; client messages are otherwise ignored
            except ConnectionClosed:
                break
