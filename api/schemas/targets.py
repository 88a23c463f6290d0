"""Targets."""
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from api.schemas.base import InModel, Omittable, OutModel, PageQuery, UTCTime

HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
QUEUE = r"^[A-Za-z0-9_.-]{1,64}$"


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise ValueError("not a valid IPv4 or IPv6 address") from exc


IPAddress = Annotated[str, AfterValidator(_ip)]


class TargetFields(InModel):
    ip_address: IPAddress | None = None
    hostname: str | None = Field(None, pattern=HOSTNAME, max_length=253)
    port: int = Field(22, ge=1, le=65535)
    credential_id: int | None = None
    connection: Literal["ssh", "local"] = "ssh"
    tags: list[str] = Field(default_factory=list, max_length=50)
    queue: str = Field("default", pattern=QUEUE)
    enabled: bool = True
    description: str | None = Field(None, max_length=2000)


class TargetIn(TargetFields):
    name: str = Field(min_length=1, max_length=255)


class TargetUpdate(InModel):
    # fields typed without "| None" may be omitted but not set to null (their columns are NOT NULL)
    name: str = Omittable(min_length=1, max_length=255)
    ip_address: IPAddress | None = None
    hostname: str | None = Field(None, pattern=HOSTNAME, max_length=253)
    port: int = Omittable(ge=1, le=65535)
    credential_id: int | None = None
    connection: Literal["ssh", "local"] = Omittable()
    tags: list[str] = Omittable(max_length=50)
    queue: str = Omittable(pattern=QUEUE)
    enabled: bool = Omittable()
    description: str | None = Field(None, max_length=2000)


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
    host_key_fingerprint: str | None
    created_at: UTCTime
    updated_at: UTCTime
    archived_at: UTCTime | None = None


class TargetQuery(PageQuery):
    sort: Literal["created_at", "updated_at", "name", "target_serial", "id"] = "created_at"
    name: str | None = Field(None, max_length=255)
    tag: str | None = Field(None, max_length=255)
    enabled: bool | None = None
    queue: str | None = Field(None, max_length=64)
