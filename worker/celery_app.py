"""The Celery app: Redis broker in production, the in-memory transport in the embedded default.
Late acks with idempotent tasks, prefetch 1, a thread pool sized for I/O-bound SSH work."""
from __future__ import annotations

import os
import threading
from datetime import timedelta

from celery import Celery

from common.broker import transport_for
from common.config import Settings
from common.migrate import upgrade
from common.services.dispatch import send_batch
from common.task_names import FIRE_DUE_JOBS, RUN_BRANCH, SWEEP
from worker import executor, maintenance
from worker.runtime import WorkerRuntime

FIRE_DUE_INTERVAL = 1.0


def make_celery(settings: Settings, *, runtime: WorkerRuntime | None = None) -> Celery:
    app = Celery("opsconductor", broker=settings.broker_url, set_as_current=False)
    transport_options = ({"visibility_timeout": 3600} if settings.redis_url
                         else {"polling_interval": 0.005})
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        broker_transport=transport_for(settings.broker_url),
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "sweep": {"task": SWEEP, "schedule": timedelta(seconds=settings.sweep_interval_seconds),
                      "options": {"queue": "default", "expires": settings.sweep_interval_seconds * 2}},
            "fire-due-jobs": {"task": FIRE_DUE_JOBS, "schedule": timedelta(seconds=FIRE_DUE_INTERVAL),
                              "options": {"queue": "default", "expires": FIRE_DUE_INTERVAL * 5}},
        },
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
            return state["rt"]

    def send(name: str, items: list[tuple[list, str]]) -> None:
        send_batch(app, name, items)

    @app.task(name=RUN_BRANCH, acks_late=True)
    def run_branch(branch_id: int) -> None:
        executor.run_branch(get_runtime(), branch_id)

    @app.task(name=SWEEP)
    def sweep() -> dict:
        return maintenance.sweep(get_runtime(), send)

    @app.task(name=FIRE_DUE_JOBS)
    def fire_due_jobs() -> int:
        return maintenance.fire_due_jobs(get_runtime(), send)

    app.get_runtime = get_runtime  # type: ignore[attr-defined]
    app.send_by_name = send  # type: ignore[attr-defined]
    return app
