"""Typed response objects with attribute access.

Every response is wrapped in an :class:`ApiObject`: fields are attributes (``execution.status``)
and items (``execution["status"]``); nested objects and lists of objects are wrapped too;
``to_dict()`` gives back the plain JSON. The subclasses below declare the fields of the API's
shapes for type checkers and IDEs; a field the server adds later is still reachable as an
attribute. Timestamps are kept as the server's RFC 3339 strings (``"2025-01-08T10:00:00Z"``);
:func:`parse_time` turns one into an aware ``datetime``.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, ClassVar, Dict, Generic, Iterator, List, Mapping, Optional, Type, TypeVar, Union, overload

__all__ = [
    "ApiObject", "Token", "User", "Credential", "Target", "Action", "Schedule", "TargetSelector", "Parameter",
    "Job", "Branch", "Step", "BranchTarget", "BranchDetail", "BranchOutput", "ExecutionJob", "Execution",
    "SearchResult", "SearchResults", "BulkItem", "BulkResult", "RecentBranch", "TargetPerformance",
    "TargetHistoryItem", "TargetHistory", "AnalyticsBucket", "ExecutionAnalytics", "TargetMetrics", "JobMetrics",
    "Pagination", "Page", "Event", "parse_time", "TERMINAL_EXECUTION_STATUSES", "TERMINAL_BRANCH_STATUSES",
]

TERMINAL_EXECUTION_STATUSES = frozenset({"completed", "failed", "cancelled"})
TERMINAL_BRANCH_STATUSES = frozenset({"completed", "failed", "timed_out", "cancelled"})


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """An RFC 3339 timestamp from the API (``...Z``) as an aware UTC ``datetime``; ``None`` stays ``None``."""
    if value is None:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class ApiObject:
    """A read-only JSON object with attribute access; nested objects are wrapped on access."""

    __slots__ = ("_data", "_cache")
    #: field name -> ApiObject subclass used for that field (an object, or each element of a list)
    _nested: ClassVar[Dict[str, Type[ApiObject]]] = {}

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        merged = dict(data or {})
        merged.update(fields)
        object.__setattr__(self, "_data", merged)
        object.__setattr__(self, "_cache", {})

    # -- access -------------------------------------------------------------------------------------
    def _field(self, name: str) -> Any:
        cache = self._cache
        if name in cache:
            return cache[name]
        value = _wrap(self._data[name], self._nested.get(name))
        cache[name] = value
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_data", "_cache"):
            raise AttributeError(name)
        try:
            return self._field(name)
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._field(name)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._data))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ApiObject):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def __getstate__(self) -> Dict[str, Any]:
        return {"_data": self._data}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        object.__setattr__(self, "_data", state["_data"])
        object.__setattr__(self, "_cache", {})

    def to_dict(self) -> Dict[str, Any]:
        """The plain JSON object (a deep copy)."""
        return copy.deepcopy(self._data)


def _wrap(value: Any, cls: Optional[Type[ApiObject]] = None) -> Any:
    if isinstance(value, Mapping):
        return (cls or ApiObject)(value)
    if isinstance(value, list):
        return [_wrap(item, cls) for item in value]
    return value


T = TypeVar("T", bound=ApiObject)


def wrap(value: Any, cls: Type[T]) -> T:
    """Wrap one JSON object in ``cls``."""
    return cls(value)


def wrap_list(values: Any, cls: Type[T]) -> List[T]:
    return [cls(v) for v in (values or [])]


# --------------------------------------------------------------------------------------- auth/users
class Token(ApiObject):
    access_token: str
    refresh_token: Optional[str]
    token_type: str
    expires_in: int


class User(ApiObject):
    id: int
    username: str
    role: str  # "admin" | "operator" | "viewer"
    is_active: bool
    created_at: str


class Credential(ApiObject):
    id: int
    name: str
    username: str
    auth_type: str  # "key" | "password"
    has_passphrase: bool
    description: Optional[str]
    allowed_hosts: List[str]  # CIDRs and hostname globs operators may attach it to; empty: admins only
    created_at: str
    updated_at: str


# ------------------------------------------------------------------------------------------ targets
class Target(ApiObject):
    id: int
    target_uuid: str
    target_serial: str
    name: str
    ip_address: Optional[str]
    hostname: Optional[str]
    port: int
    credential_id: Optional[int]
    connection: str  # "ssh" | "local"
    tags: List[str]
    queue: str
    enabled: bool
    max_concurrent_runs: Optional[int]  # branches of any execution at once (None: no limit; 1: exclusive)
    description: Optional[str]
    host_key_fingerprint: Optional[str]
    created_at: str
    updated_at: str
    archived_at: Optional[str]
    queue_has_worker: Optional[bool]  # a live worker consumes its queue now (None: the server cannot tell)


class RecentBranch(ApiObject):
    branch_serial: str
    execution_serial: str
    job_serial: str
    status: str
    duration: Optional[float]
    started_at: Optional[str]


class TargetPerformance(ApiObject):
    target_serial: str
    target_name: str
    period_days: int
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: Optional[float]
    average_duration: Optional[float]
    recent_executions: List[RecentBranch]
    _nested = {"recent_executions": RecentBranch}


class TargetHistoryItem(ApiObject):
    branch_serial: str
    execution_serial: str
    job_serial: str
    job_name: str
    status: str
    started_at: Optional[str]
    completed_at: Optional[str]
    exit_code: Optional[int]


class TargetHistory(ApiObject):
    target_serial: str
    total: int
    limit: int
    offset: int
    executions: List[TargetHistoryItem]
    _nested = {"executions": TargetHistoryItem}


# --------------------------------------------------------------------------------------------- jobs
class Action(ApiObject):
    position: int
    action_type: str  # "command" | "script"
    action_name: str
    action_parameters: ApiObject
    timeout_seconds: Optional[float]
    continue_on_error: bool


class Schedule(ApiObject):
    cron: str  # five fields: minute hour day-of-month month day-of-week
    timezone: str  # an IANA name; ticks follow its wall clock


class TargetSelector(ApiObject):
    """Targets chosen by tags and a name glob when the job executes (each part optional, at least one)."""

    tags_all: Optional[List[str]]  # a target carries every one of these
    tags_any: Optional[List[str]]  # ... and at least one of these
    name: Optional[str]  # ... and its name matches this glob (`*`, `?`; case-insensitive)


class Parameter(ApiObject):
    """A value the job's actions get as the environment variable OC_PARAM_<name>."""

    name: str
    required: bool
    default: Optional[str]
    secret: bool  # stored encrypted, shown as "****" on executions
    pattern: Optional[str]  # a regular expression the whole value must match
    description: Optional[str]


