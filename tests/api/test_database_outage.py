"""The HTTP API while the database cannot be reached: 503 service_unavailable in the error envelope with
Retry-After, for reads and writes alike; a write cut off mid-transaction leaves nothing behind; the app
answers again as soon as the database is back, without a restart. A statement that fails on a working
connection (a bug) is still a 500.

The outages are real, and the shared PostgreSQL server keeps running: the app reaches its scratch
database through a TCP forwarder of the test's own, and the outage is either that forwarder going away
(every connection cut, new ones refused: a server that is down) or the database refusing connections
(ALLOW_CONNECTIONS false, its backends terminated: tests/security/test_socket_database_outage.py's
approach). The pool timeout and SQLite's lock are real too."""
from __future__ import annotations

import logging
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api import errors as api_errors
from api.app import create_app
from api.context import platform
from common.db import Database
from common.migrate import upgrade
from common.services.users import create_user
from tests.api.conftest import assert_error, table_snapshot
from tests.conftest import PASSWORD, make_settings, pg_admin, scratch_database
from tests.sshd import wait_until

RETRY_AFTER = api_errors.DATABASE_RETRY_AFTER_SECONDS
JOB = {"name": "outage", "actions": [{"action_type": "command", "action_name": "a",
                                      "action_parameters": {"command": "true"}}]}
# limits on (their headers and Retry-After are added to every /api response), but out of the way
GENEROUS_LIMITS = {"rate_limit_standard": "100000 per minute", "rate_limit_admin": "100000 per minute",
                   "rate_limit_login": "100000 per minute"}


class TcpForwarder:
    """127.0.0.1:<port> forwarded to the PostgreSQL server. stop() is the server going away for whoever
    connects through it: every forwarded connection is cut and, with nothing listening, new ones are
    refused. start() again on the same port is the server coming back."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = 0
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._acceptor: threading.Thread | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # the acceptor notices stop() within this
        self.port = listener.getsockname()[1]
        self._running.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def stop(self) -> None:
        self._running.clear()
        if self._acceptor is not None:
            self._acceptor.join(5)  # the listener is closed: connects are refused from here on
            self._acceptor = None
        with self._lock:
            live = list(self._open)
        for sock in live:
            _shutdown(sock)  # wakes both pumps of the connection; the last one closes it
        wait_until(lambda: not self._open, timeout=5, message="forwarded connections closed")

    def _accept(self, listener: socket.socket) -> None:
        try:
            while self._running.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                client.settimeout(None)
                upstream.settimeout(None)
                with self._lock:
                    self._open |= {client, upstream}
                finished: list[int] = []
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst, finished), daemon=True).start()
        finally:
            listener.close()

    def _pump(self, src: socket.socket, dst: socket.socket, finished: list[int]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(src)
            _shutdown(dst)
            with self._lock:
                finished.append(1)
                last = len(finished) == 2
                if last:
                    self._open -= {src, dst}
            if last:
                src.close()
                dst.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass



@dataclass
class Outage:
    """How the database goes away: "server_down" (the forwarder stops: connections cut, then refused) or
    "refusing_connections" (the database refuses new connections and its backends are terminated)."""

    kind: str
    forwarder: TcpForwarder
    database: str
    down: bool = False

    def begin(self) -> None:
        self.down = True
        if self.kind == "server_down":
            self.forwarder.stop()
        else:
            pg_admin(f"ALTER DATABASE {self.database} ALLOW_CONNECTIONS false")
            # the timeout makes pg_terminate_backend wait until each backend has exited
            pg_admin("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                      self.database)

    def end(self) -> None:
        if not self.down:
            return
        if self.kind == "server_down":
            self.forwarder.start()
        else:
            pg_admin(f"ALTER DATABASE {self.database} ALLOW_CONNECTIONS true")
        self.down = False


@pytest.fixture(scope="module")
def outage_db_url() -> Iterator[str]:
    """A scratch database of this module's own (it is the one that goes away), schema by the migrations."""
    with scratch_database("opsc_apidown") as url:
        upgrade(url)
        yield url


@dataclass
class Served:
    client: FlaskClient
    db: Database
    outage: Outage
    headers: dict[str, str]


def _login(client: FlaskClient, username: str) -> dict[str, str]:
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


@pytest.fixture(params=["server_down", "refusing_connections"])
def served(request, outage_db_url) -> Iterator[Served]:
    """The app (a fresh process's worth: its own engine and pool) reaching the database through the
    forwarder, an operator logged in, and the outage to inflict."""
    url = make_url(outage_db_url)
    forwarder = TcpForwarder((url.host or "127.0.0.1", url.port or 5432))
    forwarder.start()
    outage = Outage(request.param, forwarder, url.database or "")
    db = Database(url.set(host="127.0.0.1", port=forwarder.port).render_as_string(hide_password=False))
    try:
        with db.engine.begin() as conn:
            conn.execute(text("TRUNCATE users, jobs, job_actions, serial_counters RESTART IDENTITY CASCADE"))
        with db.session() as session:
            create_user(session, "operator1", PASSWORD, "operator")
        app = create_app(make_settings(db.url, **GENEROUS_LIMITS), db=db)
        client = app.test_client()
        yield Served(client, db, outage, _login(client, "operator1"))
    finally:
        outage.end()
        db.dispose()
        forwarder.stop()


