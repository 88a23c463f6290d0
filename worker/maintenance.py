"""Periodic work that keeps nothing lost or stuck: re-dispatching branches that never reached a
worker, failing branches whose worker died, and firing scheduled jobs exactly once."""
from __future__ import annotations

import logging
from datetime import timedelta

from common.models import utcnow
from common.services import executions as svc
from common.services.dispatch import Send, dispatch_branches
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

REDISPATCH_AFTER = timedelta(minutes=5)


def sweep(rt: WorkerRuntime, send: Send) -> dict[str, int]:
    s = rt.settings
    with rt.db.session() as session:
        pending = svc.branches_to_dispatch(session, grace=timedelta(seconds=s.dispatch_grace_seconds),
                                           redispatch_after=REDISPATCH_AFTER)
        svc.set_dispatched(session, [branch_id for branch_id, _ in pending], utcnow())
        lost = svc.lost_branches(session, deadline=timedelta(seconds=s.worker_lost_seconds))
    sent = dispatch_branches(rt.db, send, pending) if pending else 0
    for branch_id in lost:
        rt.publish(svc.fail_lost_branch(rt.db, branch_id))
    with rt.db.session() as session:
        unclosed = svc.unclosed_executions(session)
    for execution_id in unclosed:
        with rt.db.session() as session:
            rt.publish(svc.close_if_done(session, execution_id))
    if sent or lost or unclosed:
        log.info("sweep redispatched=%d worker_lost=%d closed=%d", sent, len(lost), len(unclosed))
    return {"redispatched": sent, "worker_lost": len(lost), "closed": len(unclosed)}


def fire_due_jobs(rt: WorkerRuntime, send: Send) -> int:
    with rt.db.session() as session:
        due = svc.due_jobs(session, utcnow())
    fired = 0
    for job_id in due:
        with rt.db.session() as session:
            execution, events = svc.fire_scheduled_job(session, job_id)
            branches = [(b.id, b.queue) for b in execution.branches] if execution else []
        if execution is None:
            continue
        fired += 1
        rt.publish(events)
        dispatch_branches(rt.db, send, branches)
        log.info("scheduled job fired execution=%s", execution.execution_serial)
    return fired
