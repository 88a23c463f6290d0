"""The `opsconductor` command against a fresh PostgreSQL database: db upgrade, users create."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import FERNET_SECRET, JWT_SECRET, scratch_database

CLI = str(Path(sys.executable).parent / "opsconductor")


@pytest.fixture
def empty_pg():
    with scratch_database("opsc_cli") as url:
        yield url


def run(args, url, **kw):
    env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET_KEY": JWT_SECRET, "OPSCONDUCTOR_SECRET_KEY": FERNET_SECRET}
    env.pop("REDIS_URL", None)
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60, **kw)


def test_db_upgrade_then_users_create(empty_pg):
    upgraded = run(["db", "upgrade"], empty_pg)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database at head" in upgraded.stdout

    created = run(["users", "create", "ops-lead", "--role", "admin", "--password", "long-enough-pw"], empty_pg)
    assert created.returncode == 0, created.stderr
    assert "username=ops-lead role=admin" in created.stdout

    duplicate = run(["users", "create", "ops-lead", "--password", "long-enough-pw"], empty_pg)
    assert duplicate.returncode != 0
    assert "already exists" in duplicate.stderr

    short = run(["users", "create", "shorty", "--password", "x"], empty_pg)
    assert short.returncode != 0 and "Password too short" in short.stderr

    engine = create_engine(empty_pg)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT username, role FROM users ORDER BY id")).all()
    engine.dispose()
    assert rows == [("ops-lead", "admin")]


def test_production_mode_without_secrets_is_refused(empty_pg):
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET_KEY", "OPSCONDUCTOR_SECRET_KEY")}
    env["DATABASE_URL"] = empty_pg
    result = subprocess.run([CLI, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "production mode needs JWT_SECRET_KEY" in result.stderr
