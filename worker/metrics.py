"""A worker's side of the metrics (names in common/metrics.py): what is read only when scraped (SSH
pool sizes and reuse, broker queue depth: nothing per branch), what a branch costs to count (two
counter increments and one histogram observation), and the HTTP server a `celery worker` answers
scrapes on (WORKER_METRICS_PORT). The embedded default has no server: its API's /metrics reads the
same in-process registry."""
from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common import metrics
from common.config import Settings
from common.services.executions import Event
from worker.runners.ssh_pool import SSHPool

log = logging.getLogger(__name__)


def branch_started(connection: str) -> None:
    metrics.BRANCHES_STARTED.labels("local" if connection == "local" else "ssh").inc()


def branch_finished(branch_serial: str, events: list[Event], seconds: float) -> None:
    """Counted from the finish this worker committed (its branch_completed event): a branch the sweep or a
    cancel ended first is not counted twice."""
    for kind, data in events:
        if kind == "branch_completed" and data.get("branch_serial") == branch_serial:
            status = metrics.status_label(data.get("status"))
            metrics.BRANCHES_FINISHED.labels(status, metrics.error_type_label(data.get("error_type"))).inc()
            metrics.BRANCH_DURATION.labels(status).observe(seconds)
            return


class QueueDepth:
    """Messages waiting in each queue this worker consumes, asked of the broker at scrape time over one
    connection kept between scrapes. A broker that does not answer leaves the samples out (and is asked
    again at the next scrape) rather than failing the scrape."""

    def __init__(self, celery_app, names: Callable[[], Iterable[str]]):
        self._app = celery_app
        self._names = names
        self._lock = threading.Lock()
        self._conn: Any = None  # a kombu Connection
        self._channel: Any = None

    def read(self) -> dict[str, int]:
        with self._lock:
            try:
                return {name: self._depth(name) for name in sorted(set(self._names()))}
            except Exception as exc:
                log.warning("queue depth unavailable: %s: %s", type(exc).__name__, exc)
                self._drop()
                return {}

    def _depth(self, name: str) -> int:
        if self._conn is None:
            # no retries: a scrape is answered in time, with or without these samples
            self._conn = self._app.connection_for_read(transport_options={
                "max_retries": 0, "socket_timeout": 2, "socket_connect_timeout": 2})
        if self._channel is None:
            self._channel = self._conn.channel()
        # RabbitMQ refuses a declare whose flags differ from Celery's durable queue (406, no count) and would
        # create a missing queue: ask passively there. Kombu's virtual transports (Redis, memory) create
        # nothing on a declare, but refuse a passive one for a queue that has no message.
        passive = self._conn.transport.driver_type == "amqp"
        try:
            return self._channel.queue_declare(queue=name, passive=passive).message_count
        except self._conn.channel_errors as exc:
            if not passive or getattr(exc, "code", None) != 404:
                raise
            self._channel = None  # the server closed it with its 404
            return 0  # no one declared the queue yet: nothing waits there

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:
                log.debug("closing the queue-depth connection", exc_info=True)


class WorkerCollector(Collector):
    """The scrape-time values of every runtime in this process (one in a worker; tests may hold several).
    Held weakly: what their owners let go of leaves the scrape."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[SSHPool] = weakref.WeakSet()
        self._queues: weakref.WeakSet[QueueDepth] = weakref.WeakSet()

    def watch_pool(self, pool: SSHPool) -> None:
        self._pools.add(pool)

    def watch_queues(self, depth: QueueDepth) -> None:
        self._queues.add(depth)

    def describe(self) -> Iterator[Metric]:
        """The families without their values: registering must not ask the broker anything."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        idle, opened, reused, ratio, queue = self._families()
        pools = list(self._pools)
        connects = sum(p.connects for p in pools)
        reuses = sum(p.reuses for p in pools)
        idle.add_metric([], sum(p.idle_count() for p in pools))
        opened.add_metric([], connects)
        reused.add_metric([], reuses)
        if connects + reuses:
            ratio.add_metric([], reuses / (connects + reuses))
        depths: dict[str, int] = {}
        for depth in list(self._queues):
            depths.update(depth.read())
        for name, count in sorted(depths.items()):
            queue.add_metric([name], count)
        yield from (idle, opened, reused, ratio, queue)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily,
                             GaugeMetricFamily]:
        return (
            GaugeMetricFamily("opsconductor_ssh_pool_idle_connections",
                              "Authenticated SSH connections idle in the pool, ready for the next branch."),
            CounterMetricFamily("opsconductor_ssh_connections_opened", "SSH connections opened (TCP, kex, auth)."),
            CounterMetricFamily("opsconductor_ssh_connections_reused", "SSH sessions served by a pooled connection."),
            GaugeMetricFamily("opsconductor_ssh_pool_reuse_ratio",
                              "Reused / (reused + opened) since the worker started; absent before the first session."),
            GaugeMetricFamily("opsconductor_queue_messages", "Messages waiting in a broker queue this worker consumes.",
                              labels=["queue"]),
        )


