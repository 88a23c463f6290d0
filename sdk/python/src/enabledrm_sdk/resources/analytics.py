"""``client.analytics``: execution counts and success rates."""
from __future__ import annotations

from typing import Optional

from enabledrm_sdk._transport import segment
from enabledrm_sdk.models import ExecutionAnalytics, JobMetrics
from enabledrm_sdk.resources._base import Resource


class AnalyticsResource(Resource):
    def executions(self, period: Optional[str] = None, group_by: Optional[str] = None) -> ExecutionAnalytics:
        """Execution counts over ``period`` (24h | 7d | 30d | 90d; server default 7d) in dense UTC
        buckets by ``group_by`` (hour | day | week | month; default day)."""
        return ExecutionAnalytics(self._t.json("GET", "/analytics/executions",
                                               params={"period": period, "group_by": group_by}))

    def job_metrics(self, job_serial: str, period: Optional[str] = None) -> JobMetrics:
        """A job's execution metrics over ``period`` (default 30d), with per-target performance."""
        return JobMetrics(self._t.json("GET", f"/analytics/jobs/{segment(job_serial)}/metrics",
                                       params={"period": period}))