class Job(ApiObject):
    id: int
    job_uuid: str
    job_serial: str
    name: str
    description: Optional[str]
    job_type: str
    status: str
    created_at: str
    updated_at: str
    scheduled_at: Optional[str]
    schedule: Optional[Schedule]
    next_run_at: Optional[str]  # the schedule's next tick (UTC)
    actions: List[Action]
    target_ids: List[int]
    target_selector: Optional[TargetSelector]  # set instead of target_ids
    parameters: List[Parameter]
    execution_count: int
    archived_at: Optional[str]
    _nested = {"actions": Action, "schedule": Schedule, "target_selector": TargetSelector, "parameters": Parameter}


# --------------------------------------------------------------------------------------- executions
class Step(ApiObject):
    position: int
    action_name: str
    action_type: str
    status: str
    exit_code: Optional[int]
    error_type: Optional[str]
    stdout: Optional[str]
    stderr: Optional[str]
    started_at: Optional[str]
    completed_at: Optional[str]
    duration: Optional[float]


class BranchTarget(ApiObject):
    id: int
    target_serial: str
    name: str
    ip_address: Optional[str]
    hostname: Optional[str]


class Branch(ApiObject):
    id: int
    branch_uuid: str
    branch_serial: str
    branch_id: str
    target_id: int
    target_serial_ref: str
    status: str  # queued | running | completed | failed | timed_out | cancelled
    error_type: Optional[str]
    exit_code: Optional[int]
    started_at: Optional[str]
    completed_at: Optional[str]
    duration: Optional[float]

    @property
    def finished(self) -> bool:
        return self._data.get("status") in TERMINAL_BRANCH_STATUSES


class BranchDetail(Branch):
    execution_serial: str
    result_output: Optional[str]
    result_error: Optional[str]
    steps: List[Step]
    target: BranchTarget
    _nested = {"steps": Step, "target": BranchTarget}


class BranchOutput(ApiObject):
    """A branch's stdout or stderr from a byte offset (secrets masked). Read on from ``next_offset``
    while ``running``; ``truncated`` says bytes from the offset asked for were dropped by the
    server's output cap (``offset`` then starts later, or ``data`` holds the truncation marker)."""

    branch_serial: str
    stream: str  # stdout | stderr
    offset: int
    data: str
    next_offset: int
    running: bool
    truncated: bool


