"""Exceptions: one class per API error code, all subclasses of :class:`ApiError`.

Every API failure arrives in the envelope ``{"error", "message", "details"}``; the SDK raises the
class named by ``error`` (falling back to the HTTP status), carrying ``status``, ``error``,
``message`` and ``details``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type


class EnableDRMError(Exception):
    """Base class of everything the SDK raises."""


class TransportError(EnableDRMError):
    """The server could not be reached, or the connection failed mid-request (no HTTP answer)."""


class WaitTimeout(EnableDRMError, TimeoutError):
    """A wait (``executions.wait``, an event stream's ``timeout``) ran out before its condition held."""


class ApiError(EnableDRMError):
    """An HTTP error answer from the API, in the ``{error, message, details}`` envelope."""

    status: int
    error: str
    message: str
    details: Dict[str, Any]
    headers: Dict[str, str]

    def __init__(self, status: int, error: str, message: str, details: Optional[Mapping[str, Any]] = None,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(status={self.status!r}, error={self.error!r}, "
                f"message={self.message!r}, details={self.details!r})")


class BadRequest(ApiError):
    """400 ``bad_request``: malformed JSON or invalid query parameters."""


class Unauthorized(ApiError):
    """401 ``unauthorized``: missing, invalid or expired token, or wrong username/password."""


class Forbidden(ApiError):
    """403 ``forbidden``: the user's role may not do this."""


class NotFound(ApiError):
    """404 ``not_found``: no such resource (or route)."""


class MethodNotAllowed(ApiError):
    """405 ``method_not_allowed``."""


class Conflict(ApiError):
    """409 ``conflict``: e.g. a duplicate name, or a state that forbids the change."""


class PayloadTooLarge(ApiError):
    """413 ``payload_too_large``."""


class UnsupportedMediaType(ApiError):
    """415 ``unsupported_media_type``."""


class ValidationError(ApiError):
    """422 ``validation_error``: the body or a serial failed validation; ``details['field']`` names it."""


class RateLimited(ApiError):
    """429 ``rate_limited``, raised once the configured retries are spent; ``retry_after`` is in seconds."""

    retry_after: Optional[float]

    def __init__(self, status: int, error: str, message: str, details: Optional[Mapping[str, Any]] = None,
                 headers: Optional[Mapping[str, str]] = None, retry_after: Optional[float] = None) -> None:
        super().__init__(status, error, message, details, headers)
        self.retry_after = retry_after


class ServerError(ApiError):
    """500 ``internal_error`` and any other 5xx answer."""


InternalError = ServerError

ERROR_CLASSES: Dict[str, Type[ApiError]] = {
    "bad_request": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "validation_error": ValidationError,
    "rate_limited": RateLimited,
    "internal_error": ServerError,
}

STATUS_CLASSES: Dict[int, Type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
    500: ServerError,
}

STATUS_CODES: Dict[int, str] = {status: code for code, cls in ERROR_CLASSES.items()
                                for status, c in STATUS_CLASSES.items() if c is cls}


def error_class(status: int, error: Optional[str]) -> Type[ApiError]:
    """The exception class for an answer: by the envelope's ``error`` code first, then by status."""
    if error and error in ERROR_CLASSES:
        return ERROR_CLASSES[error]
    if status in STATUS_CLASSES:
        return STATUS_CLASSES[status]
    if status >= 500:
        return ServerError
    return ApiError


def make_error(status: int, body: Any, headers: Optional[Mapping[str, str]] = None,
               retry_after: Optional[float] = None) -> ApiError:
    """Build the exception for an error answer; tolerates a body that is not the envelope."""
    if isinstance(body, Mapping):
        error = body.get("error") if isinstance(body.get("error"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
        details = body.get("details") if isinstance(body.get("details"), Mapping) else {}
    else:
        error, message, details = None, None, {}
        if isinstance(body, str) and body.strip():
            message = body.strip()[:500]
    cls = error_class(status, error)
    error = error or STATUS_CODES.get(status) or ("internal_error" if status >= 500 else "error")
    message = message or f"HTTP {status}"
    if cls is RateLimited:
        return RateLimited(status, error, message, details, headers, retry_after=retry_after)
    return cls(status, error, message, details, headers)
