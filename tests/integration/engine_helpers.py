"""Helpers for the engine's real-component tests: Celery worker/beat subprocesses, an API driver,
database reads, an event recorder on Redis pub/sub, and `wait_for` (tests poll observable state
with a deadline; they never sleep to synchronise)."""
from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select, update

from common.db import Database
from common.events import RedisEventBus
from common.models import Branch, BranchStep, Execution, Job, utcnow
from common.services import users
from tests.conftest import FERNET_SECRET, JWT_SECRET
from tests.processes import ManagedProcess
from tests.sshd import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY_BIN = str(REPO_ROOT / ".venv" / "bin" / "celery")

# The short engine timings the brief asks for (production defaults are seconds to minutes).
HEARTBEAT_SECONDS = 0.5
WORKER_LOST_SECONDS = 3.0
DISPATCH_GRACE_SECONDS = 1.0
SWEEP_INTERVAL_SECONDS = 1.0
FIRE_DUE_INTERVAL = 1.0  # worker.celery_app.FIRE_DUE_INTERVAL

T = TypeVar("T")


# --------------------------------------------------------------------------------------- waiting

def wait_for(predicate: Callable[[], T], timeout: float = 15.0, *, interval: float = 0.05,
             message: str = "condition", describe: Callable[[], str] | None = None) -> T:
    """tests.sshd.wait_until, failing as a test assertion with `describe()` (current state, log
    tails) in the message."""
    try:
        return wait_until(predicate, timeout, interval, message)
    except TimeoutError as exc:
        detail = ""
        if describe is not None:
            try:
                detail = "\n" + describe()
            except Exception as describe_exc:  # the diagnostics must not hide the timeout
                detail = f"\n(describe failed: {describe_exc!r})"
        raise AssertionError(f"{exc}{detail}") from None


def admin_id(session) -> int:
    """The id of an active admin, made once: jobs that run on local targets must be written by one."""
    user = users.by_username(session, "engine-admin") or users.create_user(session, "engine-admin",
                                                                           "engine-admin-pw", "admin")
    return user.id


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def sleep_marker() -> str:
    """A number that is a valid extra `sleep` operand (adds nothing noticeable) and is unique, so the
    remote `sleep` and its shell can be found in /proc by their command lines."""
    return "0.000" + "".join(secrets.choice("123456789") for _ in range(12))


# --------------------------------------------------------------------------------------- Celery

_LIVE: set[CeleryProcess] = set()


@atexit.register
def _kill_leftovers() -> None:  # a safety net when a finalizer never ran (e.g. pytest was interrupted)
    for proc in list(_LIVE):
        proc.stop(grace=2)


def celery_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Production-mode settings from the environment, pointing at the test database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSCONDUCTOR_", "CELERY_"))}
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, JWT_SECRET_KEY=JWT_SECRET,
        OPSCONDUCTOR_SECRET_KEY=FERNET_SECRET, OPSCONDUCTOR_EMBEDDED="0",
        OPSCONDUCTOR_SKIP_MIGRATE="1",  # the pg_url fixture already migrated the database
        HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS), WORKER_LOST_SECONDS=str(WORKER_LOST_SECONDS),
        DISPATCH_GRACE_SECONDS=str(DISPATCH_GRACE_SECONDS), SWEEP_INTERVAL_SECONDS=str(SWEEP_INTERVAL_SECONDS),
        WORKER_CONCURRENCY="8", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class CeleryProcess:
    """`celery -A worker.main worker|beat` as a ManagedProcess, with log-based readiness and counts."""

    def __init__(self, kind: str, env: dict[str, str], workdir: Path, name: str, *,
                 queues: Iterable[str] = ("default",)):
        assert kind in ("worker", "beat")
        self.kind = kind
        self.env = env
        self.name = name
        self.queues = tuple(queues)
        self.workdir = workdir
        self.schedule_path = workdir / f"{name}-schedule"
        self.proc: ManagedProcess | None = None

    @property
    def argv(self) -> list[str]:
        if self.kind == "worker":
            return [CELERY_BIN, "-A", "worker.main", "worker", "--pool", "threads", "--concurrency", "8",
                    "-Q", ",".join(self.queues), "--without-gossip", "--without-mingle",
                    "-n", f"{self.name}@%h", "--loglevel", "INFO"]
        return [CELERY_BIN, "-A", "worker.main", "beat", "--schedule", str(self.schedule_path), "--loglevel", "INFO"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def runtime_name(self) -> str:
        """What the worker writes into branches.worker (worker.runtime.WorkerRuntime.name)."""
        return f"{socket.gethostname()}:{self.pid}"

    def start(self, timeout: float = 30.0) -> CeleryProcess:
        self.proc = ManagedProcess(self.name, self.argv, cwd=REPO_ROOT, env=self.env, log_dir=self.workdir)
        _LIVE.add(self)
        ready = re.compile(r"celery\.apps\.worker \S+ ready\." if self.kind == "worker"
                           else r"maintenance loop started")

        def is_ready() -> bool:
            if not self.proc.running():
                raise AssertionError(f"{self.name} exited at start:\n{self.log_tail()}")
            return bool(ready.search(self.log_text()))

        try:
            wait_for(is_ready, timeout, interval=0.05, message=f"{self.kind} {self.name} ready",
                     describe=self.log_tail)
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        return "" if self.proc is None else self.proc.stdout() + self.proc.stderr()

    def log_tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} log ({self.workdir}) ---\n{self.log_text()[-chars:]}"

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log_text()))

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acks, no cleanup (a crashed host)."""
        if self.proc is not None and self.proc.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.proc.wait(timeout=10)
        _LIVE.discard(self)

    def stop(self, grace: float = 10.0) -> None:
        """TERM (warm shutdown) to the worker's process tree, KILL at the deadline."""
        if self.proc is not None:
            self.proc.stop(timeout=grace)
        _LIVE.discard(self)


