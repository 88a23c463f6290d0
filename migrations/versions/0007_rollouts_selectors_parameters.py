"""Rollout policy, per-target limits, selectors and parameters (issue 11).

jobs.max_concurrency / max_errors, executions.max_concurrency / max_errors: a count ("10") or a
percentage of the branches ("25%"), the job's as defaults, the execution's as it ran;
executions.stop_reason: why a rollout stopped starting branches (its error budget was spent).
targets.max_concurrent_runs: branches of any execution that may run on the target at once (NULL:
no limit, 1: exclusive).
jobs.target_selector / executions.target_selector: targets named by tags and a name glob instead of
ids, resolved at execute time.
jobs.parameters: the parameters a job declares (name, required, default, secret, pattern);
executions.parameters: the values it ran with, secret ones left out; executions.secret_parameters:
those, Fernet-encrypted like credentials.

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("max_concurrency", sa.String(16), nullable=True))
        batch.add_column(sa.Column("max_errors", sa.String(16), nullable=True))
        batch.add_column(sa.Column("target_selector", JSON, nullable=True))
        batch.add_column(sa.Column("parameters", JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("max_concurrency", sa.String(16), nullable=True))
        batch.add_column(sa.Column("max_errors", sa.String(16), nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("target_selector", JSON, nullable=True))
        batch.add_column(sa.Column("parameters", JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("secret_parameters", sa.Text(), nullable=True))
    with op.batch_alter_table("targets") as batch:
        batch.add_column(sa.Column("max_concurrent_runs", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        batch.drop_column("max_concurrent_runs")
    with op.batch_alter_table("executions") as batch:
        for name in ("secret_parameters", "parameters", "target_selector", "stop_reason", "max_errors",
                     "max_concurrency"):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        for name in ("parameters", "target_selector", "max_errors", "max_concurrency"):
            batch.drop_column(name)
