"""Lookups by serial: per-job history paging, search and bulk lookup (SPEC §6 shapes)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, RootModel

from api.schemas.base import InModel, Offset, OutModel, UTCTime
from api.schemas.executions import ExecutionOut

MAX_BULK = 1000


class JobExecutionsQuery(InModel):
    limit: int = Field(50, ge=1, le=500)
    offset: Offset = 0


class ExecutionListOut(RootModel[list[ExecutionOut]]):
    """The reference's bare list of executions, newest first."""


class SearchQuery(InModel):
    q: str = Field(min_length=1, max_length=255, description="serial prefix, job name or target name")
    type: Literal["execution", "branch", "all"] = "all"
    limit: int = Field(50, ge=1, le=500)


class SearchResultOut(OutModel):
    type: Literal["execution", "branch"]
    serial: str
    status: str
    job_serial: str
    job_name: str
    target_serial: str | None = Field(description="null for an execution: it spans its branches' targets")
    target_name: str | None
    started_at: UTCTime | None
    completed_at: UTCTime | None


class SearchOut(OutModel):
    query: str
    type: Literal["execution", "branch", "all"]
    total: int = Field(description="every match, of which `results` holds the newest `limit`")
    results: list[SearchResultOut]


class BulkIn(InModel):
    serials: list[str] = Field(min_length=1, max_length=MAX_BULK)


class BulkExecutionDataOut(OutModel):
    execution_serial: str
    status: str
    job_serial: str


class BulkBranchDataOut(OutModel):
    branch_serial: str
    status: str
    target_serial_ref: str


class BulkItemOut(OutModel):
    serial: str
    found: bool
    data: BulkBranchDataOut | BulkExecutionDataOut | None = None


class BulkOut(OutModel):
    results: list[BulkItemOut]
    not_found: list[str]
