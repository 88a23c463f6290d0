"""Users, for administrators."""
from __future__ import annotations

from flask import Blueprint

from api.context import transaction
from api.endpoint import ADMIN, endpoint
from api.schemas.auth import UserIn, UserOut, UserQuery, UserUpdate
from api.schemas.base import PageOut
from api.serialize import page_of
from common.services import users
from common.services.pagination import PageRequest

bp = Blueprint("users", __name__, url_prefix="/api/users")


@bp.get("")
@endpoint("List users", query=UserQuery, response=PageOut[UserOut], roles=ADMIN)
def list_users(query: UserQuery):
    with transaction() as session:
        page = users.list_users(session, PageRequest(query.page, query.per_page, query.sort, query.order))
        return page_of(page, UserOut)


@bp.post("")
@endpoint("Create a user", body=UserIn, response=UserOut, status=201, roles=ADMIN, errors=(409, 422))
def create_user(body: UserIn):
    with transaction() as session:
        return UserOut.model_validate(users.create_user(session, body.username, body.password, body.role))


@bp.get("/<int:user_id>")
@endpoint("Get a user", response=UserOut, roles=ADMIN, errors=(404,))
def get_user(user_id: int):
    with transaction() as session:
        return UserOut.model_validate(users.get_user(session, user_id))


@bp.patch("/<int:user_id>")
@endpoint("Change a user's password, role or active flag", body=UserUpdate, response=UserOut, roles=ADMIN,
          errors=(404, 422))
def update_user(user_id: int, body: UserUpdate):
    with transaction() as session:
        return UserOut.model_validate(users.update_user(session, user_id, **body.model_dump(exclude_unset=True)))
