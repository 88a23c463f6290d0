"""`opsconductor run`: a command, or a saved job, executed on targets through a running server with the
Python SDK and followed on /ws/executions: each branch's result is reported as its `branch_completed`
arrives, with the output its `branch_output` events carried.

The API has no execution without a job, so a command becomes a job of its own (job_type `adhoc`, named
after the command, its targets the selector), executed once: its execution has a serial like any other,
shows in the monitor and in search, and `opsconductor run --job J…` or the monitor's Run… can run it again.
A job per run rather than one reused per command, because a reused job could have been edited between
the lookup and the execute, and the output would then belong to a command nobody typed here."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from enabledrm_sdk import EnableDRMClient, EventStream, Execution

ADHOC_JOB_TYPE = "adhoc"
MAX_NAME = 255
ACTIVE = {"queued", "running"}
# failures whose reason (unreachable, refused key, timeout, lost worker, …) the worker appends to the stored
# stderr after the command's own output ended, so the live stream does not carry it
REASON_STORED = {"unreachable", "auth_failed", "host_key_mismatch", "timeout", "connection_lost", "worker_lost",
                 "internal_error", "credential_not_allowed"}
CAPTURE_LIMIT = 1024 * 1024  # per stream; past it the stored result (head and tail, like the server's) is read


class RunError(RuntimeError):
    """The run could not start, or could not be followed to its end."""


def parse_selector(terms: Iterable[str]) -> dict[str, Any]:
    """`tag:web` (the target has every such tag), `anytag:db` (at least one of them), `name:web-*` (a glob),
    given comma-separated or as several options; all of them must hold."""
    selector: dict[str, Any] = {}
    for term in (t.strip() for raw in terms for t in raw.split(",")):
        if not term:
            continue
        kind, sep, value = term.partition(":")
        if not sep or not value:
            raise ValueError(f"{term!r}: expected tag:NAME, anytag:NAME or name:GLOB")
        if kind == "tag":
            selector.setdefault("tags_all", []).append(value)
        elif kind == "anytag":
            selector.setdefault("tags_any", []).append(value)
        elif kind == "name":
            if "name" in selector:
                raise ValueError("name: may be given once")
            selector["name"] = value
        else:
            raise ValueError(f"{term!r}: unknown kind {kind!r} (tag, anytag, name)")
    return selector


@dataclass
class RunRequest:
    command: str | None = None  # an ad-hoc command, run by the targets' shell as ssh would
    job: str | None = None  # or a saved job, by serial or id
    selector: dict[str, Any] | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    max_concurrency: str | None = None
    max_errors: str | None = None
    timeout: float | None = None  # the ad-hoc action's timeout_seconds


@dataclass
class BranchResult:
    branch_serial: str
    target_serial: str
    target_name: str | None
    status: str
    exit_code: int | None
    error_type: str | None
    duration: float | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == "completed" and self.exit_code == 0


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    elapsed: float = 0.0


@dataclass
class Summary:
    execution_serial: str
    job_serial: str
    status: str
    total: int
    statuses: dict[str, int]
    failed: int
    duration: float

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "completed" else 1


class Reporter(Protocol):
    def started(self, execution_serial: str, job_serial: str, total: int) -> None: ...
    def progress(self, progress: Progress) -> None: ...
    def branch(self, result: BranchResult) -> None: ...
    def note(self, message: str) -> None: ...
    def finished(self, summary: Summary) -> None: ...


def adhoc_job_name(command: str) -> str:
    name = f"adhoc: {' '.join(command.split())}"
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"


def run(client: EnableDRMClient, request: RunRequest, reporter: Reporter, *, tick: float = 1.0,
        check_after: float = 5.0, clock: Callable[[], float] = time.monotonic) -> Summary:
    """Execute and follow to the end. The event stream is opened on the job before the execute, so no
    event or output of the new execution comes before the subscription."""
    from enabledrm_sdk import ApiError

    began = clock()
    if request.job is not None:
        job, created = client.jobs.get(request.job), False
    else:
        assert request.command is not None and request.selector
        action: dict[str, Any] = {"action_type": "command", "action_name": "command",
                                  "action_parameters": {"command": request.command}}
        if request.timeout is not None:
            action["timeout_seconds"] = request.timeout
        job = client.jobs.create(adhoc_job_name(request.command), [action], job_type=ADHOC_JOB_TYPE,
                                 target_selector=request.selector,
                                 description="run by `opsconductor run` (one job per run)")
        created = True
    try:
        stream = client.executions.events(job_serial=job.job_serial, include_output=True)
        with stream:
            execution = client.jobs.execute(job.job_serial, target_selector=None if created else request.selector,
                                            parameters=request.parameters or None,
                                            max_concurrency=request.max_concurrency, max_errors=request.max_errors)
            created = False  # it ran: the job stays as the record of the run
            follower = _Follower(client, execution, job.job_serial, reporter, request.selector, clock, began)
            follower.follow(stream, tick=tick, check_after=check_after)
    finally:
        if created:  # the execute was refused: nothing ran, leave no job behind
            try:
                client.jobs.delete(job.job_serial)
            except ApiError:
                pass
    return follower.finish()


@dataclass
class _Captured:
    """One stream of a branch as its branch_output events carried it; `complete` is false once a chunk
    is known missing (an offset gap, a reconnect, the limit), and then the stored result is read."""

    parts: list[str] = field(default_factory=list)
    next_offset: int = 0
    complete: bool = True

    def add(self, offset: int, data: str) -> None:
        if not self.complete:
            return
        size = len(data.encode("utf-8", "surrogatepass"))
        if offset != self.next_offset or self.next_offset + size > CAPTURE_LIMIT:
            self.complete = False  # a gap (skipped for a slow socket, or undecodable bytes): read the result
            self.parts.clear()
            return
        self.parts.append(data)
        self.next_offset += size

    def text(self) -> str:
        return "".join(self.parts)


class _Follower:
    def __init__(self, client: EnableDRMClient, execution: Execution, job_serial: str, reporter: Reporter,
                 selector: dict[str, Any] | None, clock: Callable[[], float], began: float) -> None:
        self.client = client
        self.serial = execution.execution_serial
        self.job_serial = job_serial
        self.reporter = reporter
        self.clock = clock
        self.began = began
        self.branches: dict[str, dict[str, Any]] = {b.branch_serial: b.to_dict() for b in execution.branches}
        self.captured = {serial: {"stdout": _Captured(), "stderr": _Captured()} for serial in self.branches}
        self.reported: set[str] = set()
        self.failed = 0
        self.final: Execution | None = None
        self.names = self._target_names(selector)
        reporter.started(self.serial, job_serial, len(self.branches))
        self._progress()

    def _target_names(self, selector: dict[str, Any] | None) -> dict[int, str]:
        """Names for the branches' targets: a page of targets at a time (filtered by one of the selector's
        tags when it has one) until every target is found."""
        wanted = {b["target_id"] for b in self.branches.values()}
        tag = (selector or {}).get("tags_all", [None])[0]
        names: dict[int, str] = {}
        for target in self.client.targets.iterate(per_page=100, tag=tag):
            if target.id in wanted:
                names[target.id] = target.name
                if len(names) == len(wanted):
                    break
        return names

    def follow(self, stream: EventStream, *, tick: float, check_after: float) -> None:
        from enabledrm_sdk import WaitTimeout

        quiet = 0.0
        reconnects = stream.reconnects
        interrupted = False
        while True:
            try:
                try:
                    event = stream.next(timeout=tick)
                except WaitTimeout:
                    quiet += tick
                    self._progress()
                    if quiet >= check_after:  # events are hints: the execution's row is the truth
                        quiet = 0.0
                        if self._finished_on_server():
                            break
                    continue
                if stream.reconnects != reconnects:  # output sent while away is gone: read stored results
                    reconnects = stream.reconnects
                    for streams in self.captured.values():
                        for captured in streams.values():
                            captured.complete = False
                if event is None:
                    if self._finished_on_server():
                        break
                    raise RunError(f"the event stream closed ({stream.close_code}: {stream.close_reason}) while "
                                   f"{self.serial} still runs")
                quiet = 0.0
                if self._apply(event.type, event.data.to_dict()):
                    break
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                self.reporter.note(f"cancelling {self.serial} (Ctrl-C again to stop waiting)")
                self.client.executions.cancel(self.serial)
        self._reconcile()

    def _apply(self, kind: str, data: dict[str, Any]) -> bool:
        """Take one event; True once the execution has completed."""
        serial = data.get("branch_serial")
        if data.get("execution_serial") != self.serial:
            return False
        if kind == "branch_started" and serial in self.branches:
            self.branches[serial]["status"] = "running"
            self._progress()
        elif kind == "branch_output" and serial in self.captured and data.get("stream") in ("stdout", "stderr"):
            self.captured[serial][data["stream"]].add(int(data.get("offset", -1)), str(data.get("data", "")))
        elif kind == "branch_completed" and serial in self.branches:
            self.branches[serial].update({k: data.get(k) for k in ("status", "exit_code", "error_type", "duration")})
            self._report(serial)
            self._progress()
        elif kind == "execution_completed":
            return True
        return False

    def _report(self, serial: str, stored: Any = None) -> None:
        if serial in self.reported:
            return
        branch = self.branches[serial]
        streams = self.captured[serial]
        name = self.names.get(branch["target_id"])
        complete = all(c.complete for c in streams.values())
        if stored is None and (not complete or branch.get("error_type") in REASON_STORED or name is None):
            stored = self.client.executions.get_branch(serial)
        if stored is not None:
            stdout, stderr = stored.result_output or "", stored.result_error or ""
            name = name or stored.target.name
        else:
            stdout, stderr = streams["stdout"].text(), streams["stderr"].text()
        result = BranchResult(serial, branch["target_serial_ref"], name, branch["status"], branch.get("exit_code"),
                              branch.get("error_type"), branch.get("duration"), stdout, stderr)
        self.reported.add(serial)
        if not result.ok:
            self.failed += 1
        self.reporter.branch(result)

    def _progress(self) -> None:
        statuses = [b["status"] for b in self.branches.values()]
        self.reporter.progress(Progress(total=len(statuses), done=len(self.reported), failed=self.failed,
                                        running=statuses.count("running"), elapsed=self.clock() - self.began))

    def _finished_on_server(self) -> bool:
        execution = self.client.executions.get_by_serial(self.serial)
        if execution.status in ACTIVE:
            return False
        self.final = execution
        return True

    def _reconcile(self) -> None:
        """Whatever the stream did not report (events missed while reconnecting), from the stored rows."""
        final = self.final or self.client.executions.get_by_serial(self.serial)
        self.final = final
        for branch in final.branches:
            data = branch.to_dict()
            self.branches[branch.branch_serial].update(data)
            if branch.branch_serial not in self.reported:
                self._report(branch.branch_serial, self.client.executions.get_branch(branch.branch_serial))

    def finish(self) -> Summary:
        assert self.final is not None
        statuses: dict[str, int] = {}
        for branch in self.branches.values():
            statuses[branch["status"]] = statuses.get(branch["status"], 0) + 1
        summary = Summary(self.serial, self.job_serial, self.final.status, len(self.branches), statuses, self.failed,
                          round(self.clock() - self.began, 3))
        self.reporter.finished(summary)
        return summary

