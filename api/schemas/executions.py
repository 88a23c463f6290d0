"""Executions and branches, shaped as in the reference."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from api.schemas.base import ConcurrencyLimit, ErrorLimit, InModel, OutModel, RowId, UTCTime
from api.schemas.jobs import ParameterName, ParameterValue, TargetSelector, TargetSelectorOut


class ExecuteIn(InModel):
    target_ids: list[RowId] | None = Field(None, min_length=1, max_length=10000)
    max_concurrency: ConcurrencyLimit | None = Field(
        None, description="At most this many branches run at once (a count or a percentage of the branches, "
                          "rounded up); the next starts as one ends. Default: the job's, else no limit")
    max_errors: ErrorLimit | None = Field(
        None, description="Once more branches than this have failed or timed out (a count or a percentage, "
                          "rounded down), no new branch starts: queued ones end skipped. Default: the job's")
    target_selector: TargetSelector | None = Field(
        None, description="Run on the live, enabled targets this selects instead of the job's targets; not with "
                          "target_ids; a 422 when it selects none")
    parameters: dict[ParameterName, ParameterValue] | None = Field(
        None, max_length=100, description="Values for the job's declared parameters (strings); the actions see "
                                          "each as the environment variable OC_PARAM_<NAME>")

    # its parameters may be secrets: a 422 names the field and never echoes a value
    secret_bearing: ClassVar[bool] = True

    def selector(self) -> dict[str, Any] | None:
        return None if self.target_selector is None else self.target_selector.model_dump()


class RetryIn(InModel):
    only: Literal["failed", "all"] = Field(
        "failed", description="`failed`: the targets whose branches did not complete (failed, timed out, cancelled, "
                              "skipped, worker lost); `all`: every target of the execution")


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
    max_concurrency: str | None = Field(None, description="The rollout's concurrency limit as given")
    max_errors: str | None = Field(None, description="The rollout's error budget as given")
    stop_reason: str | None = Field(None, description="Why the rollout stopped starting branches (null: it did not)")
    target_selector: TargetSelectorOut | None = Field(
        None, description="The selector its targets were chosen by (null: chosen by id)")
    parameters: dict[str, str] = Field(
        default_factory=dict, description="The parameter values it runs with; a secret one shows as `****`")
    retry_of: str | None = Field(validation_alias="retry_of_serial",
                                 description="The execution this one retries (trigger `retry`), by serial")
    retries: list[str] = Field(validation_alias="retry_serials",
                               description="The retries of this execution, by serial, oldest first")


class ExecutionDetailOut(ExecutionOut):
    job: ExecutionJobOut


class BranchOutputQuery(InModel):
    stream: Literal["stdout", "stderr"] = Field("stdout", description="Which of the branch's output streams")
    offset: int = Field(0, ge=0, le=2**53 - 1, description="Byte offset in the stream to read from: 0, or the "
                                                            "next_offset of the previous read or branch_output event")


class BranchOutputOut(OutModel):
    branch_serial: str
    stream: Literal["stdout", "stderr"]
    offset: int = Field(description="Where `data` starts in the stream, in bytes: the offset asked for, or "
                                    "later when the bytes there were dropped by the output cap")
    data: str = Field(description="The text from `offset` to what has been printed so far (secrets masked; a "
                                  "read across dropped bytes holds the truncation marker in their place)")
    next_offset: int = Field(description="The offset to read from next (the stream's length so far)")
    running: bool = Field(description="Whether more may come: the branch is queued or running")
    truncated: bool = Field(description="Bytes from the offset asked for were dropped by the output cap "
                                        "(skipped, or replaced by the marker)")
