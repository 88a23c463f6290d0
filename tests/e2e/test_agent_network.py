"""Agent workers in another network, for real (tests/netns.py builds it): the site "dc-east" is a
network namespace whose SSH targets (sshd on port 22 in a LAN namespace behind it) only a worker
started inside it can reach; that worker reaches PostgreSQL and Redis (this suite's own, listening
on loopback and on the host's end of the site's veth) over its uplink. Web, beat and the default
worker run on the host, each from the Procfile's own command line.

Targets with `queue: dc-east` run on the site's worker; the host's worker cannot reach the same
address; with the site's worker killed their branches wait `queued` (never failed or worker_lost)
and run when it returns; a queue nobody consumes says so (`queue_has_worker`, GET /api/queues)."""
from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from tests.e2e.conftest import REPO_ROOT, clean_env
from tests.faults.harness import (
    SWEEP_INTERVAL_SECONDS,
    WORKER_LOST_SECONDS,
    WORKER_READY,
    FaultApi,
    PgCluster,
    Platform,
    RedisServer,
    wait_for,
)
from tests.netns import AgentSite, NamespacedSshd, tcp_connects
from tests.processes import ManagedProcess, Processes
from tests.sshd import ClientKey, TestUser, free_port, wait_until

QUEUE = "dc-east"
TERMINAL = {"completed", "failed", "timed_out", "cancelled"}


class SitePg(PgCluster):
    """The suite's PostgreSQL, also listening on the host's end of the site's uplink, trusting the agent."""

    def __init__(self, site: AgentSite) -> None:
        super().__init__()
        self.site = site
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {site.agent_address}/32 trust\n")

    @property
    def _options(self) -> str:
        return super()._options.replace("listen_addresses=127.0.0.1",
                                        f"listen_addresses=127.0.0.1,{self.site.host_address}")

    def url_at(self, address: str) -> str:
        return self.url.replace("@127.0.0.1:", f"@{address}:")


@dataclass
class DcEast:
    site: AgentSite
    platform: Platform
    api: FaultApi
    processes: Processes
    agent_env: dict[str, str]
    targets: dict[str, dict]  # name -> target
    agent: ManagedProcess | None = None
    agents_started: int = 0

    def start_agent(self) -> ManagedProcess:
        """The site's worker: the Procfile's worker line, run inside the agent namespace."""
        self.agents_started += 1
        name = f"{QUEUE}-{self.agents_started}"
        command = f"exec {self.platform.commands['worker']} -n {name}@%h"
        proc = self.processes.start(name, self.site.exec_argv(["/bin/sh", "-c", command]), cwd=REPO_ROOT,
                                    env=self.agent_env)
        Platform._wait_log(proc, WORKER_READY, f"the {QUEUE} worker to be ready")
        self.agent = proc
        return proc

    def job(self, name: str, targets: list[str]) -> dict:
        return self.api.call("POST", "/api/jobs", 201, {
            "name": f"{name}-{secrets.token_hex(3)}", "job_type": "command",
            "target_ids": [self.targets[t]["id"] for t in targets],
            "actions": [{"action_type": "command", "action_name": "where",
                         "action_parameters": {"command": 'echo "ran $SSH_CONNECTION"'}}]})

    def execute(self, job: dict) -> dict:
        return self.api.call("POST", f"/api/jobs/{job['job_serial']}/execute", 201)

    def execution(self, serial: str) -> dict:
        return self.api.call("GET", f"/api/executions/serial/{serial}")

    def branch(self, serial: str) -> dict:
        return self.api.call("GET", f"/api/executions/branch/{serial}")

    def finished(self, serial: str, timeout: float = 30) -> dict:
        def done() -> dict | None:
            body = self.execution(serial)
            return body if body["status"] != "running" else None

        body, _ = wait_for(done, timeout, message=f"execution {serial} to finish", describe=self.platform.logs)
        assert body is not None
        return body

    def target(self, name: str) -> dict:
        return self.api.call("GET", f"/api/targets/{self.targets[name]['target_serial']}")

    def queues(self) -> dict[str, dict]:
        return {q["name"]: q for q in self.api.call("GET", "/api/queues")["data"]}


