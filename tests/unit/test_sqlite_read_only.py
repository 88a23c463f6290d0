"""On SQLite a transaction that only reads begins deferred: it runs while another connection holds
the write lock, where an ordinary (BEGIN IMMEDIATE) transaction has to wait for it."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from common.db import Database


@pytest.fixture
def sqlite_db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'ro.db'}", connect_args={"check_same_thread": False, "timeout": 0.2})
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    yield db
    db.dispose()


def test_a_read_only_transaction_runs_beside_a_writer(sqlite_db):
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with sqlite_db.session() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        with sqlite_db.session(read_only=True) as session:  # sees the last commit, does not wait
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1
        with pytest.raises(OperationalError, match="locked"):  # an ordinary one queues on the lock
            with sqlite_db.session() as session:
                session.execute(text("SELECT count(*) FROM t"))
    finally:
        release.set()
        thread.join(10)
    with sqlite_db.session(read_only=True) as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 2
