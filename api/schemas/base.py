"""Shared schema pieces: strict input base, RFC 3339 UTC timestamps, errors and pagination."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from common.models.base import rfc3339


UTCTime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def Omittable(**constraints: Any) -> Any:  # noqa: N802 - used like Field
    """A PATCH field that may be left out (None: unchanged) but not sent as null: its column is NOT NULL.
    The schema shows no default, since null is not a valid value."""
    return Field(None, json_schema_extra=_no_default, **constraints)


# secrets and passwords are kept exactly as given: stripping would change them
Secret = Annotated[str, StringConstraints(strip_whitespace=False)]


class InModel(BaseModel):
    """Request bodies: unknown fields are rejected so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(BaseModel):
    error: str = Field(examples=["validation_error"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class PaginationOut(BaseModel):
    page: int
    per_page: int
    total: int
    pages: int
    has_next: bool
    has_prev: bool


T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    data: list[T]
    pagination: PaginationOut


# offsets are bounded like page numbers: beyond them the database's row offset overflows (a 500)
Offset = Annotated[int, Field(ge=0, le=2**31 - 1)]


class PageQuery(InModel):
    page: int = Field(1, ge=1, le=2**31 - 1)  # bounded so the row offset cannot overflow
    per_page: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
