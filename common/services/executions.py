"""The execution lifecycle: start (one transaction), claim, record, finish exactly once, cancel,
and the sweeps that keep anything from being lost or stuck. Every function returns the events
to publish; the caller publishes them after its commit."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from common import cron, serials
from common.crypto import SecretBox
from common.db import Database
from common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from common.models import Branch, BranchStep, Credential, Execution, Job, Target, User, utcnow
from common.models.base import rfc3339
from common.services import access, event_log, rollout, rollups
from common.services.jobs import resolve_targets
from common.services.parameters import bind as bind_parameters
from common.services.parameters import seal as seal_parameters
from common.services.refs import job_by_ref
from common.services.selectors import clean as clean_selector
from common.services.selectors import select_targets
from common.statuses import BRANCH_ACTIVE, BranchStatus, ErrorType, ExecutionStatus, JobStatus, Role

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
# The per-branch hot path takes either: the worker runs it on a bare connection, other callers in a session.
Executor = Session | Connection


def _ts(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def execution_started_event(execution: Execution, job_serial: str) -> Event:
    return ("execution_started", {"execution_serial": execution.execution_serial, "job_serial": job_serial,
                                  "status": execution.status, "started_at": _ts(execution.started_at),
                                  "branch_count": len(execution.branches)})


def branch_completed(branch_serial: str, target_serial_ref: str, status: str, exit_code: int | None,
                      error_type: str | None, completed_at: datetime, duration: float | None) -> Event:
    return ("branch_completed", {"branch_serial": branch_serial, "execution_serial": branch_serial.rsplit(".", 1)[0],
                                 "job_serial": branch_serial.split(".")[0], "target_serial_ref": target_serial_ref,
                                 "status": str(status), "exit_code": exit_code,
                                 "error_type": None if error_type is None else str(error_type),
                                 "completed_at": _ts(completed_at), "duration": duration})


# ---- start ---------------------------------------------------------------------------------------

def start_execution(session: Session, job: Job, *, role: str, target_ids: list[int] | None = None,
                    trigger: str = "manual", user_id: int | None = None, max_concurrency: str | None = None,
                    max_errors: str | None = None, actions: list[dict[str, Any]] | None = None,
                    retry_of: Execution | None = None, target_selector: dict[str, Any] | None = None,
                    parameters: dict[str, str] | None = None, box: SecretBox | None = None) -> Execution:
    """Create the execution and one queued branch per target in the caller's transaction. `role` is
    the one acting: the user who executes, or for a scheduled firing the job's last writer. `actions`:
    a snapshot to run instead of the job's actions (a retry runs its parent's, `retry_of`).
    `target_ids` or `target_selector` (not both) override the job's; `parameters` are bound to the job's
    declarations, secrets sealed with `box`; a retry without `parameters` runs with its parent's values."""
    if job.archived_at is not None:
        raise Conflict("Job is archived and cannot run", {"job_serial": job.job_serial})
    ids, selector = _chosen_targets(session, job, target_ids, target_selector)
    if not ids:
        raise ValidationFailed("No targets: give target_ids or set them on the job", {"field": "target_ids"})
    targets = resolve_targets(session, ids)
    local = access.local_serials(targets)
    access.require_admin_for_local(role, local, "run on")
    if local and _role_of(session, job.updated_by) != Role.ADMIN:
        # an admin running a job whose commands someone else wrote would run their commands as the platform
        raise Forbidden("This job's actions were last written by someone who is not an active administrator; "
                        "an administrator must save its actions before it may run on local targets",
                        {"field": "target_ids", "targets": local, "job_serial": job.job_serial})
    if local and actions is not None and actions != action_snapshot(job):
        # the last writer vouches for the job's actions as they are now, not for an older snapshot
        raise Forbidden("This would run an earlier version of the job's actions on local targets, which no active "
                        "administrator has vouched for; execute the job instead",
                        {"field": "target_ids", "targets": local, "job_serial": job.job_serial})
    disabled = [t.id for t in targets if not t.enabled]
    if disabled:
        raise ValidationFailed("Disabled targets cannot run", {"field": "target_ids", "received": disabled})
    if retry_of is not None and parameters is None:
        shown_parameters, secret_parameters = dict(retry_of.parameters or {}), retry_of.secret_parameters
    else:
        shown_parameters, secret_parameters = seal_parameters(box, *bind_parameters(job.parameters or [], parameters))
    number = session.execute(
        update(Job).where(Job.id == job.id).values(execution_count=Job.execution_count + 1, status=JobStatus.RUNNING,
                                                   updated_at=utcnow())
        .returning(Job.execution_count)).scalar_one()
    now = utcnow()
    execution_serial = serials.execution_serial(job.job_serial, number)
    if actions is None:
        actions = action_snapshot(job)
    concurrency = max_concurrency if max_concurrency is not None else job.max_concurrency
    execution = Execution(
        target_selector=selector, parameters=shown_parameters, secret_parameters=secret_parameters,
        max_concurrency=concurrency, max_errors=max_errors if max_errors is not None else job.max_errors,
        job_id=job.id, execution_number=number, actions=actions, status=ExecutionStatus.RUNNING, trigger=trigger,
        triggered_by=user_id, started_at=now, execution_serial=execution_serial, retry_of=retry_of, retries=[],
        branches=[Branch(branch_number=i, target_id=t.id, target_serial_ref=t.target_serial, queue=t.queue,
                         status=BranchStatus.QUEUED, queued_at=now,
                         dispatched_at=None if rollout.held_at_start(concurrency, t.max_concurrent_runs) else now,
                         branch_serial=serials.branch_serial(execution_serial, i))
                  for i, t in enumerate(targets, start=1)])
    session.add(execution)
    session.flush()
    _release_held(session, execution, targets)
    return execution


