"""Fixtures for the engine's integration tests: the real PostgreSQL and Redis of this run, one real
sshd on 127.0.0.2-4, a real Celery worker subprocess, and the Flask API wired to them.

The expensive parts are package-scoped: they start once for tests/integration and stop when it is
done. The database is never truncated while a worker runs (a stale broker message would otherwise
claim a new branch that reused an old id); every test makes its own users, targets and jobs."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.dialects.postgresql import insert

from api.app import create_app
from api.dispatch import Dispatcher
from common.db import Database
from common.models import SerialCounter, utcnow
from common.services.users import create_user
from tests.conftest import FERNET_SECRET, JWT_SECRET, PASSWORD, make_settings, scratch_database, truncate_all
from tests.integration.engine_helpers import CeleryProcess, EngineApi, EventRecorder, celery_env
from tests.sshd import TEST_HOSTS, ClientKey, SshdServer, generate_client_key

CLI = str(Path(sys.executable).parent / "opsconductor")


def run_cli(args: list[str], database_url: str, **kw) -> subprocess.CompletedProcess[str]:
    """`opsconductor ARGS` in production mode on ``database_url``, without Redis (these commands need none)."""
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET_KEY": JWT_SECRET,
           "OPSCONDUCTOR_SECRET_KEY": FERNET_SECRET}
    env.pop("REDIS_URL", None)
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A PostgreSQL database of the test's own, with no table yet."""
    with scratch_database("opsc_cli") as url:
        yield url


@pytest.fixture(scope="package")
def engine_db(pg_url) -> Iterator[Database]:
    """The run's database, emptied once before any worker starts; job serials start at a random
    offset so events from other test runs (Redis pub/sub ignores DB numbers) never match ours."""
    db = Database(pg_url)
    truncate_all(db)
    year = utcnow().year
    with db.session() as session:
        for scope in (f"J{year}", f"T{year}"):
            offset = random.randint(1000, 8000)
            session.execute(insert(SerialCounter).values(scope=scope, value=offset)
                            .on_conflict_do_update(index_elements=["scope"], set_={"value": offset}))
    yield db
    db.dispose()


@pytest.fixture(scope="package")
def engine_settings(engine_db, redis_url):
    return make_settings(engine_db.url, redis_url=redis_url)


@pytest.fixture(scope="package")
def worker_env(engine_db, redis_url) -> dict[str, str]:
    return celery_env(engine_db.url, redis_url)


@pytest.fixture(scope="package")
def celery_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("celery")


@pytest.fixture(scope="package")
def default_worker(worker_env, celery_dir) -> Iterator[CeleryProcess]:
    """The worker consuming the default queue, for the whole package."""
    worker = CeleryProcess("worker", worker_env, celery_dir, "default-worker").start()
    yield worker
    worker.stop()


@pytest.fixture
def start_celery(worker_env, celery_dir) -> Iterator:
    """Start extra workers or beats for one test: start_celery("worker", queues=[...]) / ("beat");
    all are stopped (terminate, then kill) when the test ends."""
    started: list[CeleryProcess] = []

    def start(kind: str, queues=("default",)) -> CeleryProcess:
        proc = CeleryProcess(kind, worker_env, celery_dir, f"{kind}-{uuid.uuid4().hex[:6]}", queues=queues)
        started.append(proc)
        return proc.start()

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="package")
def events(redis_url) -> Iterator[EventRecorder]:
    recorder = EventRecorder(redis_url)
    yield recorder
    recorder.close()


def _admin_client(app, db: Database):
    client = app.test_client()
    username = f"engine-admin-{uuid.uuid4().hex[:6]}"
    with db.session() as session:
        create_user(session, username, PASSWORD, "admin")
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return client, {"Authorization": f"Bearer {response.get_json()['access_token']}"}


@pytest.fixture(scope="package")
def engine_app(engine_settings, engine_db, events):
    """The API as production wires it: Celery producer on Redis, Redis event bus."""
    return create_app(engine_settings, db=engine_db, dispatcher=Dispatcher.from_settings(engine_settings),
                      events=events.bus)


@pytest.fixture(scope="package")
def api(engine_app, engine_db) -> EngineApi:
    return EngineApi(*_admin_client(engine_app, engine_db))


@pytest.fixture
def make_api(engine_settings, engine_db, events):
    """An API with another dispatcher (None: nothing is sent; or one on a dead broker)."""

    def make(dispatcher) -> EngineApi:
        app = create_app(engine_settings, db=engine_db, dispatcher=dispatcher, events=events.bus)
        return EngineApi(*_admin_client(app, engine_db))

    return make


# --------------------------------------------------------------------------------------- SSH

@pytest.fixture(scope="package")
def stranger_key(ssh_user) -> ClientKey:
    """A valid key no sshd trusts."""
    return generate_client_key("ed25519")


@pytest.fixture(scope="package")
def sshd(ssh_user, client_key) -> Iterator[SshdServer]:
    """One sshd on 127.0.0.2, 127.0.0.3 and 127.0.0.4: three distinct hosts."""
    with SshdServer(TEST_HOSTS) as server:
        server.authorize(client_key.public_line)
        yield server


@pytest.fixture(scope="package")
def ssh_credential(api, client_key) -> int:
    return api.credential(private_key=client_key.private_key)


@pytest.fixture(scope="package")
def ssh_targets(api, sshd, ssh_credential) -> list[dict]:
    """Three default-queue targets, one per sshd address, made through the API."""
    return [api.target(ip=host, port=sshd.port, credential_id=ssh_credential) for host in TEST_HOSTS]


@pytest.fixture(scope="package")
def producer(engine_settings):
    """A bare Celery producer on the test broker, for sending tasks by name the way the API does."""
    return Dispatcher.from_settings(engine_settings).celery