# --------------------------------------------------------------------------------------- API

def command(name: str, cmd: str, *, timeout: float | None = None, continue_on_error: bool = False) -> dict:
    action = {"action_type": "command", "action_name": name, "action_parameters": {"command": cmd},
              "continue_on_error": continue_on_error}
    if timeout is not None:
        action["timeout_seconds"] = timeout
    return action


class EngineApi:
    """Drives the Flask test client as an administrator; every call asserts its status code."""

    def __init__(self, client, headers: dict[str, str]):
        self.client = client
        self.headers = headers

    def call(self, method: str, path: str, expect: int, json: Any = None) -> Any:
        response = self.client.open(path, method=method, json=json, headers=self.headers)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.get_data(True)}"
        return response.get_json(silent=True)

    def credential(self, *, private_key: str | None = None, password: str | None = None,
                   username: str = "opsc-test") -> int:
        body = {"name": unique("cred"), "username": username,
                "auth_type": "key" if private_key else "password"}
        body.update({"private_key": private_key} if private_key else {"password": password})
        return self.call("POST", "/api/credentials", 201, body)["id"]

    def target(self, *, ip: str | None = None, port: int = 22, credential_id: int | None = None,
               queue: str = "default", connection: str = "ssh") -> dict:
        body: dict[str, Any] = {"name": unique("target"), "connection": connection, "queue": queue}
        if connection == "ssh":
            body.update(ip_address=ip, port=port, credential_id=credential_id)
        return self.call("POST", "/api/targets", 201, body)

    def get_target(self, target_id: int) -> dict:
        return self.call("GET", f"/api/targets/{target_id}", 200)

    def job(self, actions: list[dict], target_ids: list[int], **extra: Any) -> dict:
        body = {"name": unique("job"), "actions": actions, "target_ids": target_ids, **extra}
        return self.call("POST", "/api/jobs", 201, body)

    def get_job(self, job_id: int | str) -> dict:
        return self.call("GET", f"/api/jobs/{job_id}", 200)

    def execute(self, job_id: int | str, target_ids: list[int] | None = None) -> dict:
        body = {"target_ids": target_ids} if target_ids is not None else None
        return self.call("POST", f"/api/jobs/{job_id}/execute", 201, body)

    def run(self, actions: list[dict], target_ids: list[int]) -> dict:
        """Create a job and execute it; returns the 201 body."""
        return self.execute(self.job(actions, target_ids)["id"])

    def cancel(self, execution_serial: str) -> dict:
        return self.call("POST", f"/api/executions/serial/{execution_serial}/cancel", 200)


# --------------------------------------------------------------------------------------- database

def execution_row(db: Database, execution_serial: str) -> Execution:
    with db.session() as session:
        return session.scalar(select(Execution).where(Execution.execution_serial == execution_serial))


