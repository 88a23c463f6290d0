"""Retries, idempotent execute and cron schedules (issue 11).

executions.retry_of_id: the execution a retry re-runs the unfinished branches of (trigger "retry").
idempotency_keys: one row per (user, Idempotency-Key) on execute and retry: the request's hash and the
execution it made, so a client that timed out can send again and get the same execution back.
jobs.schedule_cron / schedule_timezone: a recurring schedule beside the one-shot scheduled_at;
jobs.next_run_at: the next tick, computed from the cron expression in its timezone; the maintenance
loop fires a job whose next_run_at has passed and moves it on with one conditional update.

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("retry_of_id", sa.Integer(),
                                   sa.ForeignKey("executions.id", name="fk_executions_retry_of", ondelete="SET NULL"),
                                   nullable=True))
        batch.create_index("ix_executions_retry_of", ["retry_of_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("schedule_cron", sa.String(120), nullable=True))
        batch.add_column(sa.Column("schedule_timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("next_run_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_jobs_next_run_at", ["next_run_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("execution_id", sa.Integer(), sa.ForeignKey("executions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_next_run_at")
        batch.drop_column("next_run_at")
        batch.drop_column("schedule_timezone")
        batch.drop_column("schedule_cron")
    with op.batch_alter_table("executions") as batch:
        batch.drop_index("ix_executions_retry_of")
        batch.drop_column("retry_of_id")
