"""Jobs and their actions, as in the reference's create-job body."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from api.schemas.base import InModel, Omittable, OutModel, PageQuery, RowId, TimestampIn, UTCTime


class ActionIn(InModel):
    action_type: Literal["command", "script"]
    action_name: str = Field(min_length=1, max_length=255)
    action_parameters: dict[str, Any]
    timeout_seconds: float | None = Field(None, gt=0, le=86400)
    continue_on_error: bool = False

    @model_validator(mode="after")
    def _parameters_match_type(self):
        key = "command" if self.action_type == "command" else "script"
        value = self.action_parameters.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"action_parameters.{key} must be a non-empty string for a {self.action_type} action")
        interpreter = self.action_parameters.get("interpreter")
        if interpreter is not None and (not isinstance(interpreter, str) or not interpreter.strip()):
            raise ValueError("action_parameters.interpreter must be a non-empty string")
        unknown = set(self.action_parameters) - {"command", "script", "interpreter"}
        if unknown:
            raise ValueError(f"unknown action_parameters: {', '.join(sorted(unknown))}")
        return self


class JobIn(InModel):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    job_type: str = Field("command", min_length=1, max_length=32)
    actions: list[ActionIn] = Field(min_length=1, max_length=100)
    target_ids: list[RowId] = Field(default_factory=list, max_length=10000)
    scheduled_at: TimestampIn | None = None


class JobUpdate(InModel):
    # fields typed without "| None" may be omitted but not set to null
    name: str = Omittable(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    job_type: str = Omittable(min_length=1, max_length=32)
    actions: list[ActionIn] = Omittable(min_length=1, max_length=100)
    target_ids: list[RowId] | None = Field(None, max_length=10000)
    scheduled_at: TimestampIn | None = None


class ActionOut(OutModel):
    position: int
    action_type: str
    action_name: str
    action_parameters: dict[str, Any]
    timeout_seconds: float | None
    continue_on_error: bool


class JobOut(OutModel):
    id: int
    job_uuid: str
    job_serial: str
    name: str
    description: str | None
    job_type: str
    status: str
    created_at: UTCTime
    updated_at: UTCTime
    scheduled_at: UTCTime | None
    actions: list[ActionOut]
    target_ids: list[int]
    execution_count: int
    archived_at: UTCTime | None = None


class JobQuery(PageQuery):
    sort: Literal["created_at", "updated_at", "name", "job_serial", "status", "scheduled_at", "id"] = "created_at"
    status: Literal["scheduled", "ready", "running", "completed", "failed", "cancelled"] | None = None
    name: str | None = Field(None, max_length=255)
    job_type: str | None = Field(None, max_length=32)