class ExecutionJob(ApiObject):
    id: int
    job_serial: str
    name: str


class Execution(ApiObject):
    id: int
    execution_uuid: str
    execution_serial: str
    execution_number: int
    status: str  # running | completed | failed | cancelled
    trigger: str
    started_at: str
    completed_at: Optional[str]
    branches: List[Branch]
    target_selector: Optional[TargetSelector]  # the selector its targets were chosen by (None: by id)
    parameters: Dict[str, str]  # the values it runs with; secret ones as "****"
    retry_of: Optional[str]  # the execution serial a retry re-runs
    retries: List[str]  # serials of this execution's retries, oldest first
    max_concurrency: Optional[str]  # the rollout's limits as given ("10", "25%"), None: none
    max_errors: Optional[str]
    stop_reason: Optional[str]  # why the rollout stopped starting branches (its error budget was spent)
    job: ExecutionJob  # present on lookups by serial
    _nested = {"branches": Branch, "job": ExecutionJob, "target_selector": TargetSelector}

    @property
    def finished(self) -> bool:
        return self._data.get("status") in TERMINAL_EXECUTION_STATUSES


class SearchResult(ApiObject):
    type: str  # "execution" | "branch"
    serial: str
    status: str
    job_serial: str
    job_name: str
    target_serial: Optional[str]
    target_name: Optional[str]
    started_at: Optional[str]
    completed_at: Optional[str]


class SearchResults(ApiObject):
    query: str
    type: str
    total: int
    results: List[SearchResult]
    _nested = {"results": SearchResult}


class BulkItem(ApiObject):
    serial: str
    found: bool
    data: Optional[ApiObject]


class BulkResult(ApiObject):
    results: List[BulkItem]
    not_found: List[str]
    _nested = {"results": BulkItem}


# ---------------------------------------------------------------------------------------- analytics
class AnalyticsBucket(ApiObject):
    date: str
    executions: int
    successful: int
    failed: int
    success_rate: Optional[float]


class ExecutionAnalytics(ApiObject):
    period: str
    group_by: str
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: Optional[float]
    data: List[AnalyticsBucket]
    _nested = {"data": AnalyticsBucket}


class TargetMetrics(ApiObject):
    target_serial: str
    target_name: str
    executions: int
    success_rate: Optional[float]
    average_duration: Optional[float]


class JobMetrics(ApiObject):
    job_serial: str
    job_name: str
    period: str
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: Optional[float]
    average_duration: Optional[float]
    target_performance: List[TargetMetrics]
    _nested = {"target_performance": TargetMetrics}


# --------------------------------------------------------------------------------------- pagination
class Pagination(ApiObject):
    page: int
    per_page: int
    total: int
    pages: int
    has_next: bool
    has_prev: bool


class Page(ApiObject, Generic[T]):
    """One page of a list endpoint: ``data`` (typed items) and ``pagination``. Iterating a page
    yields its items; ``len(page)`` is the number of items on it."""

    __slots__ = ("_item_type",)
    data: List[T]
    pagination: Pagination

    def __init__(self, data: Optional[Mapping[str, Any]] = None, item_type: Type[ApiObject] = ApiObject) -> None:
        super().__init__(data)
        object.__setattr__(self, "_item_type", item_type)

    def _field(self, name: str) -> Any:
        if name == "data":
            cache = self._cache
            if "data" not in cache:
                cache["data"] = wrap_list(self._data.get("data"), self._item_type)
            return cache["data"]
        if name == "pagination":
            cache = self._cache
            if "pagination" not in cache:
                cache["pagination"] = Pagination(self._data.get("pagination") or {})
            return cache["pagination"]
        return super()._field(name)

    def __iter__(self) -> Iterator[T]:  # type: ignore[override]
        return iter(self._field("data"))

    def __len__(self) -> int:
        return len(self._data.get("data") or [])

    @overload
    def __getitem__(self, key: int) -> T: ...

    @overload
    def __getitem__(self, key: str) -> Any: ...

    def __getitem__(self, key: Union[int, str]) -> Any:
        if isinstance(key, int):
            return self._field("data")[key]
        return self._field(key)

    def __getstate__(self) -> Dict[str, Any]:
        return {"_data": self._data, "_item_type": self._item_type}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "_item_type", state.get("_item_type", ApiObject))


# ------------------------------------------------------------------------------------------- events
class Event(ApiObject):
    """A live WebSocket event: ``type`` (execution_started, branch_started, branch_completed,
    execution_completed; branch_output on a stream that asked for output) and its ``data``."""

    type: str
    data: ApiObject
