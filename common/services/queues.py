"""Queues as the database sees them (the live targets routed to each, the branches waiting on it), and with
the workers that consume them, which are not in the database but in Redis (common/queue_presence.py)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.models import Branch, Target
from common.queue_presence import QueuePresence
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


@dataclass(frozen=True)
class QueueView:
    name: str
    targets: int
    queued_branches: int
    workers: list[str] | None  # None: unknown now (Redis not answering)

    @property
    def has_worker(self) -> bool | None:
        return None if self.workers is None else bool(self.workers)


def queue_views(loads: dict[str, QueueLoad], presence: QueuePresence) -> list[QueueView]:
    """Every queue targets use, branches wait on or a worker announced, with its live workers. Takes the
    counts rather than a session, so that no database connection is held while Redis is asked."""
    names = sorted(loads.keys() | set(presence.announced_queues()))
    workers = presence.workers(names)
    empty = QueueLoad(0, 0)
    return [QueueView(q, loads.get(q, empty).targets, loads.get(q, empty).queued_branches,
                      None if workers is None else workers.get(q, [])) for q in names]
