"""Starting and cancelling executions: commit first, then dispatch and publish."""
from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, request
from flask_jwt_extended import current_user
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.context import platform, transaction
from api.endpoint import WRITERS, endpoint
from api.schemas.executions import ExecuteIn, ExecutionOut, RetryIn
from common.errors import NotFound
from common.events import publish_events
from common.models import Execution
from common.services import event_log, executions, idempotency, retries
from common.services.dispatch import dispatch_branches
from common.services.executions import Event

log = logging.getLogger(__name__)

bp = Blueprint("runs", __name__)


def publish(events: list) -> None:
    publish_events(platform().events, events)


def _start(start: Callable[[Session], tuple[Execution, list[Event]]], body: BaseModel, key: str | None):
    """Run `start` in one transaction, then publish and dispatch: 201 with the new execution. With an
    Idempotency-Key, a key this user already used for the same request answers with the execution it made
    (Idempotent-Replayed: true) and starts nothing; the key is recorded in the execution's transaction."""
    user_id = current_user.id
    fingerprint = idempotency.request_hash(request.method, request.path, body.model_dump(mode="json"),
                                           platform().settings.secret_key) if key else ""
    try:
        with transaction() as session:
            made = idempotency.replay(session, user_id, key, fingerprint) if key else None
            if made is None:
                execution, events = start(session)
                event_log.record(session, events)
                if key:
                    idempotency.remember(session, user_id, key, fingerprint, execution.id)
                result = ExecutionOut.model_validate(execution)
    except IntegrityError:
        if not key:
            raise
        with transaction() as session:  # a simultaneous request with this key committed first: its execution
            made = idempotency.replay(session, user_id, key, fingerprint)
        if made is None:
            raise
    if made is not None:
        return _replayed(made)
    publish(events)
    p = platform()
    if p.dispatcher is not None:
        dispatch_branches(p.db, p.dispatcher.send, executions.dispatchable(execution))
    return result


def _replayed(execution_id: int):
    with transaction() as session:
        loaded = executions.load_execution(session, execution_id)
        if loaded is None:  # executions are never deleted (their keys would go with them)
            raise NotFound("Execution not found", {"execution_id": execution_id})
        body = ExecutionOut.model_validate(loaded).model_dump(mode="json")
    return body, 201, {"Idempotent-Replayed": "true"}


@bp.post("/api/jobs/<job_id>/execute")
@endpoint("Execute a job: one branch per target, each run by a worker", body=ExecuteIn, optional_body=True,
          response=ExecutionOut, status=201, roles=WRITERS, errors=(404, 409, 422), idempotent=True)
def execute_job(job_id: str, body: ExecuteIn, idempotency_key: str | None):
    def start(session: Session) -> tuple[Execution, list[Event]]:
        execution, events = executions.execute_job(session, job_id, target_ids=body.target_ids,
                                                   target_selector=body.selector(),
                                                   parameters=body.parameters, box=platform().box,
                                                   max_concurrency=body.max_concurrency, max_errors=body.max_errors,
                                                   user_id=current_user.id, role=current_user.role)
        return execution, events

    return _start(start, body, idempotency_key)


@bp.post("/api/executions/serial/<execution_serial>/cancel")
@endpoint("Cancel an execution: queued branches never start, running ones are killed", response=ExecutionOut,
          roles=WRITERS, errors=(404, 422))
def cancel_execution(execution_serial: str):
    with transaction() as session:
        execution, events = executions.cancel_execution(session, execution_serial)
        event_log.record(session, events)
    with transaction() as session:
        events += event_log.record(session, executions.close_if_done(session, execution.id))
        loaded = executions.load_execution(session, execution.id)
        if loaded is None:  # executions are never deleted; should one be, this is a 404 like any miss
            raise NotFound("Execution not found", {"execution_serial": execution_serial})
        body = ExecutionOut.model_validate(loaded)
    publish(events)
    return body


@bp.post("/api/executions/serial/<execution_serial>/retry")
@endpoint("Retry a finished execution: a new execution of its job (trigger retry) running the actions it ran, on "
          "the targets whose branches did not complete (`only: all`: on every target)", body=RetryIn,
          optional_body=True, response=ExecutionOut, status=201, roles=WRITERS, errors=(404, 409, 422),
          idempotent=True)
def retry_execution(execution_serial: str, body: RetryIn, idempotency_key: str | None):
    return _start(lambda session: retries.retry_execution(session, execution_serial, only=body.only,
                                                          role=current_user.role, user_id=current_user.id),
                  body, idempotency_key)
