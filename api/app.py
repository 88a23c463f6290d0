"""The Flask application factory: settings in, a wired app out, no I/O at import time."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Flask, g

from api import (
    analytics,
    auth,
    credentials,
    executions,
    health,
    jobs,
    openapi,
    queues,
    runs,
    target_history,
    targets,
    users,
    web,
    ws,
)
from api.context import Platform
from api.errors import register_error_handlers
from api.extensions import jwt, limiter, sock
from api.metrics import count_websockets, init_metrics
from common.config import Settings
from common.crypto import SecretBox
from common.db import Database
from common.live_output import OutputStore, make_output_store
from common.queue_presence import make_queue_presence

log = logging.getLogger(__name__)

BLUEPRINTS = (auth.bp, users.bp, credentials.bp, targets.bp, target_history.bp, queues.bp, jobs.bp, runs.bp,
              executions.bp, analytics.bp, health.bp, openapi.bp, ws.bp, web.bp)


def _retry_after_only_on_429(response):
    """flask-limiter adds Retry-After whenever it adds the rate-limit headers; it means something only on a
    429, or on the 503 of a database outage, where api/errors.py put its own in `g.retry_after`."""
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    if g.get("retry_after") is not None:
        response.headers["Retry-After"] = str(g.retry_after)
    return response


def create_app(settings: Settings | None = None, *, db: Database | None = None, dispatcher: Any = None,
               events: Any = None, output: OutputStore | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret_key,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        RATELIMIT_ENABLED=settings.rate_limits_enabled,
        RATELIMIT_STORAGE_URI=settings.redis_url or "memory://",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        # a message past the cap closes the socket with 1009 before the rest of the frame is read (ws.py)
        SOCK_SERVER_OPTIONS={"ping_interval": 25, "max_message_size": ws.MAX_MESSAGE_BYTES},
        JSON_SORT_KEYS=False,
    )
    # Flask types app.json as the JSONProvider base; the DefaultJSONProvider in use has sort_keys
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["opsconductor"] = Platform(
        settings=settings, db=db or Database(settings.database_url), box=SecretBox(settings.secret_key),
        dispatcher=dispatcher, events=events)
    # running branches' output (the embedded default passes the store its in-process worker writes)
    app.extensions["opsconductor.output"] = output if output is not None else make_output_store(settings)
    app.extensions["opsconductor.presence"] = make_queue_presence(settings)  # which queues have a live worker

    jwt.init_app(app)
    auth.register_jwt_handlers()
    app.after_request(_retry_after_only_on_429)  # registered first so it runs after the limiter's hook
    init_metrics(app)  # before the limiter: a refused request is timed and counted too
    limiter.init_app(app)
    sock.init_app(app)
    register_error_handlers(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    count_websockets(app, "ws.executions_stream")
    return app
