"""Who may run what where: the least-privilege rules the API enforces and the worker checks again.

Local targets are the platform's own hosts: only administrators may put a branch on one. A stored
credential goes only where an administrator allowed it: to an address on its `allowed_hosts` list
(CIDRs and hostname globs), or to the exact host and port an administrator paired it with."""
from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable

from common.errors import Forbidden
from common.statuses import Role

MAX_ALLOWED_HOSTS = 100
_GLOB = re.compile(r"^[a-z0-9*?]([a-z0-9*?.-]{0,252})$")


def normalize_allowed_host(entry: str) -> str:
    """One allowed_hosts entry in canonical form: a CIDR (`10.0.0.0/8`, `2001:db8::/32`, a bare
    address is a /32 or /128) or a lower-case hostname glob (`*.prod.example.com`). ValueError else."""
    entry = entry.strip()
    try:
        return str(ipaddress.ip_network(entry, strict=False))
    except ValueError:
        pass
    glob = entry.lower()
    if not _GLOB.match(glob) or glob.strip("*?.") == "":
        raise ValueError(f"{entry!r} is neither a CIDR nor a hostname glob such as *.example.com")
    return glob


def _as_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def address_allowed(allowed_hosts: Iterable[str], address: str) -> bool:
    """Whether a connect address (an IP or a hostname) matches the list. An IP matches CIDRs only,
    a hostname globs only: `10.*` never admits an address, `0.0.0.0/0` never a hostname."""
    ip = _as_ip(address)
    for entry in allowed_hosts:
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip.version == network.version and ip in network:
                return True
        elif ip is None and fnmatch.fnmatchcase(address.lower(), entry):
            return True
    return False


def credential_grant(credential_id: int, address: str, port: int) -> str:
    """The pairing an administrator approved, as stored in targets.credential_grant."""
    return f"{credential_id}@{address.lower()}:{port}"


def may_use_credential(credential_id: int, allowed_hosts: Iterable[str], grant: str | None, address: str,
                       port: int) -> bool:
    """The worker's check right before it authenticates: the list, or the administrator's exact pairing."""
    return address_allowed(allowed_hosts, address) or grant == credential_grant(credential_id, address, port)


def require_admin_for_local(targets: Iterable, role: str, doing: str) -> None:
    """403 naming the local targets when a non-administrator would put a branch on one."""
    if role == Role.ADMIN:
        return
    local = [t.target_serial for t in targets if t.connection == "local"]
    if local:
        raise Forbidden(f"Local targets are the platform's own hosts; only administrators may {doing} them",
                        {"field": "target_ids", "targets": local})
