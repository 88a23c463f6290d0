"""Executions, their branches (one per target) and the per-action steps of each branch."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common import serials
from common.models.base import Base, JSONType, UTCDateTime, new_uuid, utcnow


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("job_id", "execution_number"),
        Index("ix_executions_started_at", "started_at"),
        Index("ix_executions_job_started", "job_id", "started_at"),
        Index("ix_executions_running", "id", postgresql_where=text("status = 'running'"),
              sqlite_where=text("status = 'running'")),
        # read API (migration 0002): analytics by start time and status; serial-prefix search on PostgreSQL
        Index("ix_executions_started_status", "started_at", "status"),
        Index("ix_executions_retry_of", "retry_of_id"),
        Index("ix_executions_serial_pattern", "execution_serial",
              postgresql_ops={"execution_serial": "varchar_pattern_ops"}).ddl_if(dialect="postgresql"),
        # history (migration 0009): executions not yet in the roll-ups (running ones, mostly), which
        # analytics counts from raw rows; closed executions whose history is not pruned yet, oldest first
        Index("ix_executions_unrolled", "started_at", postgresql_where=text("rolled_up_at IS NULL"),
              sqlite_where=text("rolled_up_at IS NULL")),
        Index("ix_executions_unpruned", "completed_at", postgresql_where=text("pruned_at IS NULL"),
              sqlite_where=text("pruned_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    execution_serial: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="RESTRICT"))
    execution_number: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16), default="manual")  # manual | schedule | retry
    # the execution whose unfinished branches this one re-runs (migration 0006)
    # the rollout policy it ran with, why it stopped starting branches, how targets and parameters
    # were given (migration 0007); secret parameter values are Fernet-encrypted, never returned
    max_concurrency: Mapped[str | None] = mapped_column(String(16))
    max_errors: Mapped[str | None] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(Text)
    target_selector: Mapped[dict | None] = mapped_column(JSONType)
    parameters: Mapped[dict] = mapped_column(JSONType, default=dict)
    secret_parameters: Mapped[str | None] = mapped_column(Text)
    retry_of_id: Mapped[int | None] = mapped_column(ForeignKey("executions.id", name="fk_executions_retry_of",
                                                               ondelete="SET NULL"))
    triggered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the job's actions as they were when it started: editing the job never changes a running execution
    actions: Mapped[list] = mapped_column(JSONType, default=list)
    # when its counts went into the roll-ups (NULL: not yet, analytics reads its raw rows), and when
    # RETENTION_DAYS pruned its outputs, steps and events (NULL: kept) (migration 0009)
    rolled_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    job = relationship("Job", lazy="raise")
    branches: Mapped[list[Branch]] = relationship(order_by="Branch.branch_number", lazy="raise",
                                                  back_populates="execution")
    # the execution a retry re-runs, and the retries of this one (read shapes load both with it)
    retry_of: Mapped[Execution | None] = relationship(remote_side=[id], foreign_keys=[retry_of_id], lazy="raise",
                                                      back_populates="retries")
    retries: Mapped[list[Execution]] = relationship(foreign_keys=[retry_of_id], order_by="Execution.id",
                                                    lazy="raise", back_populates="retry_of")

    @property
    def retry_of_serial(self) -> str | None:
        return None if self.retry_of is None else self.retry_of.execution_serial

    @property
    def retry_serials(self) -> list[str]:
        return [r.execution_serial for r in self.retries]


class Branch(Base):
    __tablename__ = "branches"
    __table_args__ = (
        UniqueConstraint("execution_id", "branch_number"),
        Index("ix_branches_target_started", "target_id", "started_at"),
        Index("ix_branches_active", "status", "queued_at",
              postgresql_where=text("status IN ('queued', 'running')"),
              sqlite_where=text("status IN ('queued', 'running')")),
        # read API (migration 0002): a target's branches newest first; newest branches of a broad search;
        # serial-prefix search on PostgreSQL
        Index("ix_branches_target_queued", "target_id", "queued_at", "id"),
        Index("ix_branches_queued_at", "queued_at"),
        Index("ix_branches_serial_pattern", "branch_serial",
              postgresql_ops={"branch_serial": "varchar_pattern_ops"}).ddl_if(dialect="postgresql"),
        Index("ix_branches_execution_active", "execution_id",
              postgresql_where=text("status IN ('queued', 'running')"),
              sqlite_where=text("status IN ('queued', 'running')")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    branch_uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    branch_serial: Mapped[str] = mapped_column(String(48), unique=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    branch_number: Mapped[int]
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="RESTRICT"))
    target_serial_ref: Mapped[str] = mapped_column(String(24))
    queue: Mapped[str] = mapped_column(String(64), default="default")
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(32))
    exit_code: Mapped[int | None]
    result_output: Mapped[str | None] = mapped_column(Text)
    result_error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration: Mapped[float | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    remote_pid: Mapped[int | None]  # process group of the action running on the target (migration 0005)

    execution: Mapped[Execution] = relationship(lazy="raise", back_populates="branches")
    target = relationship("Target", lazy="raise")
    steps: Mapped[list[BranchStep]] = relationship(order_by="BranchStep.position", lazy="raise")

    @property
    def branch_id(self) -> str:
        return serials.branch_id(self.branch_number)

    @property
    def execution_serial(self) -> str:
        return self.branch_serial.rsplit(".", 1)[0]


class BranchStep(Base):
    __tablename__ = "branch_steps"
    __table_args__ = (UniqueConstraint("branch_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="CASCADE"))
    position: Mapped[int]
    action_name: Mapped[str] = mapped_column(String(255))
    action_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None]
    stdout: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration: Mapped[float | None]
