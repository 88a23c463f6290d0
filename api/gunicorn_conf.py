"""gunicorn settings of the web process (`-c python:api.gunicorn_conf` in the Procfile): prometheus-client's
multiprocess mode, so that /metrics counts every web process, whichever one a scrape reaches.

Loaded by the arbiter before it forks: the directory is named in the environment here, before any worker
imports prometheus_client (which picks its value store at import). Without PROMETHEUS_MULTIPROC_DIR a private
temporary directory is made and removed at exit; a directory given is emptied of the library's files at start, as
it asks, and refused when it holds other `.db` files (a scrape reads every one, and they are not ours to delete).
A worker that exits has its live gauges (open WebSockets) removed from the sum. A USR2 upgrade is safe: gunicorn
re-executes with the environment it started with, so the new arbiter makes a directory of its own."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

_made_here = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _made_here:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="opsconductor-web-metrics-")


# what prometheus-client writes there: {type}_{pid}.db, gauges as gauge_{mode}_{pid}.db
_VALUE_FILE = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def on_starting(server: Any) -> None:
    """Once per arbiter (not on reload): the last run's values must not be added to this one's."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    files = sorted(path.glob("*.db"))
    foreign = [f.name for f in files if not _VALUE_FILE.fullmatch(f.name)]
    if foreign:
        raise RuntimeError(f"PROMETHEUS_MULTIPROC_DIR={path} holds files prometheus-client did not write "
                           f"({', '.join(foreign[:3])}): give the web processes a directory of their own")
    for stale in files:
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _made_here:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