def _release_held(session: Session, execution: Execution, targets: list[Target]) -> None:
    """The first branches of a limited execution, or on limited targets, go now; the rest wait."""
    conn = session.connection()
    released: set[int] = set()
    if execution.max_concurrency is not None:  # target limits are then checked at claim time
        released |= {branch_id for branch_id, _ in rollout.release(conn, execution_id=execution.id)}
    else:
        for target_id in sorted({t.id for t in targets if t.max_concurrent_runs is not None}):
            released |= {b for b, _ in rollout.release(conn, target_id=target_id, execution_id=execution.id)}
    now = utcnow()
    for branch in execution.branches:  # the release's own UPDATE set it in the database
        if branch.id in released:
            set_committed_value(branch, "dispatched_at", now)


def dispatchable(execution: Execution) -> list[tuple[int, str]]:
    """The (branch id, queue) pairs to send after the execution's commit: those not held by a limit."""
    return [(b.id, b.queue) for b in execution.branches if b.dispatched_at is not None]


def action_snapshot(job: Job) -> list[dict[str, Any]]:
    """The job's actions as an execution keeps them (executions.actions)."""
    return [{"position": a.position, "action_type": a.action_type, "action_name": a.action_name,
             "parameters": dict(a.action_parameters), "timeout_seconds": a.timeout_seconds,
             "continue_on_error": a.continue_on_error} for a in job.actions]


def _chosen_targets(session: Session, job: Job, target_ids: list[int] | None,
                    target_selector: dict[str, Any] | None) -> tuple[list[int], dict[str, Any] | None]:
    """The ids to run on and the selector they came from (None for ids): the caller's choice over the
    job's. A selector becomes ids here, so the rules on ids (local targets, disabled) apply to both."""
    if target_ids is not None and target_selector is not None:
        raise ValidationFailed("Give target_ids or target_selector, not both",
                               {"field": "target_selector", "target_ids": target_ids})
    if target_ids is not None:
        return target_ids, None
    selector = clean_selector(target_selector if target_selector is not None else job.target_selector)
    if selector is None:
        return job.target_ids, None
    return [t.id for t in select_targets(session, selector)], selector


def _role_of(session: Session, user_id: int | None) -> str | None:
    """An active user's role, or None (no user, gone, or disabled)."""
    user = session.get(User, user_id) if user_id is not None else None
    return user.role if user is not None and user.is_active else None


def execute_job(session: Session, job_ref: str, **kwargs) -> tuple[Execution, list[Event]]:
    job = job_by_ref(session, job_ref)
    execution = start_execution(session, job, **kwargs)
    return execution, [execution_started_event(execution, job.job_serial)]


