"""Per-target performance and execution history."""
from __future__ import annotations

from flask import Blueprint

from api.context import transaction
from api.endpoint import endpoint
from api.schemas.analytics import TargetHistoryOut, TargetHistoryQuery, TargetPerformanceOut, TargetPerformanceQuery
from common.models import utcnow
from common.services import target_history

bp = Blueprint("target_history", __name__)


@bp.get("/api/targets/<target_serial>/performance")
@endpoint("A target's branch success rate and durations over the last `days` days, with its newest 10 branches",
          query=TargetPerformanceQuery, response=TargetPerformanceOut, errors=(404, 422))
def performance(target_serial: str, query: TargetPerformanceQuery):
    with transaction() as session:
        result = target_history.target_performance(session, target_serial, days=query.days, now=utcnow())
        return TargetPerformanceOut.model_validate(result)


@bp.get("/api/targets/<target_serial>/executions")
@endpoint("Every branch run on a target, newest first, paginated by limit and offset", query=TargetHistoryQuery,
          response=TargetHistoryOut, errors=(404, 422))
def history(target_serial: str, query: TargetHistoryQuery):
    with transaction() as session:
        result = target_history.target_history(session, target_serial, limit=query.limit, offset=query.offset)
        return TargetHistoryOut.model_validate(result)
