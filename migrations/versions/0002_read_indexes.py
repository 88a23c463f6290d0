"""indexes for the read API (lookups, search, target history, analytics)

Revision ID: 0002
Revises: 0001

- executions(started_at, status): analytics group executions of a period by start time and status
  from the index alone.
- branches(target_id, queued_at, id): a target's branches newest first (history, performance window)
  read straight from the index, without a sort.
- PostgreSQL only: varchar_pattern_ops indexes on the execution and branch serials, so `LIKE 'J2025%'`
  (search by serial prefix) is an index range scan whatever the database collation (a plain btree
  only serves LIKE under the C collation). SQLite needs no such index for its small embedded data.
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_index("ix_executions_started_status", "executions", ["started_at", "status"])
    op.create_index("ix_branches_target_queued", "branches", ["target_id", "queued_at", "id"])
    if _postgresql():
        op.create_index("ix_executions_serial_pattern", "executions", ["execution_serial"],
                        postgresql_ops={"execution_serial": "varchar_pattern_ops"})
        op.create_index("ix_branches_serial_pattern", "branches", ["branch_serial"],
                        postgresql_ops={"branch_serial": "varchar_pattern_ops"})


def downgrade() -> None:
    if _postgresql():
        op.drop_index("ix_branches_serial_pattern", table_name="branches")
        op.drop_index("ix_executions_serial_pattern", table_name="executions")
    op.drop_index("ix_branches_target_queued", table_name="branches")
    op.drop_index("ix_executions_started_status", table_name="executions")