# what a read shape shows of retries (retry_of, retries): loaded with the execution, no statement of their own
RETRY_LINKS = (joinedload(Execution.retry_of).raiseload("*"), joinedload(Execution.retries).raiseload("*"))


def load_execution(session: Session, execution_id: int) -> Execution | None:
    return session.scalar(select(Execution).where(Execution.id == execution_id)
                          .options(selectinload(Execution.branches), *RETRY_LINKS)
                          .execution_options(populate_existing=True))


def set_dispatched(session: Session, branch_ids: list[int], when: datetime | None) -> None:
    """Record (or, with None, forget) that these queued branches were handed to the broker. Rows
    locked by a claim or a cancel are skipped, never waited for: this update can deadlock nothing."""
    if not branch_ids:
        return
    lockable = (select(Branch.id).where(Branch.id.in_(branch_ids), Branch.status == BranchStatus.QUEUED)
                .order_by(Branch.id).with_for_update(skip_locked=True))
    session.execute(update(Branch).where(Branch.id.in_(lockable)).values(dispatched_at=when)
                    .execution_options(synchronize_session=False))


# ---- claim / run / finish ------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimedCredential:
    """A branch's credential as stored: secrets still encrypted, with the rule for where it may go."""

    credential_id: int
    username: str
    auth_type: str  # key | password
    secret_encrypted: str
    passphrase_encrypted: str | None
    version: str  # "id:version", part of the SSH pool key
    allowed_hosts: list[str]
    grant: str | None  # the target's administrator-approved pairing

    def allowed_for(self, host: str, port: int, queue: str) -> bool:
        return access.may_use_credential(self.credential_id, self.allowed_hosts, self.grant, host, port, queue)

    def __repr__(self) -> str:
        return f"ClaimedCredential(id={self.credential_id}, username={self.username!r})"


@dataclass
class ClaimedBranch:
    """What a worker needs to run a branch, loaded once so no session is held across SSH I/O."""

    branch_id: int
    branch_serial: str
    execution_serial: str
    target_id: int
    target_serial: str
    connection: str
    host: str
    port: int
    queue: str  # where this branch was routed: the network its worker reaches the host from
    host_key: str | None
    credential: ClaimedCredential | None
    started_at: datetime
    actions: list[dict[str, Any]] = field(default_factory=list)
    brakes: rollout.Brakes | None = None  # what its finish must release or check (None: no limits)
    # the execution's parameter values: secrets masked here, their values still one encrypted token
    parameters: dict[str, str] = field(default_factory=dict)
    secret_parameters: str | None = field(default=None, repr=False)


# The per-branch hot path (claim, record, finish) runs thousands of times a second at full fan-out:
# its statements are built once, on the tables, with bind parameters.
# (declarative types __table__ as any FromClause; these models are mapped to plain Tables)
_B, _E, _T, _C, _S = (cast(Table, m.__table__) for m in (Branch, Execution, Target, Credential, BranchStep))
_ACTIVE = [str(s) for s in BRANCH_ACTIVE]

_CLAIM = (update(_B).where(_B.c.id.in_(bindparam("b_ids", expanding=True)), _B.c.status == str(BranchStatus.QUEUED))
          .values(status=str(BranchStatus.RUNNING), started_at=bindparam("now"), heartbeat_at=bindparam("now"),
                  worker=bindparam("worker_name"))
          .returning(_B.c.id))
_b = _B.alias("b")
_LOAD = (select(_b.c.id.label("branch_id"), _b.c.branch_serial, _b.c.target_serial_ref, _b.c.queue,
                _E.c.execution_serial, _E.c.actions, _T.c.id.label("target_id"), _T.c.target_serial, _T.c.connection,
                _T.c.ip_address, _T.c.hostname, _T.c.port, _T.c.host_key, _T.c.credential_grant,
                _C.c.id.label("cred_id"), _C.c.username, _C.c.auth_type, _C.c.secret_encrypted,
                _C.c.passphrase_encrypted, _C.c.version, _C.c.allowed_hosts, _b.c.execution_id,
                _E.c.max_concurrency, _E.c.max_errors, _T.c.max_concurrent_runs,
                _E.c.parameters, _E.c.secret_parameters)
         .select_from(_b.join(_E, _E.c.id == _b.c.execution_id).join(_T, _T.c.id == _b.c.target_id)
                      .outerjoin(_C, _C.c.id == _T.c.credential_id))
         .where(_b.c.id.in_(bindparam("b_ids", expanding=True))))
