"""The remote process group of a branch's running action (issue 10).

branches.remote_pid: the PID of the session leader of the action running now on an SSH target (its
process group), recorded by the worker's heartbeat. A branch whose worker died with it ends
worker_lost; a live worker on the branch's queue then kills that group, so no command keeps running
on the target unseen, and clears the column.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("branches") as batch:
        batch.add_column(sa.Column("remote_pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("branches") as batch:
        batch.drop_column("remote_pid")
