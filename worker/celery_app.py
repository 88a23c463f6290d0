"""The Celery app: Redis or RabbitMQ (CELERY_BROKER_URL) in production, the in-memory transport when embedded.
Late acks with idempotent tasks, prefetch 1, a thread pool sized for I/O-bound SSH work. The beat
process schedules no tasks: it runs the maintenance loop itself (worker/maintenance.py)."""
from __future__ import annotations

import logging
import os
import threading

from celery import Celery, signals

from common.broker import transport_for, transport_options
from common.config import Settings
from common.db import Database
from common.events import make_event_bus
from common.migrate import upgrade
from common.queue_presence import make_queue_presence
from common.services.dispatch import send_batch
from common.task_names import KILL_ORPHAN, RUN_BRANCH
from worker import executor
from worker.maintenance import Maintenance
from worker.presence import PresenceAnnouncer
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def make_celery(settings: Settings, *, runtime: WorkerRuntime | None = None) -> Celery:
    app = Celery("opsconductor", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        broker_transport=transport_for(settings.broker_url),
        broker_transport_options=transport_options(settings.broker_url),
        broker_connection_retry_on_startup=True,
        # a running branch goes on when the broker connection drops; its message comes back and the claim ignores it
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={},
    )
    lock = threading.Lock()
    state: dict[str, WorkerRuntime] = {}
    if runtime is not None:
        state["rt"] = runtime

    def get_runtime() -> WorkerRuntime:
        """Built on first use in the process that runs tasks, never in beat or at import."""
        with lock:
            if "rt" not in state:
                if os.environ.get("OPSCONDUCTOR_SKIP_MIGRATE") != "1":
                    upgrade(settings.database_url)  # a worker may start before the web process migrated
                state["rt"] = WorkerRuntime(settings)
                state["rt"].sender = send
            return state["rt"]

    def send(name: str, items: list[tuple[list, str]]) -> None:
        send_batch(app, name, items)

    if runtime is not None and runtime.sender is None:
        runtime.sender = send

    @app.task(name=RUN_BRANCH, acks_late=True)
    def run_branch(branch_id: int) -> None:
        executor.run_branch(get_runtime(), branch_id)

    @app.task(name=KILL_ORPHAN)
    def kill_orphan(branch_id: int) -> None:
        executor.kill_orphan(get_runtime(), branch_id)

    @signals.beat_init.connect(weak=False)
    def start_maintenance(sender, **_kwargs) -> None:
        if sender.app is not app:
            return
        maintenance = Maintenance(settings, Database(settings.database_url), make_event_bus(settings), send)
        threading.Thread(target=maintenance.run, args=(threading.Event(),), name="maintenance", daemon=True).start()
        log.info("maintenance loop started in the beat process")

    announcers: list[PresenceAnnouncer] = []

    @signals.worker_ready.connect(weak=False)
    def announce_queues(sender, **_kwargs) -> None:
        """Only `celery worker` sends this: the embedded default's in-process worker takes every queue."""
        if sender.app is not app or not settings.redis_url:
            return

        def queues() -> list[str]:
            return sorted(q.name for q in sender.task_consumer.queues)

        announcers.append(PresenceAnnouncer(make_queue_presence(settings), sender.hostname, queues,
                                            settings.heartbeat_seconds).start())

    @signals.worker_shutdown.connect(weak=False)
    def leave_queues(sender, **_kwargs) -> None:
        if sender.app is not app:
            return
        while announcers:
            announcers.pop().stop()

    app.get_runtime = get_runtime
    app.send_by_name = send
    return app
