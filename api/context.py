"""What a request needs from the running platform: settings, database, secrets, dispatcher, event bus."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import current_app, request
from sqlalchemy.orm import Session

from common.config import Settings
from common.crypto import SecretBox
from common.db import Database
from common.events import EventBus
from common.queue_presence import QueuePresence


@dataclass
class Platform:
    settings: Settings
    db: Database
    box: SecretBox
    dispatcher: Any = None  # api.dispatch.Dispatcher
    events: EventBus | None = None


def platform() -> Platform:
    return current_app.extensions["opsconductor"]


def queue_presence() -> QueuePresence:
    """Which queues have a live worker (targets' queue_has_worker, GET /api/queues)."""
    return current_app.extensions["opsconductor.presence"]


@contextmanager
def transaction() -> Iterator[Session]:
    """The request's transaction. GET and HEAD only read, so on SQLite they run beside writers."""
    with platform().db.session(read_only=request.method in ("GET", "HEAD")) as session:
        yield session
