"""Users: creation, password checks, the start-up admin."""
from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from common.errors import Conflict, NotFound, ValidationFailed
from common.models import User
from common.services.pagination import Page, PageRequest, paginate
from common.services.refs import id_in_range
from common.statuses import Role

log = logging.getLogger(__name__)
MIN_PASSWORD = 8
# compared against when the user does not exist, so a login takes as long either way
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def create_user(session: Session, username: str, password: str, role: str = Role.OPERATOR) -> User:
    _check_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists", {"field": "username", "received": username})
    user = User(username=username, password_hash=generate_password_hash(password), role=Role(role).value)
    session.add(user)
    session.flush()
    return user


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed("Password too short", {"field": "password", "expected_format": f"at least {MIN_PASSWORD} characters"})


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not user.is_active or not check_password_hash(user.password_hash, password):
        return None
    return user


def active_user(session: Session, subject: str) -> User | None:
    """The active user a token's subject names, or None (not a user id of ours, gone, or disabled)."""
    subject = str(subject)
    if not (subject.isascii() and subject.isdigit() and id_in_range(int(subject))):
        return None
    user = session.get(User, int(subject))
    return user if user is not None and user.is_active else None


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id) if id_in_range(user_id) else None
    if user is None:
        raise NotFound("User not found", {"user_id": user_id})
    return user


def list_users(session: Session, req: PageRequest) -> Page:
    return paginate(session, select(User), req, {"created_at": User.created_at, "username": User.username,
                                                 "id": User.id}, User.id)


def update_user(session: Session, user_id: int, *, password: str | None = None, role: str | None = None,
                is_active: bool | None = None) -> User:
    user = get_user(session, user_id)
    if password is not None:
        _check_password(password)
        user.password_hash = generate_password_hash(password)
    if role is not None:
        user.role = Role(role).value
    if is_active is not None:
        user.is_active = is_active
    session.flush()
    return user


def ensure_admin(session: Session, username: str, password: str | None) -> str | None:
    """Create or reset the start-up admin. Returns a generated password when none was given and the
    admin is new (the caller prints it once), else None."""
    user = session.scalar(select(User).where(User.username == username))
    generated = None
    if password is None:
        if user is not None:
            return None
        password = generated = secrets.token_urlsafe(12)
    if user is None:
        create_user(session, username, password, Role.ADMIN)
    else:
        user.password_hash = generate_password_hash(password)
        user.role = Role.ADMIN.value
        user.is_active = True
    log.info("admin user ensured username=%s", username)
    return generated
