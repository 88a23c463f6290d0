"""Celery entry point for `celery -A worker.main worker|beat`: production settings from the environment."""
from common.config import Settings
from common.logs import configure_logging
from worker import metrics
from worker.celery_app import make_celery

configure_logging()
settings = Settings.from_env()
app = make_celery(settings)
metrics.serve(app, settings)  # a `celery worker` answers scrapes on WORKER_METRICS_PORT
