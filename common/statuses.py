"""Closed sets of statuses with their groups and the transitions the engine allows."""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ExecutionStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BranchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # never started: its rollout stopped (max_errors spent)


class ErrorType(StrEnum):
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    TIMEOUT = "timeout"
    COMMAND_FAILED = "command_failed"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    CREDENTIAL_NOT_ALLOWED = "credential_not_allowed"
    CONNECTION_LOST = "connection_lost"  # the link to the target died while a command ran
    INTERNAL_ERROR = "internal_error"  # a bug or an infrastructure fault in the worker, not the target
    ROLLOUT_STOPPED = "rollout_stopped"  # skipped: the execution's error budget was spent


BRANCH_TERMINAL = frozenset({BranchStatus.COMPLETED, BranchStatus.FAILED, BranchStatus.TIMED_OUT,
                             BranchStatus.CANCELLED, BranchStatus.SKIPPED})
BRANCH_ACTIVE = frozenset({BranchStatus.QUEUED, BranchStatus.RUNNING})
EXECUTION_TERMINAL = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})
