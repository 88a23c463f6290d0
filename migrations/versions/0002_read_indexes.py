"""indexes for the read API (lookups, search, target history, analytics)

Revision ID: 0002
Revises: 0001

- executions(started_at, status): analytics group executions of a period by start time and status
  from the index alone.
- branches(target_id, queued_at, id): a target's branches newest first (history, performance window)
  read straight from the index, without a sort.
- branches(queued_at): the newest branches among a broad search's matches (say every branch of
  2026) by walking the index backwards instead of sorting a million rows.
- PostgreSQL only: varchar_pattern_ops indexes on the execution and branch serials, so `LIKE 'J2025%'`
  (search by serial prefix) is an index range scan whatever the database collation (a plain btree
  only serves LIKE under the C collation). SQLite needs no such index for its small embedded data.
- PostgreSQL with the pg_trgm extension (trusted since PostgreSQL 13: a database owner may create it):
  trigram GIN indexes on lower(jobs.name) and lower(targets.name), so the search's case-insensitive
  "name contains q" is an index lookup instead of a scan of every job per query. Where the extension
  cannot be created the migration goes on without them (search stays correct, only slower).
"""
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

log = logging.getLogger("alembic.runtime.migration")

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _trigram_extension() -> bool:
    """Create pg_trgm if it is missing, inside a savepoint so that a refusal does not abort the migration."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        return True
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm unavailable (%s): name search will scan the jobs and targets tables",
                    str(exc.orig).strip().splitlines()[0])
        return False


def upgrade() -> None:
    op.create_index("ix_executions_started_status", "executions", ["started_at", "status"])
    op.create_index("ix_branches_target_queued", "branches", ["target_id", "queued_at", "id"])
    op.create_index("ix_branches_queued_at", "branches", ["queued_at"])
    if _postgresql():
        op.create_index("ix_executions_serial_pattern", "executions", ["execution_serial"],
                        postgresql_ops={"execution_serial": "varchar_pattern_ops"})
        op.create_index("ix_branches_serial_pattern", "branches", ["branch_serial"],
                        postgresql_ops={"branch_serial": "varchar_pattern_ops"})
        if _trigram_extension():
            op.execute("CREATE INDEX ix_jobs_name_trgm ON jobs USING gin (lower(name) gin_trgm_ops)")
            op.execute("CREATE INDEX ix_targets_name_trgm ON targets USING gin (lower(name) gin_trgm_ops)")


def downgrade() -> None:
    if _postgresql():
        op.execute("DROP INDEX IF EXISTS ix_targets_name_trgm")
        op.execute("DROP INDEX IF EXISTS ix_jobs_name_trgm")
        op.drop_index("ix_branches_serial_pattern", table_name="branches")
        op.drop_index("ix_executions_serial_pattern", table_name="executions")
    op.drop_index("ix_branches_queued_at", table_name="branches")
    op.drop_index("ix_branches_target_queued", table_name="branches")
    op.drop_index("ix_executions_started_status", table_name="executions")
