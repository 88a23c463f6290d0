"""Execution analytics over periods and per job."""
from __future__ import annotations

from flask import Blueprint

from api.context import transaction
from api.endpoint import endpoint
from api.schemas.analytics import ExecutionAnalyticsOut, ExecutionAnalyticsQuery, JobMetricsOut, JobMetricsQuery
from common.models import utcnow
from common.services import analytics

bp = Blueprint("analytics", __name__)


@bp.get("/api/analytics/executions")
@endpoint("Execution counts and success rates by start time over a period, in dense UTC buckets",
          query=ExecutionAnalyticsQuery, response=ExecutionAnalyticsOut)
def execution_analytics(query: ExecutionAnalyticsQuery):
    with transaction() as session:
        result = analytics.execution_analytics(session, period=query.period, group_by=query.group_by, now=utcnow())
        return ExecutionAnalyticsOut.model_validate(result)


@bp.get("/api/analytics/jobs/<job_serial>/metrics")
@endpoint("A job's execution metrics over a period, with per-target performance", query=JobMetricsQuery,
          response=JobMetricsOut, errors=(404, 422))
def job_metrics(job_serial: str, query: JobMetricsQuery):
    with transaction() as session:
        return JobMetricsOut.model_validate(analytics.job_metrics(session, job_serial, period=query.period,
                                                                  now=utcnow()))
