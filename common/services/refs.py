"""Resolve `{job_id}` / `{target_ref}` path values: a numeric id or a serial."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from common import serials
from common.errors import NotFound
from common.models import Job, Target


def _lookup(session: Session, model, serial_column, kind: str, ref: str | int, label: str):
    if isinstance(ref, int) or (str(ref).isascii() and str(ref).isdigit()):
        obj = session.get(model, int(ref))
    else:
        serials.require(kind, str(ref))
        obj = session.scalar(select(model).where(serial_column == ref))
    if obj is None:
        raise NotFound(f"{label} not found", {kind: str(ref)})
    return obj


def job_by_ref(session: Session, ref: str | int) -> Job:
    return _lookup(session, Job, Job.job_serial, "job_serial", ref, "Job")


def target_by_ref(session: Session, ref: str | int) -> Target:
    return _lookup(session, Target, Target.target_serial, "target_serial", ref, "Target")
