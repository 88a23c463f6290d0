"""The fault suite's machinery: a PostgreSQL cluster, a Redis server and nftables link cuts of the
suite's own (stopping, killing and cutting them disturbs no other run on the machine), the platform
as separate web / beat / worker processes started from the Procfile's own command lines, an HTTP
driver that rides out outages, and `Case`: one fault case's jobs, executions, remote processes and
the invariants every case checks (marker lines written on the targets against the branches recorded
as having run). Every wait is on an observable condition with a deadline."""
from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg2
import redis
import sqlalchemy
import sqlalchemy.pool

from tests.e2e.conftest import REPO_ROOT, clean_env, wait_http_ready
from tests.processes import ManagedProcess, Processes
from tests.sshd import find_processes, free_port

T = TypeVar("T")

# The engine timings every process of the suite gets; each case states its bound in these terms.
HEARTBEAT_SECONDS = 1.0
WORKER_LOST_SECONDS = 5.0
SWEEP_INTERVAL_SECONDS = 1.0
DISPATCH_GRACE_SECONDS = 2.0
SSH_KEEPALIVE_SECONDS = 1.0
SSH_CONNECT_TIMEOUT = 3.0
ENGINE_ENV = {
    "HEARTBEAT_SECONDS": f"{HEARTBEAT_SECONDS:g}", "WORKER_LOST_SECONDS": f"{WORKER_LOST_SECONDS:g}",
    "SWEEP_INTERVAL_SECONDS": f"{SWEEP_INTERVAL_SECONDS:g}", "DISPATCH_GRACE_SECONDS": f"{DISPATCH_GRACE_SECONDS:g}",
    "SSH_KEEPALIVE_SECONDS": f"{SSH_KEEPALIVE_SECONDS:g}", "SSH_CONNECT_TIMEOUT": f"{SSH_CONNECT_TIMEOUT:g}",
    "WORKER_CONCURRENCY": "8",
}

ACTIVE = frozenset({"queued", "running"})
# a branch that failed with one of these never reached the command
CONNECT_ERRORS = frozenset({"unreachable", "auth_failed", "host_key_mismatch", "credential_not_allowed"})


def wait_for(predicate: Callable[[], T], timeout: float, *, interval: float = 0.1, message: str = "condition",
             describe: Callable[[], str] | None = None) -> tuple[T, float]:
    """Poll ``predicate`` until it is truthy; returns (value, seconds waited). At the deadline an
    AssertionError carrying ``describe()`` (statuses seen, log tails)."""
    start = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start >= timeout:
            detail = ""
            if describe is not None:
                try:
                    detail = "\n" + describe()
                except Exception as exc:  # noqa: BLE001  (the diagnostics must not hide the timeout)
                    detail = f"\n(describe failed: {exc!r})"
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}{detail}")
        time.sleep(interval)


def took(elapsed: float | None) -> str:
    """A duration for a figure: "in 3.2 s", or "never" when the wait ran out."""
    return "never" if elapsed is None else f"in {elapsed:.1f} s"


# --------------------------------------------------------------------------- PostgreSQL

def _pg_bindir() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = [p for p in root.iterdir() if (p / "bin" / "initdb").exists()] if root.exists() else []
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
    return max(versions, key=lambda p: int(p.name) if p.name.isdigit() else 0) / "bin"


_LIVE_CLUSTERS: set[PgCluster] = set()
_LIVE_TABLES: set[str] = set()


