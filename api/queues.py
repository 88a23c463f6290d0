"""Queues: which have a live worker, how many targets route to each and how many branches wait there.
A queue without a worker is the usual reason branches stay `queued` (an agent host down)."""
from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, current_app

from api.context import transaction
from api.endpoint import endpoint
from api.schemas.targets import QueueListOut, QueueOut
from common.queue_presence import QueuePresence
from common.services.queues import QueueLoad, queue_loads

bp = Blueprint("queues", __name__, url_prefix="/api/queues")


def queue_presence() -> QueuePresence:
    return current_app.extensions["opsconductor.presence"]


def queue_workers(queues: Iterable[str]) -> dict[str, list[str]] | None:
    """The live workers of each queue, in one Redis round trip; None when Redis does not answer."""
    return queue_presence().workers(queues)


@bp.get("")
@endpoint("Every queue targets use or workers consume: its live workers, targets and queued branches",
          response=QueueListOut)
def list_queues():
    with transaction() as session:
        loads = queue_loads(session)
    presence = queue_presence()
    names = sorted(loads.keys() | set(presence.announced_queues()))
    workers = presence.workers(names)
    empty = QueueLoad(0, 0)
    return QueueListOut(data=[
        QueueOut(name=q, targets=loads.get(q, empty).targets, queued_branches=loads.get(q, empty).queued_branches,
                 workers=None if workers is None else workers.get(q, []),
                 has_worker=None if workers is None else bool(workers.get(q)))
        for q in names])
