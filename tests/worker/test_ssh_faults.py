"""SSHRunner when the link to a target dies: real sshd, links cut with nftables (packets dropped
both ways, as when a host or the network in between goes dark), no mocks, no fixed sleeps.

Each test prints what it measured; ``pytest -s`` shows the figures.
"""
from __future__ import annotations

import os
import secrets
import selectors
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import pytest

from tests.sshd import (
    ClientKey,
    SshdServer,
    TestUser,
    find_processes,
    free_port,
    wait_until,
)
from worker.runners.base import ConnectError, ConnectionSpec, StepResult
from worker.runners.ssh import SSHPool, SSHRunner

pytestmark = pytest.mark.timeout(60)

NFT = "/usr/sbin/nft"
ADDRESS = "127.0.0.6"  # a host of these tests' own: the other suites' servers never see a cut
CONNECT_TIMEOUT = 2.0


class LinkCut:
    """Drops every packet between this machine and ``address:port`` (optionally only those of one
    client port, i.e. one TCP connection), both ways, in an nftables table of its own."""

    def __init__(self, address: str, port: int, client_port: int | None = None) -> None:
        self.address, self.port, self.client_port = address, port, client_port
        self.table = f"opsc_test_{secrets.token_hex(4)}"
        self.cut_at: float | None = None

    def cut(self) -> None:
        out = f"ip daddr {self.address} tcp dport {self.port}"
        back = f"ip saddr {self.address} tcp sport {self.port}"
        if self.client_port is not None:
            out += f" tcp sport {self.client_port}"
            back += f" tcp dport {self.client_port}"
        rules = f"""table inet {self.table} {{
  chain out {{ type filter hook output priority 0; policy accept; {out} drop; }}
  chain in {{ type filter hook input priority 0; policy accept; {back} drop; }}
}}
"""
        subprocess.run([NFT, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
        self.cut_at = time.monotonic()

    def restore(self) -> None:
        if self.cut_at is not None:
            subprocess.run([NFT, "delete", "table", "inet", self.table], check=True, capture_output=True)
            self.cut_at = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


@pytest.fixture(scope="module")
def dark_sshd(ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> Iterator[SshdServer]:
    with SshdServer((ADDRESS,)) as server:
        server.authorize(client_keys["ed25519"].public_line)
        yield server


@pytest.fixture
def spec(dark_sshd: SshdServer, ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> ConnectionSpec:
    key = client_keys["ed25519"]
    return ConnectionSpec(host=ADDRESS, port=dark_sshd.port, username=ssh_user.name, private_key=key.private_key,
                          connect_timeout=CONNECT_TIMEOUT, known_host_key=dark_sshd.host_key_line)


@pytest.fixture
def pool() -> Iterator[SSHPool]:
    p = SSHPool()
    yield p
    p.close_all()


@pytest.fixture
def link(dark_sshd: SshdServer) -> Iterator[LinkCut]:
    with LinkCut(ADDRESS, dark_sshd.port) as cut:
        yield cut


def sleep_tag() -> str:
    """A `sleep` argument no other process on this machine has: its processes can be found."""
    return f"{200 + secrets.randbelow(100_000) / 1000 + 0.0001:.4f}"


def run(runner: SSHRunner, spec: ConnectionSpec, command: str, **kwargs: Any) -> StepResult:
    with runner.open(spec) as session:
        return session.run(command, **kwargs)


def pgid_and_sid(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()  # the command name may contain spaces
    return int(fields[2]), int(fields[3])


def clean_up(spec: ConnectionSpec, pid: int | None, tag: str) -> None:
    """Kill what a cut link left running on the target (the link is back by now)."""
    if pid is not None:
        SSHRunner(pool=SSHPool(max_idle_per_key=0)).kill_group(spec, pid)
    wait_until(lambda: not find_processes(f"sleep {tag}"), timeout=10, message=f"sleep {tag} gone")


# --------------------------------------------------------------------------- the cut itself


def test_the_cut_stalls_a_live_session(pool: SSHPool, spec: ConnectionSpec, link: LinkCut) -> None:
    """The premise of every test below: the rule really silences an established session."""
    runner = SSHRunner(pool=pool, keepalive=0)
    with runner.open(spec) as session:
        assert session.transport is not None
        chan = session.transport.open_session(timeout=5)
        try:
            chan.exec_command("while :; do echo tick; sleep 0.02; done")
            wait_until(chan.recv_ready, timeout=5, message="ticks")
            link.cut()
            # what was already on its way may still arrive; then nothing, however long we wait
            while chan.recv_ready() or wait_for_data(chan, 0.3):
                chan.recv(65536)
            assert not wait_for_data(chan, 1.0), "data arrived through the cut"
            link.restore()
            assert wait_for_data(chan, 10.0), "the session did not resume after the cut"
        finally:
            chan.close()


def wait_for_data(chan: Any, timeout: float) -> bool:
    """True as soon as the channel has data to read; False when ``timeout`` passes without any."""
    with selectors.DefaultSelector() as sel:
        sel.register(chan, selectors.EVENT_READ)  # paramiko sets the channel's pipe when data arrives
        sel.select(timeout)
    return chan.recv_ready()


# --------------------------------------------------------------------------- keepalive


def test_keepalive_ends_a_command_whose_link_was_cut(pool: SSHPool, spec: ConnectionSpec, link: LinkCut) -> None:
    interval = 1.0
    runner = SSHRunner(pool=pool, keepalive=interval)
    tag = sleep_tag()
    pids: list[int] = []

    def started(pid: int) -> None:
        pids.append(pid)
        wait_until(lambda: find_processes(f"sleep {tag}"), timeout=5, message="the remote sleep")
        link.cut()

    try:
        result = run(runner, spec, f"sleep {tag}", timeout=50, on_start=started)
        detected = time.monotonic() - (link.cut_at or 0)
        print(f"\nlink cut mid-command detected in {detected:.2f} s (keepalive {interval:g} s)")
        assert result.error_type == "connection_lost"
        assert result.exit_code is None
        assert result.error_message == (
            f"connection to {ADDRESS}:{spec.port} lost while the command ran (no answer for 2s); "
            "the command may still be running there")
        assert detected <= 3 * interval + 2.0
        assert find_processes(f"sleep {tag}"), "the message says it may still run: it does"
    finally:
        link.restore()
        clean_up(spec, pids[0] if pids else None, tag)


def test_keepalive_drops_an_idle_pooled_connection_to_a_dead_host(pool: SSHPool, spec: ConnectionSpec,
                                                                   link: LinkCut) -> None:
    interval = 1.0
    runner = SSHRunner(pool=pool, keepalive=interval)
    with runner.open(spec) as session:
        assert session.run("true").error_type is None
        transport = session.transport
    assert transport is not None and pool.idle_count() == 1
    link.cut()
    wait_until(lambda: not transport.is_active(), timeout=3 * interval + 2.0, message="the dead transport dropped")
    print(f"\nidle pooled connection to a dark host dropped after {time.monotonic() - (link.cut_at or 0):.2f} s")
    assert pool.acquire(pool.key_for(spec)) is None


def test_without_keepalive_a_cut_goes_unnoticed(pool: SSHPool, spec: ConnectionSpec, link: LinkCut) -> None:
    """keepalive=0 turns it all off: the action's own timeout is then what ends the command."""
    runner = SSHRunner(pool=pool, keepalive=0, kill_grace=0.2)
    tag = sleep_tag()
    pids: list[int] = []

    def started(pid: int) -> None:
        pids.append(pid)
        link.cut()

    try:
        result = run(runner, spec, f"sleep {tag}", timeout=4, on_start=started)
        assert result.error_type == "timeout"
    finally:
        link.restore()
        clean_up(spec, pids[0] if pids else None, tag)


# --------------------------------------------------------------------------- dead pooled connections


def test_dead_pooled_connection_costs_one_connect_timeout(pool: SSHPool, spec: ConnectionSpec,
                                                          link: LinkCut) -> None:
    runner = SSHRunner(pool=pool, keepalive=0)  # no keepalive: the dead transport still looks active
    assert run(runner, spec, "true").error_type is None
    assert pool.idle_count() == 1
    link.cut()

    t0 = time.monotonic()
    with runner.open(spec) as session:
        assert session.reused
        result = session.run("echo never")
    pooled = time.monotonic() - t0

    t0 = time.monotonic()
    with pytest.raises(ConnectError) as fresh:
        SSHRunner(pool=SSHPool(), keepalive=0).open(spec)
    direct = time.monotonic() - t0
    print(f"\ndark host, connect timeout {CONNECT_TIMEOUT:g} s: pooled connection + reconnect failed "
          f"in {pooled:.2f} s, a fresh connect in {direct:.2f} s")
    assert result.error_type == "unreachable"
    assert "stopped answering" in (result.error_message or "")
    assert CONNECT_TIMEOUT - 0.1 <= pooled <= CONNECT_TIMEOUT + 0.5
    assert fresh.value.error_type == "unreachable"
    assert CONNECT_TIMEOUT - 0.1 <= direct <= CONNECT_TIMEOUT + 0.5


def test_dead_pooled_connection_is_replaced_when_the_host_answers(
    pool: SSHPool, spec: ConnectionSpec, dark_sshd: SshdServer
) -> None:
    """Only the pooled connection went dark (a NAT forgot it): the reconnect succeeds, in time."""
    runner = SSHRunner(pool=pool, keepalive=0)
    with runner.open(spec) as session:
        assert session.run("true").error_type is None
        transport = session.transport
    assert transport is not None
    with LinkCut(ADDRESS, dark_sshd.port, client_port=transport.sock.getsockname()[1]) as link:
        link.cut()
        t0 = time.monotonic()
        with runner.open(spec) as session:
            assert session.transport is transport
            result = session.run("echo recovered")
            assert session.transport is not transport
        elapsed = time.monotonic() - t0
    print(f"\ndark pooled connection replaced and the command run in {elapsed:.2f} s "
          f"(connect timeout {CONNECT_TIMEOUT:g} s)")
    assert result.stdout == "recovered\n" and result.error_type is None
    assert elapsed < CONNECT_TIMEOUT + 0.5
    assert pool.connects == 2


# --------------------------------------------------------------------------- cancel and timeout


def test_cancel_on_a_dead_link_ends_at_once(pool: SSHPool, spec: ConnectionSpec, link: LinkCut) -> None:
    runner = SSHRunner(pool=pool, keepalive=0)  # the cancel, not a keepalive, must end it
    tag = sleep_tag()
    cancel = threading.Event()
    pids: list[int] = []
    cancelled_at: list[float] = []

    def started(pid: int) -> None:
        pids.append(pid)
        link.cut()
        cancelled_at.append(time.monotonic())
        cancel.set()

    try:
        result = run(runner, spec, f"sleep {tag}", timeout=50, cancel=cancel, on_start=started)
        elapsed = time.monotonic() - cancelled_at[0]
        print(f"\ncancel on a dead link returned in {elapsed:.2f} s")
        assert result.error_type == "cancelled"
        assert result.error_message == (
            f"command cancelled while running; the connection to {ADDRESS} is lost, the remote process group "
            f"{pids[0]} could not be signalled (it may still be running)")
        assert elapsed < 2.0
    finally:
        link.restore()
        clean_up(spec, pids[0] if pids else None, tag)
    assert pool.idle_count() == 0  # the dark transport was not pooled again


def test_timeout_on_a_dead_link_ends_at_once(pool: SSHPool, spec: ConnectionSpec, link: LinkCut) -> None:
    runner = SSHRunner(pool=pool, keepalive=0)
    tag = sleep_tag()
    pids: list[int] = []

    def started(pid: int) -> None:
        pids.append(pid)
        link.cut()

    try:
        t0 = time.monotonic()
        result = run(runner, spec, f"sleep {tag}", timeout=1.0, on_start=started)
        past_timeout = time.monotonic() - t0 - 1.0
        print(f"\ntimeout on a dead link: returned {past_timeout:.2f} s after the 1 s timeout")
        assert result.error_type == "timeout"
        assert result.error_message == (
            f"command did not finish within 1s; the connection to {ADDRESS} is lost, the remote process group "
            f"{pids[0]} could not be signalled (it may still be running)")
        assert past_timeout < 2.0
    finally:
        link.restore()
        clean_up(spec, pids[0] if pids else None, tag)


# --------------------------------------------------------------------------- the remote process group


def test_on_start_reports_the_remote_process_group(pool: SSHPool, spec: ConnectionSpec, ssh_user: TestUser) -> None:
    runner = SSHRunner(pool=pool)
    tag = sleep_tag()
    cancel = threading.Event()
    seen: list[dict[str, Any]] = []

    def started(pid: int) -> None:
        # runs while the command does: look at the remote processes now, judge them below
        sleeps = wait_until(lambda: [p for p in find_processes(f"sleep {tag}") if p != pid], timeout=5,
                            message="the remote sleep")  # the shell's own command line names it too
        ps = subprocess.run(["ps", "-o", "pgid=", "-p", str(pid)], capture_output=True, text=True, check=False)
        seen.append({"pid": pid, "ps_pgid": ps.stdout.strip(), "uid": os.stat(f"/proc/{pid}").st_uid,
                     "leader": pgid_and_sid(pid), "members": [pgid_and_sid(p) for p in sleeps]})
        cancel.set()

    result = run(runner, spec, f"sleep {tag} & wait", timeout=30, cancel=cancel, on_start=started)
    assert result.error_type == "cancelled"
    assert len(seen) == 1, "on_start is called once"
    pid = seen[0]["pid"]
    print(f"\non_start reported remote PID {pid}; ps says its process group is {seen[0]['ps_pgid']}")
    assert seen[0]["ps_pgid"] == str(pid)
    assert seen[0]["uid"] == ssh_user.uid
    assert seen[0]["leader"] == (pid, pid)  # the shell leads its own session and process group
    assert seen[0]["members"] == [(pid, pid)]  # and the command's sleep is in that group
    assert f"remote process group {pid} terminated" in (result.error_message or "")
    wait_until(lambda: not find_processes(f"sleep {tag}"), timeout=5, message="the group killed")


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (PID 1 here may never reap what sshd leaves)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def test_kill_group_kills_a_running_group(spec: ConnectionSpec) -> None:
    worker = SSHRunner(pool=SSHPool())  # the worker that will "die" with its command running
    successor = SSHRunner(pool=SSHPool())  # another worker process: its own pool
    tag, child_tag = sleep_tag(), sleep_tag()
    pids: list[int] = []
    results: list[StepResult] = []
    thread = threading.Thread(target=lambda: results.append(
        run(worker, spec, f"sleep {child_tag} & sleep {tag}", timeout=50, on_start=pids.append)))
    thread.start()
    try:
        wait_until(lambda: pids and find_processes(f"sleep {tag}") and find_processes(f"sleep {child_tag}"),
                   timeout=10, message="the remote group running")
        t0 = time.monotonic()
        outcome = successor.kill_group(spec, pids[0])
        print(f"\nkill_group: {outcome!r} in {time.monotonic() - t0:.2f} s")
        assert outcome == f"remote process group {pids[0]} killed"
        wait_until(lambda: not find_processes(f"sleep {tag}") and not find_processes(f"sleep {child_tag}"),
                   timeout=5, message="the group's sleeps gone")
        wait_until(lambda: not alive(pids[0]), timeout=5, message="the group's leader gone")
        thread.join(timeout=10)
        assert results and results[0].error_type == "command_failed"  # killed by a signal
    finally:
        thread.join(timeout=10)
        for pid in find_processes(f"sleep {tag}") + find_processes(f"sleep {child_tag}"):
            os.kill(pid, 9)
        worker.pool.close_all()
        successor.pool.close_all()


def test_kill_group_of_an_ended_command(pool: SSHPool, spec: ConnectionSpec) -> None:
    runner = SSHRunner(pool=pool)
    pids: list[int] = []
    assert run(runner, spec, "true", on_start=pids.append).error_type is None
    wait_until(lambda: not alive(pids[0]), timeout=5, message="the shell reaped")
    assert runner.kill_group(spec, pids[0]) == f"remote process group {pids[0]} had already ended"
    assert pool.reuses == 1  # over the pooled transport


def test_kill_group_reports_an_unreachable_target(spec: ConnectionSpec, link: LinkCut) -> None:
    runner = SSHRunner(pool=SSHPool())
    refused = ConnectionSpec(host=ADDRESS, port=free_port((ADDRESS,)), username=spec.username,
                             private_key=spec.private_key, connect_timeout=CONNECT_TIMEOUT)
    outcome = runner.kill_group(refused, 4242)
    assert outcome == f"could not reach {ADDRESS}:{refused.port} to kill remote process group 4242: " \
                      f"connection refused by {ADDRESS}:{refused.port}"
    link.cut()
    t0 = time.monotonic()
    outcome = runner.kill_group(spec, 4242)
    elapsed = time.monotonic() - t0
    print(f"\nkill_group on a dark host: {outcome!r} after {elapsed:.2f} s")
    assert outcome.startswith(f"could not reach {ADDRESS}:{spec.port} to kill remote process group 4242: timed out")
    assert elapsed < CONNECT_TIMEOUT + 0.5
    with pytest.raises(ValueError):
        runner.kill_group(spec, 1)
