"""The worker's pool pings only idle connections and the hot path retries once on a dead one:
PostgreSQL really kills the backend (pg_terminate_backend), nothing is simulated."""
from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy.exc import OperationalError

from common.db import Database, retry_on_disconnect
from tests.conftest import PG_ADMIN_DSN
from tests.sshd import wait_until


def _backend_pid(db: Database) -> int:
    with db.connection() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def _terminate(pid: int) -> None:
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))

            def gone() -> bool:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
                return cur.fetchone()[0] == 0

            wait_until(gone, timeout=10, message=f"backend {pid} to exit")
    finally:
        admin.close()


@pytest.fixture
def one_connection_db(pg_url, request):
    """A pool of exactly one connection, so the test knows which backend the next checkout gets."""
    db = Database(pg_url, pool_size=1, max_overflow=0, ping_idle_after=request.param)
    yield db
    db.dispose()


@pytest.mark.parametrize("one_connection_db", [0.0], indirect=True)
def test_an_idle_connection_is_pinged_and_a_dead_one_replaced_before_use(one_connection_db):
    old = _backend_pid(one_connection_db)
    _terminate(old)
    assert _backend_pid(one_connection_db) != old  # the checkout's ping found it dead: no error reached us


@pytest.mark.parametrize("one_connection_db", [3600.0], indirect=True)
def test_a_recently_used_dead_connection_fails_once_then_the_retry_gets_a_new_one(one_connection_db):
    old = _backend_pid(one_connection_db)
    _terminate(old)

    with pytest.raises(OperationalError):  # not pinged: used a moment ago
        _backend_pid(one_connection_db)
    renewed = _backend_pid(one_connection_db)  # the failure renewed the pool
    assert renewed != old

    _terminate(renewed)
    attempts: list[int] = []

    def work() -> int:
        attempts.append(1)
        return _backend_pid(one_connection_db)

    assert retry_on_disconnect(work) not in (old, renewed)
    assert len(attempts) == 2


def test_retry_on_disconnect_does_not_repeat_other_errors(pg_url):
    db = Database(pg_url, pool_size=1, max_overflow=0, ping_idle_after=3600.0)
    attempts: list[int] = []

    def work() -> None:
        attempts.append(1)
        with db.connection() as conn:
            conn.exec_driver_sql("SELECT 1/0")

    try:
        with pytest.raises(Exception, match="division by zero"):
            retry_on_disconnect(work)
        assert len(attempts) == 1
    finally:
        db.dispose()
