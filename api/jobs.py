"""Jobs: CRUD; `job_id` is the numeric id or the serial."""
from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user

from api.context import transaction
from api.endpoint import WRITERS, endpoint
from api.schemas.base import PageOut
from api.schemas.jobs import JobIn, JobOut, JobQuery, JobUpdate
from api.serialize import page_of
from common.services import jobs
from common.services.pagination import PageRequest
from common.services.refs import job_by_ref

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")


@bp.get("")
@endpoint("List live jobs, paginated and sorted, filtered by status, name or job_type", query=JobQuery,
          response=PageOut[JobOut])
def list_jobs(query: JobQuery):
    with transaction() as session:
        page = jobs.list_jobs(session, PageRequest(query.page, query.per_page, query.sort, query.order),
                              status=query.status, name=query.name, job_type=query.job_type)
        return page_of(page, JobOut)


@bp.post("")
@endpoint("Create a job; with scheduled_at it runs once by itself at that time, with a schedule at every "
          "cron tick", body=JobIn, response=JobOut,
          status=201, roles=WRITERS, errors=(403, 422))
def create_job(body: JobIn):
    with transaction() as session:
        return JobOut.model_validate(jobs.create_job(session, body.model_dump(), user_id=current_user.id,
                                                          role=current_user.role))


@bp.get("/<job_id>")
@endpoint("Get a job by id or serial (archived ones too)", response=JobOut, errors=(404, 422))
def get_job(job_id: str):
    with transaction() as session:
        return JobOut.model_validate(job_by_ref(session, job_id))


@bp.patch("/<job_id>")
@endpoint("Change a job; actions and target_ids are replaced whole", body=JobUpdate, response=JobOut,
          roles=WRITERS, errors=(404, 409, 422))
def update_job(job_id: str, body: JobUpdate):
    with transaction() as session:
        return JobOut.model_validate(jobs.update_job(session, job_id, body.model_dump(exclude_unset=True),
                                                          user_id=current_user.id, role=current_user.role))


@bp.delete("/<job_id>")
@endpoint("Archive a job: it leaves lists and cannot run; its executions stay addressable", status=204,
          roles=WRITERS, errors=(404, 409, 422))
def delete_job(job_id: str):
    with transaction() as session:
        jobs.archive_job(session, job_id)
    return "", 204
