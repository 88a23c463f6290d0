"""The monitor web app: `web/` served at `/` and the JS SDK's modules (`sdk/js/src`) at `/sdk/`, as they are
in the repository (no build step), with a strict Content-Security-Policy on every response; and the API explorer,
vendored Swagger UI over /api/openapi.json, at `/api/docs`."""
from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, request, send_from_directory
from werkzeug.exceptions import NotFound


def _root() -> Path:
    """The checkout (or the image's /app) holding web/: beside this package, else the working directory (a
    non-editable install puts the package in site-packages while the Dockerfile copies web/ to /app)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "web" / "index.html").is_file() else Path.cwd()


ROOT = _root()
WEB_DIR = ROOT / "web"
SDK_DIR = ROOT / "sdk" / "js" / "src"

bp = Blueprint("web", __name__)

# A Host header fit to be named in the policy (a name or an IP literal, and a port); anything else is left out
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def content_security_policy(host: str, *, trusted_types: bool = True) -> str:
    """No inline script or style, no eval, nothing from elsewhere; fetches and the WebSocket to this origin only
    (CSP 3 lets 'self' cover ws: too, older browsers need it spelled out); DOM sinks take no strings."""
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return "; ".join((
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
        f"connect-src 'self'{sockets}", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
        "frame-ancestors 'none'",
        *(("require-trusted-types-for 'script'", "trusted-types 'none'") if trusted_types else ()),
    ))


@bp.after_request
def _security_headers(response: Response) -> Response:
    # Swagger UI writes its Markdown (sanitised by its own DOMPurify) through innerHTML: no Trusted Types there
    response.headers["Content-Security-Policy"] = content_security_policy(
        request.host, trusted_types=request.endpoint != "web.api_docs")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    # revalidated on every load (ETag): a new release is picked up at once, an unchanged file costs a 304
    response.headers["Cache-Control"] = "no-cache"
    return response


def _send(directory: Path, name: str) -> Response:
    suffix = Path(name).suffix
    if suffix not in _TYPES:
        raise NotFound()
    return send_from_directory(directory, name, mimetype=_TYPES[suffix])  # Flask adds charset=utf-8 to text/*


@bp.get("/")
def index():
    """The monitor's single page."""
    return _send(WEB_DIR, "index.html")


@bp.get("/web/<path:name>")
def asset(name: str):
    """The monitor's scripts, styles and vendored view library."""
    return _send(WEB_DIR, name)


@bp.get("/api/docs")
def api_docs():
    """The API explorer: Swagger UI (web/vendor/swagger-ui) reading /api/openapi.json; Authorize takes a token."""
    return _send(WEB_DIR, "docs.html")


@bp.get("/sdk/<path:name>")
def sdk(name: str):
    """The JavaScript SDK's ES modules, as the monitor imports them."""
    return _send(SDK_DIR, name)
