"""Jobs, their ordered actions and their default targets."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.models.base import Base, JSONType, UTCDateTime, new_uuid, utcnow

job_targets = Table(
    "job_targets",
    Base.metadata,
    Column("job_id", ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("target_id", ForeignKey("targets.id", ondelete="RESTRICT"), primary_key=True),
    Column("position", Integer, nullable=False),
    Index("ix_job_targets_target_id", "target_id"),
)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_name", "name"),
        Index("ix_jobs_due", "scheduled_at", "schedule_fired_at"),
        Index("ix_jobs_next_run_at", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    job_serial: Mapped[str] = mapped_column(String(24), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    job_type: Mapped[str] = mapped_column(String(32), default="command")
    status: Mapped[str] = mapped_column(String(16), index=True)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    schedule_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # a recurring schedule (migration 0006): a cron expression read in its IANA timezone, and its next tick
    schedule_cron: Mapped[str | None] = mapped_column(String(120))
    schedule_timezone: Mapped[str | None] = mapped_column(String(64))
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # rollout defaults, a selector instead of target ids, declared parameters (migration 0007)
    max_concurrency: Mapped[str | None] = mapped_column(String(16))
    max_errors: Mapped[str | None] = mapped_column(String(16))
    target_selector: Mapped[dict | None] = mapped_column(JSONType)
    parameters: Mapped[list] = mapped_column(JSONType, default=list)
    execution_count: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # the last writer of its actions or targets: a run on a local target needs an active admin here
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", name="fk_jobs_updated_by",
                                                              ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    actions: Mapped[list[JobAction]] = relationship(
        order_by="JobAction.position", cascade="all, delete-orphan", lazy="selectin"
    )
    targets = relationship("Target", secondary=job_targets, order_by=job_targets.c.position, lazy="selectin",
                           viewonly=True)

    @property
    def target_ids(self) -> list[int]:
        return [t.id for t in self.targets]

    @property
    def schedule(self) -> dict[str, str] | None:
        """The recurring schedule as the API shows it, or None."""
        if self.schedule_cron is None:
            return None
        return {"cron": self.schedule_cron, "timezone": self.schedule_timezone or "UTC"}


# read API (migration 0002, PostgreSQL with pg_trgm only): search by "name contains q"
Index("ix_jobs_name_trgm", func.lower(Job.name).label("lower_name"), postgresql_using="gin",
      postgresql_ops={"lower_name": "gin_trgm_ops"}).ddl_if(dialect="postgresql")


class JobAction(Base):
    __tablename__ = "job_actions"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int]
    action_type: Mapped[str] = mapped_column(String(16))
    action_name: Mapped[str] = mapped_column(String(255))
    action_parameters: Mapped[dict] = mapped_column(JSONType, default=dict)
    timeout_seconds: Mapped[float | None]
    continue_on_error: Mapped[bool] = mapped_column(default=False)