class PgCluster:
    """A throwaway cluster: initdb in a temp dir owned by the postgres user, served on a free port of
    127.0.0.1 only, trust auth. fsync and full-page writes are off (the OS never crashes here; a
    stopped or killed server still keeps every commit it acknowledged)."""

    DATABASE = "opsconductor"

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="opsc-fault-pg-"))
        _LIVE_CLUSTERS.add(self)
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self._as_postgres([str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                           "-E", "UTF8", "--locale=C", "-N"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.DATABASE}"

    @property
    def _options(self) -> str:
        return (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c full_page_writes=off -c max_connections=400")

    def _as_postgres(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *argv], cwd=self.root, capture_output=True,
                                text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed (rc={result.returncode}):\n{result.stdout}{result.stderr}\n"
                               f"{self.log_tail()}")
        return result

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], check=check)

    def start(self) -> None:
        self._ctl("start", "-w", "-t", "60", "-l", str(self.log_path), "-o", self._options)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, a clean shutdown; ``immediate``: like a crash."""
        self._ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self._ctl("restart", "-w", "-t", "60", "-m", mode, "-l", str(self.log_path), "-o", self._options)

    def running(self) -> bool:
        return self._ctl("status", check=False).returncode == 0

    def create_database(self) -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {self.DATABASE}")
        finally:
            conn.close()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return f"--- postgres log:\n{self.log_path.read_text(errors='replace')[-chars:]}"
        except OSError:
            return "--- postgres log: (none)"

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-w", "-m", "immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        _LIVE_CLUSTERS.discard(self)


# --------------------------------------------------------------------------- Redis

class RedisServer:
    """A redis-server of the suite's own, without persistence: killed with SIGKILL, it comes back
    empty on the same port (every queued message gone, as after a crash of an unpersisted Redis)."""

    def __init__(self, root: Path, processes: Processes) -> None:
        self.root = root
        self.processes = processes
        self.port = free_port()
        self.proc: ManagedProcess | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.starts += 1
        self.proc = self.processes.start(f"redis-{self.starts}", [
            shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.root)], cwd=self.root, env=clean_env())
        proc = self.proc
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            if not proc.running():
                raise AssertionError(f"redis-server exited\n{proc.logs()}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(answers, timeout, interval=0.02, message="redis-server to answer PING")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: nothing flushed, every client connection reset."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.proc.wait(timeout=10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()


# --------------------------------------------------------------------------- link cuts

def ensure_nft() -> str:
    found = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "nftables"], env=env, check=True,
                   capture_output=True)
    return shutil.which("nft") or "/usr/sbin/nft"


def _nft(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([ensure_nft(), *args], input=stdin, capture_output=True, text=True, timeout=30,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} failed (rc={result.returncode}): {result.stderr.strip()}\n"
                           f"{stdin or ''}")
    return result


def nft_tables() -> list[str]:
    return _nft("list", "tables").stdout.split("\n")


def _delete_table(table: str) -> None:
    _nft("delete", "table", "inet", table, check=False)
    _LIVE_TABLES.discard(table)


@dataclass(frozen=True)
class LinkCut:
    table: str
    links: tuple[tuple[str, int], ...]
    at: float  # time.monotonic() when the rules went in


@contextmanager
def cut_links(*links: tuple[str, int]) -> Iterator[LinkCut]:
    """Drop every TCP packet to and from each (address, port), both hooks, in a table of our own,
    deleted on exit. The sshd listens on the address itself (no DNAT), so plain address matches hold."""
    table = f"opsc_fault_{secrets.token_hex(4)}"
    rules = "\n".join(f"    ip daddr {address} tcp dport {port} drop\n    ip saddr {address} tcp sport {port} drop"
                      for address, port in links)
    ruleset = (f"table inet {table} {{\n"
               f"  chain output {{\n    type filter hook output priority 0; policy accept;\n{rules}\n  }}\n"
               f"  chain input {{\n    type filter hook input priority 0; policy accept;\n{rules}\n  }}\n}}\n")
    _LIVE_TABLES.add(table)
    try:
        _nft("-f", "-", stdin=ruleset)
        yield LinkCut(table, tuple(links), time.monotonic())
    finally:
        _delete_table(table)


@atexit.register
def _leftovers() -> None:  # a safety net for an interrupted run: no cut survives, no cluster keeps running
    for table in list(_LIVE_TABLES):
        _delete_table(table)
    for cluster in list(_LIVE_CLUSTERS):
        cluster.close()


# --------------------------------------------------------------------------- remote processes

def _parent_and_name(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    name = raw[raw.index(b"(") + 1:raw.rfind(b")")].decode(errors="replace")
    return int(raw[raw.rfind(b")") + 2:].split()[1]), name


def is_orphan(pid: int) -> bool:
    """True when no sshd process is among the command's ancestors: its SSH session ended (the client
    died or gave up) and the command outlived it, reparented to init."""
    current = pid
    while current > 1:
        found = _parent_and_name(current)
        if found is None:
            return True
        parent, name = found
        if name.startswith("sshd"):  # the session's sshd (or sshd-session on newer OpenSSH)
            return False
        current = parent
    return True


def kill_processes(marker: str) -> int:
    """SIGKILL every live process whose command line contains ``marker``; returns how many."""
    killed = 0
    for pid in find_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


# --------------------------------------------------------------------------- the platform

def procfile_commands() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


WORKER_READY = re.compile(r"celery\.apps\.worker \S+ ready\.")
BEAT_READY = re.compile(r"beat: Starting")


class Platform:
    """web, beat and workers as separate processes: honcho stops every process when one exits, and a
    fault case kills one on purpose. Each is the Procfile's own command line run through ``sh -c``
    (so its ${VAR:-default} expansions hold), in the environment production reads."""

    def __init__(self, root: Path, pg: PgCluster, redis_server: RedisServer, processes: Processes) -> None:
        self.root = root
        self.pg = pg
        self.redis = redis_server
        self.processes = processes
        self.commands = procfile_commands()
        self.admin = ("fault-admin", "fault-admin-" + secrets.token_urlsafe(12))
        self.web_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.web_port}"
        self.env = clean_env(
            DATABASE_URL=pg.url, REDIS_URL=redis_server.url, OPSCONDUCTOR_EMBEDDED="0",
            JWT_SECRET_KEY=secrets.token_urlsafe(48), OPSCONDUCTOR_SECRET_KEY=secrets.token_urlsafe(48),
            # the cases poll; the per-user limit is the API suite's subject, not this one's
            RATE_LIMIT_ADMIN="1000000 per minute", LOG_LEVEL="INFO", **ENGINE_ENV)
        self.web: ManagedProcess | None = None
        self.beat: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []
        self.retired: list[ManagedProcess] = []  # workers of the current case that were killed or stopped
        self._count: Counter[str] = Counter()

    def _start(self, kind: str, name: str, env: dict[str, str], extra: str = "") -> ManagedProcess:
        return self.processes.start(name, ["/bin/sh", "-c", f"exec {self.commands[kind]}{extra}"], cwd=REPO_ROOT,
                                    env=env)

    def start_web(self) -> ManagedProcess:
        self._count["web"] += 1
        env = {**self.env, "PORT": str(self.web_port), "WEB_WORKERS": "1",  # one interpreter less on 2 cores
               "OPSCONDUCTOR_ADMIN_USERNAME": self.admin[0], "OPSCONDUCTOR_ADMIN_PASSWORD": self.admin[1]}
        self.web = self._start("web", f"web-{self._count['web']}", env)
        wait_http_ready(self.base_url, self.web, timeout=90)
        return self.web

    def start_beat(self) -> ManagedProcess:
        self._count["beat"] += 1
        n = self._count["beat"]
        env = {**self.env, "BEAT_SCHEDULE_FILE": str(self.root / f"beat-schedule-{n}"),
               "OPSCONDUCTOR_SKIP_MIGRATE": "1"}  # the web process migrated before it answered /readyz
        self.beat = self._start("beat", f"beat-{n}", env)
        self._wait_log(self.beat, BEAT_READY, "celery beat to start")
        return self.beat

    def start_workers(self, *names: str, concurrency: int = 8, **extra_env: str) -> list[ManagedProcess]:
        """Start the workers together (their imports overlap) and wait until each consumes."""
        env = {**self.env, "WORKER_CONCURRENCY": str(concurrency), "OPSCONDUCTOR_SKIP_MIGRATE": "1", **extra_env}
        started = [self._start("worker", name, env, f" -n {name}@%h") for name in names]
        self.workers.extend(started)
        for proc in started:
            self._wait_log(proc, WORKER_READY, f"worker {proc.name} to be ready")
        return started

    def start_worker(self, name: str, concurrency: int = 8, **extra_env: str) -> ManagedProcess:
        return self.start_workers(name, concurrency=concurrency, **extra_env)[0]

    @staticmethod
    def _wait_log(proc: ManagedProcess, pattern: re.Pattern[str], message: str, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if not proc.running():
                raise AssertionError(f"{proc.name} exited before it was ready\n{proc.logs()}")
            return bool(pattern.search(proc.stdout() + proc.stderr()))

        wait_for(ready, timeout, interval=0.05, message=message, describe=proc.logs)

    def kill(self, proc: ManagedProcess) -> None:
        """SIGKILL the process group: no warm shutdown, no acks, no cleanup (a crashed host)."""
        proc.remember_tree()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.proc.wait(timeout=10)
        if proc in self.workers:
            self.workers.remove(proc)
            self.retired.append(proc)

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.stop(timeout=5)  # TERM (warm shutdown), KILL after 5 s: a case may leave a branch hanging
        self.retired.extend(self.workers)
        self.workers.clear()

    def end_case(self) -> None:
        self.stop_workers()
        self.retired.clear()

    def ready(self) -> bool:
        try:
            return httpx.get(self.base_url + "/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_up(self) -> list[str]:
        """Bring back whatever an earlier case left down, so one failure does not cascade; returns what
        had to be repaired (reported, since a process that died on its own is a finding)."""
        repaired = []
        if not self.pg.running():
            self.pg.start()
            repaired.append("postgresql was down")
        if not self.redis.running():
            self.redis.start()
            repaired.append("redis was down")
        for kind, proc, start in (("web", self.web, self.start_web), ("beat", self.beat, self.start_beat)):
            if proc is None or not proc.running():
                if proc is not None:
                    repaired.append(f"{kind} had exited (rc={proc.proc.poll()}):\n{proc.logs(2000)}")
                    proc.stop(timeout=5)
                start()
        if not self.ready():
            wait_for(self.ready, 30, interval=0.1, message="/readyz to answer 200", describe=self.logs)
        return repaired

    def logs(self, tail: int = 2500) -> str:
        """Log tails of every process of the platform; the web's stderr only (its stdout is the access
        log, all polling)."""
        parts = []
        if self.web is not None:
            parts.append(f"--- {self.web.name} rc={self.web.proc.poll()} stderr:\n{self.web.stderr()[-tail:]}")
        procs = ([self.beat] if self.beat is not None else []) + self.workers + self.retired
        return "\n".join(parts + [p.logs(tail) for p in procs] + [self.pg.log_tail(1500)])


# --------------------------------------------------------------------------- HTTP

class FaultApi:
    """An httpx client for /api that never hides a status: ``call`` asserts it, ``poll`` tolerates
    outages (connection errors, 5xx) and remembers the last problem for the failure message."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.token: str | None = None
        self.last_problem = ""

    def close(self) -> None:
        self.http.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def login(self, username: str, password: str) -> None:
        self.token = self.call("POST", "/api/auth/login", 200, {"username": username, "password": password})[
            "access_token"]

    def request(self, method: str, path: str, json: Any = None, timeout: float = 30) -> httpx.Response:
        return self.http.request(method, path, json=json, headers=self.headers, timeout=timeout)

    def call(self, method: str, path: str, expect: int | Sequence[int] = 200, json: Any = None) -> Any:
        response = self.request(method, path, json)
        expected = (expect,) if isinstance(expect, int) else tuple(expect)
        assert response.status_code in expected, f"{method} {path} -> {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def poll(self, path: str) -> Any | None:
        try:
            response = self.request("GET", path, timeout=10)
        except httpx.HTTPError as exc:
            self.last_problem = f"GET {path}: {type(exc).__name__} {exc}"
            return None
        if response.status_code != 200:
            self.last_problem = f"GET {path} -> {response.status_code} {response.text[:300]}"
            return None
        return response.json()


