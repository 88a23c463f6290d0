"""SSH credentials; secrets are Fernet tokens, never plaintext."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from common.models.base import Base, JSONType, UTCDateTime, utcnow


class Credential(Base):
    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    username: Mapped[str] = mapped_column(String(128))
    auth_type: Mapped[str] = mapped_column(String(16))  # key | password
    secret_encrypted: Mapped[str] = mapped_column(Text)
    passphrase_encrypted: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    # CIDRs and hostname globs operators may point this credential at; empty: administrators only
    allowed_hosts: Mapped[list] = mapped_column(JSONType, default=list, server_default="[]")
    version: Mapped[int] = mapped_column(default=1)  # bumped on every secret change: invalidates pooled connections
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def has_passphrase(self) -> bool:
        return self.passphrase_encrypted is not None
