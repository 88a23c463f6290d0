"""Logging set-up: one line per record, key=value context, secrets never formatted in."""
from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    # one INFO line per finished branch comes from worker.executor; Celery's own per-task lines
    # ("received", "succeeded") would triple that at full fan-out
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
