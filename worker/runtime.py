"""Everything a worker process holds for its whole life: settings, database, secrets, runners,
the SSH connection pool, the heartbeat, the event bus and live output. Built once per process."""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from common.config import Settings
from common.crypto import SecretBox
from common.db import Database
from common.events import make_event_bus, publish_events
from common.live_output import OutputStore, make_output_store
from common.services.dispatch import Send
from common.services.executions import Event
from worker.group_commit import Claimer, Finisher, Pinner
from worker.heartbeat import HeartbeatMonitor
from worker.live_output import LiveOutput
from worker.metrics import collector
from worker.runners.local import LocalRunner
from worker.runners.ssh import SSHPool, SSHRunner

log = logging.getLogger(__name__)


PING_IDLE_AFTER = 5.0  # seconds; see common.db._ping_when_idle
# any URL or DSN may carry a password (CELERY_BROKER_URL=amqp://user:pass@…, SENTRY_DSN)
_SECRET_ENV = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIAL", "_URL", "_URI", "_DSN", "_KEY")


def _command_env() -> dict[str, str]:
    """The environment local commands run with: the worker's, minus anything secret."""
    return {k: v for k, v in os.environ.items() if not any(part in k.upper() for part in _SECRET_ENV)}


def make_local_runner(settings: Settings) -> LocalRunner:
    """The runner for `connection: local` targets: the worker's environment minus its secrets, run as
    LOCAL_RUN_AS when the worker is root (which user it is gets logged once, here)."""
    return LocalRunner(output_cap=settings.output_cap_bytes, env=_command_env(), run_as=settings.local_run_as)


class WorkerRuntime:
    def __init__(self, settings: Settings, *, db: Database | None = None, events: Any = None,
                 output_store: OutputStore | None = None):
        self.settings = settings
        # a connection per busy thread, or branches queue for connections while holding none of the work
        self.db = db or Database(settings.database_url, pool_size=min(settings.worker_concurrency, 50),
                                 max_overflow=10, ping_idle_after=PING_IDLE_AFTER)
        self.box = SecretBox(settings.secret_key)
        self.events = events if events is not None else make_event_bus(settings)
        # the embedded default hands the API's store in: one process, one copy of each running stream
        self.live = LiveOutput(output_store or make_output_store(settings), self.events, settings.output_cap_bytes)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.pool = SSHPool(idle_timeout=settings.ssh_pool_idle_seconds)
        collector().watch_pool(self.pool)  # its size and reuse are read when scraped
        self.ssh = SSHRunner(pool=self.pool, output_cap=settings.output_cap_bytes,
                             keepalive=settings.ssh_keepalive_seconds)
        self.local = make_local_runner(settings)
        self.heartbeats = HeartbeatMonitor(self.db, settings.heartbeat_seconds)
        # a claim, a pin or a result waits out a database outage: the work it records already happened
        retry_for = settings.database_retry_seconds
        self.claimer = Claimer(self.db, self.name, publish=self.publish, retry_for=retry_for)
        self.pinner = Pinner(self.db, retry_for=retry_for)
        self.finisher = Finisher(self.db, publish=self.publish, retry_for=retry_for, send=self.send)
        self.sender: Send | None = None  # set by the Celery app that runs this runtime's tasks

    def send(self, task_name: str, items: list[tuple[list, str]]) -> None:
        """Send tasks through the broker of the app this runtime serves (held branches, released)."""
        if self.sender is None:
            raise RuntimeError("no broker to send through yet")
        self.sender(task_name, items)

    def publish(self, events: list[Event]) -> None:
        publish_events(self.events, events)

    def close(self) -> None:
        self.heartbeats.stop()
        self.pool.close_all()
        self.live.close()
