"""Per-scope counters behind serial allocation (one row per "J2026", "T2026", ...): an atomic bump
of the scope's row inside the caller's transaction (a row lock on PostgreSQL)."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import String, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.models.base import Base
from common.serials import job_serial, target_serial


class SerialCounter(Base):
    __tablename__ = "serial_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


def next_in_scope(session: Session, scope: str) -> int:
    """Atomically take the next number of `scope` (e.g. "J2026"); concurrent callers block on the row."""
    bump = update(SerialCounter).where(SerialCounter.scope == scope).values(value=SerialCounter.value + 1)
    value = session.execute(bump.returning(SerialCounter.value)).scalar_one_or_none()
    if value is not None:
        return value
    from sqlalchemy.dialects import postgresql, sqlite
    dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(dialect_insert(SerialCounter).values(scope=scope, value=0).on_conflict_do_nothing())
    return session.execute(bump.returning(SerialCounter.value)).scalar_one()


def _utc_year(created_at: datetime) -> int:
    """The UTC year of `created_at` (an aware datetime; a naive one is taken as UTC)."""
    if created_at.tzinfo is not None:
        created_at = created_at.astimezone(UTC)
    return created_at.year


def allocate_job_serial(session: Session, created_at: datetime) -> str:
    year = _utc_year(created_at)
    return job_serial(year, next_in_scope(session, f"J{year}"))


def allocate_target_serial(session: Session, created_at: datetime) -> str:
    year = _utc_year(created_at)
    return target_serial(year, next_in_scope(session, f"T{year}"))
