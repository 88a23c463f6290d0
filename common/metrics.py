"""The Prometheus metrics of every process: names, labels and buckets in one place, and the text a
scrape reads. Label values come from closed sets (route templates, statuses, error types, queue
names), never from serials or client input, so the number of series stays bounded.

Under gunicorn the web tier runs several processes behind one port, so it uses prometheus-client's
multiprocess mode (api/gunicorn_conf.py sets PROMETHEUS_MULTIPROC_DIR): each process writes its
values to a file and a scrape, whichever process answers it, sums them all. A Celery worker is one
process (a thread pool), so it keeps its metrics in memory and serves them on a port of its own."""
from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from common.statuses import BranchStatus, ErrorType

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the Prometheus text format every scraper reads
disable_created_metrics()  # a `_created` twin of every counter doubles a scrape for what Prometheus ignores

# ---- API ------------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "opsconductor_http_requests_total", "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "opsconductor_http_request_duration_seconds", "Time to answer an HTTP request (WebSocket sessions excluded).",
    ["method", "route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
WEBSOCKET_CLIENTS = Gauge(
    "opsconductor_websocket_clients", "Open /ws/executions connections.", multiprocess_mode="livesum")
WEBSOCKET_EVENTS = Counter(
    "opsconductor_websocket_events_relayed_total",
    "Events sent to WebSocket clients (one per client reached), by type.", ["type"])

# ---- worker ---------------------------------------------------------------------------------------

BRANCHES_STARTED = Counter(
    "opsconductor_branches_started_total", "Branches this worker claimed and began, by connection (ssh or local).",
    ["connection"])
BRANCHES_FINISHED = Counter(
    "opsconductor_branches_finished_total", "Branches this worker finished, by final status and error type.",
    ["status", "error_type"])
BRANCH_DURATION = Histogram(
    "opsconductor_branch_duration_seconds", "From claim to finish of a branch, by final status.",
    ["status"], buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0))
SSH_CONNECT_DURATION = Histogram(
    "opsconductor_ssh_connect_duration_seconds",
    "New SSH connections (TCP, key exchange, authentication), by outcome: ok or the error type.",
    ["outcome"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
GROUP_COMMIT_BATCH = Histogram(
    "opsconductor_group_commit_batch_size",
    "Lifecycle writes (claim, finish, pin) committed together in one transaction.",
    ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64))

# ---- label values from closed sets ----------------------------------------------------------------

OTHER = "other"
NONE = "none"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUSES = frozenset(str(s) for s in BranchStatus)
_ERROR_TYPES = frozenset(str(e) for e in ErrorType)
EVENT_TYPES = frozenset({"execution_started", "branch_started", "branch_completed", "execution_completed",
                         "rollout_stopped", "branch_output", "resume"})


def method_label(method: str) -> str:
    return method if method in _METHODS else OTHER


def status_label(status: object) -> str:
    value = str(status)
    return value if value in _STATUSES else OTHER


def error_type_label(error_type: object) -> str:
    if error_type is None:
        return NONE
    value = str(error_type)
    return value if value in _ERROR_TYPES else OTHER


def event_type_label(event_type: object) -> str:
    return event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else OTHER


_RELAYED = {kind: WEBSOCKET_EVENTS.labels(kind) for kind in (*sorted(EVENT_TYPES), OTHER)}  # once, not per event


def counting_sends(send: Callable[[dict], None]) -> Callable[[dict], None]:
    """``send``, counting each event it hands to a WebSocket client by type."""

    def counted(event: dict) -> None:
        send(event)
        _RELAYED[event_type_label(event.get("type"))].inc()

    return counted


# ---- exposition -----------------------------------------------------------------------------------

_scrape_time: list[Collector] = []
_scrape_time_lock = threading.Lock()


def register_collector(collector: Collector) -> None:
    """Add a collector that reads its values when scraped (pool sizes, queue depths); once per process."""
    with _scrape_time_lock:
        if any(c is collector for c in _scrape_time):
            return
        _scrape_time.append(collector)
    REGISTRY.register(collector)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Joined(Collector):
    """The registry a scrape reads in multiprocess mode: every process's files, plus this process's
    scrape-time collectors (which live in no file)."""

    def __init__(self, path: str):
        from prometheus_client import multiprocess

        self._registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self._registry, path=path)

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        with _scrape_time_lock:
            collectors = list(_scrape_time)
        for collector in collectors:
            yield from collector.collect()


def exposition() -> bytes:
    """The Prometheus text this process answers a scrape with."""
    path = multiprocess_dir()
    return generate_latest(_Joined(path) if path else REGISTRY)


def token_allows(authorization: str | None, token: str | None) -> bool:
    """Whether a scrape may read: always without METRICS_TOKEN, else only with `Authorization: Bearer <token>`
    (compared in constant time)."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

