"""SQLAlchemy models; importing this package registers every table on Base.metadata."""
from common.models.base import Base, utcnow
from common.models.counter import SerialCounter
from common.models.credential import Credential
from common.models.event import EventCounter, ExecutionEvent
from common.models.execution import Branch, BranchStep, Execution
from common.models.idempotency import IdempotencyKey
from common.models.job import Job, JobAction, job_targets
from common.models.rollup import BranchRollup, ExecutionRollup, JobRollup
from common.models.target import Target
from common.models.user import User

__all__ = ["Base", "Branch", "BranchRollup", "BranchStep", "Credential", "EventCounter", "Execution", "ExecutionEvent",
           "ExecutionRollup", "IdempotencyKey", "Job", "JobAction", "JobRollup",
           "SerialCounter", "Target", "User", "job_targets", "utcnow"]
