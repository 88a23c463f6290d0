"""Liveness and readiness probes."""
from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from api.context import platform

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Readiness: the database (and Redis, when configured) answer."""
    checks: dict[str, str] = {}
    p = platform()
    try:
        with p.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # a probe reports, it never raises
        checks["database"] = f"error: {type(exc).__name__}"
    if p.settings.redis_url:
        try:
            import redis

            redis.Redis.from_url(p.settings.redis_url, socket_timeout=2).ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    if ok:
        return {"status": "ok", "checks": checks}
    return {"error": "not_ready", "message": "A dependency is not answering", "details": checks}, 503
