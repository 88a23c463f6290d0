"""Handing queued branches to the broker after commit. `send` is the broker's send-by-name, so
this module stays free of Celery; a broker that is down leaves branches for the sweep."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from common.db import Database
from common.services.executions import mark_dispatched
from common.task_names import RUN_BRANCH

log = logging.getLogger(__name__)

Send = Callable[[str, list, str], None]


def dispatch_branches(db: Database, send: Send, branches: Iterable[tuple[int, str]]) -> int:
    """Send one task per (branch_id, queue); record which were sent. Returns how many were sent."""
    sent: list[int] = []
    try:
        for branch_id, queue in branches:
            send(RUN_BRANCH, [branch_id], queue)
            sent.append(branch_id)
    except Exception:
        log.warning("broker unavailable after %d sends; the rest are left for the sweep", len(sent), exc_info=True)
    if sent:
        try:
            with db.session() as session:
                mark_dispatched(session, sent)
        except Exception:
            log.warning("could not record dispatch of %d branches; the sweep may send them again", len(sent),
                        exc_info=True)
    return len(sent)
