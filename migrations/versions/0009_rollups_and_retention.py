"""History kept on purpose (issue 12): hourly roll-ups of closed executions, and what retention pruned.

execution_rollups / job_rollups / branch_rollups: counts (and summed durations) per UTC hour of the
execution's start, per status, for every job, per job, per job and target; analytics and target
performance read them instead of scanning raw rows. executions.rolled_up_at: when an execution went
into them (NULL: not yet; its raw rows are counted instead). executions.pruned_at: when RETENTION_DAYS
cleared its outputs and deleted its steps and events.

Backfill: every execution already closed is rolled up here, in three INSERT ... SELECT ... GROUP BY
statements over the executions this migration marks (so one that closes meanwhile is simply left
for the maintenance loop to roll up; until then analytics counts it from its raw rows).

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("rolled_up_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("pruned_at", sa.DateTime(), nullable=True))
    op.create_index("ix_executions_unpruned", "executions", ["completed_at"],
                    postgresql_where=sa.text("pruned_at IS NULL"), sqlite_where=sa.text("pruned_at IS NULL"))
    op.create_table(
        "execution_rollups",
        sa.Column("hour", sa.DateTime(), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("executions", sa.Integer(), nullable=False),
    )
    op.create_table(
        "job_rollups",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("hour", sa.DateTime(), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("executions", sa.Integer(), nullable=False),
        sa.Column("timed", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
    )
    op.create_table(
        "branch_rollups",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("hour", sa.DateTime(), primary_key=True),
        sa.Column("target_id", sa.Integer(), sa.ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("branches", sa.Integer(), nullable=False),
        sa.Column("timed", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
    )
    op.create_index("ix_branch_rollups_target_hour", "branch_rollups", ["target_id", "hour"],
                    postgresql_include=["status", "branches", "timed", "seconds"])
    _backfill()
    # after the backfill: built over the few executions left out of the roll-ups (the running ones), not
    # over every row of the history and then emptied (an index that size makes the planner avoid it)
    op.create_index("ix_executions_unrolled", "executions", ["started_at"],
                    postgresql_where=sa.text("rolled_up_at IS NULL"), sqlite_where=sa.text("rolled_up_at IS NULL"))


def _backfill() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"

    def hour(column: str) -> str:
        # the stored form of the models' UTCDateTime (naive UTC; SQLite keeps SQLAlchemy's text layout)
        return f"date_trunc('hour', {column})" if postgresql else f"strftime('%Y-%m-%d %H:00:00.000000', {column})"

    seconds = ("EXTRACT(EPOCH FROM e.completed_at - e.started_at)" if postgresql
               else "(julianday(e.completed_at) - julianday(e.started_at)) * 86400.0")
    marked = datetime.now(UTC).replace(tzinfo=None)
    stamp = marked.isoformat(sep=" ") if postgresql else marked.strftime("%Y-%m-%d %H:%M:%S.%f")
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE executions SET rolled_up_at = :t WHERE status <> 'running' AND rolled_up_at IS NULL"),
                 {"t": stamp})
    bind.execute(sa.text(f"""
        INSERT INTO job_rollups (job_id, hour, status, executions, timed, seconds)
        SELECT e.job_id, {hour('e.started_at')}, e.status, COUNT(*), COUNT(e.completed_at),
               COALESCE(SUM({seconds}), 0)
        FROM executions e WHERE e.rolled_up_at = :t
        GROUP BY e.job_id, {hour('e.started_at')}, e.status"""), {"t": stamp})
    bind.execute(sa.text(f"""
        INSERT INTO branch_rollups (job_id, hour, target_id, status, branches, timed, seconds)
        SELECT e.job_id, {hour('b.queued_at')}, b.target_id, b.status, COUNT(*), COUNT(b.duration),
               COALESCE(SUM(b.duration), 0)
        FROM branches b JOIN executions e ON e.id = b.execution_id WHERE e.rolled_up_at = :t
        GROUP BY e.job_id, {hour('b.queued_at')}, b.target_id, b.status"""), {"t": stamp})
    bind.execute(sa.text("""
        INSERT INTO execution_rollups (hour, status, executions)
        SELECT hour, status, SUM(executions) FROM job_rollups GROUP BY hour, status"""))


def downgrade() -> None:
    op.drop_index("ix_branch_rollups_target_hour", table_name="branch_rollups")
    op.drop_table("branch_rollups")
    op.drop_table("job_rollups")
    op.drop_table("execution_rollups")
    op.drop_index("ix_executions_unpruned", table_name="executions")
    op.drop_index("ix_executions_unrolled", table_name="executions")
    # plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ has it): a batch copy of executions would drop the
    # old table, and with it, through ON DELETE CASCADE, every branch
    op.drop_column("executions", "pruned_at")
    op.drop_column("executions", "rolled_up_at")
