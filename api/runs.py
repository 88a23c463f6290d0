"""Starting and cancelling executions: commit first, then dispatch and publish."""
from __future__ import annotations

import logging

from flask import Blueprint
from flask_jwt_extended import current_user

from api.context import platform, transaction
from api.endpoint import WRITERS, endpoint
from api.schemas.executions import ExecuteIn, ExecutionOut
from common.errors import NotFound
from common.events import publish_events
from common.services import executions
from common.services.dispatch import dispatch_branches

log = logging.getLogger(__name__)

bp = Blueprint("runs", __name__)


def publish(events: list) -> None:
    publish_events(platform().events, events)


@bp.post("/api/jobs/<job_id>/execute")
@endpoint("Execute a job: one branch per target, each run by a worker", body=ExecuteIn, optional_body=True,
          response=ExecutionOut, status=201, roles=WRITERS, errors=(404, 409, 422))
def execute_job(job_id: str, body: ExecuteIn):
    with transaction() as session:
        execution, events = executions.execute_job(session, job_id, target_ids=body.target_ids,
                                                   user_id=current_user.id, role=current_user.role)
        result = ExecutionOut.model_validate(execution)
    publish(events)
    p = platform()
    if p.dispatcher is not None:
        dispatch_branches(p.db, p.dispatcher.send, [(b.id, b.queue) for b in execution.branches])
    return result


@bp.post("/api/executions/serial/<execution_serial>/cancel")
@endpoint("Cancel an execution: queued branches never start, running ones are killed", response=ExecutionOut,
          roles=WRITERS, errors=(404, 422))
def cancel_execution(execution_serial: str):
    with transaction() as session:
        execution, events = executions.cancel_execution(session, execution_serial)
    with transaction() as session:
        events += executions.close_if_done(session, execution.id)
        loaded = executions.load_execution(session, execution.id)
        if loaded is None:  # executions are never deleted; should one be, this is a 404 like any miss
            raise NotFound("Execution not found", {"execution_serial": execution_serial})
        body = ExecutionOut.model_validate(loaded)
    publish(events)
    return body
