"""Handing queued branches to the broker after commit. `send` is the broker's batch
send-by-name, so this module stays free of Celery; a broker that is down leaves branches for the sweep."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from common.db import Database
from common.services.executions import set_dispatched
from common.task_names import RUN_BRANCH

log = logging.getLogger(__name__)

# send(task_name, [(args, queue), ...])
Send = Callable[[str, list[tuple[list, str]]], None]


def send_batch(celery_app, task_name: str, items: list[tuple[list, str]]) -> None:
    """Publish many tasks by name over one producer connection, in kombu's publish batch (on Redis
    one pipeline: a 1,000-branch fan-out is one round trip, not a thousand). Takes whichever Celery
    app the caller holds; this module never imports one."""
    with celery_app.producer_or_acquire() as producer, producer.batch():
        for args, queue in items:
            celery_app.send_task(task_name, args=args, queue=queue, producer=producer)


def dispatch_branches(db: Database, send: Send, branches: Iterable[tuple[int, str]]) -> int:
    """Send one task per (branch_id, queue), already marked dispatched by the caller's transaction.
    When the broker is down the mark is taken back, so the sweep sends them after its grace period."""
    branches = list(branches)
    if not branches:
        return 0
    try:
        send(RUN_BRANCH, [([branch_id], queue) for branch_id, queue in branches])
        return len(branches)
    except Exception:
        log.warning("broker unavailable; %d branch(es) left queued for the sweep", len(branches), exc_info=True)
    try:
        with db.session() as session:
            set_dispatched(session, [branch_id for branch_id, _ in branches], None)
    except Exception:
        log.warning("could not unmark %d undispatched branches; the sweep resends them later", len(branches),
                    exc_info=True)
    return 0