# PostgreSQL claims and loads in one statement (UPDATE … FROM … RETURNING); SQLite's RETURNING
# cannot name the FROM tables, so there it is _CLAIM, then _LOAD of what was claimed.
_loaded = _LOAD.subquery("loaded")
_CLAIM_AND_LOAD = (update(_B).where(_B.c.id == _loaded.c.branch_id, _B.c.status == str(BranchStatus.QUEUED))
                   .values(status=str(BranchStatus.RUNNING), started_at=bindparam("now"),
                           heartbeat_at=bindparam("now"), worker=bindparam("worker_name"))
                   .returning(*_loaded.c))
_STARTED_AT = select(_B.c.started_at).where(_B.c.id == bindparam("b_id"))
_FINISH = (update(_B).where(_B.c.id == bindparam("b_id"), _B.c.status.in_(_ACTIVE))
           .values(status=bindparam("new_status"), exit_code=bindparam("new_exit_code"),
                   error_type=bindparam("new_error_type"), result_output=bindparam("new_output"),
                   result_error=bindparam("new_error"), completed_at=bindparam("now"),
                   duration=bindparam("new_duration"))
           .returning(_B.c.execution_id, _B.c.branch_serial, _B.c.target_serial_ref))
# skip-locked like the heartbeat's own update: a row a finishing batch holds is never waited for
_SET_REMOTE_PID = (update(_B).where(_B.c.id.in_(select(_B.c.id).where(_B.c.id == bindparam("b_id"),
                                                                      _B.c.status == str(BranchStatus.RUNNING))
                                                .with_for_update(skip_locked=True)))
                   .values(remote_pid=bindparam("pid")))
_ANY_ACTIVE = select(_B.c.id).where(_B.c.execution_id == bindparam("e_id"), _B.c.status.in_(_ACTIVE)).limit(1)
_INSERT_STEP = insert(_S)
_PIN_HOST_KEY = (update(_T).where(_T.c.id == bindparam("t_id"), _T.c.host_key.is_(None))
                 .values(host_key=bindparam("new_host_key"), host_key_fingerprint=bindparam("new_fingerprint")))


def _dialect(executor: Executor) -> str:
    return executor.dialect.name if isinstance(executor, Connection) else executor.get_bind().dialect.name


def claim_branch(session: Executor, branch_id: int, worker: str) -> tuple[ClaimedBranch | None, list[Event]]:
    """queued → running, only once: a redelivered or duplicate task finds nothing to claim.

    A cancel ends queued branches in the same transaction that records it, so a branch claimed
    here was not cancelled yet; a later cancel reaches it through the heartbeat."""
    return claim_branches(session, [branch_id], worker).get(branch_id, (None, []))


def claim_branches(session: Executor, branch_ids: list[int], worker: str
                   ) -> dict[int, tuple[ClaimedBranch, list[Event]]]:
    """claim_branch for many at once (a worker's group commit): the branches that were still
    queued, each with its work and its branch_started event; the others are absent."""
    now = utcnow()
    params = {"b_ids": sorted(set(branch_ids)), "now": now, "worker_name": worker}
    if _dialect(session) == "postgresql":
        rows = session.execute(_CLAIM_AND_LOAD, params).all()
    else:
        ids = [r.id for r in session.execute(_CLAIM, params)]
        rows = session.execute(_LOAD, {"b_ids": ids}).all() if ids else []
    claimed = {row.branch_id: _claimed(row, now) for row in rows}
    limited = [work.brakes for work, _ in claimed.values() if work.brakes is not None]
    if limited:  # a claim past a limit is undone: the branch waits for the next free slot
        conn = session if isinstance(session, Connection) else session.connection()
        over = rollout.over_limits(conn, limited)
        for branch_id in over:
            del claimed[branch_id]
        rollout.hold_again(conn, over)
    return claimed


