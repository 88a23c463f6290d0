"""Queues: which have a live worker, how many targets route to each and how many branches wait there.
A queue without a worker is the usual reason branches stay `queued` (an agent host down)."""
from __future__ import annotations

from flask import Blueprint

from api.context import queue_presence, transaction
from api.endpoint import endpoint
from api.schemas.targets import QueueListOut, QueueOut
from common.services.queues import queue_loads, queue_views

bp = Blueprint("queues", __name__, url_prefix="/api/queues")


@bp.get("")
@endpoint("Every queue targets use or workers consume: its live workers, targets and queued branches",
          response=QueueListOut)
def list_queues():
    with transaction() as session:
        loads = queue_loads(session)
    return QueueListOut(data=[QueueOut.model_validate(view) for view in queue_views(loads, queue_presence())])
