"""Shared schema pieces: strict input base, RFC 3339 UTC timestamps, errors and pagination."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from common.models.base import rfc3339
from common.services.rollout import check_limit

UTCTime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _in_range_utc(value: datetime) -> datetime:
    """Converted to UTC and kept within 2000..2100: "9999-12-31T23:59:59-14:00" is year 10000 in UTC, and
    converting or comparing it raised OverflowError (a 500) further in."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range") from exc
    if not EARLIEST <= utc <= LATEST:
        raise ValueError("timestamp must be between 2000-01-01T00:00:00Z and 2100-12-31T23:59:59Z")
    return utc


# a timestamp in a request: with an explicit offset, within a range any later arithmetic survives
TimestampIn = Annotated[AwareDatetime, AfterValidator(_in_range_utc)]


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
    # True for bodies that carry secrets (login, users, credentials): their 422s echo no input value at
    # all, since a secret may arrive under any name (a typo such as `pasword` is an extra field)
    secret_bearing: ClassVar[bool] = False


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


# a row id in a body: a JSON integer, never `true` or "7" coerced into one
RowId = Annotated[int, Field(strict=True)]

# rollout limits: a count ("10") or a percentage of the execution's branches ("25%"); the patterns
# say exactly what check_limit accepts, so the OpenAPI document is the whole rule
ConcurrencyLimit = Annotated[str, Field(pattern=r"^(?:[1-9][0-9]{0,5}|(?:[1-9][0-9]?|100)%)$", examples=["10", "25%"]),
                             AfterValidator(lambda v: check_limit(v, minimum=1))]
ErrorLimit = Annotated[str, Field(pattern=r"^(?:0|[1-9][0-9]{0,5}|(?:0|[1-9][0-9]?|100)%)$", examples=["0", "5%"]),
                       AfterValidator(lambda v: check_limit(v, minimum=0))]


# offsets are bounded like page numbers: beyond them the database's row offset overflows (a 500)
Offset = Annotated[int, Field(ge=0, le=2**31 - 1)]


class PageQuery(InModel):
    page: int = Field(1, ge=1, le=2**31 - 1)  # bounded so the row offset cannot overflow
    per_page: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