def _brakes(row: Any) -> rollout.Brakes | None:
    execution_limited = row.max_concurrency is not None or row.max_errors is not None
    if not execution_limited and row.max_concurrent_runs is None:
        return None
    return rollout.Brakes(execution_id=row.execution_id, target_id=row.target_id, branch_id=row.branch_id,
                          execution_limited=execution_limited, target_limited=row.max_concurrent_runs is not None)


def _claimed(row: Any, now: datetime) -> tuple[ClaimedBranch, list[Event]]:
    work = ClaimedBranch(
        branch_id=row.branch_id, branch_serial=row.branch_serial, execution_serial=row.execution_serial,
        target_id=row.target_id, target_serial=row.target_serial, connection=row.connection,
        host=row.ip_address or row.hostname or "", port=row.port, queue=row.queue, host_key=row.host_key,
        credential=None if row.cred_id is None else ClaimedCredential(
            credential_id=row.cred_id, username=row.username, auth_type=row.auth_type,
            secret_encrypted=row.secret_encrypted, passphrase_encrypted=row.passphrase_encrypted,
            version=f"{row.cred_id}:{row.version}", allowed_hosts=list(row.allowed_hosts or []),
            grant=row.credential_grant),
        started_at=now, actions=row.actions, brakes=_brakes(row), parameters=dict(row.parameters or {}),
        secret_parameters=row.secret_parameters)
    return work, [("branch_started", {
        "branch_serial": row.branch_serial, "execution_serial": row.execution_serial,
        "job_serial": row.execution_serial.split(".")[0], "target_serial_ref": row.target_serial_ref,
        "status": str(BranchStatus.RUNNING), "started_at": _ts(now)})]


def record_step(session: Executor, branch_id: int, step: dict[str, Any]) -> None:
    session.execute(_INSERT_STEP, {**step, "branch_id": branch_id, "status": str(step["status"])})


def pin_host_key(session: Executor, target_id: int, host_key: str, fingerprint: str) -> None:
    """Trust on first use: only the first key seen is recorded."""
    session.execute(_PIN_HOST_KEY, {"t_id": target_id, "new_host_key": host_key, "new_fingerprint": fingerprint})


def heartbeat(session: Session, branch_ids: list[int], remote_pids: dict[int, int | None] | None = None) -> set[int]:
    """Mark these running branches alive, recording the remote process group each runs now;
    return those whose execution was asked to cancel."""
    if not branch_ids:
        return set()
    # rows being finished right now are skipped, never waited for (a finishing batch holds several)
    alive = (select(Branch.id).where(Branch.id.in_(branch_ids), Branch.status == BranchStatus.RUNNING)
             .order_by(Branch.id).with_for_update(skip_locked=True))
    session.execute(update(Branch).where(Branch.id.in_(alive)).values(heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False))
    record_remote_pids(session, remote_pids or {})
    rows = session.execute(select(Branch.id).join(Execution, Execution.id == Branch.execution_id)
                           .where(Branch.id.in_(branch_ids), Execution.cancel_requested_at.is_not(None)))
    return {r[0] for r in rows}


def record_remote_pids(session: Executor, remote_pids: dict[int, int | None]) -> None:
    """The process group each running branch's action runs as on its target (None: no action runs)."""
    if remote_pids:
        session.execute(_SET_REMOTE_PID, [{"b_id": b, "pid": p} for b, p in sorted(remote_pids.items())])


def finish_branch(session: Executor, branch_id: int, status: BranchStatus, *, exit_code: int | None = None,
                  error_type: str | None = None, result_output: str | None = None,
                  result_error: str | None = None, last_step: dict[str, Any] | None = None,
                  started_at: datetime | None = None) -> tuple[list[Event], int | None]:
    """Finish a branch exactly once: the update is conditional on the branch still being active, so
    a second finish (a duplicate task, the sweep racing a slow worker) changes nothing. Returns the
    events and, when this call finished it, the execution to check with close_if_done after commit."""
    if started_at is None:
        started_at = session.execute(_STARTED_AT, {"b_id": branch_id}).scalar()
    now = utcnow()
    duration = (now - started_at).total_seconds() if started_at else None
    row = session.execute(_FINISH, {
        "b_id": branch_id, "new_status": str(status), "new_exit_code": exit_code,
        "new_error_type": None if error_type is None else str(error_type), "new_output": result_output,
        "new_error": result_error, "now": now, "new_duration": duration}).first()
    if row is None:
        return [], None
    if last_step is not None:
        record_step(session, branch_id, last_step)
    return [branch_completed(row.branch_serial, row.target_serial_ref, status, exit_code, error_type, now,
                              duration)], row.execution_id


