"""Least privilege (issue 9).

users.token_version: bumped by a password, role or active-flag change; every token carries the
version it was issued under, so the change revokes all earlier access and refresh tokens.
users: unique username without regard to case (`Op1` and `op1` are one user).
credentials.allowed_hosts: the CIDRs and hostname globs an operator may attach the credential to.
targets.credential_grant: "credential_id@host:port/queue" an administrator approved (the form of
common/services/access.py's credential_grant); the worker sends a secret only to an address on the
credential's list or to exactly this approved pairing.
jobs.updated_by: the last writer of a job's actions or targets; a run on a local target needs an
active administrator there (and as the one who executes).

Existing targets made by administrators keep working: their current pairing is granted here.
Targets an operator made before the rule run only if their address is on the credential's list.

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("allowed_hosts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                                   nullable=False, server_default="[]"))
    with op.batch_alter_table("targets") as batch:
        batch.add_column(sa.Column("credential_grant", sa.String(400), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("updated_by", sa.Integer(),
                                   sa.ForeignKey("users.id", name="fk_jobs_updated_by", ondelete="SET NULL"),
                                   nullable=True))
    op.execute("UPDATE jobs SET updated_by = created_by")
    op.execute("""
        UPDATE targets SET credential_grant =
            CAST(credential_id AS VARCHAR(20)) || '@' || LOWER(COALESCE(NULLIF(ip_address, ''), hostname))
            || ':' || CAST(port AS VARCHAR(10)) || '/' || queue
        WHERE credential_id IS NOT NULL AND connection = 'ssh'
          AND created_by IN (SELECT id FROM users WHERE role = 'admin')""")
    # last: SQLite's batch copy of jobs reflects users, and reflection cannot carry an expression index
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("updated_by")
    with op.batch_alter_table("targets") as batch:
        batch.drop_column("credential_grant")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("allowed_hosts")
    op.drop_index("uq_users_username_lower", "users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
