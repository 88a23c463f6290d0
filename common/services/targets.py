"""Targets: CRUD with archive-on-delete, trust-on-first-use host keys."""
from __future__ import annotations

from sqlalchemy import select, text, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from common import serials
from common.errors import Conflict, Forbidden, ValidationFailed
from common.models import Credential, Target, utcnow
from common.services import access
from common.services.pagination import Page, PageRequest, contains, paginate
from common.services.refs import id_in_range, target_by_ref
from common.statuses import Role

SORTABLE = {"created_at": Target.created_at, "name": Target.name, "target_serial": Target.target_serial,
            "updated_at": Target.updated_at, "id": Target.id}
EDITABLE = ("name", "ip_address", "hostname", "port", "credential_id", "connection", "tags", "queue", "enabled",
            "description")


def _connect_address(values: dict, current: Target | None) -> str | None:
    """The address a worker will connect to once `values` are applied (ip_address first)."""
    merged = {k: values.get(k, getattr(current, k, None)) for k in ("ip_address", "hostname")}
    return merged["ip_address"] or merged["hostname"]


def _check(session: Session, values: dict, role: str, current: Target | None = None) -> Credential | None:
    """Validate a create or an update; returns the target's credential when the change needs its
    pairing (re)approved. Operators may neither touch local targets nor point a credential at an
    address off its allowed_hosts list."""
    connection = values.get("connection", current.connection if current else "ssh")
    if role != Role.ADMIN and (connection == "local" or (current is not None and current.connection == "local")):
        raise Forbidden("Local targets are the platform's own hosts; only administrators may create or change them",
                        {"field": "connection"})
    address = _connect_address(values, current)
    credential_id = values.get("credential_id", current.credential_id if current else None)
    if connection == "ssh":
        if not address:
            raise ValidationFailed("An SSH target needs ip_address or hostname", {"field": "ip_address"})
        if credential_id is None:
            raise ValidationFailed("An SSH target needs credential_id", {"field": "credential_id"})
    credential = None
    if credential_id is not None and (current is None or {"ip_address", "hostname", "port",
                                                          "credential_id"} & values.keys()):
        credential = session.get(Credential, credential_id) if id_in_range(credential_id) else None
        if credential is None:
            raise ValidationFailed("Credential does not exist", {"field": "credential_id", "received": credential_id})
        if role != Role.ADMIN and connection == "ssh" and not access.address_allowed(credential.allowed_hosts,
                                                                                     address):
            raise Forbidden(f"Credential {credential.name!r} may not be used for {address}: an administrator "
                            "must add the address to its allowed_hosts",
                            {"field": "credential_id", "credential_id": credential_id, "address": address})
    name = values.get("name")
    if name is not None and (current is None or name != current.name):
        taken = session.scalar(select(Target.id).where(Target.name == name, Target.archived_at.is_(None)))
        if taken is not None:
            raise Conflict(f"target name {name!r} is taken", {"field": "name", "received": name})
    return credential


def _grant(target: Target, credential: Credential | None, role: str) -> None:
    """Record an administrator's approval of the (credential, address, port) pairing; any other
    writer's change leaves only the allowed_hosts list to vouch for it."""
    if credential is None:
        return
    address = target.ip_address or target.hostname
    target.credential_grant = (access.credential_grant(credential.id, address, target.port)
                               if role == Role.ADMIN and target.connection == "ssh" and address else None)


def create_target(session: Session, values: dict, *, user_id: int | None, role: str) -> Target:
    credential = _check(session, values, role)
    now = utcnow()
    target = Target(**{k: v for k, v in values.items() if k in EDITABLE}, created_by=user_id, created_at=now,
                    updated_at=now, target_serial=serials.allocate_target_serial(session, now))
    target.port, target.connection = target.port or 22, target.connection or "ssh"  # column defaults come at flush
    _grant(target, credential, role)
    session.add(target)
    session.flush()
    return target


def update_target(session: Session, ref: str, values: dict, *, role: str) -> Target:
    target = live_target(session, ref)
    credential = _check(session, values, role, target)
    for key in EDITABLE:
        if key in values:
            setattr(target, key, values[key])
    if {"ip_address", "hostname", "port"} & values.keys():
        target.host_key = target.host_key_fingerprint = None  # a new address is a new host: trust it afresh
    _grant(target, credential, role)
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
    if target.connection == "local" and role != Role.ADMIN:
        raise Forbidden("Local targets are the platform's own hosts; only administrators may archive them",
                        {"target_serial": target.target_serial})
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

