"""Targets: CRUD with archive-on-delete, trust-on-first-use host keys."""
from __future__ import annotations

from sqlalchemy import select, text, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from common.errors import Conflict, Forbidden, ValidationFailed
from common.models import Credential, Target, utcnow
from common.models.counter import allocate_target_serial
from common.services import access
from common.services.pagination import Page, PageRequest, contains, paginate
from common.services.refs import id_in_range, target_by_ref
from common.statuses import Role

SORTABLE = {"created_at": Target.created_at, "name": Target.name, "target_serial": Target.target_serial,
            "updated_at": Target.updated_at, "id": Target.id}


DEFAULTS = {"ip_address": None, "hostname": None, "port": 22, "credential_id": None, "connection": "ssh",
            "queue": "default"}
# what decides where a credential goes: a change to any of these needs the credential's scope again
ROUTING = ("ip_address", "hostname", "port", "credential_id", "queue")
# what makes it another host: its pinned key is forgotten
HOST = ("ip_address", "hostname", "port", "queue")


def _prepare(session: Session, values: dict, role: str, current: Target | None = None) -> dict:
    """Validate a create or an update and return the columns to write. Operators may neither touch
    local targets nor point a credential outside its allowed_hosts; an administrator's save records
    the exact pairing as approved (targets.credential_grant)."""
    was = {k: getattr(current, k) for k in DEFAULTS} if current is not None else dict(DEFAULTS)
    new = {**was, **{k: v for k, v in values.items() if k in DEFAULTS}}
    if current is None:
        access.require_admin_for_local(role, [values["name"]] if new["connection"] == "local" else [],
                                       "create", field="connection")
    else:
        local = [current.target_serial] if "local" in (current.connection, new["connection"]) else []
        access.require_admin_for_local(role, local, "change", field="connection")
        if new["connection"] != current.connection:
            raise ValidationFailed("A target's connection cannot change; archive it and create another",
                                   {"field": "connection"})
    address = new["ip_address"] or new["hostname"]
    if new["connection"] == "ssh":
        if not address:
            raise ValidationFailed("An SSH target needs ip_address or hostname", {"field": "ip_address"})
        if new["credential_id"] is None:
            raise ValidationFailed("An SSH target needs credential_id", {"field": "credential_id"})
    changes = {**DEFAULTS, **values} if current is None else dict(values)
    moved = [k for k in ROUTING if new[k] != was[k]]
    # an administrator's save of any routing field (re-)approves the pairing as it stands
    if current is None or moved or (role == Role.ADMIN and set(ROUTING) & values.keys()):
        changes["credential_grant"] = _approve(session, new, address, role)
    if current is not None and set(moved) & set(HOST):
        changes["host_key"] = changes["host_key_fingerprint"] = None  # another address is another host
    name = values.get("name")
    if name is not None and (current is None or name != current.name):
        taken = session.scalar(select(Target.id).where(Target.name == name, Target.archived_at.is_(None)))
        if taken is not None:
            raise Conflict(f"target name {name!r} is taken", {"field": "name", "received": name})
    return changes


def _approve(session: Session, new: dict, address: str | None, role: str) -> str | None:
    """The credential_grant for a target's new routing: an administrator's pairing, or None when only
    the credential's allowed_hosts vouch for it (403 when they do not)."""
    credential_id = new["credential_id"]
    if credential_id is None:
        return None
    credential = session.get(Credential, credential_id) if id_in_range(credential_id) else None
    if credential is None:
        raise ValidationFailed("Credential does not exist", {"field": "credential_id", "received": credential_id})
    if new["connection"] != "ssh" or not address:
        return None
    if role == Role.ADMIN:
        return access.credential_grant(credential.id, address, new["port"], new["queue"])
    if not access.address_allowed(credential.allowed_hosts, address):
        raise Forbidden(f"Credential {credential.name!r} may not be used for {address}: an administrator "
                        "must add the address to its allowed_hosts",
                        {"field": "credential_id", "credential_id": credential_id, "address": address})
    return None


def create_target(session: Session, values: dict, *, user_id: int | None, role: str) -> Target:
    changes = _prepare(session, values, role)
    now = utcnow()
    target = Target(**changes, created_by=user_id, created_at=now, updated_at=now,
                    target_serial=allocate_target_serial(session, now))
    session.add(target)
    session.flush()
    return target


def update_target(session: Session, ref: str, values: dict, *, role: str) -> Target:
    target = live_target(session, ref)
    for key, value in _prepare(session, values, role, target).items():
        setattr(target, key, value)
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


def archive_target(session: Session, ref: str, *, role: str) -> None:
    target = live_target(session, ref)
    access.require_admin_for_local(role, access.local_serials([target]), "archive", field="target_ref")
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

