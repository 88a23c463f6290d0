"""A remote site for tests, made of Linux network namespaces (`ip netns`, veth pairs; needs root):

    host (this machine: API, beat, default worker, PostgreSQL, Redis)
      │ uplink veth  10.A.B.1 ── 10.A.B.2
    agent namespace  (the site's worker runs here, started with `ip netns exec`)
      │ lan veth     10.A.B.17 ── 10.A.B.20, 10.A.B.21
    lan namespace    (the site's SSH targets: sshd on port 22)

The agent reaches the host's services over its uplink; the targets are reachable from the agent
only. The host routes the site's LAN to the agent, which does not forward (its ip_forward is 0, as
a host that is no router), so the host's attempts stay on this machine and die there, where without
the route they would leave it by the default route. Every name carries a per-run suffix, the /24
is one no interface or route of this machine uses, and ``close`` removes it all (also at exit)."""
from __future__ import annotations

import atexit
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence

from tests.sshd import SSHD_BIN, SshdServer, wait_until

_LIVE: set[AgentSite] = set()


def ensure_ip() -> str:
    """The `ip` command (iproute2), installed with apt-get when missing."""
    found = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "iproute2"], env=env, check=True,
                   capture_output=True)
    return shutil.which("ip") or "/usr/sbin/ip"


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = [ensure_ip(), *(("-n", netns) if netns else ()), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to, the default route aside."""
    nets = []
    for line in ip("-4", "-o", "addr", "show").splitlines() + ip("-4", "route", "show", "table", "all").splitlines():
        for token in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", line):
            net = ipaddress.IPv4Network(token, strict=False)
            if net.prefixlen:
                nets.append(net)
    return nets


def _free_site_network() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(64, 127)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.x.y.0/24 for the test site")


class AgentSite:
    """The namespaces, links and addresses of one remote site (see the module docstring)."""

    def __init__(self, name: str = "east") -> None:
        suffix = f"{os.getpid() % 100000}{secrets.token_hex(1)}"
        self.agent_ns = f"opsc-{name}-{suffix}"
        self.lan_ns = f"opsc-{name}-lan-{suffix}"
        self.uplink_host, self.uplink_agent = f"oeh{suffix}", f"oea{suffix}"  # at most 15 characters
        self.lan_agent, self.lan_target = f"oel{suffix}", f"oet{suffix}"
        base = _free_site_network().network_address
        self.host_address = str(base + 1)  # the host's end of the uplink: where the agent finds the services
        self.agent_address = str(base + 2)
        self.lan = ipaddress.ip_network(f"{base + 16}/28")
        self.agent_lan_address = str(base + 17)
        self.target_addresses = (str(base + 20), str(base + 21))
        self._made: list[tuple[str, ...]] = []
        _LIVE.add(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in (self.agent_ns, self.lan_ns):
            ip("netns", "add", ns)
            self._made.append(("netns", ns))
            ip("link", "set", "lo", "up", netns=ns)
        ip("link", "add", self.uplink_host, "type", "veth", "peer", "name", self.uplink_agent)
        self._made.append(("link", self.uplink_host))
        ip("link", "set", self.uplink_agent, "netns", self.agent_ns)
        ip("addr", "add", f"{self.host_address}/30", "dev", self.uplink_host)
        ip("link", "set", self.uplink_host, "up")
        ip("addr", "add", f"{self.agent_address}/30", "dev", self.uplink_agent, netns=self.agent_ns)
        ip("link", "set", self.uplink_agent, "up", netns=self.agent_ns)

        ip("link", "add", self.lan_agent, "netns", self.agent_ns, "type", "veth", "peer", "name", self.lan_target,
           "netns", self.lan_ns)
        ip("addr", "add", f"{self.agent_lan_address}/{self.lan.prefixlen}", "dev", self.lan_agent, netns=self.agent_ns)
        ip("link", "set", self.lan_agent, "up", netns=self.agent_ns)
        for address in self.target_addresses:
            ip("addr", "add", f"{address}/{self.lan.prefixlen}", "dev", self.lan_target, netns=self.lan_ns)
        ip("link", "set", self.lan_target, "up", netns=self.lan_ns)

        subprocess.run(self.exec_argv(["/bin/sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]), check=True,
                       capture_output=True, timeout=30)
        ip("route", "add", str(self.lan), "via", self.agent_address, "dev", self.uplink_host)  # gone with the link

    def exec_argv(self, argv: Sequence[str], *, netns: str | None = None) -> list[str]:
        """``argv`` run inside the agent namespace (or ``netns``): `ip netns exec` execs it, same PID."""
        return [ensure_ip(), "netns", "exec", netns or self.agent_ns, *argv]

    def pids(self) -> list[int]:
        return [int(p) for ns in (self.agent_ns, self.lan_ns)
                for p in ip("netns", "pids", ns, check=False).split()]

    def close(self) -> None:
        """Kill what still runs in the namespaces (only processes this site's tests started run
        there), delete the uplink (its peer and route go with it) and both namespaces."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: not self.pids(), timeout=10, interval=0.05, message="the site's processes to exit")
        except TimeoutError:
            pass
        for kind, name in reversed(self._made):
            if kind == "link":
                ip("link", "del", name, check=False)
            else:
                ip("netns", "del", name, check=False)
        self._made.clear()
        _LIVE.discard(self)

    def exists(self) -> bool:
        names = ip("netns", "list").split()
        return self.agent_ns in names or self.lan_ns in names or bool(ip("link", "show", self.uplink_host,
                                                                             check=False).strip())


@atexit.register
def _leftovers() -> None:  # an interrupted run leaves no namespace, link or process behind
    for site in list(_LIVE):
        site.close()


class NamespacedSshd(SshdServer):
    """tests/sshd.py's server, run inside a network namespace (its addresses exist only there): ready
    when its log says it listens on every address, since this process cannot connect there itself."""

    def __init__(self, netns: str, addresses: Sequence[str], port: int = 22) -> None:
        super().__init__(addresses, port=port)
        self.netns = netns

    def _spawn(self) -> None:
        self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([ensure_ip(), "netns", "exec", self.netns, SSHD_BIN, "-D", "-e", "-f",
                                           str(self.config_path)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        proc = self._proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited at startup:\n{self.log_text()[-2000:]}")
            text = self.log_text()
            return all(f"Server listening on {a} port {self.port}" in text for a in self.addresses)

        try:
            wait_until(listening, timeout=self.start_timeout, interval=0.01, message=f"sshd in {self.netns}")
        except TimeoutError:
            self.stop()
            raise


def tcp_connects(address: str, port: int, timeout: float) -> bool:
    """Whether a TCP connect from this process (the host's namespace) succeeds within ``timeout``."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
