"""initial schema

Revision ID: 0001
Revises:


"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Users, credentials, targets, jobs, executions, branches, steps and serial counters."""
    op.create_table('credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('auth_type', sa.String(length=16), nullable=False),
    sa.Column('secret_encrypted', sa.Text(), nullable=False),
    sa.Column('passphrase_encrypted', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credentials')),
    sa.UniqueConstraint('name', name=op.f('uq_credentials_name'))
    )
    op.create_table('serial_counters',
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('scope', name=op.f('pk_serial_counters'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_uuid', sa.String(length=36), nullable=False),
    sa.Column('job_serial', sa.String(length=24), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('job_type', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(), nullable=True),
    sa.Column('schedule_fired_at', sa.DateTime(), nullable=True),
    sa.Column('execution_count', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('archived_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_jobs_created_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('job_serial', name=op.f('uq_jobs_job_serial')),
    sa.UniqueConstraint('job_uuid', name=op.f('uq_jobs_job_uuid'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_jobs_due', ['scheduled_at', 'schedule_fired_at'], unique=False)
        batch_op.create_index('ix_jobs_name', ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)

    op.create_table('targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_uuid', sa.String(length=36), nullable=False),
    sa.Column('target_serial', sa.String(length=24), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('ip_address', sa.String(length=64), nullable=True),
    sa.Column('hostname', sa.String(length=255), nullable=True),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('credential_id', sa.Integer(), nullable=True),
    sa.Column('connection', sa.String(length=16), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('host_key', sa.Text(), nullable=True),
    sa.Column('host_key_fingerprint', sa.String(length=128), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('archived_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_targets_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], name=op.f('fk_targets_credential_id_credentials'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_targets')),
    sa.UniqueConstraint('target_serial', name=op.f('uq_targets_target_serial')),
    sa.UniqueConstraint('target_uuid', name=op.f('uq_targets_target_uuid'))
    )
    with op.batch_alter_table('targets', schema=None) as batch_op:
        batch_op.create_index('ix_targets_created_at', ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_targets_credential_id'), ['credential_id'], unique=False)
        batch_op.create_index('uq_targets_live_name', ['name'], unique=True, postgresql_where=sa.text('archived_at IS NULL'), sqlite_where=sa.text('archived_at IS NULL'))

    op.create_table('executions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_uuid', sa.String(length=36), nullable=False),
    sa.Column('execution_serial', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('execution_number', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('triggered_by', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('cancel_requested_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_executions_job_id_jobs'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['triggered_by'], ['users.id'], name=op.f('fk_executions_triggered_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_executions')),
    sa.UniqueConstraint('execution_serial', name=op.f('uq_executions_execution_serial')),
    sa.UniqueConstraint('execution_uuid', name=op.f('uq_executions_execution_uuid')),
    sa.UniqueConstraint('job_id', 'execution_number', name=op.f('uq_executions_job_id_execution_number'))
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.create_index('ix_executions_job_started', ['job_id', 'started_at'], unique=False)
        batch_op.create_index('ix_executions_started_at', ['started_at'], unique=False)

    op.create_table('job_actions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('action_type', sa.String(length=16), nullable=False),
    sa.Column('action_name', sa.String(length=255), nullable=False),
    sa.Column('action_parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('timeout_seconds', sa.Double(), nullable=True),
    sa.Column('continue_on_error', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_actions_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_actions')),
    sa.UniqueConstraint('job_id', 'position', name=op.f('uq_job_actions_job_id_position'))
    )
    op.create_table('job_targets',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_targets_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_job_targets_target_id_targets'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('job_id', 'target_id', name=op.f('pk_job_targets'))
    )
    with op.batch_alter_table('job_targets', schema=None) as batch_op:
        batch_op.create_index('ix_job_targets_target_id', ['target_id'], unique=False)

    op.create_table('branches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('branch_uuid', sa.String(length=36), nullable=False),
    sa.Column('branch_serial', sa.String(length=48), nullable=False),
    sa.Column('execution_id', sa.Integer(), nullable=False),
    sa.Column('branch_number', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('target_serial_ref', sa.String(length=24), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_type', sa.String(length=32), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('result_output', sa.Text(), nullable=True),
    sa.Column('result_error', sa.Text(), nullable=True),
    sa.Column('queued_at', sa.DateTime(), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('duration', sa.Double(), nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['execution_id'], ['executions.id'], name=op.f('fk_branches_execution_id_executions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_branches_target_id_targets'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_branches')),
    sa.UniqueConstraint('branch_serial', name=op.f('uq_branches_branch_serial')),
    sa.UniqueConstraint('branch_uuid', name=op.f('uq_branches_branch_uuid')),
    sa.UniqueConstraint('execution_id', 'branch_number', name=op.f('uq_branches_execution_id_branch_number'))
    )
    with op.batch_alter_table('branches', schema=None) as batch_op:
        batch_op.create_index('ix_branches_active', ['status', 'queued_at'], unique=False, postgresql_where=sa.text("status IN ('queued', 'running')"), sqlite_where=sa.text("status IN ('queued', 'running')"))
        batch_op.create_index('ix_branches_target_started', ['target_id', 'started_at'], unique=False)

    op.create_table('branch_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('branch_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('action_name', sa.String(length=255), nullable=False),
    sa.Column('action_type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('stdout', sa.Text(), nullable=True),
    sa.Column('stderr', sa.Text(), nullable=True),
    sa.Column('error_type', sa.String(length=32), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('duration', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['branch_id'], ['branches.id'], name=op.f('fk_branch_steps_branch_id_branches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_branch_steps')),
    sa.UniqueConstraint('branch_id', 'position', name=op.f('uq_branch_steps_branch_id_position'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('branch_steps')
    with op.batch_alter_table('branches', schema=None) as batch_op:
        batch_op.drop_index('ix_branches_target_started')
        batch_op.drop_index('ix_branches_active', postgresql_where=sa.text("status IN ('queued', 'running')"), sqlite_where=sa.text("status IN ('queued', 'running')"))

    op.drop_table('branches')
    with op.batch_alter_table('job_targets', schema=None) as batch_op:
        batch_op.drop_index('ix_job_targets_target_id')

    op.drop_table('job_targets')
    op.drop_table('job_actions')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index('ix_executions_started_at')
        batch_op.drop_index('ix_executions_job_started')

    op.drop_table('executions')
    with op.batch_alter_table('targets', schema=None) as batch_op:
        batch_op.drop_index('uq_targets_live_name', postgresql_where=sa.text('archived_at IS NULL'), sqlite_where=sa.text('archived_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_targets_credential_id'))
        batch_op.drop_index('ix_targets_created_at')

    op.drop_table('targets')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_status'))
        batch_op.drop_index('ix_jobs_name')
        batch_op.drop_index('ix_jobs_due')
        batch_op.drop_index('ix_jobs_created_at')

    op.drop_table('jobs')
    op.drop_table('users')
    op.drop_table('serial_counters')
    op.drop_table('credentials')
