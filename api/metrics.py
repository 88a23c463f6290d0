"""GET /metrics on the API port, and the request hooks that feed it: each answered request counted by
its route template (never its path: serials would make every execution a new series) and timed.
Open to any scraper unless METRICS_TOKEN is set; METRICS_ENABLED=false turns the route into a 404."""
from __future__ import annotations

import functools
import time

from flask import Blueprint, Flask, Response, g, request

from api.context import platform
from api.errors import ApiError
from common import metrics

bp = Blueprint("metrics", __name__)

UNMATCHED = "unmatched"  # the route label of a request no rule matched (404, 405)


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus metrics (text format); under gunicorn, the sum over every web process."""
    settings = platform().settings
    if not settings.metrics_enabled:
        raise ApiError(404, "The requested URL was not found on the server.")
    if not metrics.token_allows(request.headers.get("Authorization"), settings.metrics_token):
        raise ApiError(401, "METRICS_TOKEN is set: send it as a Bearer token")
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


def _started() -> None:
    g.metrics_started = time.perf_counter()


def _answered(response: Response) -> Response:
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    method = metrics.method_label(request.method)
    metrics.HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
    started = g.pop("metrics_started", None)
    # a WebSocket "request" lasts as long as its socket: no latency to speak of
    if started is not None and request.environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        metrics.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
    return response


def _counting_sockets(view):
    @functools.wraps(view)
    def counted(*args, **kwargs):
        metrics.WEBSOCKET_CLIENTS.inc()
        try:
            return view(*args, **kwargs)
        finally:
            metrics.WEBSOCKET_CLIENTS.dec()

    return counted


def init_metrics(app: Flask) -> None:
    """Call before the limiter's init_app: the clock starts before its check, and the count is taken
    after every other hook has set the final status."""
    app.before_request(_started)
    app.after_request(_answered)
    app.register_blueprint(bp)


def count_websockets(app: Flask, endpoint: str) -> None:
    """Count the open connections of a WebSocket route (call after its blueprint is registered)."""
    app.view_functions[endpoint] = _counting_sockets(app.view_functions[endpoint])