def assert_unavailable(response) -> dict:
    """503 service_unavailable in the envelope, with Retry-After, and nothing of the failure's insides."""
    body = assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == str(RETRY_AFTER)
    assert body["details"] == {"retry_after": RETRY_AFTER}
    assert f"retry after {RETRY_AFTER} seconds" in body["message"]
    raw = response.get_data(as_text=True)
    for leak in ("Traceback", "psycopg2", "OperationalError", "sqlalchemy", "127.0.0.1", "SELECT"):
        assert leak not in raw, (leak, raw)
    return body


def _one_line_warnings(caplog) -> list[logging.LogRecord]:
    """What api/errors.py logged for the outage: one warning line per request, no tracebacks."""
    records = [r for r in caplog.records if r.name == api_errors.__name__]
    assert records
    for record in records:
        assert record.levelno == logging.WARNING, record.getMessage()
        assert record.exc_info is None
        assert "database unavailable" in record.getMessage() and "\n" not in record.getMessage()
    return records


def test_reads_and_writes_answer_503_while_the_database_is_away_then_recover(served, caplog):
    client, headers = served.client, served.headers
    created = client.post("/api/jobs", json=JOB, headers=headers)
    assert created.status_code == 201, created.get_json()
    serial = created.get_json()["job_serial"]
    before = table_snapshot(served.db)

    caplog.set_level(logging.WARNING, logger=api_errors.__name__)
    served.outage.begin()
    assert_unavailable(client.get("/api/jobs", headers=headers))
    assert_unavailable(client.get(f"/api/jobs/{serial}", headers=headers))
    assert_unavailable(client.post("/api/jobs", json={**JOB, "name": "during the outage"}, headers=headers))
    assert_unavailable(client.post("/api/auth/login", json={"username": "operator1", "password": PASSWORD}))
    records = _one_line_warnings(caplog)
    assert len(records) == 4, [r.getMessage() for r in records]
    assert "path=/api/jobs" in records[0].getMessage() and "psycopg2.OperationalError" in records[0].getMessage()
    # a request that needs no database is unaffected
    assert client.get("/healthz").status_code == 200

    served.outage.end()
    wait_until(lambda: client.get("/api/jobs", headers=headers).status_code == 200, timeout=20, interval=0.05,
               message="the API answering again once the database is back")
    assert table_snapshot(served.db) == before  # the write during the outage left nothing
    one = client.get(f"/api/jobs/{serial}", headers=headers)
    assert one.status_code == 200 and "Retry-After" not in one.headers
    assert client.post("/api/jobs", json=JOB, headers=headers).status_code == 201


def test_a_write_cut_off_mid_transaction_leaves_nothing_behind(served, caplog):
    """The database goes away between the statements of one transaction (the serial counter is already
    bumped, the job's INSERT is next): 503, and none of it is kept."""
    client, headers, db = served.client, served.headers, served.db
    before = table_snapshot(db)
    armed = threading.Event()

    @event.listens_for(db.engine, "before_cursor_execute")
    def _cut(_conn, _cursor, statement, _params, _context, _many):
        if armed.is_set() and statement.startswith("INSERT INTO jobs "):
            armed.clear()
            served.outage.begin()

    caplog.set_level(logging.WARNING, logger=api_errors.__name__)
    armed.set()
    try:
        assert_unavailable(client.post("/api/jobs", json=JOB, headers=headers))
    finally:
        event.remove(db.engine, "before_cursor_execute", _cut)
    assert served.outage.down, "the outage began inside the request"
    assert len(_one_line_warnings(caplog)) == 1

    served.outage.end()
    wait_until(lambda: client.get("/api/jobs", headers=headers).status_code == 200, timeout=20, interval=0.05,
               message="the API answering again once the database is back")
    assert table_snapshot(db) == before  # counter bump and all: rolled back with the connection


