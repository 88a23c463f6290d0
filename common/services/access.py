"""Who may run what where: the least-privilege rules the API enforces and the worker checks again.

Local targets are the platform's own hosts: only administrators may put a branch on one. A stored
credential goes only where an administrator allowed it: to an address on its `allowed_hosts` list
(CIDRs and hostname globs), or to the exact host and port an administrator paired it with."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from common.errors import Forbidden
from common.statuses import Role

MAX_ALLOWED_HOSTS = 100
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
# a host name, or `*.` and one: `*` is a whole leftmost label and stands for one or more labels; the
# last label starts with a letter, so no numeric form an address parser would take (`0x7f000001`,
# `127.1`) can ever match
_PATTERN = re.compile(rf"^(\*\.)?({_LABEL}\.)*[a-z][a-z0-9-]{{0,62}}$")


def normalize_allowed_host(entry: str) -> str:
    """One allowed_hosts entry in canonical form: a CIDR (`10.0.0.0/8`, `2001:db8::/32`; a bare
    address is a /32 or /128) or a lower-case host pattern (`db1.example.com`, `*.prod.example.com`).
    ValueError for anything else (`*`, `10.*`, `web*.example.com`)."""
    entry = entry.strip()
    try:
        return str(ipaddress.ip_network(entry, strict=False))
    except ValueError:
        pass
    pattern = entry.lower().rstrip(".")
    if not _PATTERN.match(pattern) or len(pattern) > 253 or pattern.count(".") < (2 if pattern[0] == "*" else 0):
        raise ValueError(f"{entry!r} is neither a CIDR nor a host name or *.domain pattern such as *.example.com")
    return pattern


def _as_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1 to the kernel
    return mapped or ip


def address_allowed(allowed_hosts: Iterable[str], address: str) -> bool:
    """Whether a connect address (an IP or a host name) matches the list. An IP matches CIDRs only,
    a host name patterns only: `0.0.0.0/0` never admits a name. The unspecified address (0.0.0.0,
    ::) reaches the local host and is never admitted."""
    ip = _as_ip(address)
    if ip is not None and ip.is_unspecified:
        return False
    name = address.lower().rstrip(".")
    for entry in allowed_hosts:
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip.version == network.version and ip in network:
                return True
        elif ip is None and (name == entry or (entry.startswith("*.") and name.endswith(entry[1:]))):
            return True
    return False


def credential_grant(credential_id: int, address: str, port: int, queue: str) -> str:
    """The pairing an administrator approved, as stored in targets.credential_grant (migration 0004
    builds the same form in SQL)."""
    return f"{credential_id}@{address.lower()}:{port}/{queue}"


def may_use_credential(credential_id: int, allowed_hosts: Iterable[str], grant: str | None, address: str,
                       port: int, queue: str) -> bool:
    """The worker's check right before it connects: the list, or the administrator's exact pairing."""
    return (grant == credential_grant(credential_id, address, port, queue)  # the common case, and cheap
            or address_allowed(allowed_hosts, address))


def local_serials(targets: Iterable) -> list[str]:
    return [t.target_serial for t in targets if t.connection == "local"]


def require_admin_for_local(role: str, local: list[str], doing: str, field: str = "target_ids") -> None:
    """403 naming the local targets (serials, or a new target's name) when a non-administrator would
    `doing` them: run on one, list one in a job, create, change or archive one."""
    if role == Role.ADMIN or not local:
        return
    raise Forbidden(f"Local targets are the platform's own hosts; only administrators may {doing} them",
                    {"field": field, "targets": local})
