"""The one error envelope {error, message, details}, for every failure on every route."""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, g, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from common import errors as domain
from common.db import unavailable as database_unavailable

log = logging.getLogger(__name__)

DOMAIN_STATUS = {
    domain.ValidationFailed: 422,
    domain.NotFound: 404,
    domain.BadRequest: 400,
    domain.Conflict: 409,
    domain.Forbidden: 403,
    domain.Unavailable: 503,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "validation_error",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
    505: "http_version_not_supported",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None, error: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error or HTTP_CODES.get(status, "error")
        self.message = message
        self.details = details or {}


def error_response(status: int, message: str, details: dict[str, Any] | None = None, error: str | None = None):
    body = {"error": error or HTTP_CODES.get(status, "error"), "message": message, "details": details or {}}
    response = jsonify(body)
    response.status_code = status
    return response


def server_error_body(status: int, reason: str | None = None) -> bytes:
    """The envelope for what the HTTP servers answer themselves, outside Flask (oversized headers, a
    malformed request line): the same shape as every other error, so clients parse one format."""
    details = {"reason": reason} if reason else {}
    body = {"error": HTTP_CODES.get(status, "error"), "message": HTTPStatus(status).phrase, "details": details}
    return json.dumps(body).encode()


# a rejected secret is never echoed back: error bodies end up in client logs
SECRET_FIELDS = frozenset({"password", "private_key", "passphrase", "token", "refresh_token"})


MAX_ECHO_CHARS = 256


def _clipped(value: Any) -> Any:
    """An echoed input, cut short: a 900 KB rejected tag need not travel back in the error."""
    if isinstance(value, str) and len(value) > MAX_ECHO_CHARS:
        return value[:MAX_ECHO_CHARS] + "…"
    return value


def pydantic_details(exc: ValidationError, *, location: str | None = None, secret: bool = False) -> dict[str, Any]:
    """Name the first offending field (dotted path) and list every problem. `secret`: the body carries
    secrets (login, users, credentials), so no value is echoed at all: a password sent under a
    misspelled name (`pasword`) is an extra-field error whose input is the password."""
    problems = []
    for err in exc.errors(include_url=False, include_context=False):
        field = ".".join(str(p) for p in err["loc"]) or (location or "body")
        item = {"field": field, "message": err["msg"], "type": err["type"]}
        hidden = secret or (bool(err["loc"]) and str(err["loc"][-1]) in SECRET_FIELDS)
        if ("input" in err and err["type"] != "missing" and not hidden
                and isinstance(err["input"], (str, int, float, bool))):
            item["received"] = _clipped(err["input"])
        problems.append(item)
    first = problems[0] if problems else {"field": location or "body"}
    details: dict[str, Any] = {"field": first["field"], "errors": problems}
    if "received" in first:
        details["received"] = first["received"]
    return details


def _is_conflict(exc: IntegrityError) -> bool:
    code = getattr(exc.orig, "pgcode", None)
    if code is not None:
        return code in ("23505", "23503")  # unique_violation, foreign_key_violation
    text = str(exc.orig)
    return text.startswith("UNIQUE constraint failed") or text.startswith("FOREIGN KEY constraint failed")


# How long a client is told to wait (Retry-After, details.retry_after) when the database cannot be reached
DATABASE_RETRY_AFTER_SECONDS = 5

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def database_unavailable_response(exc: BaseException):
    """503 service_unavailable in the envelope, Retry-After, and one warning line (no traceback: during an
    outage every request fails the same way)."""
    orig = getattr(exc, "orig", None) or exc
    log.warning("database unavailable method=%s path=%s error=%s.%s: %s", request.method, request.path,
                type(orig).__module__, type(orig).__qualname__, _first_line(orig))
    seconds = DATABASE_RETRY_AFTER_SECONDS
    g.retry_after = seconds  # the after-request hooks would replace a header set here with the limiter's
    return error_response(503, f"The database is unreachable; retry after {seconds} seconds",
                          {"retry_after": seconds})


def register_error_handlers(app: Flask) -> None:

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.details, exc.error)

    @app.errorhandler(domain.DomainError)
    def _domain_error(exc: domain.DomainError):
        status = DOMAIN_STATUS.get(type(exc), 400)
        return error_response(status, exc.message, exc.details, exc.code)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        details: dict[str, Any] = {}
        # only MethodNotAllowed carries valid_methods; a bare HTTPException(code=405) has none
        allowed = sorted(exc.valid_methods or []) if isinstance(exc, MethodNotAllowed) else []
        message = exc.description or exc.name
        if status == 404:
            message = f"No route for {request.method} {request.path}" if request.url_rule is None else message
        elif status == 405:
            details["allowed_methods"] = allowed
            message = f"Method {request.method} not allowed on {request.path}"
        elif status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = "Request body too large"
            details["max_bytes"] = limit
        elif status == 429:
            message = "Rate limit exceeded; retry after the time in the Retry-After header"
            details["limit"] = str(exc.description)
        response = error_response(status, message, details)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError):
        # a unique or foreign-key violation is what a concurrent request that won a race leaves: 409;
        # anything else (NOT NULL, CHECK) is a bug: 500
        if _is_conflict(exc):
            log.info("integrity conflict method=%s path=%s", request.method, request.path)
            return error_response(409, "The change conflicts with a concurrent change; retry", {})
        return _unexpected(exc)

    @app.errorhandler(SQLAlchemyError)
    def _database_error(exc: SQLAlchemyError):
        # the transaction is already rolled back (common/db.py's session, on the way out of the view)
        if database_unavailable(exc):
            return database_unavailable_response(exc)
        return _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error method=%s path=%s", request.method, request.path)
        return error_response(500, "Internal server error; the incident has been logged", {})
