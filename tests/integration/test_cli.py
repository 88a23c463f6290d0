"""The `opsconductor` command against a fresh PostgreSQL database: db upgrade, users create, prune."""
import os
import subprocess

from sqlalchemy import create_engine, text

from common.db import Database
from common.models import utcnow
from tests.history_data import add_details, build_history
from tests.integration.conftest import CLI, run_cli


def test_db_upgrade_then_users_create(empty_pg):
    upgraded = run_cli(["db", "upgrade"], empty_pg)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database at head" in upgraded.stdout

    created = run_cli(["users", "create", "ops-lead", "--role", "admin", "--password", "long-enough-pw"], empty_pg)
    assert created.returncode == 0, created.stderr
    assert "username=ops-lead role=admin" in created.stdout

    duplicate = run_cli(["users", "create", "ops-lead", "--password", "long-enough-pw"], empty_pg)
    assert duplicate.returncode != 0
    assert "already exists" in duplicate.stderr

    short = run_cli(["users", "create", "shorty", "--password", "x"], empty_pg)
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


def test_prune_dry_run_then_prune(empty_pg):
    """The hand-made history placed relative to now: `prune --older-than 30d --dry-run` prints what
    would go and changes nothing; without --dry-run exactly that goes, and recent history stays."""
    assert run_cli(["db", "upgrade"], empty_pg).returncode == 0
    db = Database(empty_pg)
    try:
        with db.session() as session:
            build_history(session, now=utcnow())
            add_details(session)

        def state() -> list[tuple]:
            with db.session() as session:
                return session.execute(text(
                    "SELECT e.execution_serial, e.pruned_at IS NOT NULL, count(DISTINCT b.id), count(b.result_output),"
                    " count(s.id), (SELECT count(*) FROM execution_events v WHERE v.execution_id = e.id)"
                    " FROM executions e JOIN branches b ON b.execution_id = e.id"
                    " LEFT JOIN branch_steps s ON s.branch_id = b.id GROUP BY e.id ORDER BY e.execution_serial")).all()

        before = state()
        dry = run_cli(["prune", "--older-than", "30d", "--dry-run"], empty_pg)
        assert dry.returncode == 0, dry.stderr
        # ended more than 30 days ago: J20240042.0001, J20240043.0001 and .0002, one branch each (J20240042.0002
        # started exactly 30 days ago); each has a step and three events (started, branch, completed)
        assert "would prune the history of 3 executions that ended before " in dry.stdout
        assert [line.split() for line in dry.stdout.splitlines()[1:]] == [
            ["branch", "outputs", "3"], ["branch", "steps", "3"], ["events", "9"], ["dry", "run:", "nothing", "was",
                                                                                   "removed"]]
        assert state() == before

        real = run_cli(["prune", "--older-than", "30d"], empty_pg)
        assert real.returncode == 0, real.stderr
        assert "pruned the history of 3 executions" in real.stdout
        assert [line.split()[-1] for line in real.stdout.splitlines()[1:4]] == ["3", "3", "9"]
        after = state()
        old = {"J20240042.0001", "J20240043.0001", "J20240043.0002"}
        for was, now in zip(before, after, strict=True):
            serial, _, branches, *_ = was
            assert now == ((serial, True, branches, 0, 0, 0) if serial in old else was)

        again = run_cli(["prune", "--older-than", "30d"], empty_pg)
        assert "pruned the history of 0 executions" in again.stdout
        bad = run_cli(["prune", "--older-than", "soon"], empty_pg)
        assert bad.returncode == 2 and "expected an age like 30d" in bad.stderr
    finally:
        db.dispose()
