"""Login, tokens and users."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import InModel, OutModel, PageQuery, Secret, UTCTime

RoleName = Literal["admin", "operator", "viewer"]


class LoginIn(InModel):
    secret_bearing = True

    username: str = Field(min_length=1, max_length=64)
    password: Secret = Field(min_length=1, max_length=1024)


class TokenOut(OutModel):
    access_token: str
    refresh_token: str | None = None
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class UserOut(OutModel):
    id: int
    username: str
    role: RoleName
    is_active: bool
    created_at: UTCTime


class UserIn(InModel):
    secret_bearing = True

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: Secret = Field(min_length=8, max_length=1024)
    role: RoleName = "operator"


class UserUpdate(InModel):
    secret_bearing = True

    password: Secret | None = Field(None, min_length=8, max_length=1024)
    role: RoleName | None = None
    is_active: bool | None = None


class UserQuery(PageQuery):
    sort: Literal["created_at", "username", "id"] = "created_at"