@pytest.fixture(scope="module")
def dc_east(ssh_user: TestUser, client_key: ClientKey) -> Iterator[DcEast]:
    root = Path(tempfile.mkdtemp(prefix="opsc-agent-net-"))
    processes = Processes(root / "logs")
    site: AgentSite | None = None
    pg: SitePg | None = None
    sshd: NamespacedSshd | None = None
    api: FaultApi | None = None
    try:
        site = AgentSite()
        sshd = NamespacedSshd(site.lan_ns, site.target_addresses)
        sshd.start()
        sshd.authorize(client_key.public_line)
        pg = SitePg(site)
        pg.start()
        pg.create_database()
        redis_port = free_port()
        processes.start("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
                                  "--bind", "127.0.0.1", site.host_address, "--protected-mode", "no", "--save", "",
                                  "--appendonly", "no", "--dir", str(root)], cwd=root, env=clean_env())
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        # Platform reads only the URL of its Redis; this one is bound to the uplink too, started above
        platform = Platform(root, pg, cast(RedisServer, SimpleNamespace(url=redis_url)), processes)
        platform.start_web()
        platform.start_beat()
        platform.start_worker("default-1", concurrency=4)
        api = FaultApi(platform.base_url)
        api.login(*platform.admin)
        credential = api.call("POST", "/api/credentials", 201, {
            "name": "dc-east-key", "username": ssh_user.name, "auth_type": "key",
            "private_key": client_key.private_key})
        first, second = site.target_addresses

        def target(name: str, address: str, queue: str) -> dict:
            return api.call("POST", "/api/targets", 201, {
                "name": name, "ip_address": address, "port": 22, "credential_id": credential["id"], "queue": queue})

        targets = {"east-1": target("east-1", first, QUEUE), "east-2": target("east-2", second, QUEUE),
                   "east-1-from-host": target("east-1-from-host", first, "default"),
                   "west-1": target("west-1", first, "dc-west")}
        agent_env = {**platform.env, "DATABASE_URL": pg.url_at(site.host_address),
                     "REDIS_URL": f"redis://{site.host_address}:{redis_port}/0", "WORKER_QUEUES": QUEUE,
                     "WORKER_CONCURRENCY": "4", "OPSCONDUCTOR_SKIP_MIGRATE": "1"}
        east = DcEast(site, platform, api, processes, agent_env, targets)
        east.start_agent()
        yield east
    finally:
        if api is not None:
            api.close()
        processes.stop_all()
        if sshd is not None:
            sshd.close()
        if pg is not None:
            pg.close()
        if site is not None:
            site.close()
            assert not site.exists(), "the site's namespaces or links survived its teardown"
        shutil.rmtree(root, ignore_errors=True)


def test_the_targets_are_out_of_the_hosts_reach_and_within_the_agents(dc_east):
    site = dc_east.site
    for address in site.target_addresses:
        assert not tcp_connects(address, 22, timeout=1.5), f"the host reached {address}:22"
    assert "127.0.0.1" not in repr(dc_east.agent_env)  # the agent knows the services by its uplink only
    assert dc_east.agent is not None
    assert "celery" in Path(f"/proc/{dc_east.agent.pid}/cmdline").read_text()  # `ip netns exec` exec'd it
    agent_netns = Path(f"/proc/{dc_east.agent.pid}/ns/net").stat().st_ino
    assert agent_netns == Path(f"/run/netns/{site.agent_ns}").stat().st_ino
    assert agent_netns != Path("/proc/self/ns/net").stat().st_ino


def test_dc_east_targets_run_on_the_agent_and_not_from_the_host(dc_east):
    assert dc_east.target("east-1")["queue_has_worker"] is True
    assert dc_east.target("east-1-from-host")["queue_has_worker"] is True
    on_site = dc_east.execute(dc_east.job("on-site", ["east-1", "east-2"]))
    from_host = dc_east.execute(dc_east.job("from-host", ["east-1-from-host"]))

    done = dc_east.finished(on_site["execution_serial"])
    assert done["status"] == "completed", done
    for branch in done["branches"]:
        detail = dc_east.branch(branch["branch_serial"])
        address = next(t["ip_address"] for t in dc_east.targets.values() if t["id"] == detail["target_id"])
        # $SSH_CONNECTION: client address and port, server address and port, as the target saw them
        words = detail["result_output"].split()
        assert words[0] == "ran" and words[1] == dc_east.site.agent_lan_address and words[3:] == [address, "22"], \
            detail["result_output"]

    failed = dc_east.finished(from_host["execution_serial"])
    assert failed["status"] == "failed", failed
    (branch,) = failed["branches"]
    assert (branch["status"], branch["error_type"]) == ("failed", "unreachable"), branch