def test_a_pool_checkout_timeout_is_503(outage_db_url, caplog):
    """Every pooled connection busy past pool_timeout (sqlalchemy.exc.TimeoutError): the same 503."""
    db = Database(outage_db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with db.engine.begin() as conn:
            conn.execute(text("TRUNCATE users RESTART IDENTITY CASCADE"))
        with db.session() as session:
            create_user(session, "pooled", PASSWORD, "viewer")
        client = create_app(make_settings(outage_db_url, **GENEROUS_LIMITS), db=db).test_client()
        headers = _login(client, "pooled")
        caplog.set_level(logging.WARNING, logger=api_errors.__name__)
        with db.engine.connect():  # the pool's only connection
            assert_unavailable(client.get("/api/jobs", headers=headers))
        assert "sqlalchemy.exc.TimeoutError" in _one_line_warnings(caplog)[0].getMessage()
        assert client.get("/api/jobs", headers=headers).status_code == 200
    finally:
        db.dispose()


def test_sqlite_locked_past_its_timeout_is_503(tmp_path, caplog):
    """SQLite's writer lock held elsewhere past the busy timeout ("database is locked"): 503 for the write,
    which changes nothing; reads go on beside the lock (WAL); the write succeeds once the lock is gone."""
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url, connect_args={"timeout": 0.2})
    try:
        with db.session() as session:
            create_user(session, "writer", PASSWORD, "operator")
        client = create_app(make_settings(url, **GENEROUS_LIMITS), db=db).test_client()
        headers = _login(client, "writer")
        before = table_snapshot(db)
        caplog.set_level(logging.WARNING, logger=api_errors.__name__)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            assert_unavailable(client.post("/api/jobs", json=JOB, headers=headers))
            assert client.get("/api/jobs", headers=headers).status_code == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert "database is locked" in _one_line_warnings(caplog)[0].getMessage()
        assert table_snapshot(db) == before
        assert client.post("/api/jobs", json=JOB, headers=headers).status_code == 201
    finally:
        db.dispose()


@pytest.fixture
def failing_app(app):
    """The app with throwaway routes whose statements fail on a working connection."""

    @app.get("/api/test-missing-table")
    def _missing_table():
        with platform().db.session() as session:  # PostgreSQL: ProgrammingError; SQLite: OperationalError
            session.execute(text("SELECT * FROM no_such_table"))
        return {}

    @app.get("/api/test-statement-timeout")
    def _statement_timeout():
        with platform().db.session() as session:  # PostgreSQL: QueryCanceled, an OperationalError (57014)
            session.execute(text("SET LOCAL statement_timeout = '20ms'"))
            session.execute(text("SELECT pg_sleep(2)"))
        return {}

    return app


def test_a_statement_failing_on_a_live_connection_is_still_500(failing_app, db, caplog):
    client = failing_app.test_client()
    caplog.set_level(logging.WARNING, logger=api_errors.__name__)
    paths = ["/api/test-missing-table"] + (["/api/test-statement-timeout"] if db.dialect == "postgresql" else [])
    for path in paths:
        response = client.get(path)
        assert_error(response, 500, "internal_error")
        assert "Retry-After" not in response.headers
        assert "no_such_table" not in response.get_data(as_text=True)
    unhandled = [r for r in caplog.records if r.name == api_errors.__name__]
    assert [r.getMessage().split(" method=")[0] for r in unhandled] == ["unhandled error"] * len(paths)


class _DriverError(Exception):
    """A stand-in DBAPI exception with the attributes the drivers set."""

    def __init__(self, message: str, pgcode: str | None = None):
        super().__init__(message)
        self.pgcode = pgcode


def _sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize("exc, unavailable", [
    (PoolTimeout("QueuePool limit of size 1 overflow 0 reached"), True),
    (DBAPIError("SELECT 1", {}, _DriverError("server closed the connection unexpectedly"),
                connection_invalidated=True), True),
    (OperationalError("connect", {}, _DriverError("connection refused")), True),  # no SQLSTATE: client side
    (OperationalError("SELECT 1", {}, _DriverError("terminating connection", "57P01")), True),
    (OperationalError("connect", {}, _DriverError("too many clients", "53300")), True),
    (OperationalError("SELECT 1", {}, _DriverError("connection failure", "08006")), True),
    (OperationalError("BEGIN", {}, _sqlite_error("database is locked", 5)), True),
    (OperationalError("BEGIN", {}, _sqlite_error("database is locked", 517)), True),  # SQLITE_BUSY_SNAPSHOT
    (OperationalError("SELECT 1", {}, _DriverError("canceling statement due to statement timeout", "57014")),
     False),
    (OperationalError("UPDATE t", {}, _DriverError("deadlock detected", "40P01")), False),
    (OperationalError("SELECT x", {}, _sqlite_error("no such table: x", 1)), False),
    (ProgrammingError("SELECT x", {}, _DriverError("relation x does not exist", "42P01")), False),
    (IntegrityError("INSERT", {}, _DriverError("duplicate key", "23505")), False),
    (RuntimeError("not a database error"), False),
])
def test_what_counts_as_the_database_being_unavailable(exc, unavailable):
    assert api_errors.database_unavailable(exc) is unavailable


def test_the_openapi_document_promises_503_with_retry_after_on_declared_routes(app):
    document = app.test_client().get("/api/openapi.json").get_json()
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if path in ("/healthz", "/api/openapi.json", "/metrics"):  # no database behind them
                assert "503" not in responses, (method, path)
                continue
            assert "503" in responses, (method, path)
            if path == "/readyz":
                continue  # its own 503 (not_ready), no Retry-After
            assert responses["503"]["headers"]["Retry-After"]["required"] is True, (method, path)
            assert responses["503"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorOut"}
            checked += 1
    assert checked >= 30
