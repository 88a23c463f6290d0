"""Users and their roles."""
from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from common.models.base import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(default=True)
    # bumped by a password, role or active-flag change: tokens issued under an older version are revoked.
    # It starts at random, so a token of a deleted user never fits a new user given the same id (SQLite
    # reuses rowids)
    token_version: Mapped[int] = mapped_column(default=lambda: secrets.randbelow(2**30), server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


# usernames are unique without regard to case: `Op1` and `op1` are one user (migration 0004)
Index("uq_users_username_lower", func.lower(User.username), unique=True)
