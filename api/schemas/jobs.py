"""Jobs and their actions, as in the reference's create-job body."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from api.schemas.base import (
    ConcurrencyLimit,
    ErrorLimit,
    InModel,
    Omittable,
    OutModel,
    PageQuery,
    RowId,
    TimestampIn,
    UTCTime,
)
from api.schemas.targets import MAX_TAGS, Tag
from common.cron import DEFAULT_TIMEZONE, check_expression, zone
from common.services.parameters import MAX_VALUE_CHARS, NAME_PATTERN

# a glob on target names: `*` any run of characters, `?` exactly one, the rest literal
NameGlob = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class TargetSelector(InModel):
    """Targets named by what they are rather than by id, resolved when the job is executed: live, enabled
    targets carrying every tag of tags_all, at least one of tags_any, and a name matching the glob
    (`*`, `?`; case-insensitive). At least one of the three; tags match exactly."""

    tags_all: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    tags_any: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    name: NameGlob | None = None

    @model_validator(mode="after")
    def _not_empty(self):
        if not (self.tags_all or self.tags_any or self.name):
            raise ValueError("a target_selector needs tags_all, tags_any or name (non-empty)")
        return self


class TargetSelectorOut(OutModel):
    tags_all: list[str] | None = None
    tags_any: list[str] | None = None
    name: str | None = None


# a parameter value arrives as given: never stripped; NUL is refused for every body by api/endpoint.py
ParameterValue = Annotated[str, StringConstraints(strip_whitespace=False, max_length=MAX_VALUE_CHARS)]
ParameterName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class ParameterIn(InModel):
    """A value the job asks for at execute time; its actions see it as the environment variable
    OC_PARAM_<name>, never in their command text. Names are unique; `pattern` (a Python regular
    expression) must compile and match a whole value, the default included; a secret parameter has
    no default and its value is stored encrypted and never shown."""

    name: ParameterName
    required: bool = False
    default: ParameterValue | None = None
    secret: bool = False
    pattern: str | None = Field(None, min_length=1, max_length=1000)
    description: str | None = Field(None, max_length=1000)


class ParameterOut(OutModel):
    name: str
    required: bool
    default: str | None
    secret: bool
    pattern: str | None
    description: str | None = None


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


class ScheduleIn(InModel):
    """A recurring schedule: a five-field cron expression (minute hour day-of-month month day-of-week) read
    on the wall clock of an IANA timezone."""

    cron: str = Field(min_length=1, max_length=120, examples=["*/5 * * * *"],
                      description="Five fields: minute hour day-of-month month day-of-week (Debian cron's syntax: "
                                  "`*`, lists, ranges, steps, month and day names, `L`)")
    timezone: str = Field(DEFAULT_TIMEZONE, min_length=1, max_length=64, examples=["Europe/Berlin"],
                          description="An IANA time zone name; ticks follow its wall clock, daylight saving included")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        check_expression(value)
        return " ".join(value.split())

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value


class ScheduleOut(OutModel):
    cron: str
    timezone: str


class JobIn(InModel):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    job_type: str = Field("command", min_length=1, max_length=32)
    actions: list[ActionIn] = Field(min_length=1, max_length=100)
    target_ids: list[RowId] = Field(default_factory=list, max_length=10000)
    target_selector: TargetSelector | None = None
    parameters: list[ParameterIn] = Field(default_factory=list, max_length=100)
    scheduled_at: TimestampIn | None = None
    schedule: ScheduleIn | None = None
    max_concurrency: ConcurrencyLimit | None = Field(None, description="Default rollout concurrency of its executions")
    max_errors: ErrorLimit | None = Field(None, description="Default error budget of its executions")


class JobUpdate(InModel):
    # fields typed without "| None" may be omitted but not set to null
    name: str = Omittable(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    job_type: str = Omittable(min_length=1, max_length=32)
    actions: list[ActionIn] = Omittable(min_length=1, max_length=100)
    target_ids: list[RowId] | None = Field(None, max_length=10000)
    target_selector: TargetSelector | None = None
    parameters: list[ParameterIn] | None = Field(None, max_length=100)
    scheduled_at: TimestampIn | None = None
    schedule: ScheduleIn | None = None
    max_concurrency: ConcurrencyLimit | None = None
    max_errors: ErrorLimit | None = None


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
    schedule: ScheduleOut | None = None
    next_run_at: UTCTime | None = None
    actions: list[ActionOut]
    target_ids: list[int]
    target_selector: TargetSelectorOut | None = None
    parameters: list[ParameterOut] = []
    max_concurrency: str | None = None
    max_errors: str | None = None
    execution_count: int
    archived_at: UTCTime | None = None


class JobQuery(PageQuery):
    sort: Literal["created_at", "updated_at", "name", "job_serial", "status", "scheduled_at", "id"] = "created_at"
    status: Literal["scheduled", "ready", "running", "completed", "failed", "cancelled"] | None = None
    name: str | None = Field(None, max_length=255)
    job_type: str | None = Field(None, max_length=32)