def close_if_done(session: Executor, execution_id: int) -> list[Event]:
    """Close the execution once no branch is active. Call it after the commit that finished a
    branch: the last finisher's check then sees every other finish committed, so at least one
    caller closes, and the conditional update lets exactly one of them do it. No execution-wide
    lock is held while branches finish, so a thousand branches never queue on one row."""
    if session.execute(_ANY_ACTIVE, {"e_id": execution_id}).first() is not None:
        return []
    counts = dict(session.execute(select(Branch.status, func.count()).where(Branch.execution_id == execution_id)
                                  .group_by(Branch.status)).all())
    cancel_requested_at = session.scalar(select(Execution.cancel_requested_at).where(Execution.id == execution_id))
    if counts.get(BranchStatus.COMPLETED, 0) == sum(counts.values()):
        status = ExecutionStatus.COMPLETED
    elif cancel_requested_at is not None and counts.get(BranchStatus.CANCELLED, 0):
        status = ExecutionStatus.CANCELLED
    else:
        status = ExecutionStatus.FAILED
    closed = session.execute(
        update(Execution).where(Execution.id == execution_id, Execution.status == ExecutionStatus.RUNNING)
        .values(status=status, completed_at=utcnow())
        .returning(Execution.execution_serial, Execution.job_id, Execution.execution_number, Execution.started_at,
                   Execution.completed_at)
        .execution_options(synchronize_session=False)).one_or_none()
    if closed is None:
        return []
    job_serial, latest = session.execute(select(Job.job_serial, Job.execution_count)
                                         .where(Job.id == closed.job_id)).one()
    if latest == closed.execution_number:
        # a live cron job goes back to waiting for its next tick; its executions keep the outcome
        waiting = case((and_(Job.schedule_cron.is_not(None), Job.archived_at.is_(None)), str(JobStatus.SCHEDULED)),
                       else_=status.value)
        session.execute(update(Job).where(Job.id == closed.job_id).values(status=waiting)
                        .execution_options(synchronize_session=False))
    rollups.record_closed(session, execution_id)
    return [("execution_completed", {
        "execution_serial": closed.execution_serial, "job_serial": job_serial, "status": str(status),
        "started_at": _ts(closed.started_at), "completed_at": _ts(closed.completed_at),
        "branch_count": sum(counts.values())})]


def finish_and_close(db: Database, branch_id: int, status: BranchStatus, **outcome: Any) -> list[Event]:
    """finish_branch and close_if_done, each in its own transaction (in the order that makes it
    safe), on one connection."""
    with db.connection() as conn:
        events, execution_id = finish_branch(conn, branch_id, status, **outcome)
        event_log.record(conn, events)
        conn.commit()
        if execution_id is not None:
            events += close_when_done(conn, execution_id)
    return events


def close_when_done(conn: Connection, execution_id: int) -> list[Event]:
    """close_if_done, committed, for a connection whose finishing transaction just committed."""
    if not _none_active(conn, execution_id):
        return []
    events = event_log.record(conn, close_if_done(conn, execution_id))
    conn.commit()
    return events


def _none_active(conn: Connection, execution_id: int) -> bool:
    """The check almost every finisher stops at. On PostgreSQL it runs outside a transaction (one
    round trip, not three); close_if_done makes it again inside the transaction that closes.
    SQLite keeps its transaction: switching a pysqlite connection's isolation back re-enables the
    driver's implicit transactions that common.db turned off."""
    autocommit = conn.dialect.name == "postgresql"
    if autocommit:
        conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        return conn.execute(_ANY_ACTIVE, {"e_id": execution_id}).first() is None
    finally:
        conn.commit()
        if autocommit:
            conn.execution_options(isolation_level=conn.default_isolation_level)


# ---- cancel --------------------------------------------------------------------------------------

