"""Targets: CRUD; `target_ref` is the numeric id or the serial."""
from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user

from api.context import queue_presence, transaction
from api.endpoint import ADMIN, WRITERS, endpoint
from api.schemas.base import PageOut
from api.schemas.targets import TargetIn, TargetOut, TargetQuery, TargetUpdate
from common.services import targets
from common.services.pagination import PageRequest
from common.services.refs import target_by_ref

bp = Blueprint("targets", __name__, url_prefix="/api/targets")


def _served(outs: list[TargetOut]) -> list[TargetOut]:
    """Each with queue_has_worker, read once for the queues of all of them (outside the transaction)."""
    workers = queue_presence().workers(o.queue for o in outs)
    for out in outs:
        out.queue_has_worker = None if workers is None else bool(workers.get(out.queue))
    return outs


@bp.get("")
@endpoint("List live targets, filtered by name, tag, enabled or queue", query=TargetQuery,
          response=PageOut[TargetOut])
def list_targets(query: TargetQuery):
    with transaction() as session:
        page = targets.list_targets(session, PageRequest(query.page, query.per_page, query.sort, query.order),
                                    name=query.name, tag=query.tag, enabled=query.enabled, queue=query.queue)
        outs = [TargetOut.model_validate(t) for t in page.items]
    return {"data": [o.model_dump(mode="json") for o in _served(outs)], "pagination": page.meta}


@bp.post("")
@endpoint("Register a target", body=TargetIn, response=TargetOut, status=201, roles=WRITERS,
          errors=(403, 409, 422))
def create_target(body: TargetIn):
    with transaction() as session:
        target = TargetOut.model_validate(targets.create_target(session, body.model_dump(), user_id=current_user.id,
                                                                role=current_user.role))
    return _served([target])[0]


@bp.get("/<target_ref>")
@endpoint("Get a target by id or serial (archived ones too)", response=TargetOut, errors=(404, 422))
def get_target(target_ref: str):
    with transaction() as session:
        target = TargetOut.model_validate(target_by_ref(session, target_ref))
    return _served([target])[0]


@bp.patch("/<target_ref>")
@endpoint("Change a target; a new address forgets the pinned host key", body=TargetUpdate, response=TargetOut,
          roles=WRITERS, errors=(403, 404, 409, 422))
def update_target(target_ref: str, body: TargetUpdate):
    with transaction() as session:
        target = TargetOut.model_validate(targets.update_target(session, target_ref,
                                                                body.model_dump(exclude_unset=True),
                                                                role=current_user.role))
    return _served([target])[0]


@bp.post("/<target_ref>/reset-host-key")
@endpoint("Forget the pinned host key so the next connection trusts the presented one", response=TargetOut,
          roles=ADMIN, errors=(404, 409, 422))
def reset_host_key(target_ref: str):
    with transaction() as session:
        target = TargetOut.model_validate(targets.reset_host_key(session, target_ref))
    return _served([target])[0]


@bp.delete("/<target_ref>")
@endpoint("Archive a target: it leaves lists and cannot run; its history stays", status=204, roles=WRITERS,
          errors=(404, 409, 422))
def delete_target(target_ref: str):
    with transaction() as session:
        targets.archive_target(session, target_ref, role=current_user.role)
    return "", 204
