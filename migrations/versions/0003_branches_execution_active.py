"""branches(execution_id) for active branches only: "does this execution still have an active
branch?" is answered from a tiny index, so the last finisher can close the execution without any
execution-wide counter row that every finishing branch would queue on; executions(id) for running
ones only, for the sweep that closes executions whose closing check never ran.

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ACTIVE = sa.text("status IN ('queued', 'running')")


RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_index("ix_branches_execution_active", "branches", ["execution_id"],
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.create_index("ix_executions_running", "executions", ["id"], postgresql_where=RUNNING, sqlite_where=RUNNING)


def downgrade() -> None:
    op.drop_index("ix_executions_running", "executions")
    op.drop_index("ix_branches_execution_active", "branches")