def cancel_execution(session: Session, execution_serial: str) -> tuple[Execution, list[Event]]:
    """Queued branches end cancelled now, in the transaction that records the request; running
    ones see it on their next heartbeat and are killed. The caller runs close_if_done after commit."""
    serials.require("execution_serial", execution_serial)
    execution = session.scalar(select(Execution).where(Execution.execution_serial == execution_serial))
    if execution is None:
        raise NotFound("Execution not found", {"execution_serial": execution_serial})
    if execution.status != ExecutionStatus.RUNNING:
        return execution, []
    now = utcnow()
    cancelled = session.execute(
        update(Branch).where(Branch.execution_id == execution.id, Branch.status == BranchStatus.QUEUED)
        .values(status=BranchStatus.CANCELLED, error_type=ErrorType.CANCELLED, completed_at=now,
                result_error="cancelled before it started")
        .returning(Branch.branch_serial, Branch.target_serial_ref)
        .execution_options(synchronize_session=False)).all()
    session.execute(update(Execution).where(Execution.id == execution.id, Execution.cancel_requested_at.is_(None))
                    .values(cancel_requested_at=now).execution_options(synchronize_session=False))
    return execution, [branch_completed(serial, target, BranchStatus.CANCELLED, None, ErrorType.CANCELLED, now, None)
                       for serial, target in sorted(cancelled)]


# ---- sweeps --------------------------------------------------------------------------------------

def branches_to_dispatch(session: Session, *, grace: timedelta, redispatch_after: timedelta,
                         sent_before: datetime | None = None, limit: int = 1000) -> list[tuple[int, str]]:
    """Queued branches whose message may never have reached the broker (or was lost in it):
    never sent and older than ``grace``, or sent before ``sent_before`` (the moment the broker was
    found to have lost its messages), or else more than ``redispatch_after`` ago. Sending one twice
    is harmless: the claim lets only one run."""
    now = utcnow()
    cutoff = sent_before or now - redispatch_after
    held = select(Execution.id).where(Execution.id == Branch.execution_id, Execution.max_concurrency.is_not(None)) \
        .exists() | select(Target.id).where(Target.id == Branch.target_id, Target.max_concurrent_runs.is_not(None)) \
        .exists()  # an unsent branch under a limit waits for its release, not for the grace period
    rows = session.execute(
        select(Branch.id, Branch.queue).where(
            Branch.status == BranchStatus.QUEUED,
            ((Branch.dispatched_at.is_(None)) & (Branch.queued_at < now - grace) & ~held)
            | (Branch.dispatched_at < cutoff))
        .order_by(Branch.queued_at).limit(limit)).all()
    return [(r[0], r[1]) for r in rows]


@dataclass(frozen=True)
class LostBranch:
    branch_id: int
    queue: str
    remote_pid: int | None  # the process group its last action left running on the target


def lost_branches(session: Session, *, deadline: timedelta, limit: int = 1000) -> list[LostBranch]:
    """Running branches whose worker stopped heart-beating: it died with them."""
    cutoff = utcnow() - deadline
    rows = session.execute(select(Branch.id, Branch.queue, Branch.remote_pid)
                           .where(Branch.status == BranchStatus.RUNNING, Branch.heartbeat_at < cutoff).limit(limit))
    return [LostBranch(*row) for row in rows]


def fail_lost_branch(db: Database, branch_id: int) -> list[Event]:
    """Fail as worker_lost and never run again: the command may have partly run."""
    log.warning("branch lost its worker branch_id=%s", branch_id)
    return finish_and_close(db, branch_id, BranchStatus.FAILED, error_type=ErrorType.WORKER_LOST,
                            result_error="the worker running this branch stopped responding; "
                                         "the command may have partly run and was not retried")


def orphan_of(conn: Connection, branch_id: int) -> tuple[ClaimedBranch, int] | None:
    """A worker_lost branch whose remote process group may still run, with how to reach its
    target (as a claim loads it); None when there is nothing left to kill."""
    pid = conn.execute(select(_B.c.remote_pid).where(_B.c.id == branch_id,
                                                     _B.c.error_type == str(ErrorType.WORKER_LOST))).scalar()
    row = conn.execute(_LOAD, {"b_ids": [branch_id]}).first() if pid else None
    return None if row is None or pid is None else (_claimed(row, utcnow())[0], pid)


