"""Fault-suite fixtures. Built once per session (the expensive part, ~15 s): a PostgreSQL cluster and
a redis-server of the suite's own, two sshd processes serving 127.0.0.40-59, the platform's web and
beat processes, an admin session, one credential and a target per address. Per case: its own
workers, marker file and remote processes; a case first repairs whatever an earlier one left down.
Everything is torn down even on failure (processes with their trees, nft tables, the cluster dir)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import (
    Case,
    FaultApi,
    Fleet,
    PgCluster,
    Platform,
    RedisServer,
    ensure_nft,
)
from tests.processes import Processes
from tests.sshd import ClientKey, SshdServer, TestUser

ADDRESSES_A = [f"127.0.0.{n}" for n in range(40, 50)]  # the fan-out and process-fault targets
ADDRESSES_B = [f"127.0.0.{n}" for n in range(50, 60)]  # the link-cut targets (and more fan-out)


@pytest.fixture(scope="session")
def fault_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="opsc-fault-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def fault_processes(fault_root) -> Iterator[Processes]:
    processes = Processes(fault_root / "logs")
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def redis_server(fault_root, fault_processes) -> RedisServer:
    server = RedisServer(fault_root, fault_processes)
    server.start()
    return server  # stopped with fault_processes


@pytest.fixture(scope="session")
def fault_sshd(ssh_user: TestUser, client_key: ClientKey) -> Iterator[tuple[SshdServer, SshdServer]]:
    """Two sshd processes (one accepts at most 16 listen addresses), listening on the addresses
    themselves: a link cut matches the target's own address and port."""
    with SshdServer(ADDRESSES_A) as a, SshdServer(ADDRESSES_B) as b:
        for server in (a, b):
            server.authorize(client_key.public_line)
        yield a, b


@pytest.fixture(scope="session")
def marker_dir(fault_root, ssh_user) -> Path:
    """Where commands write their marker lines: the SSH test user's, below a root-owned temp dir it
    can traverse."""
    fault_root.chmod(0o755)
    path = fault_root / "markers"
    path.mkdir()
    os.chown(path, ssh_user.uid, -1)
    return path


@pytest.fixture(scope="session")
def platform(fault_root, pg_cluster, redis_server, fault_processes) -> Iterator[Platform]:
    ensure_nft()  # installed before the first case needs it, not inside a measured interval
    stack = Platform(fault_root, pg_cluster, redis_server, fault_processes)
    try:
        stack.start_web()
        stack.start_beat()
        yield stack
    finally:
        stack.stop_workers()


@pytest.fixture(scope="session")
def fault_api(platform) -> Iterator[FaultApi]:
    api = FaultApi(platform.base_url)
    try:
        api.login(*platform.admin)
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def fleet(fault_api, fault_sshd, ssh_user, client_key) -> Fleet:
    credential = fault_api.call("POST", "/api/credentials", 201, {
        "name": "fault-key", "username": ssh_user.name, "auth_type": "key", "private_key": client_key.private_key})
    targets = []
    for server in fault_sshd:
        for address in server.addresses:
            targets.append(fault_api.call("POST", "/api/targets", 201, {
                "name": f"fault-{address}", "ip_address": address, "port": server.port,
                "credential_id": credential["id"], "tags": ["fault"]}))
    return Fleet(targets=targets)


@pytest.fixture
def new_case(request, platform, fault_api, fleet, marker_dir) -> Iterator[Callable[[str], Case]]:
    """``new_case("only-worker-killed")``: a Case named for the figures it prints. The platform is
    repaired first (a repair is printed: it means an earlier case left something down)."""
    cases: list[Case] = []

    def make(name: str) -> Case:
        repaired = platform.ensure_up()
        if repaired:
            print(f"\n(before {name}: repaired: {'; '.join(repaired)})")
        case = Case(name, platform, fault_api, fleet, marker_dir)
        cases.append(case)
        return case

    try:
        yield make
    finally:
        for case in cases:
            case.teardown()
