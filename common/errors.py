"""Domain errors. Only api/errors.py maps them to HTTP status codes."""
from __future__ import annotations

from typing import Any


class ConfigError(RuntimeError):
    """Configuration is missing or unsafe; the process must not start."""


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(DomainError):
    code = "not_found"


class ValidationFailed(DomainError):
    code = "validation_error"


class BadRequest(DomainError):
    code = "bad_request"


class Conflict(DomainError):
    code = "conflict"


class Forbidden(DomainError):
    code = "forbidden"


class Unavailable(DomainError):
    """A store the answer needs cannot be reached now (503): unlike "nothing there", worth asking again."""

    code = "service_unavailable"
