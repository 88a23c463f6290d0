"""Targets: the hosts branches run on."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.models.base import Base, JSONType, UTCDateTime, new_uuid, utcnow
from common.models.credential import Credential


class Target(Base):
    __tablename__ = "targets"
    __table_args__ = (
        # names are unique among live targets; an archived target frees its name
        Index("uq_targets_live_name", "name", unique=True,
              postgresql_where=text("archived_at IS NULL"), sqlite_where=text("archived_at IS NULL")),
        Index("ix_targets_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    target_uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    target_serial: Mapped[str] = mapped_column(String(24), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(default=22)
    credential_id: Mapped[int | None] = mapped_column(ForeignKey("credentials.id", ondelete="RESTRICT"), index=True)
    connection: Mapped[str] = mapped_column(String(16), default="ssh")
    tags: Mapped[list] = mapped_column(JSONType, default=list)
    queue: Mapped[str] = mapped_column(String(64), default="default")
    enabled: Mapped[bool] = mapped_column(default=True)
    max_concurrent_runs: Mapped[int | None]  # branches of any execution at once (None: no limit; 1: exclusive)
    description: Mapped[str | None] = mapped_column(Text)
    host_key: Mapped[str | None] = mapped_column(Text)  # "ssh-ed25519 AAAA..." pinned on first connect
    host_key_fingerprint: Mapped[str | None] = mapped_column(String(128))
    # "credential_id@host:port" an administrator approved (common/services/access.py)
    credential_grant: Mapped[str | None] = mapped_column(String(400))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    credential: Mapped[Credential | None] = relationship(lazy="raise")


# read API (migration 0002, PostgreSQL with pg_trgm only): search by "name contains q"
Index("ix_targets_name_trgm", func.lower(Target.name).label("lower_name"), postgresql_using="gin",
      postgresql_ops={"lower_name": "gin_trgm_ops"}).ddl_if(dialect="postgresql")
