"""Queues as the database sees them: the live targets routed to each and the branches waiting on it.
Which workers consume a queue is not in the database (common/queue_presence.py)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.models import Branch, Target
from common.statuses import BranchStatus


@dataclass(frozen=True)
class QueueLoad:
    targets: int
    queued_branches: int


def queue_loads(session: Session) -> dict[str, QueueLoad]:
    """Every queue a live target names or a queued branch waits on, in two grouped counts."""
    targets: dict[str, int] = {q: n for q, n in session.execute(
        select(Target.queue, func.count()).where(Target.archived_at.is_(None)).group_by(Target.queue))}
    queued: dict[str, int] = {q: n for q, n in session.execute(
        select(Branch.queue, func.count()).where(Branch.status == BranchStatus.QUEUED).group_by(Branch.queue))}
    return {q: QueueLoad(targets.get(q, 0), queued.get(q, 0)) for q in sorted(targets.keys() | queued.keys())}
