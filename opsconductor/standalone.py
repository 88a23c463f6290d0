"""The embedded default in one process: API and WebSocket on a threaded server, SQLite in ./var,
Celery on its in-memory transport with an in-process thread-pool worker, an in-process event bus,
the sweep/scheduler loop, and running branches' output in memory. Same interfaces as production,
nothing to install but Python."""
from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

from celery import Celery
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from api.app import create_app
from api.bootstrap import ensure_startup_admin
from api.dispatch import Dispatcher
from api.errors import server_error_body
from common.config import Settings
from common.db import Database
from common.events import LocalEventBus
from common.live_output import LocalOutputStore
from common.migrate import upgrade
from worker.celery_app import make_celery
from worker.maintenance import Maintenance
from worker.metrics import QueueDepth, collector
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class _QuietQueryHandler(WSGIRequestHandler):
    """Access log without query strings: `?token=` must never reach a log. What the server answers
    itself, before Flask sees a request (a 100 KB header is a 431), is in the API's JSON envelope
    instead of http.server's HTML page."""

    def log_request(self, code="-", size="-"):
        path = (getattr(self, "path", None) or "").split("?", 1)[0]  # unset when the request line was bad
        self.log("info", '"%s %s" %s %s', self.command or "-", path, code, size)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        body = server_error_body(code, explain or message)
        self.log_error("code %d, message %s", code, message)
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _websocket_ends_quietly(app):
    """flask-sock answers an ordinary empty 200 once a WebSocket handler returns; werkzeug's server would write
    that reply after the socket's close frame, and browsers then fail the closing socket ("Invalid frame
    header"). A 200 to a request that asked to upgrade means the upgrade happened: end the connection instead,
    as werkzeug does quietly on ConnectionError, writing nothing. (A refused handshake's answer is passed on.)"""

    def wsgi(environ, start_response):
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return app(environ, start_response)
        reply: list = []

        def hold(status, headers, exc_info=None):
            reply.append((status, headers, exc_info))
            return lambda data: None

        body = app(environ, hold)
        if reply and reply[0][0].startswith("200"):
            getattr(body, "close", lambda: None)()
            try:  # the server closes the TCP connection after the closing handshake (RFC 6455 §7.1.1)
                environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            except (KeyError, OSError):
                pass
            raise ConnectionError("websocket closed")
        if reply:
            start_response(*reply[0])
        return body

    return wsgi


class EmbeddedDispatcher(Dispatcher):
    """The in-process worker consumes one queue, so every branch goes there whatever its target's queue."""

    def send(self, task_name: str, items: list[tuple[list, str]]) -> None:
        super().send(task_name, [(args, "default") for args, _queue in items])


@dataclass
class Embedded:
    settings: Settings
    app: Flask
    celery: Celery
    runtime: WorkerRuntime
    queue_depth: QueueDepth | None = None
    server: BaseWSGIServer | None = None
    _stop: threading.Event | None = None
    _threads: tuple = ()

    def start(self, host: str = "127.0.0.1", port: int = 8000) -> Embedded:
        self._stop = threading.Event()
        worker = self.celery.WorkController(pool="threads", concurrency=self.settings.worker_concurrency,
                                            queues=["default"], hostname="embedded@opsconductor",
                                            without_heartbeat=True, without_mingle=True, without_gossip=True,
                                            loglevel="WARNING")
        self.server = make_server(host, port, _websocket_ends_quietly(self.app), threaded=True,
                                  request_handler=_QuietQueryHandler)
        self._worker = worker
        self._threads = (
            threading.Thread(target=worker.start, name="celery-worker", daemon=True),
            threading.Thread(target=self._maintenance().run, args=(self._stop,), name="maintenance", daemon=True),
            threading.Thread(target=self.server.serve_forever, name="http", daemon=True),
        )
        for t in self._threads:
            t.start()
        return self

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("the stack is not started")
        return self.server.server_port

    def _maintenance(self) -> Maintenance:
        """The sweep and the scheduler, sending to the one queue the in-process worker consumes."""
        return Maintenance(self.settings, self.runtime.db, self.runtime.events, EmbeddedDispatcher(self.celery).send)

    def stop(self) -> None:
        if self._stop:
            self._stop.set()
        if self.server:
            self.server.shutdown()
        try:
            self._worker.stop(in_sighandler=False)
        except Exception:
            log.debug("worker stop", exc_info=True)
        self.runtime.close()
        if self.queue_depth is not None:
            self.queue_depth.close()


def build(settings: Settings | None = None) -> Embedded:
    settings = settings or Settings.from_env(embedded=True)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    ensure_startup_admin(settings, db)
    events = LocalEventBus()
    output = LocalOutputStore(settings.output_cap_bytes)  # written by the in-process worker, read by the API
    runtime = WorkerRuntime(settings, db=db, events=events, output_store=output)
    celery = make_celery(settings, runtime=runtime)
    runtime.sender = EmbeddedDispatcher(celery).send  # one queue in-process, whatever the target's
    queue_depth = QueueDepth(celery, lambda: ["default"])
    collector().watch_queues(queue_depth)  # the API's /metrics reads it, in this process
    app = create_app(settings, db=db, dispatcher=EmbeddedDispatcher(celery), events=events, output=output)
    return Embedded(settings=settings, app=app, celery=celery, runtime=runtime, queue_depth=queue_depth)