def branch_rows(db: Database, execution_serial: str) -> list[Branch]:
    with db.session() as session:
        return list(session.scalars(select(Branch).join(Execution, Execution.id == Branch.execution_id)
                                    .where(Execution.execution_serial == execution_serial)
                                    .order_by(Branch.branch_number)))


def branch_row(db: Database, branch_id: int) -> Branch:
    with db.session() as session:
        return session.get(Branch, branch_id)


def step_rows(db: Database, branch_id: int) -> list[BranchStep]:
    with db.session() as session:
        return list(session.scalars(select(BranchStep).where(BranchStep.branch_id == branch_id)
                                    .order_by(BranchStep.position)))


def job_row(db: Database, job_id: int) -> Job:
    with db.session() as session:
        return session.get(Job, job_id)


def executions_of(db: Database, job_id: int) -> list[Execution]:
    with db.session() as session:
        return list(session.scalars(select(Execution).where(Execution.job_id == job_id)
                                    .order_by(Execution.execution_number)))


def describe_execution(db: Database, execution_serial: str) -> str:
    execution = execution_row(db, execution_serial)
    lines = [f"execution {execution_serial}: {execution.status if execution else 'missing'}"]
    for b in branch_rows(db, execution_serial):
        lines.append(f"  {b.branch_serial} status={b.status} error_type={b.error_type} exit={b.exit_code} "
                     f"worker={b.worker} dispatched_at={b.dispatched_at} err={(b.result_error or '')[:200]!r}")
    return "\n".join(lines)


def wait_execution_done(db: Database, execution_serial: str, timeout: float = 20.0,
                        logs: Callable[[], str] | None = None) -> Execution:
    def done() -> Execution | None:
        row = execution_row(db, execution_serial)
        return row if row is not None and row.status != "running" else None

    def describe() -> str:
        return describe_execution(db, execution_serial) + ("\n" + logs() if logs else "")

    return wait_for(done, timeout, message=f"execution {execution_serial} to finish", describe=describe)


# --------------------------------------------------------------------------------------- events

class EventRecorder:
    """One Redis pub/sub subscription for the whole module; events are kept in arrival order."""

    def __init__(self, redis_url: str):
        self.bus = RedisEventBus(redis_url)
        self.subscription = self.bus.subscribe(include_output=True)
        self.subscription.output_backlog = 10**6  # every byte, however far behind: the tests count them
        assert self.bus.wait_ready(10), "event subscription never became ready"
        self.events: list[dict] = []

    def drain(self) -> list[dict]:
        while True:
            event = self.subscription.get(timeout=0)
            if event is None:
                return self.events
            self.events.append(event)

    def of_execution(self, execution_serial: str) -> list[dict]:
        return [e for e in self.drain() if e["data"].get("execution_serial") == execution_serial]

    def wait(self, execution_serial: str, predicate: Callable[[list[dict]], bool], timeout: float = 10.0,
             message: str = "events") -> list[dict]:
        def check() -> list[dict] | None:
            events = self.of_execution(execution_serial)
            return events if predicate(events) else None

        return wait_for(check, timeout, message=message,
                        describe=lambda: "\n".join(f"  {e['type']} {e['data']}" for e in
                                                   self.of_execution(execution_serial)))

    def close(self) -> None:
        self.subscription.close()
        self.bus.close()


def end_execution(db: Database, execution_serial: str) -> None:
    """Teardown for tests that claim branches by hand: end what they left active, so the shared
    worker's sweep never takes them for branches of a lost worker."""
    with db.session() as session:
        execution_id = session.scalar(select(Execution.id).where(Execution.execution_serial == execution_serial))
        session.execute(update(Branch).where(Branch.execution_id == execution_id,
                                             Branch.status.in_(["queued", "running"]))
                        .values(status="failed", error_type="cancelled", completed_at=utcnow()))
        session.execute(update(Execution).where(Execution.id == execution_id, Execution.status == "running")
                        .values(status="failed", completed_at=utcnow()))


def run_together(tasks: list[Callable[[Callable[[], None]], Any]], timeout: float = 60.0) -> list[Any]:
    """Each task on a thread of its own, given `go`: every task passes its `go()` line at the same
    moment (a barrier), so what follows it races. Returns each result, or the exception it raised."""
    barrier = threading.Barrier(len(tasks))
    results: list[Any] = [None] * len(tasks)

    def run(index: int) -> None:
        try:
            results[index] = tasks[index](lambda: barrier.wait(timeout=30))
        except BaseException as exc:  # returned, for the caller to assert on
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a racing thread never returned"
    return results
