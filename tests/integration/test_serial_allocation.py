"""Serial allocation against real PostgreSQL (SPEC §4): concurrent across OS processes, consecutive,
growing past 9999, keyed on the UTC year; and the Alembic migrations that build the schema."""
from __future__ import annotations

import multiprocessing
import queue
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text

from common import serials
from common.db import Database
from common.migrate import alembic_config, upgrade
from common.models import Base, Job, SerialCounter, Target
from common.models.counter import allocate_job_serial, allocate_target_serial
from common.services.jobs import create_job
from common.services.targets import create_target
from tests.conftest import scratch_database

PROCESSES = 5
PER_PROCESS = 10
ACTION = {"action_type": "command", "action_name": "noop", "action_parameters": {"command": "true"},
          "timeout_seconds": None, "continue_on_error": False}


# ---------------------------------------------------------------- child processes (spawned: top level)

def _create_many(url: str, tag: str, barrier, results) -> None:
    """Wait for every sibling, then create PER_PROCESS jobs and PER_PROCESS targets, interleaved, one
    transaction each."""
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        with db.engine.connect() as conn:  # open the connection before the race starts
            conn.execute(text("SELECT 1"))
        barrier.wait(timeout=60)
        started = time.monotonic()
        made = []
        for i in range(PER_PROCESS):
            with db.session() as session:
                job = create_job(session, {"name": f"{tag}-{i}", "actions": [ACTION]}, user_id=None, role="admin")
                made.append(job.job_serial)
            with db.session() as session:
                target = create_target(session, {"name": f"{tag}-{i}", "connection": "local"},
                                       user_id=None, role="admin")
                made.append(target.target_serial)
        results.put((tag, started, time.monotonic(), made, None))
    except BaseException as exc:  # report, so the parent fails with the reason instead of a timeout
        results.put((tag, 0.0, 0.0, [], repr(exc)))
    finally:
        db.dispose()


def _run_concurrently(url: str) -> tuple[list[str], list[tuple[float, float]]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(url, f"p{n}", barrier, results)) for n in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = []
    deadline = time.monotonic() + 90
    try:
        while len(outcomes) < len(procs):
            try:
                outcomes.append(results.get(timeout=0.2))
                continue
            except queue.Empty:
                pass
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"a child process died before reporting: exit codes {dead}"
            assert time.monotonic() < deadline, f"only {len(outcomes)} of {len(procs)} processes reported"
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    errors = [(tag, err) for tag, _, _, _, err in outcomes if err]
    assert not errors, errors
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    made = [s for _, _, _, serials_, _ in outcomes for s in serials_]
    windows = [(start, end) for _, start, end, _, _ in outcomes]
    return made, windows


def _year() -> int:
    return datetime.now(UTC).year


# ---------------------------------------------------------------- concurrency

def test_concurrent_creation_from_several_processes_gives_consecutive_unique_serials(pg_db, pg_url):
    year = _year()
    made, windows = _run_concurrently(pg_url)
    # the processes really raced: every process started before the first one had finished
    assert max(start for start, _ in windows) < min(end for _, end in windows)

    total = PROCESSES * PER_PROCESS
    for prefix, column in (("J", Job.job_serial), ("T", Target.target_serial)):
        serials_ = [s for s in made if s.startswith(prefix)]
        assert len(serials_) == total
        assert len(set(serials_)) == total, "a serial was handed out twice"
        assert sorted(serials_) == [f"{prefix}{year}{n:04d}" for n in range(1, total + 1)]
        with pg_db.session() as session:
            stored = session.scalars(select(column)).all()
            counter = session.get(SerialCounter, f"{prefix}{year}")
        assert sorted(stored) == sorted(serials_)
        assert counter is not None and counter.value == total


# ---------------------------------------------------------------- growth past 9999

def test_job_counter_past_9999_grows_to_five_digits(pg_db):
    year = _year()
    with pg_db.session() as session:
        first = create_job(session, {"name": "first", "actions": [ACTION]}, user_id=None, role="admin")
    assert first.job_serial == f"J{year}0001"
    with pg_db.engine.begin() as conn:
        conn.execute(text("UPDATE serial_counters SET value = 9999 WHERE scope = :s"), {"s": f"J{year}"})
    with pg_db.session() as session:
        grown = create_job(session, {"name": "grown", "actions": [ACTION]}, user_id=None, role="admin")
    with pg_db.session() as session:
        after = create_job(session, {"name": "after", "actions": [ACTION]}, user_id=None, role="admin")
    assert grown.job_serial == f"J{year}10000"
    assert after.job_serial == f"J{year}10001"
    assert serials.require("job_serial", grown.job_serial) == grown.job_serial


