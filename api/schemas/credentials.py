"""Credentials: secrets go in, never come out."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from api.schemas.base import InModel, OutModel, PageQuery, UTCTime


class CredentialIn(InModel):
    name: str = Field(min_length=1, max_length=128)
    username: str = Field(min_length=1, max_length=128)
    auth_type: Literal["key", "password"]
    private_key: str | None = Field(None, max_length=32768)
    passphrase: str | None = Field(None, max_length=1024)
    password: str | None = Field(None, max_length=1024)
    description: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _secret_matches_type(self):
        if self.auth_type == "key" and not self.private_key:
            raise ValueError("private_key is required when auth_type is 'key'")
        if self.auth_type == "password" and not self.password:
            raise ValueError("password is required when auth_type is 'password'")
        return self


class CredentialUpdate(InModel):
    name: str | None = Field(None, min_length=1, max_length=128)
    username: str | None = Field(None, min_length=1, max_length=128)
    auth_type: Literal["key", "password"] | None = None
    private_key: str | None = Field(None, max_length=32768)
    passphrase: str | None = Field(None, max_length=1024)
    password: str | None = Field(None, max_length=1024)
    description: str | None = Field(None, max_length=2000)


class CredentialOut(OutModel):
    id: int
    name: str
    username: str
    auth_type: str
    has_passphrase: bool
    description: str | None
    created_at: UTCTime
    updated_at: UTCTime


class CredentialQuery(PageQuery):
    sort: Literal["created_at", "name", "id"] = "created_at"
