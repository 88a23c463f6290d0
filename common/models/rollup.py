"""Hourly roll-ups of closed executions: what analytics and target performance count, kept apart from
the raw rows so that pruning those rows (and the size of the history) never changes or slows them.

Written once per execution, in the transaction that closes it (common/services/rollups.py); an hour
is the UTC hour of the execution's start (its branches' queued_at, the same instant). Counts per
status, so every rate the endpoints compute can be recomputed from them; durations as a sum and the
number of rows that had one, so averages are exact over any set of hours."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from common.models.base import Base, UTCDateTime


class ExecutionRollup(Base):
    """Executions of every job per hour and status: execution analytics reads at most 24 x 3 rows a day
    however many jobs and executions there are."""

    __tablename__ = "execution_rollups"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    executions: Mapped[int]


class JobRollup(Base):
    """One job's executions per hour and status, with their wall time (completed_at - started_at)."""

    __tablename__ = "job_rollups"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    executions: Mapped[int]
    timed: Mapped[int]  # executions with a completed_at
    seconds: Mapped[float] = mapped_column(Float)  # their wall time, summed


class BranchRollup(Base):
    """Branches per job, target, hour and status, with their `duration`."""

    __tablename__ = "branch_rollups"
    # a target's rows over a period, read from the index alone (its rows lie scattered in the table)
    __table_args__ = (Index("ix_branch_rollups_target_hour", "target_id", "hour",
                            postgresql_include=["status", "branches", "timed", "seconds"]),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    branches: Mapped[int]
    timed: Mapped[int]  # branches with a duration
    seconds: Mapped[float] = mapped_column(Float)  # their durations, summed
