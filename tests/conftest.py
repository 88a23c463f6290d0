"""Shared fixtures: a fresh PostgreSQL database and Redis DB per run, both built through the
migrations; SQLite too; the Flask app, its client and logged-in users of each role."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import pytest
import redis
from sqlalchemy import text

from common.config import Settings
from common.db import Database
from common.migrate import upgrade
from common.models import Base
from common.services.users import create_user
from tests.processes import Processes
from tests.sshd import ClientKey, TestUser, ensure_sshd_installed, ensure_test_user, generate_client_key

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_BASE = os.environ.get("TEST_PG_URL_BASE", "postgresql+psycopg2://postgres@127.0.0.1:5432/")
REDIS_BASE = os.environ.get("TEST_REDIS_BASE", "redis://127.0.0.1:6379/")

JWT_SECRET = "test-jwt-secret-" + "x" * 40
FERNET_SECRET = "test-fernet-secret-" + "y" * 40
PASSWORD = "correct-horse-battery"


def pg_admin(sql: str, *params: object) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
    finally:
        conn.close()


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped afterwards (connections and all)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    pg_admin(f"CREATE DATABASE {name}")
    try:
        yield PG_URL_BASE + name
    finally:
        pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, schema made by the migrations."""
    with scratch_database("opsc_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    upgrade(url)
    return url


# Redis databases a run may claim. Celery queues and rate-limit counters live in the database, so
# a database shared with another run would let its workers take our tasks: claim an empty one.
_REDIS_CANDIDATES = [int(n) for n in os.environ.get("TEST_REDIS_DBS", "13,15,11,10,9,8,7").split(",")]
_CLAIM_KEY = "opsconductor-test:claimed-by"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database of this run's own: the first candidate no live run has claimed, emptied
    before and after. (The e2e stack runs a redis-server of its own; benchmarks use 12.)"""
    claim = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for number in _REDIS_CANDIDATES:
        url = f"{REDIS_BASE}{number}"
        client = redis.Redis.from_url(url)
        if client.set(_CLAIM_KEY, claim, nx=True, ex=3600):
            client.flushdb()  # unclaimed: whatever is left belongs to a run that died
            client.set(_CLAIM_KEY, claim, ex=3600)
            break
        client.close()
    else:
        pytest.fail(f"no free Redis database among {_REDIS_CANDIDATES}")
    yield url
    client.flushdb()
    client.close()


def truncate_all(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


_DATABASES: dict[str, Database] = {}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request) -> Iterator[Database]:
    """An empty database on each backend; tables truncated before each test."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    database = _DATABASES.get(url)
    if database is None:
        database = _DATABASES[url] = Database(url)
    truncate_all(database)
    yield database


@pytest.fixture
def pg_db(pg_url) -> Iterator[Database]:
    database = _DATABASES.get(pg_url)
    if database is None:
        database = _DATABASES[pg_url] = Database(pg_url)
    truncate_all(database)
    yield database


def make_settings(database_url: str, **overrides) -> Settings:
    return Settings(database_url=database_url, jwt_secret_key=JWT_SECRET, secret_key=FERNET_SECRET, **overrides)


@pytest.fixture
def settings(db) -> Settings:
    return make_settings(db.url)


@pytest.fixture
def app(settings, db):
    from api.app import create_app

    return create_app(settings, db=db)


@pytest.fixture
def client(app):
    return app.test_client()


class Users:
    """Creates users of each role on demand and returns ready-made Authorization headers."""

    def __init__(self, db: Database, client):
        self.db = db
        self.client = client
        self._headers: dict[str, dict[str, str]] = {}

    def create(self, username: str, role: str, password: str = PASSWORD) -> None:
        with self.db.session() as session:
            create_user(session, username, password, role)

    def token(self, username: str, password: str = PASSWORD) -> dict:
        response = self.client.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.json
        return response.json

    def headers(self, role: str) -> dict[str, str]:
        if role not in self._headers:
            self.create(role, role)
            self._headers[role] = {"Authorization": f"Bearer {self.token(role)['access_token']}"}
        return self._headers[role]


@pytest.fixture
def users(db, client) -> Users:
    return Users(db, client)


@pytest.fixture
def admin(users) -> dict[str, str]:
    return users.headers("admin")


@pytest.fixture
def operator(users) -> dict[str, str]:
    return users.headers("operator")


@pytest.fixture
def viewer(users) -> dict[str, str]:
    return users.headers("viewer")


# ---------------------------------------------------------------- SSH (worker, integration and e2e suites)

@pytest.fixture(scope="session")
def ssh_user() -> TestUser:
    """The login user of every private sshd the tests start (needs root: it creates the user)."""
    assert os.geteuid() == 0, "SSH tests need root (test user, private sshd)"
    ensure_sshd_installed()
    return ensure_test_user()


@pytest.fixture(scope="session")
def client_key(ssh_user) -> ClientKey:
    """An ed25519 key the suites' sshd servers trust."""
    return generate_client_key("ed25519")


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    """Subprocesses of the test's own (servers, workers), each stopped with its whole tree afterwards."""
    manager = Processes(tmp_path / "logs")
    try:
        yield manager
    finally:
        manager.stop_all()