def orphan_reaped(conn: Connection, branch_id: int, pid: int, outcome: str) -> None:
    """Forget the process group and say what became of it in the branch's result_error."""
    conn.execute(update(_B).where(_B.c.id == branch_id, _B.c.remote_pid == pid)
                 .values(remote_pid=None, result_error=func.coalesce(_B.c.result_error + "\n", "") + outcome))


def unclosed_executions(session: Session, limit: int = 100) -> list[int]:
    """Running executions with no active branch left: their closing check never ran (the process
    that finished the last branch died between its two transactions). The sweep closes them."""
    active = select(Branch.id).where(Branch.execution_id == Execution.id, Branch.status.in_(_ACTIVE))
    return list(session.scalars(select(Execution.id).where(Execution.status == ExecutionStatus.RUNNING,
                                                           ~active.exists()).limit(limit)))


def due_jobs(session: Session, now: datetime, limit: int = 100) -> list[int]:
    stmt = (select(Job.id).where(Job.scheduled_at <= now, Job.schedule_fired_at.is_(None),
                                 Job.archived_at.is_(None)).order_by(Job.scheduled_at).limit(limit))
    return list(session.scalars(stmt))


def fire_scheduled_job(session: Session, job_id: int) -> tuple[Execution | None, list[Event]]:
    """Run a due job once: the conditional update lets exactly one scheduler win."""
    now = utcnow()
    # an UPDATE's result is a CursorResult (rowcount); Session.execute is typed as returning the Result base
    won = session.execute(update(Job).where(and_(Job.id == job_id, Job.schedule_fired_at.is_(None),
                                                 Job.scheduled_at <= now, Job.archived_at.is_(None)))
                          .values(schedule_fired_at=now)).rowcount  # type: ignore[attr-defined]
    if not won:
        return None, []
    return _start_scheduled(session, job_id)


def _start_scheduled(session: Session, job_id: int) -> tuple[Execution | None, list[Event]]:
    """Start the run of a firing this scheduler just won (by a conditional update in this transaction). A
    job that cannot start (no live enabled targets, no authority) shows `failed`; the firing stays spent."""
    job = session.get_one(Job, job_id, populate_existing=True)  # the update that won just matched its row
    try:
        with session.begin_nested():  # a firing acts on the authority of whoever last wrote the job's actions
            execution = start_execution(session, job, role=_role_of(session, job.updated_by) or Role.VIEWER,
                                        trigger="schedule", user_id=job.updated_by)
    except (ValidationFailed, Conflict, Forbidden) as exc:
        log.warning("scheduled job could not start job=%s reason=%s", job.job_serial, exc.message)
        job.status = JobStatus.FAILED
        return None, []
    return execution, [execution_started_event(execution, job.job_serial)]


@dataclass(frozen=True)
class CronTick:
    """A cron job found due, with the schedule and tick as read: its firing is conditional on them."""

    job_id: int
    cron: str
    timezone: str
    next_run_at: datetime


def due_cron_jobs(session: Session, now: datetime, limit: int = 100) -> list[CronTick]:
    rows = session.execute(select(Job.id, Job.schedule_cron, Job.schedule_timezone, Job.next_run_at)
                           .where(Job.next_run_at <= now, Job.schedule_cron.is_not(None), Job.archived_at.is_(None))
                           .order_by(Job.next_run_at).limit(limit))
    return [CronTick(r.id, r.schedule_cron, r.schedule_timezone or cron.DEFAULT_TIMEZONE, r.next_run_at) for r in rows]


def fire_cron_job(session: Session, tick: CronTick) -> tuple[Execution | None, list[Event]]:
    """Run a due cron job once for this tick. Moving next_run_at on from the value read, by one
    conditional update in the transaction that starts the run, lets exactly one scheduler win; the
    next tick is the first after now, so ticks missed while the platform was down fire once, not each."""
    now = utcnow()
    following = cron.next_tick(tick.cron, tick.timezone, now)
    won = session.execute(update(Job).where(and_(
        Job.id == tick.job_id, Job.next_run_at == tick.next_run_at, Job.schedule_cron == tick.cron,
        Job.schedule_timezone == tick.timezone, Job.archived_at.is_(None)))
        .values(next_run_at=following)).rowcount  # type: ignore[attr-defined]
    if not won:
        return None, []
    return _start_scheduled(session, tick.job_id)
