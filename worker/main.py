"""Celery entry point for `celery -A worker.main worker|beat`: production settings from the environment."""
from common.config import Settings
from common.logs import configure_logging
from worker.celery_app import make_celery

configure_logging()
app = make_celery(Settings.from_env())
