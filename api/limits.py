"""Per-user rate limits (per IP before login), shared across API processes through Redis."""
from __future__ import annotations

from flask import current_app, g, request
from flask_jwt_extended import decode_token
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


def _claims() -> dict | None:
    """The bearer token's verified claims, or None for anonymous/invalid requests (limited per IP).
    Decoded once per request and without loading the user: the view's own check does that."""
    if "rate_limit_claims" not in g:
        header = request.headers.get("Authorization", "")
        claims = None
        if header.startswith("Bearer "):
            try:
                claims = decode_token(header[7:].strip())
            except Exception:  # an invalid token is the view's 401 to give; here it just means "no identity"
                claims = None
        g.rate_limit_claims = claims
    return g.rate_limit_claims


def rate_limit_key() -> str:
    claims = _claims()
    if claims and claims.get("sub"):
        return f"user:{claims['sub']}"
    return f"ip:{get_remote_address()}"


def rate_limit_value() -> str:
    settings = current_app.extensions["opsconductor"].settings
    claims = _claims()
    if claims and claims.get("role") == "admin":
        return settings.rate_limit_admin
    return settings.rate_limit_standard


def login_limit_value() -> str:
    return current_app.extensions["opsconductor"].settings.rate_limit_login


def _exempt() -> bool:
    return not request.path.startswith("/api/")


def _request_identifier() -> str:
    # unmatched /api paths (404, 405) have no endpoint; name them so they are limited and get headers too
    return request.endpoint or "unrouted"


# application limits, not default limits: a default limit is counted per route, so a user would get the
# budget once per endpoint; the reference's "100 requests/minute" is one budget per user across the API
limiter = Limiter(
    key_func=rate_limit_key,
    application_limits=[rate_limit_value],
    application_limits_exempt_when=_exempt,
    headers_enabled=True,
    key_prefix="opsconductor",
    strategy="fixed-window",
    request_identifier=_request_identifier,
)
