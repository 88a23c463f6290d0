"""``client.executions``: lookups by serial, search, bulk, cancel, wait and live events."""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from enabledrm_sdk._transport import Transport, segment
from enabledrm_sdk.errors import WaitTimeout
from enabledrm_sdk.events import EventStream
from enabledrm_sdk.models import (
    TERMINAL_EXECUTION_STATUSES,
    BranchDetail,
    BranchOutput,
    BulkResult,
    Execution,
    SearchResults,
)
from enabledrm_sdk.resources._base import Resource, idempotency_headers


class ExecutionsResource(Resource):
    def __init__(self, transport: Transport, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(transport)
        self._clock = clock
        self._sleep = sleep

    def get_by_serial(self, execution_serial: str) -> Execution:
        """An execution by serial (``J20250001.0001``), with its job and branches."""
        return Execution(self._t.json("GET", f"/executions/serial/{segment(execution_serial)}"))

    def get_branch(self, branch_serial: str) -> BranchDetail:
        """A branch by serial (``J20250001.0001.0001``), with its target, output and steps."""
        return BranchDetail(self._t.json("GET", f"/executions/branch/{segment(branch_serial)}"))

    def get_output(self, branch_serial: str, *, stream: str = "stdout", offset: int = 0) -> BranchOutput:
        """A branch's ``stream`` (stdout | stderr) from byte ``offset``, while it runs and after it ended
        (secrets masked). To follow it, read again from ``next_offset`` until ``running`` is false."""
        return BranchOutput(self._t.json("GET", f"/executions/branch/{segment(branch_serial)}/output",
                                         params={"stream": stream, "offset": offset}))

    def search(self, q: str, *, type: Optional[str] = None, limit: Optional[int] = None) -> SearchResults:
        """Executions and branches by serial prefix, job name or target name (case-insensitive),
        newest first; ``type`` is execution | branch | all (default), ``limit`` 1..500 (default 50)."""
        return SearchResults(self._t.json("GET", "/executions/search",
                                          params={"q": q, "type": type, "limit": limit}))

    def bulk(self, serials: Iterable[str]) -> BulkResult:
        """Look up 1..1000 execution and/or branch serials at once; results in request order,
        unknown or malformed serials are ``found=False`` and listed in ``not_found``."""
        return BulkResult(self._t.json("POST", "/executions/bulk", json={"serials": list(serials)}))

    def cancel(self, execution_serial: str) -> Execution:
        """Cancel: queued branches never start, running ones are killed."""
        return Execution(self._t.json("POST", f"/executions/serial/{segment(execution_serial)}/cancel"))

    def retry(self, execution_serial: str, only: str = "failed", *,
              idempotency_key: Optional[str] = None) -> Execution:
        """Start a new execution of the job with the actions this one ran (trigger ``retry``), on the
        targets whose branches did not complete (``only="failed"``) or on all of them (``"all"``).
        Raises Conflict while it still runs, ValidationError when nothing failed. ``idempotency_key``:
        as for ``jobs.execute``."""
        return Execution(self._t.json("POST", f"/executions/serial/{segment(execution_serial)}/retry",
                                      json={"only": only}, headers=idempotency_headers(idempotency_key)))

    def wait(self, execution_serial: str, timeout: Optional[float] = 60.0, *,
             poll_interval: float = 0.5) -> Execution:
        """Poll until the execution is finished (completed, failed or cancelled) and return it;
        raises :class:`WaitTimeout` after ``timeout`` seconds (``None``: wait forever)."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            execution = self.get_by_serial(execution_serial)
            if execution.status in TERMINAL_EXECUTION_STATUSES:
                return execution
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise WaitTimeout(f"execution {execution_serial} still {execution.status!r} after {timeout}s")
                self._sleep(min(poll_interval, remaining))
            else:
                self._sleep(poll_interval)

    def events(self, *, execution_serial: Optional[str] = None, job_serial: Optional[str] = None,
               timeout: Optional[float] = None, connect_timeout: Optional[float] = None,
               since: Optional[int] = None, include_output: bool = False, reconnect: bool = True,
               max_reconnect_delay: float = 5.0) -> EventStream:
        """Open the live event stream (``/ws/executions``), optionally filtered by execution or job
        serial. Returns once the server confirmed the subscription, so every later event is
        delivered. Iterate it for :class:`~enabledrm_sdk.models.Event` objects; use it as a context
        manager (or call ``close()``). ``timeout``: seconds to wait for each event before
        :class:`WaitTimeout` (``None``: forever), reconnects included.

        ``since`` (with ``execution_serial`` only): start after that seq (0: the whole history);
        without it a stream on one execution starts after its latest event. A dropped connection is
        reopened with backoff (up to ``max_reconnect_delay`` seconds apart; ``reconnect=False``:
        iteration ends instead), on one execution with ``since=<last seq yielded>``; no event is
        yielded twice. ``include_output``: also ``branch_output`` events (live output; not numbered,
        not replayed on a reconnect: read the output endpoint from their ``offset``)."""
        return EventStream.connect(self._t, execution_serial=execution_serial, job_serial=job_serial,
                                   timeout=timeout,
                                   connect_timeout=connect_timeout if connect_timeout is not None else self._t.timeout,
                                   since=since, include_output=include_output, reconnect=reconnect,
                                   max_reconnect_delay=max_reconnect_delay)
