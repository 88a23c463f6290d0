"""Credentials: secrets go in, never come out."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from api.schemas.base import InModel, Omittable, OutModel, PageQuery, Secret, UTCTime
from common.services.access import MAX_ALLOWED_HOSTS, normalize_allowed_host

AllowedHost = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(normalize_allowed_host)]
AllowedHosts = Annotated[list[AllowedHost], Field(
    max_length=MAX_ALLOWED_HOSTS,
    description="CIDRs (10.0.0.0/8, 2001:db8::/32) and hostname globs (*.prod.example.com) operators may "
                "attach this credential to; empty: administrators only")]


class CredentialIn(InModel):
    secret_bearing = True

    name: str = Field(min_length=1, max_length=128)
    username: str = Field(min_length=1, max_length=128)
    auth_type: Literal["key", "password"]
    private_key: Secret | None = Field(None, max_length=32768, validate_default=True)
    passphrase: Secret | None = Field(None, max_length=1024)
    password: Secret | None = Field(None, max_length=1024, validate_default=True)
    description: str | None = Field(None, max_length=2000)
    allowed_hosts: AllowedHosts = Field(default_factory=list)

    # a field validator (not a model validator) so that the 422 names the missing field
    @field_validator("private_key", "password")
    @classmethod
    def _secret_matches_type(cls, value, info: ValidationInfo):
        assert info.field_name is not None  # always set for a field validator
        needed = {"private_key": "key", "password": "password"}[info.field_name]
        if info.data.get("auth_type") == needed and not value:
            raise ValueError(f"{info.field_name} is required when auth_type is '{needed}'")
        return value


class CredentialUpdate(InModel):
    secret_bearing = True

    # fields typed without "| None" may be omitted but not set to null
    name: str = Omittable(min_length=1, max_length=128)
    username: str = Omittable(min_length=1, max_length=128)
    auth_type: Literal["key", "password"] = Omittable()
    private_key: Secret | None = Field(None, max_length=32768)
    passphrase: Secret | None = Field(None, max_length=1024)
    password: Secret | None = Field(None, max_length=1024)
    description: str | None = Field(None, max_length=2000)
    allowed_hosts: AllowedHosts = Omittable()


class CredentialOut(OutModel):
    id: int
    name: str
    username: str
    auth_type: str
    has_passphrase: bool
    description: str | None
    allowed_hosts: list[str]
    created_at: UTCTime
    updated_at: UTCTime


class CredentialQuery(PageQuery):
    sort: Literal["created_at", "name", "id"] = "created_at"
