"""Executions and branches, shaped as in the reference."""
from __future__ import annotations

from pydantic import Field

from api.schemas.base import InModel, OutModel, RowId, UTCTime


class ExecuteIn(InModel):
    target_ids: list[RowId] | None = Field(None, min_length=1, max_length=10000)


class StepOut(OutModel):
    position: int
    action_name: str
    action_type: str
    status: str
    exit_code: int | None
    error_type: str | None
    stdout: str | None
    stderr: str | None
    started_at: UTCTime | None
    completed_at: UTCTime | None
    duration: float | None


class BranchOut(OutModel):
    id: int
    branch_uuid: str
    branch_serial: str
    branch_id: str
    target_id: int
    target_serial_ref: str
    status: str
    error_type: str | None
    exit_code: int | None
    started_at: UTCTime | None
    completed_at: UTCTime | None
    duration: float | None


class BranchTargetOut(OutModel):
    id: int
    target_serial: str
    name: str
    ip_address: str | None
    hostname: str | None


class BranchDetailOut(BranchOut):
    execution_serial: str
    result_output: str | None
    result_error: str | None
    steps: list[StepOut]
    target: BranchTargetOut


class ExecutionJobOut(OutModel):
    id: int
    job_serial: str
    name: str


class ExecutionOut(OutModel):
    id: int
    execution_uuid: str
    execution_serial: str
    execution_number: int
    status: str
    trigger: str
    started_at: UTCTime
    completed_at: UTCTime | None
    branches: list[BranchOut]


class ExecutionDetailOut(ExecutionOut):
    job: ExecutionJobOut
