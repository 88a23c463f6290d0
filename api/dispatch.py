"""Sending branch tasks to the broker after commit, by task name (the API never imports the worker)."""
from __future__ import annotations

from celery import Celery

from common.broker import transport_for, transport_options
from common.config import Settings
from common.services.dispatch import send_batch


class Dispatcher:
    """Wraps a Celery app used only as a producer. In the embedded default it is the in-process
    worker's own app, so both share the in-memory transport."""

    def __init__(self, celery_app: Celery):
        self.celery = celery_app

    @classmethod
    def from_settings(cls, settings: Settings) -> Dispatcher:
        app = Celery("opsconductor-api", broker=settings.broker_url, set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"],
                        broker_transport=transport_for(settings.broker_url), broker_connection_retry=False,
                        broker_connection_max_retries=0,
                        broker_transport_options={**transport_options(settings.broker_url), "max_retries": 0})
        return cls(app)

    def send(self, task_name: str, items: list[tuple[list, str]]) -> None:
        send_batch(self.celery, task_name, items)
