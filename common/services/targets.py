"""Targets: CRUD with archive-on-delete, trust-on-first-use host keys."""
from __future__ import annotations

from sqlalchemy import select, text, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from common import serials
from common.errors import Conflict, Forbidden, ValidationFailed
from common.models import Credential, Target, utcnow
from common.services.pagination import Page, PageRequest, contains, paginate
from common.services.refs import id_in_range, target_by_ref
from common.statuses import Role

SORTABLE = {"created_at": Target.created_at, "name": Target.name, "target_serial": Target.target_serial,
            "updated_at": Target.updated_at, "id": Target.id}
EDITABLE = ("name", "ip_address", "hostname", "port", "credential_id", "connection", "tags", "queue", "enabled",
            "description")


def _check(session: Session, values: dict, role: str, current: Target | None = None) -> None:
    connection = values.get("connection", current.connection if current else "ssh")
    if connection == "local" and role != Role.ADMIN:
        raise Forbidden("Only administrators may create local targets", {"field": "connection"})
    if connection == "ssh":
        address = values.get("ip_address", current.ip_address if current else None) or \
            values.get("hostname", current.hostname if current else None)
        if not address:
            raise ValidationFailed("An SSH target needs ip_address or hostname", {"field": "ip_address"})
        credential_id = values.get("credential_id", current.credential_id if current else None)
        if credential_id is None:
            raise ValidationFailed("An SSH target needs credential_id", {"field": "credential_id"})
    credential_id = values.get("credential_id")
    if credential_id is not None and (not id_in_range(credential_id)
                                      or session.get(Credential, credential_id) is None):
        raise ValidationFailed("Credential does not exist",
                               {"field": "credential_id", "received": values["credential_id"]})
    name = values.get("name")
    if name is not None and (current is None or name != current.name):
        taken = session.scalar(select(Target.id).where(Target.name == name, Target.archived_at.is_(None)))
        if taken is not None:
            raise Conflict(f"target name {name!r} is taken", {"field": "name", "received": name})


def create_target(session: Session, values: dict, *, user_id: int | None, role: str) -> Target:
    _check(session, values, role)
    now = utcnow()
    target = Target(**{k: v for k, v in values.items() if k in EDITABLE}, created_by=user_id, created_at=now,
                    updated_at=now, target_serial=serials.allocate_target_serial(session, now))
    session.add(target)
    session.flush()
    return target


def update_target(session: Session, ref: str, values: dict, *, role: str) -> Target:
    target = live_target(session, ref)
    _check(session, values, role, target)
    for key in EDITABLE:
        if key in values:
            setattr(target, key, values[key])
    if {"ip_address", "hostname", "port"} & values.keys():
        target.host_key = target.host_key_fingerprint = None  # a new address is a new host: trust it afresh
    session.flush()
    return target


def live_target(session: Session, ref: str) -> Target:
    target = target_by_ref(session, ref)
    if target.archived_at is not None:
        raise Conflict("Target is archived", {"target_serial": target.target_serial})
    return target


def reset_host_key(session: Session, ref: str) -> Target:
    """Forget the pinned host key (after a legitimate re-install), so the next connect trusts anew."""
    target = live_target(session, ref)
    target.host_key = target.host_key_fingerprint = None
    session.flush()
    return target


def archive_target(session: Session, ref: str) -> None:
    target = live_target(session, ref)
    target.archived_at = utcnow()
    target.enabled = False
    session.flush()


def list_targets(session: Session, req: PageRequest, *, name: str | None = None, tag: str | None = None,
                 enabled: bool | None = None, queue: str | None = None) -> Page:
    stmt = select(Target).where(Target.archived_at.is_(None))
    if name:
        stmt = stmt.where(contains(Target.name, name))
    if enabled is not None:
        stmt = stmt.where(Target.enabled.is_(enabled))
    if queue:
        stmt = stmt.where(Target.queue == queue)
    if tag:
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.where(type_coerce(Target.tags, JSONB).contains([tag]))  # jsonb @>, not LIKE
        else:
            stmt = stmt.where(text("EXISTS (SELECT 1 FROM json_each(targets.tags) WHERE json_each.value = :tag)")
                              .bindparams(tag=tag))
    return paginate(session, stmt, req, SORTABLE, Target.id)

