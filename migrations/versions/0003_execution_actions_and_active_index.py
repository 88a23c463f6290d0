"""executions.actions: the job's actions snapshotted when the execution starts (an edited job never
changes a running execution, and a worker reads them with the branch in one query).

branches(execution_id) for active branches only: "does this execution still have an active
branch?" is answered from a tiny index, so the last finisher can close the execution without any
execution-wide counter row that every finishing branch would queue on; executions(id) for running
ones only, for the sweep that closes executions whose closing check never ran.

Revision ID: 0003
Revises: 0002
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status IN ('queued', 'running')")


RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("actions", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                                   nullable=False, server_default="[]"))
    op.create_index("ix_branches_execution_active", "branches", ["execution_id"],
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.create_index("ix_executions_running", "executions", ["id"], postgresql_where=RUNNING, sqlite_where=RUNNING)


def downgrade() -> None:
    op.drop_index("ix_executions_running", "executions")
    op.drop_index("ix_branches_execution_active", "branches")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("actions")