_collector: WorkerCollector | None = None
_collector_lock = threading.Lock()


def collector() -> WorkerCollector:
    """This process's collector, registered on first use."""
    global _collector
    with _collector_lock:
        if _collector is None:
            _collector = WorkerCollector()
            metrics.register_collector(_collector)
        return _collector


# ---- the worker's own HTTP server -------------------------------------------------------------------

class _ThreadingServer(WSGIServer):
    """A thread per connection, so a slow scraper holds no other scrape up; but this port is often open to a
    network, and the worker's threads are for branches: at most `max_clients` connections at once (more are
    closed unanswered), each closed when it sends nothing for `idle_timeout` seconds."""

    daemon_threads = True

    def limit(self, idle_timeout: float, max_clients: int) -> None:
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_clients)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        threading.Thread(target=self._handle, args=(request, client_address), daemon=True).start()

    def _handle(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError as exc:  # an idle client timed out, or went away
            log.debug("metrics connection from %s ended: %s", client_address[0], exc)
        except Exception:
            log.warning("metrics request from %s failed", client_address[0], exc_info=True)
        finally:
            self.shutdown_request(request)
            self._slots.release()


class _QuietHandler(WSGIRequestHandler):
    server: _ThreadingServer

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout)
        super().setup()

    def log_message(self, format: str, *args) -> None:  # a scrape every few seconds is not news
        pass


def metrics_app(token: str | None):
    """The WSGI app of a worker's metrics port: GET /metrics, the API's error envelope for anything else."""

    def error(start_response, status: str, code: str, message: str) -> list[bytes]:
        body = json.dumps({"error": code, "message": message, "details": {}}).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ, start_response) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return error(start_response, "404 Not Found", "not_found", "only /metrics is served here")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return error(start_response, "405 Method Not Allowed", "method_not_allowed", "use GET")
        if not metrics.token_allows(environ.get("HTTP_AUTHORIZATION"), token):
            return error(start_response, "401 Unauthorized", "unauthorized",
                         "METRICS_TOKEN is set: send it as a Bearer token")
        body = metrics.exposition()
        start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    return app


class MetricsServer:
    def __init__(self, host: str, port: int, token: str | None, *, idle_timeout: float = 10.0,
                 max_clients: int = 16):
        """``idle_timeout``: Prometheus's default scrape timeout; ``max_clients``: a few scrapers at once."""
        self._server = make_server(host, port, metrics_app(token), server_class=_ThreadingServer,
                                   handler_class=_QuietHandler)
        self._server.limit(idle_timeout, max_clients)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(celery_app, settings: Settings) -> None:
    """Serve /metrics from `celery worker` processes of ``celery_app`` when WORKER_METRICS_PORT is set:
    started when the worker is ready (beat and other commands that load the app serve nothing)."""
    from celery import signals

    servers: list[MetricsServer] = []
    depths: list[QueueDepth] = []  # kept alive here: the collector holds them weakly

    @signals.worker_ready.connect(weak=False)
    def start(sender, **_kwargs) -> None:
        if sender.app is not celery_app or not settings.worker_metrics_port:
            return
        consumer = sender
        depth = QueueDepth(celery_app, lambda: [q.name for q in consumer.task_consumer.queues])
        collector().watch_queues(depth)
        try:
            server = MetricsServer(settings.worker_metrics_host, settings.worker_metrics_port, settings.metrics_token)
        except OSError as exc:  # the port is another process's: the worker works on, without metrics
            log.error("metrics server not started on %s:%s: %s", settings.worker_metrics_host,
                      settings.worker_metrics_port, exc)
            return
        servers.append(server.start())
        depths.append(depth)
        log.info("metrics served on http://%s:%s/metrics", settings.worker_metrics_host, server.port)

    @signals.worker_shutdown.connect(weak=False)
    def stop(sender, **_kwargs) -> None:
        if sender.app is not celery_app:
            return
        while servers:
            servers.pop().stop()
        while depths:
            depths.pop().close()