def test_target_counter_past_9999_grows_to_five_digits(pg_db):
    year = _year()
    with pg_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO serial_counters (scope, value) VALUES (:s, 9999)"), {"s": f"T{year}"})
    with pg_db.session() as session:
        target = create_target(session, {"name": "grown", "connection": "local"}, user_id=None, role="admin")
    assert target.target_serial == f"T{year}10000"


# ---------------------------------------------------------------- UTC year

@pytest.mark.parametrize("allocate, prefix", [(allocate_job_serial, "J"),
                                              (allocate_target_serial, "T")])
def test_year_is_the_utc_year_of_creation(pg_db, allocate, prefix):
    west = timezone(timedelta(hours=-2))
    east = timezone(timedelta(hours=2))
    with pg_db.session() as session:
        # 2031-12-31 23:30 at UTC-2 is 2032-01-01 01:30 UTC
        assert allocate(session, datetime(2031, 12, 31, 23, 30, tzinfo=west)) == f"{prefix}20320001"
        assert allocate(session, datetime(2031, 12, 31, 23, 45, tzinfo=west)) == f"{prefix}20320002"
        # 2032-01-01 00:30 at UTC+2 is still 2031 in UTC
        assert allocate(session, datetime(2032, 1, 1, 0, 30, tzinfo=east)) == f"{prefix}20310001"
        assert allocate(session, datetime(2031, 6, 1, tzinfo=UTC)) == f"{prefix}20310002"
    with pg_db.session() as session:
        counters = {c.scope: c.value for c in session.scalars(select(SerialCounter))}
    assert counters == {f"{prefix}2032": 2, f"{prefix}2031": 2}


def test_job_and_target_counters_are_independent(pg_db):
    year = _year()
    with pg_db.session() as session:
        job = create_job(session, {"name": "j", "actions": [ACTION]}, user_id=None, role="admin")
        target = create_target(session, {"name": "t", "connection": "local"}, user_id=None, role="admin")
    assert job.job_serial == f"J{year}0001"
    assert target.target_serial == f"T{year}0001"


def test_failed_transaction_does_not_consume_a_serial(pg_db):
    year = _year()
    with pytest.raises(RuntimeError):
        with pg_db.session() as session:
            create_job(session, {"name": "doomed", "actions": [ACTION]}, user_id=None, role="admin")
            raise RuntimeError("abort")
    with pg_db.session() as session:
        job = create_job(session, {"name": "kept", "actions": [ACTION]}, user_id=None, role="admin")
        assert session.scalar(select(func.count()).select_from(Job)) == 1
    assert job.job_serial == f"J{year}0001"


# ---------------------------------------------------------------- migrations

MODEL_TABLES = set(Base.metadata.tables)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list:
    """What autogenerate would change to make the migrated database match the models (nothing, we hope)."""
    engine = create_engine(url)

    def include_object(obj, _name, type_, reflected, _compare_to):
        # an index the models build only on another dialect (Index(...).ddl_if(dialect=...)) is not missing here
        ddl_if = getattr(obj, "_ddl_if", None) if type_ == "index" and not reflected else None
        return not (ddl_if is not None and ddl_if.dialect not in (None, engine.dialect.name))

    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False, "include_object": include_object})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


@pytest.fixture
def fresh_pg_url():
    with scratch_database("opsc_mig") as url:
        yield url


@pytest.fixture
def fresh_sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'migrations.db'}"


@pytest.mark.filterwarnings("ignore:.*(operator clause|expression-based index).*:UserWarning")
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrations_build_every_model_table_and_round_trip(backend, request):
    url = request.getfixturevalue("fresh_pg_url" if backend == "postgresql" else "fresh_sqlite_url")
    assert not (_tables(url) & MODEL_TABLES)

    upgrade(url)
    assert MODEL_TABLES <= _tables(url)
    assert _schema_diff(url) == [], "the migrated schema differs from the models"

    command.downgrade(alembic_config(url), "base")
    assert not (_tables(url) & MODEL_TABLES)

    upgrade(url)
    assert MODEL_TABLES <= _tables(url)
    assert _schema_diff(url) == []

    # the rebuilt schema works: allocate a serial and create a job
    db = Database(url)
    try:
        with db.session() as session:
            job = create_job(session, {"name": "after-migrate", "actions": [ACTION]}, user_id=None, role="admin")
        assert job.job_serial == f"J{_year()}0001"
    finally:
        db.dispose()


def test_upgrade_is_idempotent(fresh_sqlite_url):
    upgrade(fresh_sqlite_url)
    upgrade(fresh_sqlite_url)  # already at head: a no-op, not an error
    assert MODEL_TABLES <= _tables(fresh_sqlite_url)
