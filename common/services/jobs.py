"""Jobs: creation with ordered actions and default targets, listing, update, archive."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from common import cron
from common.errors import Conflict, ValidationFailed
from common.models import Job, JobAction, Target, job_targets, utcnow
from common.models.counter import allocate_job_serial
from common.services import access, parameters, selectors
from common.services.pagination import Page, PageRequest, contains, paginate
from common.services.refs import id_in_range, job_by_ref
from common.statuses import JobStatus

SORTABLE = {"created_at": Job.created_at, "updated_at": Job.updated_at, "name": Job.name,
            "job_serial": Job.job_serial, "status": Job.status, "scheduled_at": Job.scheduled_at, "id": Job.id}


def resolve_targets(session: Session, target_ids: list[int], field: str = "target_ids") -> list[Target]:
    """Targets by id in the given order; every id must exist and be live (not archived)."""
    if len(set(target_ids)) != len(target_ids):
        raise ValidationFailed("target_ids contains duplicates", {"field": field, "received": target_ids})
    candidates = [i for i in target_ids if id_in_range(i)]
    found = {t.id: t for t in session.scalars(select(Target).where(Target.id.in_(candidates)))}
    missing = [i for i in target_ids if i not in found]
    if missing:
        raise ValidationFailed("Unknown target ids", {"field": field, "received": missing})
    archived = [i for i in target_ids if found[i].archived_at is not None]
    if archived:
        raise ValidationFailed("Archived targets cannot run", {"field": field, "received": archived})
    return [found[i] for i in target_ids]


def _check_schedule(scheduled_at: datetime | None) -> None:
    if scheduled_at is not None and scheduled_at <= utcnow():
        raise ValidationFailed("scheduled_at must be in the future",
                               {"field": "scheduled_at", "received": scheduled_at.isoformat()})


def _set_schedule(job: Job, schedule: dict | None, now: datetime) -> None:
    """A recurring schedule (cron, timezone) and its first tick after now; None removes it."""
    if schedule is None:
        job.schedule_cron = job.schedule_timezone = job.next_run_at = None
        return
    # a PATCH body's dump leaves out what was not sent, the default timezone too
    job.schedule_cron, job.schedule_timezone = schedule["cron"], schedule.get("timezone") or cron.DEFAULT_TIMEZONE
    job.next_run_at = cron.next_tick(job.schedule_cron, job.schedule_timezone, now)


def _one_schedule(job: Job) -> None:
    """A job runs once at scheduled_at or at every tick of its schedule, not both."""
    if job.schedule_cron is not None and job.scheduled_at is not None and job.schedule_fired_at is None:
        raise ValidationFailed("Give either scheduled_at (one run) or schedule (recurring), not both: pick one",
                               {"field": "schedule"})


def _set_actions(session: Session, job: Job, actions: list[dict]) -> None:
    if job.actions:  # replacing: delete the old rows first, or the new ones collide on (job_id, position)
        job.actions.clear()
        session.flush()
    job.actions = [JobAction(position=i + 1, **a) for i, a in enumerate(actions)]


def _set_targets(session: Session, job: Job, target_ids: list[int], role: str) -> None:
    access.require_admin_for_local(role, access.local_serials(resolve_targets(session, target_ids)), "list")
    session.execute(delete(job_targets).where(job_targets.c.job_id == job.id))
    if target_ids:
        session.execute(insert(job_targets), [{"job_id": job.id, "target_id": t, "position": i + 1}
                                              for i, t in enumerate(target_ids)])


def _ids_or_selector(target_ids: list[int] | None, selector: dict | None) -> None:
    if target_ids and selector:
        raise ValidationFailed("Give target_ids or target_selector, not both",
                               {"field": "target_selector", "target_ids": target_ids})


def create_job(session: Session, values: dict, *, user_id: int | None, role: str) -> Job:
    scheduled_at = values.get("scheduled_at")
    _check_schedule(scheduled_at)
    target_ids = values.get("target_ids") or []
    selector = selectors.clean(values.get("target_selector"))
    _ids_or_selector(target_ids, selector)
    if (scheduled_at is not None or values.get("schedule") is not None) and not target_ids and not selector:
        raise ValidationFailed("A scheduled job needs target_ids", {"field": "target_ids"})
    now = utcnow()
    job = Job(name=values["name"], description=values.get("description"),
              job_type=values.get("job_type") or "command", scheduled_at=scheduled_at,
              status=JobStatus.SCHEDULED if scheduled_at or values.get("schedule") else JobStatus.READY,
              created_by=user_id,
              updated_by=user_id, created_at=now, updated_at=now, job_serial=allocate_job_serial(session, now),
              target_selector=selector, parameters=parameters.check_declarations(values.get("parameters") or []),
              max_concurrency=values.get("max_concurrency"), max_errors=values.get("max_errors"))
    _set_schedule(job, values.get("schedule"), now)
    _one_schedule(job)
    _set_actions(session, job, values["actions"])
    session.add(job)
    session.flush()
    _set_targets(session, job, target_ids, role)
    session.flush()
    session.refresh(job, ["targets"])
    return job


def live_job(session: Session, ref: str) -> Job:
    job = job_by_ref(session, ref)
    if job.archived_at is not None:
        raise Conflict("Job is archived", {"job_serial": job.job_serial})
    return job


def update_job(session: Session, ref: str, values: dict, *, user_id: int | None, role: str) -> Job:
    job = live_job(session, ref)
    # whoever edits a job that runs on a local target decides what runs on the platform's own host
    access.require_admin_for_local(role, access.local_serials(job.targets), "change jobs that run on")
    for key in ("name", "description", "job_type", "max_concurrency", "max_errors"):
        if key in values:
            setattr(job, key, values[key])
    if "actions" in values:
        _set_actions(session, job, values["actions"])
    # a job names its targets one way: setting ids clears the selector and the other way round
    selector = selectors.clean(values.get("target_selector"))
    _ids_or_selector(values.get("target_ids"), selector)
    if "target_ids" in values:
        _set_targets(session, job, values["target_ids"] or [], role)
        if values["target_ids"]:
            job.target_selector = None
    if "target_selector" in values:
        job.target_selector = selector
        if selector:
            _set_targets(session, job, [], role)
    if "parameters" in values:
        job.parameters = parameters.check_declarations(values["parameters"] or [])
    if {"actions", "target_ids", "target_selector", "parameters"} & values.keys():
        job.updated_by = user_id  # what runs where is now this user's word (a firing acts on it)
    if "scheduled_at" in values:
        _check_schedule(values["scheduled_at"])
        job.scheduled_at = values["scheduled_at"]
        job.schedule_fired_at = None
    if "schedule" in values:
        _set_schedule(job, values["schedule"], utcnow())
    if {"scheduled_at", "schedule"} & values.keys():
        _one_schedule(job)
        if job.scheduled_at is not None and job.schedule_fired_at is None:
            job.status = JobStatus.SCHEDULED
        elif job.schedule_cron is not None:  # a running job shows its run; closing it shows `scheduled` again
            job.status = JobStatus.RUNNING if job.status == JobStatus.RUNNING else JobStatus.SCHEDULED
        elif job.status == JobStatus.SCHEDULED:
            job.status = JobStatus.READY
    if job.status == JobStatus.SCHEDULED and not job.target_selector and not session.scalar(
            select(job_targets.c.target_id).where(job_targets.c.job_id == job.id).limit(1)):
        raise ValidationFailed("A scheduled job needs target_ids", {"field": "target_ids"})
    job.updated_at = utcnow()
    session.flush()
    session.refresh(job, ["targets", "actions"])
    return job


def archive_job(session: Session, ref: str) -> None:
    job = live_job(session, ref)
    job.archived_at = utcnow()
    session.flush()


def list_jobs(session: Session, req: PageRequest, *, status: str | None = None, name: str | None = None,
              job_type: str | None = None) -> Page:
    stmt = select(Job).where(Job.archived_at.is_(None))
    if status:
        stmt = stmt.where(Job.status == status)
    if job_type:
        stmt = stmt.where(Job.job_type == job_type)
    if name:
        stmt = stmt.where(contains(Job.name, name))
    return paginate(session, stmt, req, SORTABLE, Job.id)
