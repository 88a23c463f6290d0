"""A hand-made execution history, written row by row through the models, for the read API tests.

Every timestamp is given on the calendar of NOW (Wednesday 2025-01-08T10:30:00Z) and placed at the
same offset from the `now` the builder is given: with now=NOW the calendar edges below are exact
(tests of the services pin `now`); with the real clock the offsets still decide which periods a row
belongs to (tests over HTTP, where the route reads the clock itself).

Edges on purpose: midnight (2025-01-07T00:00:00 vs 2025-01-06T23:59:59), Monday (2025-01-06T00:00:00
vs Sunday 2025-01-05T23:59:59), month and year (2025-01-01T00:00:00 vs 2024-12-31T23:59:59), the
start of the 7d, 30d and 90d periods (exactly on it vs one second before), the hour 10:00:00 vs
09:59:59, a running execution with a queued branch, a cancelled one with a branch cancelled before
it started, a timed-out branch, and an archived job on an archived target.

Jobs (job serial, name; branch .0001/.0002 on the targets in this order):
  J20250001 "System Update"   -> T20250001 prod-web-01, T20240008 prod-db-01
  J20240043 "Nightly Backup"  -> T20240008 prod-db-01
  J20240042 "Old Cleanup"     -> T20240007 Legacy-Box   (job and target archived)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from common.db import Database
from common.models import (
    Branch,
    BranchStep,
    EventCounter,
    Execution,
    ExecutionEvent,
    Job,
    JobAction,
    Target,
    User,
    job_targets,
)
from common.services import analytics, rollups, target_history

NOW = datetime(2025, 1, 8, 10, 30, 0, tzinfo=UTC)


def T(text: str) -> datetime:  # noqa: N802 - reads like a literal
    """A calendar time in UTC: T("2025-01-08 10:30:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class B:
    """One branch: status, started (False = never started), duration, exit code, error type."""

    status: str
    duration: float | None = None
    exit_code: int | None = None
    error_type: str | None = None
    started: bool = True


@dataclass(frozen=True)
class E:
    """One execution: number, start, seconds until completion (None = still running), status, branches."""

    number: int
    started_at: datetime
    seconds: float | None
    status: str
    branches: tuple[B, ...]


TARGETS = [
    # serial, name, ip, created, archived
    ("T20240007", "Legacy-Box", "10.0.0.7", T("2024-09-01 08:00:00"), T("2024-12-20 08:00:00")),
    ("T20240008", "prod-db-01", "192.168.1.101", T("2024-09-15 08:00:00"), None),
    ("T20250001", "prod-web-01", "192.168.1.100", T("2025-01-02 08:00:00"), None),
]

JOBS = [
    # serial, name, created, archived, target serials (branch order), executions
    ("J20240042", "Old Cleanup", T("2024-09-01 09:00:00"), T("2024-12-20 09:00:00"), ["T20240007"], [
        E(1, T("2024-11-15 12:00:00"), 100, "failed", (B("failed", 99.0, 127, "command_failed"),)),
        E(2, T("2024-12-09 10:30:00"), 200, "completed", (B("completed", 199.0, 0),)),  # = NOW - 30d
    ]),
    ("J20240043", "Nightly Backup", T("2024-10-01 09:00:00"), None, ["T20240008"], [
        E(1, T("2024-10-10 10:29:59"), 10, "completed", (B("completed", 10.0, 0),)),  # 1 s before NOW - 90d
        E(2, T("2024-10-10 10:30:00"), 120, "failed", (B("failed", 118.0, 1, "command_failed"),)),  # = NOW - 90d
        E(3, T("2024-12-31 23:59:59"), 30, "failed", (B("failed", 29.5, 2, "command_failed"),)),
        E(4, T("2025-01-01 00:00:00"), 60, "completed", (B("completed", 55.0, 0),)),
        E(5, T("2025-01-01 10:29:59"), 60, "completed", (B("completed", 45.0, 0),)),  # 1 s before NOW - 7d
        E(6, T("2025-01-01 10:30:00"), 60, "completed", (B("completed", 60.0, 0),)),  # = NOW - 7d
        E(7, T("2025-01-05 23:59:59"), 600, "failed", (B("timed_out", 600.0, None, "timeout"),)),  # Sunday
        E(8, T("2025-01-06 00:00:00"), 1800, "completed", (B("completed", 1790.5, 0),)),  # Monday
    ]),
    ("J20250001", "System Update", T("2025-01-02 09:00:00"), None, ["T20250001", "T20240008"], [
        E(1, T("2025-01-06 23:59:59"), 60, "cancelled",
          (B("cancelled", 30.0, None, "cancelled"), B("cancelled", None, None, "cancelled", started=False))),
        E(2, T("2025-01-07 00:00:00"), 600, "completed", (B("completed", 300.0, 0), B("completed", 500.0, 0))),
        E(3, T("2025-01-08 09:59:59"), 100, "failed",
          (B("completed", 60.0, 0), B("failed", 90.0, 1, "command_failed"))),
        E(4, T("2025-01-08 10:00:00"), 300, "completed", (B("completed", 120.0, 0), B("completed", 180.0, 0))),
        E(5, T("2025-01-08 10:20:00"), None, "running", (B("running"), B("queued", started=False))),
    ]),
]


@dataclass(frozen=True)
class History:
    now: datetime
    target_ids: dict[str, int]
    job_ids: dict[str, int]


def build_history(session: Session, now: datetime = NOW, *, rolled_up: bool = True) -> History:
    """Write the dataset above, each time shifted to keep its offset from `now`. Closed executions go
    into the hourly roll-ups as closing them would (rolled_up=False: left to the raw rows)."""
    shift = now - NOW

    def at(moment: datetime | None) -> datetime | None:
        return None if moment is None else moment + shift

    owner = User(username="history-owner", password_hash="x", role="admin", created_at=at(T("2024-09-01 00:00:00")),
                 updated_at=at(T("2024-09-01 00:00:00")))
    session.add(owner)
    session.flush()
    targets: dict[str, Target] = {}
    for serial, name, ip, created, archived in TARGETS:
        targets[serial] = Target(target_serial=serial, name=name, ip_address=ip, port=22, connection="ssh", tags=[],
                                 queue="default", enabled=archived is None, created_by=owner.id,
                                 created_at=at(created), updated_at=at(archived or created), archived_at=at(archived))
        session.add(targets[serial])
    session.flush()
    jobs: dict[str, Job] = {}
    execution_ids: list[int] = []
    for serial, name, created, archived, target_serials, executions in JOBS:
        job = Job(job_serial=serial, name=name, job_type="command", status=executions[-1].status,
                  execution_count=len(executions), created_by=owner.id, created_at=at(created),
                  updated_at=at(archived or created), archived_at=at(archived),
                  actions=[JobAction(position=1, action_type="command", action_name="run",
                                     action_parameters={"command": f"echo {name}"})])
        session.add(job)
        session.flush()
        jobs[serial] = job
        session.execute(insert(job_targets), [{"job_id": job.id, "target_id": targets[t].id, "position": i + 1}
                                              for i, t in enumerate(target_serials)])
        for e in executions:
            started = at(e.started_at)
            completed = None if e.seconds is None else started + timedelta(seconds=e.seconds)
            execution = Execution(execution_serial=f"{serial}.{e.number:04d}", job_id=job.id,
                                  execution_number=e.number, status=e.status, trigger="manual",
                                  triggered_by=owner.id, started_at=started, completed_at=completed)
            session.add(execution)
            session.flush()
            execution_ids.append(execution.id)
            for number, (b, target_serial) in enumerate(zip(e.branches, target_serials, strict=True), start=1):
                branch_started = started if b.started else None
                branch_done = None
                if b.status in ("completed", "failed", "timed_out", "cancelled"):
                    branch_done = (branch_started + timedelta(seconds=b.duration)
                                   if branch_started is not None and b.duration is not None else completed)
                branch = Branch(branch_serial=f"{execution.execution_serial}.{number:04d}", execution_id=execution.id,
                                branch_number=number, target_id=targets[target_serial].id,
                                target_serial_ref=target_serial, status=b.status, error_type=b.error_type,
                                exit_code=b.exit_code, queued_at=started, started_at=branch_started,
                                completed_at=branch_done, duration=b.duration,
                                result_output=f"{b.status} output" if b.started else None,
                                result_error="boom" if b.status == "failed" else None)
                session.add(branch)
    session.flush()
    if rolled_up:
        rollups.roll_up(session, execution_ids)  # the running one stays out, as it would
    return History(now=now, target_ids={s: t.id for s, t in targets.items()},
                   job_ids={s: j.id for s, j in jobs.items()})


def add_details(session: Session) -> dict[str, int]:
    """Give every branch one step and every execution its events (execution_started, a branch_completed
    per finished branch, execution_completed when closed), as running them would have: the history that
    retention prunes. Returns how many steps and events each execution got, by serial."""
    sizes: dict[str, int] = {}
    executions = session.execute(select(Execution.id, Execution.execution_serial, Execution.status)).all()
    for execution_id, serial, status in executions:
        branches = session.execute(select(Branch.id, Branch.status, Branch.result_output)
                                   .where(Branch.execution_id == execution_id)).all()
        session.add_all(BranchStep(branch_id=branch_id, position=1, action_name="run", action_type="command",
                                   status=b_status, stdout=output) for branch_id, b_status, output in branches)
        kinds = ["execution_started", *("branch_completed" for _, b_status, _ in branches
                                        if b_status not in ("queued", "running"))]
        if status != "running":
            kinds.append("execution_completed")
        session.add_all(ExecutionEvent(execution_id=execution_id, seq=seq, type=kind, data={"serial": serial})
                        for seq, kind in enumerate(kinds, start=1))
        session.add(EventCounter(execution_id=execution_id, last_seq=len(kinds)))
        sizes[serial] = len(branches) + len(kinds)
    session.flush()
    return sizes


def all_figures(db: Database, now: datetime) -> dict[str, Any]:
    """Every answer of execution analytics, job metrics and target performance over this dataset at `now`
    (each period, grouping, job and target), as plain data: two calls agree when every figure does."""
    figures: dict[str, Any] = {}
    with db.session() as session:
        for period in analytics.PERIODS:
            for group_by in analytics.GROUPS:
                figures[f"analytics {period} {group_by}"] = asdict(
                    analytics.execution_analytics(session, period=period, group_by=group_by, now=now))
            for job_serial, *_ in JOBS:
                figures[f"job {job_serial} {period}"] = asdict(
                    analytics.job_metrics(session, job_serial, period=period, now=now))
        for target_serial, *_ in TARGETS:
            for days in (1, 7, 30, 90, 365):
                figures[f"target {target_serial} {days}"] = asdict(
                    target_history.target_performance(session, target_serial, days=days, now=now))
    return figures


# ---------------------------------------------------------------- answers of a chosen size


@dataclass(frozen=True)
class Scaled:
    job_serial: str
    execution_serial: str  # the execution with n branches
    branch_serial: str  # the branch with n steps
    target_serial: str  # the target with n branches
    serials: list[str]  # n execution and branch serials, mixed
    search_q: str  # the job's name: matches exactly n executions


def build_scaled(session: Session, n: int, now: datetime, tag: int = 7) -> Scaled:
    """Data where every read endpoint's answer has size n (n <= 99): a job with n executions in the last
    n hours; its first execution with n branches on n targets; that execution's first branch with n steps;
    the first target with n branches (one per execution). `tag` (1..99) keeps several such sets apart."""
    created = now - timedelta(days=10)
    targets = [Target(target_serial=f"T2025{tag:02d}{i:02d}", name=f"node-{tag}-{i:03d}", ip_address=f"10.{tag}.0.{i}",
                      tags=[], created_at=created, updated_at=created) for i in range(1, n + 1)]
    session.add_all(targets)
    job_serial = f"J2025{tag:02d}00"
    job = Job(job_serial=job_serial, name=f"scale-job-{tag:02d}", job_type="command", status="completed",
              execution_count=n, created_at=created, updated_at=created)
    session.add(job)
    session.flush()
    serials: list[str] = []
    first_branch = None
    for number in range(1, n + 1):
        started = now - timedelta(hours=n - number + 1)
        execution = Execution(execution_serial=f"{job_serial}.{number:04d}", job_id=job.id, execution_number=number,
                              status="completed", started_at=started, completed_at=started + timedelta(seconds=30))
        session.add(execution)
        session.flush()
        on = targets if number == 1 else targets[:1]
        for branch_number, target in enumerate(on, start=1):
            branch = Branch(branch_serial=f"{execution.execution_serial}.{branch_number:04d}",
                            execution_id=execution.id, branch_number=branch_number, target_id=target.id,
                            target_serial_ref=target.target_serial, status="completed", exit_code=0,
                            queued_at=started, started_at=started, completed_at=started + timedelta(seconds=20),
                            duration=20.0)
            session.add(branch)
            if first_branch is None:
                session.flush()
                first_branch = branch
        serials.append(execution.execution_serial if number % 2 else f"{execution.execution_serial}.0001")
    session.flush()
    session.add_all(BranchStep(branch_id=first_branch.id, position=p, action_name=f"step-{p}", action_type="command",
                               status="completed", exit_code=0) for p in range(1, n + 1))
    session.flush()
    return Scaled(job_serial=job_serial, execution_serial=f"{job_serial}.0001", branch_serial=f"{job_serial}.0001.0001",
                  target_serial=targets[0].target_serial, serials=serials, search_q=job.name)
