"""Targets from an inventory: each host created or updated by name through the targets service, in the
caller's transaction, so the caller decides whether any of it is kept (all or nothing, or a dry run)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import DomainError, NotFound
from common.models import Credential, Target
from common.services.targets import create_target, update_target
from common.statuses import Role

# what an inventory says about a host; the rest (queue, enabled, description, limits) stays as set elsewhere
MAPPED = ("ip_address", "hostname", "port", "credential_id", "connection", "tags")


@dataclass(frozen=True)
class HostOutcome:
    name: str
    action: str  # created | updated | unchanged
    target_serial: str
    changed: tuple[str, ...] = ()


@dataclass
class ImportReport:
    outcomes: list[HostOutcome] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # host name -> why the service refused it

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)


def credential_by_name(session: Session, name: str) -> Credential:
    credential = session.scalar(select(Credential).where(Credential.name == name))
    if credential is None:
        known = session.scalars(select(Credential.name).order_by(Credential.name).limit(20)).all()
        hint = f" (credentials: {', '.join(known)})" if known else " (there are none yet: create one first)"
        raise NotFound(f"no credential named {name!r}{hint}", {"field": "credential", "received": name})
    return credential


def _same(current: Any, new: Any, key: str) -> bool:
    if key == "tags":  # a set of labels: the order they were stored in is no change
        return sorted(current or []) == sorted(new or [])
    return bool(current == new)


def import_targets(session: Session, hosts: Iterable[dict[str, Any]]) -> ImportReport:
    """Create each host (a validated target body with its `name`) or update the live target of that name,
    as an administrator would through the API. A host the service refuses is recorded in `failed` and
    its savepoint rolled back; the others stay in the transaction for the caller to commit or not."""
    report = ImportReport()
    for values in hosts:
        name = values["name"]
        current = session.scalar(select(Target).where(Target.name == name, Target.archived_at.is_(None)))
        try:
            with session.begin_nested():
                if current is None:
                    target = create_target(session, values, user_id=None, role=Role.ADMIN)
                    report.outcomes.append(HostOutcome(name, "created", target.target_serial))
                    continue
                changes = {k: values[k] for k in MAPPED if k in values and not _same(getattr(current, k), values[k], k)}
                if changes:
                    update_target(session, current.target_serial, changes, role=Role.ADMIN)
                    report.outcomes.append(HostOutcome(name, "updated", current.target_serial, tuple(changes)))
                else:
                    report.outcomes.append(HostOutcome(name, "unchanged", current.target_serial))
        except DomainError as exc:
            report.failed[name] = exc.message
    return report