# --------------------------------------------------------------------------- a case

@dataclass(frozen=True)
class Fleet:
    """The SSH targets every case uses: one per address, 127.0.0.40-59, on two sshd processes."""

    targets: list[dict]

    def by_address(self, address: str) -> dict:
        return next(t for t in self.targets if t["ip_address"] == address)

    def pick(self, first: int, count: int) -> list[dict]:
        """Targets 127.0.0.<first> .. <first+count-1>."""
        return [self.by_address(f"127.0.0.{n}") for n in range(first, first + count)]

    def address_of(self, target_id: int) -> str:
        return next(t["ip_address"] for t in self.targets if t["id"] == target_id)


@dataclass
class Watch:
    times: dict[str, float]  # branch serial -> seconds from the fault to when it was first seen done
    branches: dict[str, dict]  # branch serial -> its record as last read
    complete: bool

    @property
    def slowest(self) -> float:
        return max(self.times.values(), default=float("nan"))

    def tally(self) -> dict[str, int]:
        return dict(Counter(f"{b['status']}/{b['error_type']}" for b in self.branches.values()))


def ran_class(branch: dict) -> str:
    """Whether a branch's command ran, by its record: "no" (never claimed, or failed before reaching
    the host), "maybe" (cancelled, or its link died: it may have started), "yes" (everything else)."""
    if branch.get("started_at") is None or branch.get("error_type") in CONNECT_ERRORS:
        return "no"
    if branch["status"] == "cancelled" or branch.get("error_type") == "connection_lost":
        return "maybe"
    return "yes"