def test_branches_wait_queued_while_the_agent_is_down_and_run_when_it_returns(dc_east):
    agent = dc_east.agent
    assert agent is not None
    dc_east.platform.kill(agent)  # SIGKILL: no goodbye, its announcement has to expire
    killed_at = time.monotonic()
    execution = dc_east.execute(dc_east.job("while-down", ["east-1", "east-2"]))
    serial = execution["execution_serial"]

    def statuses() -> set[tuple[str, str | None]]:
        return {(b["status"], b["error_type"]) for b in dc_east.execution(serial)["branches"]}

    _, unserved_after = wait_for(lambda: dc_east.target("east-1")["queue_has_worker"] is False,
                                 WORKER_LOST_SECONDS + 5, message="dc-east to show no worker")
    queue = dc_east.queues()[QUEUE]
    assert (queue["has_worker"], queue["workers"], queue["targets"]) == (False, [], 2), queue
    assert queue["queued_branches"] >= 2, queue
    # past the worker_lost deadline and several sweeps: still queued, nothing failed
    until = max(time.monotonic(), killed_at + WORKER_LOST_SECONDS) + 3 * SWEEP_INTERVAL_SECONDS
    while time.monotonic() < until:
        assert statuses() == {("queued", None)}
        time.sleep(0.2)
    assert dc_east.execution(serial)["status"] == "running"

    dc_east.start_agent()
    done = dc_east.finished(serial)
    assert done["status"] == "completed", done
    assert [b["status"] for b in done["branches"]] == ["completed", "completed"], done
    wait_until(lambda: dc_east.target("east-1")["queue_has_worker"] is True, timeout=10, interval=0.1,
               message="dc-east to show its worker again")
    assert dc_east.queues()[QUEUE]["workers"] == [f"{QUEUE}-{dc_east.agents_started}@{_hostname()}"]
    print(f"\ndc-east worker SIGKILLed: shown without a worker in {unserved_after:.1f} s; "
          f"2/2 branches stayed queued past worker_lost and completed after it came back")


def test_a_queue_without_any_worker_is_visible_and_its_branch_waits(dc_east):
    west = dc_east.target("west-1")
    assert west["queue"] == "dc-west" and west["queue_has_worker"] is False, west
    listed = dc_east.api.call("GET", "/api/targets?queue=dc-west")["data"]
    assert [(t["name"], t["queue_has_worker"]) for t in listed] == [("west-1", False)]
    execution = dc_east.execute(dc_east.job("nobody", ["west-1"]))
    queues = dc_east.queues()
    assert queues["dc-west"] == {"name": "dc-west", "targets": 1, "queued_branches": 1, "workers": [],
                                 "has_worker": False}, queues
    assert queues["default"]["has_worker"] is True, queues
    (branch,) = dc_east.execution(execution["execution_serial"])["branches"]
    assert (branch["status"], branch["error_type"]) == ("queued", None)
    dc_east.api.call("POST", f"/api/executions/serial/{execution['execution_serial']}/cancel", 200)
    assert dc_east.finished(execution["execution_serial"])["status"] == "cancelled"


def test_an_agent_stopped_cleanly_leaves_its_queue_at_once(dc_east):
    agent = dc_east.agent
    assert agent is not None and agent.running()
    assert dc_east.target("east-2")["queue_has_worker"] is True
    agent.stop(timeout=10)  # SIGTERM: Celery's warm shutdown
    stopped = time.monotonic()
    assert dc_east.target("east-2")["queue_has_worker"] is False
    assert time.monotonic() - stopped < WORKER_LOST_SECONDS  # it left; it did not just expire


def _hostname() -> str:
    import socket

    return socket.gethostname()
