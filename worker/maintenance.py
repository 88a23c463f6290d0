"""The periodic work that keeps nothing lost or stuck: re-sending branches that never reached a
worker or were lost in the broker, failing branches whose worker died (and having a live worker
kill what they left running on the target), closing executions, firing scheduled jobs once; and,
hourly in a thread of its own, pruning history older than RETENTION_DAYS.

It runs against the database in a process that is sure to run (the beat process, or the
embedded default's maintenance thread), never as a task: a branch whose only worker died must end
although no worker is left to run a task."""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from common.broker import LossWitness
from common.config import Settings
from common.db import Database, unavailable
from common.events import EventBus, publish_events
from common.models import Execution, utcnow
from common.services import event_log, retention, rollout, rollups
from common.services import executions as svc
from common.services.dispatch import Send, dispatch_branches
from common.task_names import KILL_ORPHAN

log = logging.getLogger(__name__)

FIRE_DUE_INTERVAL = 1.0
BATCH = 1000  # branches re-sent per query
FIRST_RETENTION_DELAY = 60.0  # seconds after start: a beat restarting in a loop does not prune in a loop


class Maintenance:
    """One maintenance loop; several may run (two beats): every step is a conditional update."""

    def __init__(self, settings: Settings, db: Database, events: EventBus | None, send: Send,
                 witness: LossWitness | None = None):
        self.settings = settings
        self.db = db
        self.events = events
        self.send = send
        self.witness = witness if witness is not None else LossWitness(settings.broker_url)
        # since when the database has answered without a break; starting counts as a return, since
        # heartbeats may have failed before this process was there to see it
        self._db_since: float | None = time.monotonic()
        self._next_sweep = 0.0

    def publish(self, events: list[svc.Event]) -> None:
        publish_events(self.events, events)

    def run(self, stop: threading.Event) -> None:
        """Fire due jobs every second and sweep every SWEEP_INTERVAL_SECONDS until ``stop``; keep history
        in a thread of its own, so that a long prune never delays a firing or a sweep."""
        threading.Thread(target=self.run_retention, args=(stop,), name="retention", daemon=True).start()
        while not stop.wait(min(FIRE_DUE_INTERVAL, self.settings.sweep_interval_seconds)):
            self.round()

    def run_retention(self, stop: threading.Event) -> None:
        """keep_history every RETENTION_INTERVAL_SECONDS (the first soon after start) until ``stop``."""
        wait = min(FIRST_RETENTION_DELAY, self.settings.retention_interval_seconds)
        while not stop.wait(wait):
            try:
                self.keep_history(stop)
            except Exception as exc:
                if not unavailable(exc):
                    log.exception("maintenance: keeping history failed")
                else:
                    log.warning("maintenance: database unavailable (%s); history kept as is until next time",
                                type(exc).__name__)
            wait = self.settings.retention_interval_seconds

    def keep_history(self, stop: threading.Event | None = None) -> retention.PruneCounts:
        """Roll up executions that closed without it (see rollups.roll_up_stragglers), then prune the
        outputs, steps and events of those that ended more than RETENTION_DAYS ago (0: never)."""
        rolled = 0
        while True:
            with self.db.session() as session:
                done = rollups.roll_up_stragglers(session, limit=BATCH)
            rolled += done
            if done < BATCH:
                break
        counts = retention.PruneCounts()
        if self.settings.retention_days:
            cutoff = utcnow() - timedelta(days=self.settings.retention_days)
            counts = retention.prune(self.db, cutoff, stop=stop)
        if rolled or counts.executions:
            log.info("history rolled_up=%d pruned executions=%d outputs=%d steps=%d events=%d", rolled,
                     counts.executions, counts.outputs, counts.steps, counts.events)
        return counts

    def round(self) -> None:
        sweep_due = time.monotonic() >= self._next_sweep
        for part in (self.fire_due_jobs, self.sweep) if sweep_due else (self.fire_due_jobs,):
            try:
                part()
            except Exception as exc:
                if not unavailable(exc):
                    log.exception("maintenance: %s failed", part.__name__)
                    continue
                if self._db_since is not None:
                    log.warning("maintenance: database unavailable (%s); holding off worker_lost", type(exc).__name__)
                self._db_since = None
                return
        if sweep_due:
            self._next_sweep = time.monotonic() + self.settings.sweep_interval_seconds

    def _database_answered(self) -> None:
        if self._db_since is None:
            self._db_since = time.monotonic()
            log.info("maintenance: database reachable again")

    def _heartbeats_current(self) -> bool:
        """Whether a missing heartbeat means a dead worker: after a database outage, a live worker
        needs WORKER_LOST_SECONDS to prove itself again (its beats failed while the database was away)."""
        return (self._db_since is not None
                and time.monotonic() - self._db_since >= self.settings.worker_lost_seconds)

    def _broker_lost_at(self) -> datetime | None:
        try:
            return utcnow() if self.witness.messages_lost() else None
        except Exception as exc:  # broker down: nothing to re-send to yet; asked again next round
            log.warning("maintenance: broker unreachable (%s)", type(exc).__name__)
            return None

    def sweep(self) -> dict[str, int]:
        s = self.settings
        lost_at = self._broker_lost_at()
        if lost_at is not None:
            log.warning("maintenance: the broker's witness key is missing (a restart without persistence, a flush, "
                        "or its first use): re-sending every queued branch")
        sent = 0
        while True:
            with self.db.session() as session:
                pending = svc.branches_to_dispatch(session, grace=timedelta(seconds=s.dispatch_grace_seconds),
                                                   redispatch_after=timedelta(seconds=s.redispatch_seconds),
                                                   sent_before=lost_at, limit=BATCH)
                svc.set_dispatched(session, [branch_id for branch_id, _ in pending], utcnow())
            self._database_answered()
            sent += dispatch_branches(self.db, self.send, pending) if pending else 0
            if lost_at is None or len(pending) < BATCH:
                break
        with self.db.connection() as conn:  # slots a finisher died before handing on; lost branches' budgets
            rolled, released = rollout.rebalance(conn)
            event_log.record(conn, rolled)
            conn.commit()
        self.publish(rolled)
        sent += dispatch_branches(self.db, self.send, released) if released else 0
        lost: list[svc.LostBranch] = []
        if self._heartbeats_current():
            with self.db.session() as session:
                lost = svc.lost_branches(session, deadline=timedelta(seconds=s.worker_lost_seconds))
        for branch in lost:
            self.publish(svc.fail_lost_branch(self.db, branch.branch_id))
        orphans = [([b.branch_id], b.queue) for b in lost if b.remote_pid]
        if orphans:
            try:
                self.send(KILL_ORPHAN, orphans)
            except Exception:
                log.warning("maintenance: broker unavailable; %d orphaned remote command(s) left running",
                            len(orphans), exc_info=True)
        with self.db.session() as session:
            unclosed = svc.unclosed_executions(session)
        for execution_id in unclosed:
            with self.db.session() as session:
                closed = event_log.record(session, svc.close_if_done(session, execution_id))
            self.publish(closed)
        if sent or lost or unclosed:
            log.info("sweep redispatched=%d worker_lost=%d orphans=%d closed=%d",
                     sent, len(lost), len(orphans), len(unclosed))
        return {"redispatched": sent, "worker_lost": len(lost), "orphans": len(orphans), "closed": len(unclosed)}

    def fire_due_jobs(self) -> int:
        """Jobs due once (scheduled_at) and cron jobs at a tick, each firing in its own transaction."""
        now = utcnow()
        with self.db.session() as session:
            due = svc.due_jobs(session, now)
            ticks = svc.due_cron_jobs(session, now)
        self._database_answered()
        firings: list[Callable[[Session], tuple[Execution | None, list[svc.Event]]]] = [
            *(functools.partial(svc.fire_scheduled_job, job_id=job_id) for job_id in due),
            *(functools.partial(svc.fire_cron_job, tick=tick) for tick in ticks)]
        fired = 0
        for fire in firings:
            with self.db.session() as session:
                execution, events = fire(session)
                event_log.record(session, events)
                branches = svc.dispatchable(execution) if execution else []
            if execution is None:
                continue
            fired += 1
            self.publish(events)
            dispatch_branches(self.db, self.send, branches)
            log.info("scheduled job fired execution=%s", execution.execution_serial)
        return fired
