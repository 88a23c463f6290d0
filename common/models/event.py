"""An execution's events as committed: the gapless, per-execution sequence a monitor resumes from.

Each transaction that changes an execution's state writes its events here, numbered by bumping the
execution's counter row as its last statement: the row lock is held only until that commit, so seq
order is commit order, and a seq seen live means every smaller one is already readable."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from common.models.base import Base, JSONType, UTCDateTime, utcnow


class EventCounter(Base):
    __tablename__ = "execution_event_counters"

    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(default=0)


class ExecutionEvent(Base):
    __tablename__ = "execution_events"
    __table_args__ = (Index("ix_execution_events_created_at", "created_at"),)

    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
