"""Resolve `{job_id}` / `{target_ref}` path values: a numeric id or a serial."""
from __future__ import annotations

from sqlalchemy import false, select
from sqlalchemy.orm import Session

from common import serials
from common.errors import NotFound
from common.models import Job, Target

MAX_ID = 2**31 - 1  # ids are INTEGER columns; a larger number cannot exist (and overflows SQLite binds)


def id_in_range(value: int) -> bool:
    return 0 < value <= MAX_ID


def ref_condition(id_column, serial_column, kind: str, ref: str | int):
    """The WHERE clause for a path value that is a numeric id or a serial (422 when it is neither)."""
    if isinstance(ref, int) or (str(ref).isascii() and str(ref).isdigit()):
        return id_column == int(ref) if id_in_range(int(ref)) else false()
    serials.require(kind, str(ref))
    return serial_column == ref


def _lookup(session: Session, model, serial_column, kind: str, ref: str | int, label: str):
    obj = session.scalar(select(model).where(ref_condition(model.id, serial_column, kind, ref)))
    if obj is None:
        raise NotFound(f"{label} not found", {kind: str(ref)})
    return obj


def job_by_ref(session: Session, ref: str | int) -> Job:
    return _lookup(session, Job, Job.job_serial, "job_serial", ref, "Job")


def target_by_ref(session: Session, ref: str | int) -> Target:
    return _lookup(session, Target, Target.target_serial, "target_serial", ref, "Target")
