"""Roll-ups on the real engine: executions of one job closing at the same instant (their roll-up rows
shared) count once each and never deadlock; migration 0009 rolls up a history that predates it."""
from __future__ import annotations

from functools import partial

import pytest
from alembic import command
from sqlalchemy import delete, func, select, update

from common.db import Database
from common.migrate import alembic_config, upgrade
from common.models import BranchRollup, Execution, ExecutionRollup, Job, JobRollup
from common.services import rollups
from common.services.executions import claim_branch, finish_and_close, start_execution
from common.statuses import BranchStatus, ErrorType
from tests.conftest import scratch_database
from tests.history_data import NOW, all_figures, build_history
from tests.integration.engine_helpers import run_together
from tests.integration.test_recovery import BRANCHES, race_job  # noqa: F401  (a fixture)

EXECUTIONS = 4


def test_executions_closing_together_are_each_counted_once(pg_url, engine_db, race_job):  # noqa: F811
    """Every branch of four executions of one job, on the same targets in the same hour, finishes at
    the same instant: the closes upsert the same roll-up rows concurrently."""
    db = Database(pg_url, pool_size=EXECUTIONS * BRANCHES + 2, max_overflow=0)
    try:
        with db.session() as session:
            before = session.scalar(select(func.coalesce(func.sum(JobRollup.executions), 0))
                                    .where(JobRollup.job_id == race_job))
        branch_ids = []
        for _ in range(EXECUTIONS):
            with db.session() as session:
                execution = start_execution(session, session.get(Job, race_job), role="admin")
                branch_ids += [b.id for b in execution.branches]
        for branch_id in branch_ids:
            with db.session() as session:
                assert claim_branch(session, branch_id, "rollup-test")[0] is not None

        def finish(branch_id: int, go) -> list:
            go()
            failed = branch_id % 3 == 0
            return finish_and_close(db, branch_id, BranchStatus.FAILED if failed else BranchStatus.COMPLETED,
                                    exit_code=1 if failed else 0,
                                    error_type=ErrorType.COMMAND_FAILED if failed else None)

        results = run_together([partial(finish, b) for b in branch_ids])
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert sum(kind == "execution_completed" for r in results for kind, _ in r) == EXECUTIONS
        with db.session() as session:
            after = session.scalar(select(func.sum(JobRollup.executions)).where(JobRollup.job_id == race_job))
            closed = session.scalar(select(func.count()).where(Execution.job_id == race_job,
                                                              Execution.status != "running"))
            branches = session.scalar(select(func.sum(BranchRollup.branches)).where(BranchRollup.job_id == race_job))
        assert after - before == EXECUTIONS
        assert after == closed
        assert branches == closed * BRANCHES
    finally:
        db.dispose()


@pytest.fixture
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'backfill.db'}"
        return
    with scratch_database("opsc_rollup") as url:
        yield url


def rollup_rows(db: Database) -> list:
    with db.session() as session:
        return [sorted(tuple(row) for row in session.execute(select(*table.__table__.c)))
                for table in (ExecutionRollup, JobRollup, BranchRollup)]


@pytest.mark.filterwarnings("ignore:.*(operator clause|expression-based index).*:UserWarning")
@pytest.mark.parametrize("fresh_url", ["postgresql", "sqlite"], indirect=True)
def test_migration_0009_rolls_up_the_history_it_finds(fresh_url):
    upgrade(fresh_url)
    db = Database(fresh_url)
    try:
        with db.session() as session:
            build_history(session, rolled_up=False)
        expected = all_figures(db, NOW)
        db.dispose()
        command.downgrade(alembic_config(fresh_url), "0008")
        upgrade(fresh_url)  # 0009 again, on a history without roll-ups

        with db.session() as session:
            unrolled = session.scalar(select(func.count()).where(Execution.rolled_up_at.is_(None)))
            assert unrolled == 1  # the running execution
        assert all_figures(db, NOW) == expected
        # the same rows as closing each execution would have written
        migrated = rollup_rows(db)
        assert [len(rows) for rows in migrated] == [13, 13, 17]
        with db.session() as session:
            for table in (ExecutionRollup, JobRollup, BranchRollup):
                session.execute(delete(table))
            session.execute(update(Execution).values(rolled_up_at=None))
            assert rollups.roll_up(session, list(session.scalars(select(Execution.id)))) == 14
        assert rollup_rows(db) == migrated
    finally:
        db.dispose()
