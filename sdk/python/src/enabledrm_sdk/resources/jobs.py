"""``client.jobs``: job CRUD, execution and per-job execution history."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from enabledrm_sdk._transport import segment
from enabledrm_sdk.models import Execution, Job, Page
from enabledrm_sdk.resources._base import Resource, body, idempotency_headers, iterate_offset, page_params

JobRef = Union[int, str]  # the numeric id or the serial (J20250001)


class JobsResource(Resource):
    def list(self, *, page: Optional[int] = None, per_page: Optional[int] = None, sort: Optional[str] = None,
             order: Optional[str] = None, status: Optional[str] = None, name: Optional[str] = None,
             job_type: Optional[str] = None) -> Page[Job]:
        """One page of live jobs (``sort``: created_at, updated_at, name, job_serial, status,
        scheduled_at, id; ``order``: asc | desc), optionally filtered."""
        return self._page("/jobs", Job, page_params(page, per_page, sort, order, status=status, name=name,
                                                    job_type=job_type))

    def iterate(self, *, per_page: int = 100, sort: Optional[str] = None, order: Optional[str] = None,
                status: Optional[str] = None, name: Optional[str] = None,
                job_type: Optional[str] = None) -> Iterator[Job]:
        """Every live job matching the filters, fetching pages as needed."""
        return self._iterate(lambda n: self.list(page=n, per_page=per_page, sort=sort, order=order,
                                                 status=status, name=name, job_type=job_type))

    def get(self, job_ref: JobRef) -> Job:
        """A job by id or serial (archived ones too)."""
        return Job(self._t.json("GET", f"/jobs/{segment(job_ref)}"))

    def create(self, name: str, actions: Sequence[Mapping[str, Any]], *, target_ids: Optional[Sequence[int]] = None,
               description: Optional[str] = None, job_type: Optional[str] = None,
               scheduled_at: Union[datetime, str, None] = None, schedule: Optional[Mapping[str, str]] = None,
               target_selector: Optional[Mapping[str, Any]] = None,
               parameters: Optional[Sequence[Mapping[str, Any]]] = None, **fields: Any) -> Job:
        """Create a job. Each action: ``{"action_type": "command", "action_name": ...,
        "action_parameters": {"command": ...}}`` (or ``"script"`` with ``script`` and an optional
        ``interpreter``), optionally ``timeout_seconds`` and ``continue_on_error``. A future
        ``scheduled_at`` (aware datetime or RFC 3339 string) makes it run once by itself; a ``schedule``
        (``{"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}``, timezone optional, default UTC) at
        every tick. ``update(ref, schedule=None)`` removes a schedule.

        ``target_selector`` instead of ``target_ids`` picks the targets when the job executes:
        ``{"tags_all": [...], "tags_any": [...], "name": "web-*"}`` (any non-empty combination).
        ``parameters`` declares the values it takes at execute time, each
        ``{"name": "VERSION", "required": True, "default": None, "secret": False, "pattern": "^[0-9.]+$"}``;
        its actions see them as environment variables ``OC_PARAM_<NAME>``."""
        return Job(self._t.json("POST", "/jobs", json=body(
            fields, name=name, actions=list(actions), target_ids=list(target_ids) if target_ids is not None else None,
            description=description, job_type=job_type, scheduled_at=scheduled_at,
            schedule=dict(schedule) if schedule is not None else None,
            target_selector=dict(target_selector) if target_selector is not None else None,
            parameters=[dict(p) for p in parameters] if parameters is not None else None)))

    def update(self, job_ref: JobRef, **fields: Any) -> Job:
        """Change fields; ``actions``, ``target_ids`` and ``parameters`` are replaced whole. Setting
        ``target_selector`` clears ``target_ids`` and the other way round."""
        return Job(self._t.json("PATCH", f"/jobs/{segment(job_ref)}", json=dict(fields)))

    def delete(self, job_ref: JobRef) -> None:
        """Archive a job: it leaves lists and cannot run; its executions stay addressable."""
        self._t.json("DELETE", f"/jobs/{segment(job_ref)}")

    def execute(self, job_ref: JobRef, target_ids: Optional[Sequence[int]] = None, *,
                idempotency_key: Optional[str] = None, target_selector: Optional[Mapping[str, Any]] = None,
                parameters: Optional[Mapping[str, str]] = None, max_concurrency: Optional[str] = None,
                max_errors: Optional[str] = None) -> Execution:
        """Start an execution (on ``target_ids``, default the job's own); returns it with its branches.
        With ``idempotency_key`` (1-255 printable ASCII characters) the call is safe to repeat: the same
        key for the same request within 24 hours returns the execution the first call made.
        ``target_selector`` (not with ``target_ids``) overrides the job's targets the same way;
        ``parameters`` gives the values of the job's declared parameters (strings). ``max_concurrency``
        and ``max_errors`` ("10" or "25%") brake the rollout: at most that many branches at once, and
        once more branches than ``max_errors`` have failed, the rest end skipped."""
        payload: Dict[str, Any] = {"target_ids": list(target_ids)} if target_ids is not None else {}
        if target_selector is not None:
            payload["target_selector"] = dict(target_selector)
        if parameters is not None:
            payload["parameters"] = dict(parameters)
        for name, value in (("max_concurrency", max_concurrency), ("max_errors", max_errors)):
            if value is not None:
                payload[name] = value
        return Execution(self._t.json("POST", f"/jobs/{segment(job_ref)}/execute", json=payload,
                                      headers=idempotency_headers(idempotency_key)))

    def executions(self, job_ref: JobRef, *, limit: Optional[int] = None,
                   offset: Optional[int] = None) -> List[Execution]:
        """The job's executions with their branches, newest first (``limit`` 1..500, default 50)."""
        data = self._t.json("GET", f"/jobs/{segment(job_ref)}/executions",
                            params={"limit": limit, "offset": offset})
        return [Execution(item) for item in data or []]

    def iter_executions(self, job_ref: JobRef, *, page_size: int = 100) -> Iterator[Execution]:
        """Every execution of the job, newest first, fetching ``page_size`` at a time."""
        return iterate_offset(lambda limit, offset: self.executions(job_ref, limit=limit, offset=offset), page_size)
