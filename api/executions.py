"""Execution and branch lookups: by serial, search, bulk, per-job history, a branch's output."""
from __future__ import annotations

from flask import Blueprint, current_app

from api.context import transaction
from api.endpoint import endpoint
from api.schemas.executions import BranchDetailOut, BranchOutputOut, BranchOutputQuery, ExecutionDetailOut
from api.schemas.lookups import BulkIn, BulkOut, ExecutionListOut, JobExecutionsQuery, SearchOut, SearchQuery
from common.services import branch_output, lookups

bp = Blueprint("executions", __name__)


@bp.get("/api/jobs/<job_id>/executions")
@endpoint("A job's executions with their branches, newest first (`job_id` is the id or the serial); "
          "the X-Total-Count header gives the count of all of them", query=JobExecutionsQuery,
          response=ExecutionListOut, errors=(404, 422))
def job_executions(job_id: str, query: JobExecutionsQuery):
    with transaction() as session:
        page = lookups.job_executions(session, job_id, limit=query.limit, offset=query.offset)
        body = ExecutionListOut.model_validate(page.executions).model_dump(mode="json")
    return body, 200, {"X-Total-Count": str(page.total)}


@bp.get("/api/executions/serial/<execution_serial>")
@endpoint("An execution by serial, with its job and branches", response=ExecutionDetailOut, errors=(404, 422))
def execution_by_serial(execution_serial: str):
    with transaction() as session:
        return ExecutionDetailOut.model_validate(lookups.execution_by_serial(session, execution_serial))


@bp.get("/api/executions/branch/<branch_serial>")
@endpoint("A branch by serial, with its target, output and steps", response=BranchDetailOut, errors=(404, 422))
def branch_by_serial(branch_serial: str):
    with transaction() as session:
        return BranchDetailOut.model_validate(lookups.branch_by_serial(session, branch_serial))


@bp.get("/api/executions/branch/<branch_serial>/output")
@endpoint("A branch's stdout or stderr from a byte offset, while it runs and after it ended (secrets masked); "
          "read on from next_offset, or follow branch_output events", query=BranchOutputQuery,
          response=BranchOutputOut, errors=(404, 422))
def branch_output_from(branch_serial: str, query: BranchOutputQuery):
    with transaction() as session:
        return BranchOutputOut.model_validate(branch_output.read_output(
            session, current_app.extensions["opsconductor.output"], branch_serial, query.stream, query.offset))


@bp.get("/api/executions/search")
@endpoint("Search executions and branches by serial prefix, job name or target name (case-insensitive), "
          "newest first", query=SearchQuery, response=SearchOut)
def search(query: SearchQuery):
    with transaction() as session:
        found = lookups.search(session, query.q, query.type, query.limit)
        return SearchOut.model_validate({"query": query.q, "type": query.type, "total": found.total,
                                         "results": found.results})


@bp.post("/api/executions/bulk")
@endpoint("Look up 1 to 1000 execution and branch serials at once; results in request order, malformed or "
          "unknown serials are found: false and listed in not_found", body=BulkIn, response=BulkOut)
def bulk(body: BulkIn):
    with transaction() as session:
        return BulkOut.model_validate(lookups.bulk_lookup(session, body.serials))
