"""/ws/executions: live execution events for authenticated monitors, filtered by serial.

Authentication: an `Authorization: Bearer` header, `?token=`, or a first message
`{"action": "auth", "token": ...}` (browsers cannot set headers); otherwise the socket is closed
with 1008. Each socket gets its own queue on this process's event bus subscription."""
from __future__ import annotations

import json
import logging

from flask import Blueprint, request
from flask_jwt_extended import decode_token
from simple_websocket import ConnectionClosed

from api.context import platform
from api.extensions import sock
from common import serials
from common.models import User

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
POLICY_VIOLATION = 1008
AUTH_WAIT_SECONDS = 10.0
IDLE_POLL_SECONDS = 0.5


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.args.get("token")


def _user_for(token: str | None) -> User | None:
    if not token:
        return None
    try:
        claims = decode_token(token)
    except Exception:
        return None
    if claims.get("type") != "access":
        return None
    with platform().db.session() as session:
        user = session.get(User, int(claims["sub"]))
        return user if user is not None and user.is_active else None


def _first_message_token(ws) -> str | None:
    try:
        raw = ws.receive(timeout=AUTH_WAIT_SECONDS)
        message = json.loads(raw) if raw else None
    except (ValueError, TypeError):
        return None
    if isinstance(message, dict) and message.get("action") == "auth":
        return message.get("token")
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


@sock.route("/ws/executions", bp=bp)
def executions_stream(ws):
    try:
        filters = _filters()
    except Exception as exc:
        ws.close(reason=POLICY_VIOLATION, message=str(getattr(exc, "message", "invalid filter"))[:120])
        return
    user = _user_for(_bearer())
    if user is None and not request.headers.get("Authorization") and "token" not in request.args:
        user = _user_for(_first_message_token(ws))
    if user is None:
        ws.close(reason=POLICY_VIOLATION, message="authentication required")
        return
    bus = platform().events
    if bus is None:
        ws.close(reason=1011, message="events unavailable")
        return
    with bus.subscribe() as subscription:
        ws.send(json.dumps({"type": "subscribed", "data": filters}))
        log.info("websocket subscribed user=%s filters=%s", user.username, filters)
        while ws.connected:
            event = subscription.get(timeout=IDLE_POLL_SECONDS)
            if event is not None and _matches(event, filters):
                ws.send(json.dumps(event))
            try:
                ws.receive(timeout=0)  # notices a client close; client messages are otherwise ignored
            except ConnectionClosed:
                break
