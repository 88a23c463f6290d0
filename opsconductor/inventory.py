"""Ansible inventories as target bodies: read with ansible-core's own parser (group_vars, host_vars,
children groups and templated values, as `ansible-inventory` sees them), then checked by the API's own
target schema, so an imported target is exactly one the API would have accepted."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from api.schemas.targets import TargetIn
from common.db import Database
from common.services.inventory import ImportReport, credential_by_name, import_targets

ANSIBLE_MISSING = ("reading an Ansible inventory needs ansible-core, an optional extra: "
                   "pip install 'opsconductor[ansible]' (in a checkout: pip install '.[ansible]')")

# the variables read, each with the older spelling Ansible still accepts
VARIABLES = {
    "ansible_host": ("ansible_host", "ansible_ssh_host"),
    "ansible_port": ("ansible_port", "ansible_ssh_port"),
    "ansible_user": ("ansible_user", "ansible_ssh_user"),
    "ansible_connection": ("ansible_connection",),
}
SSH_CONNECTIONS = {"ssh", "paramiko", "paramiko_ssh", "smart"}
IMPLICIT_GROUPS = {"all", "ungrouped"}


class AnsibleMissing(RuntimeError):
    """ansible-core is not installed (it is the `ansible` extra, not a dependency)."""


class InventoryError(RuntimeError):
    """The inventory as a whole cannot be read."""


class HostRejected(ValueError):
    """One host cannot become a target; the message says why in the inventory's own terms."""


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: tuple[str, ...]  # every group it is in, parents of its groups included; not all/ungrouped
    variables: dict[str, Any] = field(default_factory=dict)  # VARIABLES' keys, templated
    error: str | None = None  # a variable Ansible could not template


def read_inventory(path: str) -> list[InventoryHost]:
    """Every host of the inventory at `path` (any source `ansible-inventory -i` reads: INI, YAML, a
    directory), in name order."""
    try:
        from ansible.errors import AnsibleError
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import Templar
        from ansible.vars.manager import VariableManager
    except ImportError as exc:
        raise AnsibleMissing(ANSIBLE_MISSING) from exc

    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=[path])
    except AnsibleError as exc:
        raise InventoryError(f"ansible could not read {path}: {exc}") from exc
    if not inventory.hosts:
        raise InventoryError(f"no hosts in {path} (ansible read none: see its warnings above, if any)")
    manager = VariableManager(loader=loader, inventory=inventory)
    hosts = []
    for host in sorted(inventory.hosts.values(), key=lambda h: h.name):
        known = manager.get_vars(host=host, include_hostvars=False)
        templar = Templar(loader=loader, variables=known)
        values: dict[str, Any] = {}
        error = None
        for key, spellings in VARIABLES.items():
            spelling = next((s for s in spellings if s in known), None)
            if spelling is None:
                continue
            try:
                values[key] = templar.template(known[spelling])
            except AnsibleError as exc:
                error = f"{spelling}: ansible could not template it: {str(exc).splitlines()[0]}"
        groups = tuple(sorted(g.name for g in host.get_groups() if g.name not in IMPLICIT_GROUPS))
        hosts.append(InventoryHost(host.name, groups, values, error))
    return hosts


@dataclass(frozen=True)
class CredentialRef:
    id: int
    name: str
    username: str


def _port(value: Any) -> Any:
    # variables from an INI [group:vars] section are strings; Ansible turns a port into a number when it uses it
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def to_target(host: InventoryHost, credential: CredentialRef | None) -> dict[str, Any]:
    """The target body for a host: inventory name -> name, ansible_host (else the name) -> ip_address or
    hostname, ansible_port -> port, groups -> tags, ansible_connection=local -> a local target. Targets
    carry no user (their credential does), so an ansible_user must be the credential's username."""
    if host.error:
        raise HostRejected(host.error)
    variables = host.variables
    connection = variables.get("ansible_connection")
    body: dict[str, Any] = {"name": host.name, "tags": list(host.groups)}
    if connection == "local":
        body["connection"] = "local"
    elif connection is None or connection in SSH_CONNECTIONS:
        user = variables.get("ansible_user")
        if credential is None:
            raise HostRejected("an SSH target needs a credential: give --credential NAME")
        if user is not None and user != credential.username:
            raise HostRejected(f"ansible_user is {user!r} but credential {credential.name!r} logs in as "
                               f"{credential.username!r}: import it with a credential for {user!r}")
        address = variables.get("ansible_host", host.name)
        body.update(port=_port(variables.get("ansible_port", 22)), credential_id=credential.id, connection="ssh")
        body["ip_address" if _is_ip(address) else "hostname"] = address
    else:
        raise HostRejected(f"ansible_connection is {connection!r}: OpsConductor runs commands over SSH or "
                           "on the worker's host (local) only")
    try:
        return TargetIn.model_validate(body).model_dump()
    except ValidationError as exc:
        raise HostRejected("; ".join(_explain(error, body, host) for error in exc.errors())) from None


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value).partition("%")[0])
    except ValueError:
        return False
    return True


def _explain(error: Any, body: dict[str, Any], host: InventoryHost) -> str:
    """A schema error in the inventory's words: which variable or group, and what is wrong with it."""
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    reason = str(error.get("msg", "")).removeprefix("Value error, ")
    where = loc[0] if loc else ""
    if where in ("ip_address", "hostname"):
        source = "ansible_host" if "ansible_host" in host.variables else "the host name"
        if where == "hostname":
            detail = "" if error.get("type") in ("string_pattern_mismatch", "string_too_long") else f": {reason}"
            reason = ("is neither an IP address nor a host name (RFC 1123: dot-separated labels of letters, "
                      f"digits and '-'){detail}")
            return f"{source} {body.get(where)!r} {reason}"
        return f"{source} {body.get(where)!r}: {reason}"
    if where == "port":
        return f"ansible_port {body.get('port')!r}: {reason}"
    if where == "tags" and len(loc) > 1 and isinstance(loc[1], int):
        group = body["tags"][loc[1]]
        return f"group {group!r} is not a valid tag (1-64 of A-Z a-z 0-9 _ . : / = -)"
    if where == "tags":
        return f"in too many groups: {reason}"
    if where == "name":
        return f"host name: {reason}"
    return f"{'.'.join(str(p) for p in loc)}: {reason}"


@dataclass
class ImportResult:
    hosts: int
    rejected: dict[str, str]  # host name -> why: nothing was written
    report: ImportReport | None  # None when hosts were rejected before the database was touched
    written: bool


def import_inventory(database: Database, path: str, credential_name: str | None, *,
                     dry_run: bool = False) -> ImportResult:
    """Read, map and validate every host, then create or update them all in one transaction: any
    rejected host (by the schema or by the targets service) means nothing is written. A dry run goes
    the same way and rolls back, so its counts are what a real run would do."""
    hosts = read_inventory(path)
    with database.sessionmaker() as session:
        credential = None
        if credential_name is not None:
            row = credential_by_name(session, credential_name)
            credential = CredentialRef(row.id, row.name, row.username)
        bodies, rejected = [], {}
        for host in hosts:
            try:
                bodies.append(to_target(host, credential))
            except HostRejected as exc:
                rejected[host.name] = str(exc)
        if rejected:
            return ImportResult(len(hosts), rejected, None, False)
        report = import_targets(session, bodies)
        if report.failed or dry_run:
            session.rollback()
            return ImportResult(len(hosts), dict(report.failed), report, False)
        session.commit()
        return ImportResult(len(hosts), {}, report, True)