class Case:
    """One fault case. Every job's command first appends ``<run id> $SSH_CONNECTION`` to the case's
    marker file on the target (this machine, written by the SSH test user): the run id names the job
    and $SSH_CONNECTION the target's address, so each line names the branch that ran. Soft checks
    collect every finding; ``finish`` fails once with all of them, the statuses seen and log tails."""

    def __init__(self, name: str, platform: Platform, api: FaultApi, fleet: Fleet, marker_dir: Path) -> None:
        self.name = name
        self.platform = platform
        self.api = api
        self.fleet = fleet
        self.marker_path = marker_dir / f"{name}.markers"
        self.runs: dict[str, str] = {}  # execution serial -> the run id of its job
        self.sleep_tokens: list[str] = []
        self.failures: list[str] = []
        self.figures: list[str] = []

    # -- jobs and executions -------------------------------------------------------------------

    def sleep_token(self) -> str:
        """A number that is a valid extra `sleep` operand (adds 0.000…s) and unique, so the remote
        `sleep` is found in /proc by its command line (and killed after the case)."""
        token = "0.000" + "".join(secrets.choice("123456789") for _ in range(10))
        self.sleep_tokens.append(token)
        return token

    def job(self, body: str, targets: Sequence[dict], *, timeout: float | None = None) -> dict:
        """A one-action job on ``targets``: the marker line, then ``body`` ("{run}" is the run id)."""
        run_id = f"{self.name}-{secrets.token_hex(3)}"
        command = f'echo "{run_id} $SSH_CONNECTION" >> {self.marker_path}; {body.replace("{run}", run_id)}'
        action: dict[str, Any] = {"action_type": "command", "action_name": "fault",
                                  "action_parameters": {"command": command}}
        if timeout is not None:
            action["timeout_seconds"] = timeout
        job = self.api.call("POST", "/api/jobs", 201, {
            "name": f"fault {run_id}", "job_type": "command", "target_ids": [t["id"] for t in targets],
            "actions": [action]})
        job["run_id"] = run_id
        return job

    def execute(self, job: dict) -> dict:
        body = self.api.call("POST", f"/api/jobs/{job['job_serial']}/execute", 201)
        self.runs[body["execution_serial"]] = job["run_id"]
        return body

    def record(self, job: dict, execution_serial: str) -> None:
        self.runs[execution_serial] = job["run_id"]

    def execution(self, serial: str) -> dict | None:
        return self.api.poll(f"/api/executions/serial/{serial}")

    def executions(self, serials: Iterable[str] | None = None) -> dict[str, dict | None]:
        return {s: self.execution(s) for s in (serials if serials is not None else self.runs)}

    def branch(self, branch_serial: str) -> dict | None:
        return self.api.poll(f"/api/executions/branch/{branch_serial}")

    # -- markers and remote processes ------------------------------------------------------------

    def markers(self) -> Counter[tuple[str, str]]:
        """(run id, target address) -> how many times that branch's command started."""
        found: Counter[tuple[str, str]] = Counter()
        try:
            text = self.marker_path.read_text()
        except FileNotFoundError:
            return found
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 5:  # run id, client address, client port, server address, server port
                found[(parts[0], parts[3])] += 1
            elif line.strip():
                found[("malformed", line)] += 1
        return found

    def marker_count(self, run_id: str | None = None) -> int:
        return sum(n for (run, _), n in self.markers().items() if run_id is None or run == run_id)

    def remote_pids(self, token: str) -> list[int]:
        return find_processes(token)

    def wait_remote_pids_recorded(self, serials: Sequence[str], timeout: float) -> None:
        """Until the worker has recorded the remote process group of every running branch (an
        engine-internal column, read here only to place a crash after it, not to judge it)."""
        engine = sqlalchemy.create_engine(self.platform.pg.url, poolclass=sqlalchemy.pool.NullPool)
        query = sqlalchemy.text("SELECT count(*) FROM branches WHERE remote_pid IS NULL AND status = 'running' "
                                "AND branch_serial LIKE ANY(:patterns)")
        patterns = [f"{serial}.%" for serial in serials]

        def recorded() -> bool:
            with engine.connect() as conn:
                return conn.execute(query, {"patterns": patterns}).scalar() == 0

        try:
            wait_for(recorded, timeout, interval=0.02, message="the remote process groups to be recorded",
                     describe=lambda: self.describe(serials))
        finally:
            engine.dispose()

    # -- waiting ------------------------------------------------------------------------------

    def wait_branches(self, serials: Sequence[str], predicate: Callable[[dict], bool], timeout: float,
                      message: str, *, count: int | None = None) -> tuple[dict[str, dict], float]:
        """Wait until every branch (or, with ``count``, that many branches) of the executions
        satisfies ``predicate``; returns the executions as last read and the seconds waited."""

        def check() -> dict[str, dict]:
            seen = self.executions(serials)
            read = {s: ex for s, ex in seen.items() if ex is not None}
            if len(read) < len(seen):
                return {}
            branches = [b for ex in read.values() for b in ex["branches"]]
            matching = sum(1 for b in branches if predicate(b))
            done = matching >= count if count is not None else matching == len(branches)
            return read if done else {}

        return wait_for(check, timeout, interval=0.1, message=message, describe=lambda: self.describe(serials))

    def watch_completed(self, serials: Sequence[str], count: int, bound: float, *, since: float,
                        what: str) -> tuple[Watch, int]:
        """Watch until every branch ends; a finding unless all ``count`` completed within ``bound``
        seconds of ``since``. Returns the watch and how many completed, for the case's figure."""
        watch = self.watch(serials, bound + 15, since=since)
        completed = sum(b["status"] == "completed" for b in watch.branches.values())
        self.check(completed == count, f"{completed}/{count} branches completed ({what}): {watch.tally()}")
        if watch.complete:
            self.check_bound(what, watch.slowest, bound)
        return watch, completed

    def watch(self, serials: Sequence[str], timeout: float, *, since: float | None = None,
              done: Callable[[dict], bool] = lambda b: b["status"] not in ACTIVE,
              message: str = "every branch to end", count: int | None = None) -> Watch:
        """Poll the executions until every branch satisfies ``done``, noting for each branch the
        seconds from ``since`` (default: now) to the first poll that saw it so; with ``count``, until
        that many branches do. A timeout is a
        finding (recorded, not raised), so the case can go on to report what else it saw."""
        since = time.monotonic() if since is None else since
        start = time.monotonic()
        times: dict[str, float] = {}
        last: dict[str, dict] = {}
        while True:
            seen = self.executions(serials)
            for ex in seen.values():
                for b in (ex or {}).get("branches", []):
                    last[b["branch_serial"]] = b
                    if b["branch_serial"] not in times and done(b):
                        times[b["branch_serial"]] = time.monotonic() - since
            complete = all(v is not None for v in seen.values()) and (
                len(times) >= count if count is not None else len(times) == len(last))
            if complete or time.monotonic() - start >= timeout:
                break
            time.sleep(0.1)
        if not complete:
            tally = Counter(f"{b['status']}/{b['error_type']}" for b in last.values())
            self.failures.append(f"timed out after {timeout:g} s waiting for {message} of {', '.join(serials)}: "
                                 f"{len(times)}/{len(last)} did; statuses {dict(tally)} "
                                 f"(last API problem: {self.api.last_problem or 'none'})")
        return Watch(times=times, branches=last, complete=complete)

    def wait_running(self, serials: Sequence[str], timeout: float = 30.0) -> None:
        """Every branch running and its marker line written: the commands are under way."""
        self.wait_branches(serials, lambda b: b["status"] == "running", timeout,
                           f"every branch of {', '.join(serials)} to be running")
        keys = {(self.runs[s], self.fleet.address_of(b["target_id"]))
                for s, ex in self.executions(serials).items() if ex for b in ex["branches"]}
        wait_for(lambda: keys <= set(self.markers()), timeout, interval=0.05,
                 message=f"{len(keys)} marker lines", describe=lambda: self.describe(serials))

    # -- checks and reporting ------------------------------------------------------------------

    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.failures.append(message)
        return condition

    def check_bound(self, what: str, elapsed: float, bound: float) -> bool:
        return self.check(elapsed <= bound, f"{what} took {elapsed:.1f} s, bound {bound:g} s")

    def soft_wait(self, predicate: Callable[[], T], timeout: float, message: str,
                  describe: Callable[[], str] | None = None, interval: float = 0.1) -> tuple[T | None, float | None]:
        """``wait_for`` that records a timeout as a finding instead of raising (the case goes on)."""
        try:
            return wait_for(predicate, timeout, interval=interval, message=message, describe=describe)
        except AssertionError as exc:
            self.failures.append(str(exc).split("\n", 1)[0])
            return None, None

    def figure(self, text: str) -> None:
        line = f"FAULT {self.name}: {text}"
        self.figures.append(line)
        print(line, flush=True)

    def describe(self, serials: Iterable[str] | None = None) -> str:
        lines = []
        for serial, ex in self.executions(serials).items():
            if ex is None:
                lines.append(f"execution {serial}: unreadable ({self.api.last_problem})")
                continue
            tally = Counter(f"{b['status']}/{b['error_type']}" for b in ex["branches"])
            lines.append(f"execution {serial}: {ex['status']} branches {dict(tally)}")
            for b in ex["branches"][:12]:
                lines.append(f"  {b['branch_serial']} {self.fleet.address_of(b['target_id'])} {b['status']} "
                             f"error_type={b['error_type']} exit={b['exit_code']} started_at={b['started_at']}")
        lines.append(f"markers: {dict(self.markers())}")
        return "\n".join(lines)

    def check_invariants(self, *, settle: float = 10.0) -> dict[str, dict]:
        """Executions closed, no branch queued or running, and the marker lines match the branches
        recorded as having run: exactly once for "yes", never for "no", at most once for "maybe"."""
        serials = list(self.runs)

        def closed() -> dict[str, dict | None] | None:
            seen = self.executions(serials)
            return seen if all(v is not None and v["status"] not in ACTIVE for v in seen.values()) else None

        seen = self.soft_wait(closed, settle, "every execution to be closed")[0] or self.executions(serials)
        markers = self.markers()
        need: Counter[tuple[str, str]] = Counter()
        may: Counter[tuple[str, str]] = Counter()
        for serial, ex in seen.items():
            if ex is None:
                self.failures.append(f"execution {serial} unreadable: {self.api.last_problem}")
                continue
            self.check(ex["status"] not in ACTIVE, f"execution {serial} left {ex['status']}")
            for b in ex["branches"]:
                self.check(b["status"] not in ACTIVE, f"branch {b['branch_serial']} left {b['status']}")
                key = (self.runs[serial], self.fleet.address_of(b["target_id"]))
                kind = ran_class(b)
                if kind == "yes":
                    need[key] += 1
                elif kind == "maybe":
                    may[key] += 1
        for key in sorted(set(markers) | set(need) | set(may)):
            low, high = need[key], need[key] + may[key]
            self.check(low <= markers[key] <= high,
                       f"{key[0]} on {key[1]}: the command started {markers[key]} time(s), the records say "
                       f"{low if low == high else f'{low}..{high}'}")
        return seen  # type: ignore[return-value]

    def finish(self) -> None:
        if self.failures:
            raise AssertionError(f"FAULT {self.name}: " + "\n".join(self.failures) + "\n" + self.describe() +
                                 "\n" + self.platform.logs())

    def teardown(self) -> None:
        """Cancel what is still active (the next case's worker must not inherit it), kill the remote
        commands left behind, stop the case's workers."""
        try:
            self.platform.ensure_up()
            for serial, ex in self.executions().items():
                if ex is None or ex["status"] in ACTIVE:
                    self.api.request("POST", f"/api/executions/serial/{serial}/cancel")
        finally:
            for token in self.sleep_tokens:
                kill_processes(token)
            self.platform.end_case()
