"""Per-scope counters behind serial allocation (one row per "J2026", "T2026", ...)."""
from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from common.models.base import Base


class SerialCounter(Base):
    __tablename__ = "serial_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
