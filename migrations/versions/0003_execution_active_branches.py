"""executions.active_branches: a counter the finishing branch decrements, so closing an execution
exactly once costs one row update instead of counting all of its branches.

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


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("active_branches", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE executions SET active_branches = (SELECT count(*) FROM branches "
               "WHERE branches.execution_id = executions.id AND branches.status IN ('queued', 'running'))")


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("active_branches")
