"""Targets. Addresses, ports and tags are checked strictly: they reach SSH connects, logs and every
list response, so nothing loose (a zone id like `%$(id)`, `port: true`, a 900 KB tag) is stored."""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from api.schemas.base import InModel, Omittable, OutModel, PageQuery, RowId, UTCTime

HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
QUEUE = r"^[A-Za-z0-9_.-]{1,64}$"
TAG = r"^[A-Za-z0-9_.:/=-]{1,64}$"
MAX_TAGS = 50
ZONE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _ip(value: str) -> str:
    if "%" in value and not ZONE_ID.fullmatch(value.partition("%")[2]):
        raise ValueError("an IPv6 zone id may only contain letters, digits, '_', '.' and '-'")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise ValueError("not a valid IPv4 or IPv6 address") from exc


def _hostname(value: str) -> str:
    """RFC 1123 §2.1: the top-level label is never all-numeric, so `999.1.1.1` is no host name."""
    if value.rsplit(".", 1)[-1].isdigit():
        raise ValueError("a host name's last label may not be all digits")
    return value


IPAddress = Annotated[str, AfterValidator(_ip)]
Hostname = Annotated[str, StringConstraints(max_length=253, pattern=HOSTNAME), AfterValidator(_hostname)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]  # strict: `true` and "22" are not ports
Tag = Annotated[str, StringConstraints(pattern=TAG)]


class TargetFields(InModel):
    ip_address: IPAddress | None = None
    hostname: Hostname | None = None
    port: Port = 22
    credential_id: RowId | None = None
    connection: Literal["ssh", "local"] = "ssh"
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    queue: str = Field("default", pattern=QUEUE)
    enabled: bool = True
    description: str | None = Field(None, max_length=2000)
    max_concurrent_runs: int | None = Field(
        None, ge=1, le=10000, strict=True,
        description="Branches of any execution that may run on it at once (null: no limit; 1: exclusive)")


class TargetIn(TargetFields):
    name: str = Field(min_length=1, max_length=255)


class TargetUpdate(InModel):
    # fields typed without "| None" may be omitted but not set to null (their columns are NOT NULL)
    name: str = Omittable(min_length=1, max_length=255)
    ip_address: IPAddress | None = None
    hostname: Hostname | None = None
    port: Port = Omittable()
    credential_id: RowId | None = None
    connection: Literal["ssh", "local"] = Omittable()
    tags: list[Tag] = Omittable(max_length=MAX_TAGS)
    queue: str = Omittable(pattern=QUEUE)
    enabled: bool = Omittable()
    description: str | None = Field(None, max_length=2000)
    max_concurrent_runs: int | None = Field(None, ge=1, le=10000, strict=True)


class TargetOut(OutModel):
    id: int
    target_uuid: str
    target_serial: str
    name: str
    ip_address: str | None
    hostname: str | None
    port: int
    credential_id: int | None
    connection: str
    tags: list[str]
    queue: str
    enabled: bool
    description: str | None
    max_concurrent_runs: int | None = None
    host_key_fingerprint: str | None
    created_at: UTCTime
    updated_at: UTCTime
    archived_at: UTCTime | None = None
    queue_has_worker: bool | None = Field(
        None, description="Whether a live worker consumes this target's queue now (false: its branches wait "
                          "`queued` until one does); null when that cannot be known (Redis not answering)")


class TargetQuery(PageQuery):
    sort: Literal["created_at", "updated_at", "name", "target_serial", "id"] = "created_at"
    name: str | None = Field(None, max_length=255)
    tag: str | None = Field(None, max_length=255)
    enabled: bool | None = None
    queue: str | None = Field(None, max_length=64)


class QueueOut(OutModel):
    name: str
    targets: int = Field(description="live targets routed to this queue")
    queued_branches: int = Field(description="branches waiting on it now")
    workers: list[str] | None = Field(description="live workers consuming it (null: unknown, Redis not answering)")
    has_worker: bool | None


class QueueListOut(BaseModel):
    data: list[QueueOut]
