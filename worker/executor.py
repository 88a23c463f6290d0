"""Running one branch: claim it, open the target, run its actions in order, record each step as it
ends, finish it exactly once, publish after every commit. No database session is held across SSH
I/O. Its output streams live as it prints (worker/live_output.py), with the values of its secrets
(the target's password or key passphrase, the execution's secret parameters) masked before anything
stores, publishes or logs them. Also killing what a branch whose worker died left running on its
target."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from common.db import while_unavailable
from common.hostkeys import fingerprint
from common.services import executions as svc
from common.services.parameters import environment, secret_values
from common.statuses import BranchStatus, ErrorType
from worker import metrics
from worker.live_output import BranchOutput
from worker.runners.base import ConnectError, ConnectionSpec, Session, StepResult
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

DEFAULT_INTERPRETER = "/bin/sh"


@dataclass
class Outcome:
    status: BranchStatus
    exit_code: int | None = None
    error_type: str | None = None
    last_step: dict | None = None  # the final step, written in the finishing transaction: one commit fewer


def run_branch(rt: WorkerRuntime, branch_id: int) -> str | None:
    """Entry point of the branch task. Returns the final status, or None when there was nothing to run."""
    work, _ = rt.claimer.claim(branch_id)  # claimer and finisher publish the events they commit
    if work is None:
        log.info("branch not claimable (already started, finished or cancelled) branch_id=%s", branch_id)
        return None
    began = time.monotonic()
    metrics.branch_started(work.connection)
    context = f"branch={work.branch_serial} target={work.target_serial}"
    cancel = rt.heartbeats.register(branch_id)
    crash: Exception | None = None
    output = rt.live.open(work.branch_serial, work.execution_serial)
    try:
        output.hide(_secrets(rt, work))  # before the first byte is read
        outcome = _run(rt, work, cancel, context, output)
    except Exception as exc:  # a bug or an infrastructure fault: the branch still ends, with the reason
        log.exception("branch crashed %s", context)
        crash = exc
        outcome = Outcome(BranchStatus.FAILED, error_type=ErrorType.INTERNAL_ERROR)
        output.stderr.note(f"internal error in the worker: {type(exc).__name__}: {exc}")
    finally:
        try:
            output.close()  # its last bytes are published before its end is, and under its heartbeat
        finally:
            rt.heartbeats.unregister(branch_id)
    try:
        finished = rt.finisher.finish(
            branch_id, outcome.status, exit_code=outcome.exit_code, error_type=outcome.error_type,
            result_output=output.stdout.text(), result_error=output.stderr.text(),
            last_step=outcome.last_step, started_at=work.started_at, brakes=work.brakes)
        metrics.branch_finished(work.branch_serial, finished, time.monotonic() - began)
    finally:
        output.finished()  # readers go to the stored result from now on; the live copy expires soon
    log.info("branch finished %s status=%s exit_code=%s", context, outcome.status, outcome.exit_code)
    if crash is not None:
        raise crash
    return outcome.status


def _secrets(rt: WorkerRuntime, work: svc.ClaimedBranch) -> list[str]:
    """The values its output must never show: the credential's password and key passphrase (an SSH
    target's only: a local one never uses it) and the execution's secret parameters."""
    found = secret_values(rt.box, work.secret_parameters)
    cred = work.credential
    if cred is not None and work.connection != "local":
        if cred.auth_type == "password":
            found.append(rt.box.decrypt(cred.secret_encrypted))
        if cred.passphrase_encrypted:
            found.append(rt.box.decrypt(cred.passphrase_encrypted))
    return found


def _spec(rt: WorkerRuntime, work: svc.ClaimedBranch) -> ConnectionSpec:
    cred = work.credential
    if cred is None:
        raise ConnectError(ErrorType.AUTH_FAILED, "the target has no credential")
    # checked again here, before anything is decrypted: rows written by hand or before the rule
    if not cred.allowed_for(work.host, work.port, work.queue):
        raise ConnectError(ErrorType.CREDENTIAL_NOT_ALLOWED,
                           f"credential {cred.credential_id} is not allowed for {work.host}:{work.port}; "
                           "an administrator must add the address to its allowed_hosts or re-save the target")
    secret = rt.box.decrypt(cred.secret_encrypted)
    passphrase = rt.box.decrypt(cred.passphrase_encrypted) if cred.passphrase_encrypted else None
    return ConnectionSpec(
        host=work.host, port=work.port, username=cred.username,
        password=secret if cred.auth_type == "password" else None,
        private_key=secret if cred.auth_type == "key" else None, passphrase=passphrase,
        known_host_key=work.host_key, connect_timeout=rt.settings.ssh_connect_timeout,
        credential_version=cred.version)


def _open(rt: WorkerRuntime, work: svc.ClaimedBranch) -> Session:
    if work.connection == "local":
        return rt.local.open(ConnectionSpec(host="localhost"))
    session = rt.ssh.open(_spec(rt, work))
    if work.host_key is None and session.host_key:
        rt.pinner.pin(work.target_id, session.host_key, fingerprint(session.host_key))
    return session


def _run(rt: WorkerRuntime, work: svc.ClaimedBranch, cancel: threading.Event, context: str,
         output: BranchOutput) -> Outcome:
    try:
        target = _open(rt, work)
    except ConnectError as exc:
        log.info("connect failed %s error_type=%s", context, exc.error_type)
        output.stderr.note(exc.message)
        return Outcome(BranchStatus.FAILED, error_type=exc.error_type)
    outcome = Outcome(BranchStatus.COMPLETED, exit_code=0)
    try:
        for i, action in enumerate(work.actions):
            if cancel.is_set():
                return _stopped(outcome, BranchStatus.CANCELLED, ErrorType.CANCELLED)
            result = _run_action(rt, target, action, cancel, work, output)
            reason = _reason(result)
            if reason is not None:
                output.stderr.note(reason)
            step = _step(action, result, output.stderr.mask(reason or ""))
            outcome.exit_code = result.exit_code
            stop = _stop_for(result, action)
            if stop is not None:
                outcome.last_step = step
                return _stopped(outcome, *stop)
            if i == len(work.actions) - 1:
                outcome.last_step = step
            else:  # committed now: a worker dying during the next action must not lose this one
                _record(rt, work.branch_id, step)
    finally:
        target.close()
    return outcome


def _stop_for(result: StepResult, action: dict) -> tuple[BranchStatus, str] | None:
    """How the branch ends because of this step, or None when it goes on."""
    if result.error_type == ErrorType.CANCELLED:
        return BranchStatus.CANCELLED, ErrorType.CANCELLED
    if result.error_type == ErrorType.TIMEOUT:
        return BranchStatus.TIMED_OUT, ErrorType.TIMEOUT
    if result.error_type is not None and not action["continue_on_error"]:
        return BranchStatus.FAILED, result.error_type
    return None


def _stopped(outcome: Outcome, status: BranchStatus, error_type: str) -> Outcome:
    outcome.status = status
    outcome.error_type = error_type
    return outcome


def _run_action(rt: WorkerRuntime, target: Session, action: dict, cancel: threading.Event,
                work: svc.ClaimedBranch, output: BranchOutput) -> StepResult:
    params = action["parameters"]
    timeout = action["timeout_seconds"] or rt.settings.default_action_timeout
    branch_id = work.branch_id
    # the execution's parameters reach the action as OC_PARAM_* variables, never as command text
    env = environment(rt.box, work.parameters, work.secret_parameters) or None

    def started(pid: int) -> None:
        if work.connection != "local":  # a local group dies with its worker's host, or is no one's to kill
            rt.heartbeats.remote_pid(branch_id, pid)

    try:
        if action["action_type"] == "script":
            return target.run(params.get("interpreter") or DEFAULT_INTERPRETER, stdin=params["script"].encode(),
                              timeout=timeout, cancel=cancel, on_start=started, env=env, output=output)
        return target.run(params["command"], timeout=timeout, cancel=cancel, on_start=started, env=env,
                          output=output)
    finally:
        rt.heartbeats.remote_pid(branch_id, None)


def _step(action: dict, result: StepResult, reason: str) -> dict:
    statuses: dict[str | None, BranchStatus] = {None: BranchStatus.COMPLETED, ErrorType.TIMEOUT: BranchStatus.TIMED_OUT,
                                                ErrorType.CANCELLED: BranchStatus.CANCELLED}
    status = statuses.get(result.error_type, BranchStatus.FAILED)
    separator = "" if not reason or not result.stderr or result.stderr.endswith("\n") else "\n"
    return {"position": action["position"], "action_name": action["action_name"],
            "action_type": action["action_type"], "status": status, "exit_code": result.exit_code,
            "stdout": result.stdout, "stderr": f"{result.stderr}{separator}{reason}", "error_type": result.error_type,
            "started_at": result.started_at, "completed_at": result.completed_at, "duration": result.duration}


def _reason(result: StepResult) -> str | None:
    """Why the runner ended the command (a timeout, a lost link, a kill that could not be confirmed), a
    line to follow its stderr; a plain non-zero exit needs no words beyond its exit code."""
    plain_exit = result.error_type == ErrorType.COMMAND_FAILED and result.exit_code is not None
    if not result.error_message or plain_exit:
        return None
    return f"[opsconductor] {result.error_message}\n"


def _record(rt: WorkerRuntime, branch_id: int, step: dict) -> None:
    def write() -> None:
        with rt.db.connection() as conn:
            svc.record_step(conn, branch_id, step)
            conn.commit()

    while_unavailable(write, budget=rt.settings.database_retry_seconds, what="a step")


def kill_orphan(rt: WorkerRuntime, branch_id: int) -> None:
    """Kill the process group a worker_lost branch left running on its SSH target (best effort:
    the outcome is appended to the branch's result_error either way)."""
    with rt.db.connection() as conn:
        orphan = svc.orphan_of(conn, branch_id)
    if orphan is None:
        return
    work, pid = orphan
    try:
        outcome = rt.ssh.kill_group(_spec(rt, work), pid)
    except ConnectError as exc:
        outcome = f"remote process group {pid} may still run: {exc.message}"
    log.warning("orphan of lost branch %s: %s", work.branch_serial, outcome)
    with rt.db.connection() as conn:
        svc.orphan_reaped(conn, branch_id, pid, outcome)
        conn.commit()
