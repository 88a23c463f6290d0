"""Analytics and per-target performance/history, shaped as in the reference."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import InModel, Offset, OutModel, UTCTime

Period = Literal["24h", "7d", "30d", "90d"]
GroupBy = Literal["hour", "day", "week", "month"]


class ExecutionAnalyticsQuery(InModel):
    period: Period = "7d"
    group_by: GroupBy = "day"


class JobMetricsQuery(InModel):
    period: Period = "30d"


class BucketOut(OutModel):
    date: str = Field(description="start of the bucket: 2025-01-08T10:00:00Z (hour), 2025-01-08 (day), "
                                  "its Monday 2025-01-06 (week), 2025-01 (month)")
    executions: int
    successful: int
    failed: int
    success_rate: float | None = Field(description="successful / finished x 100, 2 places; null when none finished")


class ExecutionAnalyticsOut(OutModel):
    period: Period
    group_by: GroupBy
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None
    data: list[BucketOut]


class TargetMetricsOut(OutModel):
    target_serial: str
    target_name: str
    executions: int
    success_rate: float | None
    average_duration: float | None


class JobMetricsOut(OutModel):
    job_serial: str
    job_name: str
    period: Period
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None
    average_duration: float | None = Field(description="seconds from start to completion of finished executions")
    target_performance: list[TargetMetricsOut]


class TargetPerformanceQuery(InModel):
    days: int = Field(30, ge=1, le=365)


class RecentBranchOut(OutModel):
    branch_serial: str
    execution_serial: str
    job_serial: str
    status: str
    duration: float | None
    started_at: UTCTime | None


class TargetPerformanceOut(OutModel):
    target_serial: str
    target_name: str
    period_days: int
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None
    average_duration: float | None
    recent_executions: list[RecentBranchOut]


class TargetHistoryQuery(InModel):
    limit: int = Field(20, ge=1, le=100)
    offset: Offset = 0


class TargetHistoryItemOut(OutModel):
    branch_serial: str
    execution_serial: str
    job_serial: str
    job_name: str
    status: str
    started_at: UTCTime | None
    completed_at: UTCTime | None
    exit_code: int | None


class TargetHistoryOut(OutModel):
    target_serial: str
    total: int
    limit: int
    offset: int
    executions: list[TargetHistoryItemOut]
