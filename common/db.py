"""Engine and session factory. The caller owns the session: services never commit on their own."""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(database_url: str, *, ping_idle_after: float | None = None, **kwargs) -> Engine:
    """``ping_idle_after``: instead of pinging on every checkout (pool_pre_ping), ping only a
    connection that sat idle that many seconds; see _ping_when_idle."""
    if database_url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": 30, **kwargs.pop("connect_args", {})}
        engine = create_engine(database_url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", ping_idle_after is None)
    engine = create_engine(database_url, **kwargs)
    if ping_idle_after is not None:
        _ping_when_idle(engine, ping_idle_after)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """pool_pre_ping costs a round trip per checkout: on the worker's hot path, two or three per
    branch. A connection used a moment ago is as alive as a ping could show; ping only those idle
    longer (a restarted server is found there, and the pool swaps the connection for a new one).
    A server lost within the window fails one statement; SQLAlchemy then invalidates the whole
    pool, and callers on the hot path retry once (retry_on_disconnect)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, proxy):
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("idle connection failed its ping") from exc


def retry_on_disconnect(work: Callable[[], T]) -> T:
    """Run ``work``; if it failed because its connection was dead (the pool has been renewed
    since), run it once more. Only for work that is safe to repeat, like a conditional update."""
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("database connection lost; retrying once on a new one")
        return work()


# SQLSTATEs the server sends when it is, or is going, away: class 08 (connection exception), a shutdown
# (57P01 admin, 57P02 crash), still starting up (57P03), out of connection slots (53300)
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's primary result codes for a database that cannot be had now: SQLITE_BUSY (locked past the busy
# timeout), SQLITE_LOCKED, SQLITE_CANTOPEN
_UNAVAILABLE_SQLITE_CODES = frozenset({5, 6, 14})
_UNAVAILABLE_SQLITE_TEXT = ("database is locked", "database table is locked", "unable to open database file")


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now (a 503: retry later), as opposed to a statement
    that failed on a working connection (a bug or a constraint: 500 or 409).

    Unreachable: a pool checkout that timed out; a connection the driver found dead mid-use (SQLAlchemy
    sets connection_invalidated); an OperationalError raised without a SQLSTATE, which for psycopg is a
    client-side failure: connection refused, the server closed the connection, a connect-time FATAL
    (database not accepting connections); or one whose SQLSTATE says the server is going or gone. For
    SQLite: locked past its timeout, or the file cannot be opened. A statement timeout (57014), a
    deadlock (40P01), a ProgrammingError and the like are answered on a live connection: not unreachable."""
    if isinstance(exc, (PoolTimeout, DisconnectionError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _UNAVAILABLE_SQLITE_CODES
        return str(orig).startswith(_UNAVAILABLE_SQLITE_TEXT)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3, psycopg2
    return state is None or state.startswith("08") or state in _UNAVAILABLE_SQLSTATES


def while_unavailable(work: Callable[[], T], *, budget: float, what: str, first_wait: float = 0.25,
                      max_wait: float = 5.0) -> T:
    """Run ``work``; while the database is unavailable, wait (doubling, up to ``max_wait``) and run
    it again, for up to ``budget`` seconds. For the worker's writes of work already done on a
    target: a result must outlive a database restart or outage. ``work`` must be safe to repeat."""
    deadline = time.monotonic() + budget
    wait = first_wait
    while True:
        try:
            return work()
        except Exception as exc:
            if not unavailable(exc) or time.monotonic() + wait > deadline:
                raise
            log.warning("database unavailable for %s (%s); trying again in %.2gs", what, type(exc).__name__, wait)
        time.sleep(wait)
        wait = min(wait * 2, max_wait)


READ_ONLY = "opsconductor_read_only"  # execution option: this transaction only reads


def _configure_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers, and BEGIN IMMEDIATE so writers queue on the lock instead of
    failing with 'database is locked' when a read transaction tries to upgrade. Transactions
    that only read begin deferred: under WAL they never wait for a writer, nor make one wait."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


class Database:
    """One engine and session factory per process."""

    def __init__(self, database_url: str, **engine_kwargs):
        self.url = database_url
        self.engine = make_engine(database_url, **engine_kwargs)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessionmaker = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}),
                                               expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception. ``read_only`` is a
        promise that it writes nothing; SQLite then lets it run beside a writer."""
        session = (self._read_sessionmaker if read_only else self.sessionmaker)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection for the worker's hot path: Core statements, no ORM session, and
        several transactions on one checkout (commit as you go). Whatever is not committed when
        the block ends, by exception or not, is rolled back."""
        with self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
