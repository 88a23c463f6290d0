"""Users: creation, password checks, the start-up admin."""
from __future__ import annotations

import logging
import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from common.errors import Conflict, NotFound, ValidationFailed
from common.models import User
from common.services.pagination import Page, PageRequest, paginate
from common.services.refs import id_in_range
from common.statuses import Role

log = logging.getLogger(__name__)
MIN_PASSWORD = 8
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# compared against when the user does not exist, so a login takes as long either way
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def by_username(session: Session, username: str) -> User | None:
    """Usernames are one namespace without regard to case (`Op1` is `op1`)."""
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def create_user(session: Session, username: str, password: str, role: str = Role.OPERATOR) -> User:
    _check_username(username)
    _check_password(password)
    if by_username(session, username) is not None:
        raise Conflict("A user with that username already exists (usernames ignore case)", {"field": "username"})
    user = User(username=username, password_hash=generate_password_hash(password), role=Role(role).value)
    session.add(user)
    session.flush()
    return user


def _check_username(username: str) -> None:
    """ASCII only, as the API's schema says: Python's and the databases' lower() agree on it (they
    differ on `ß`, `İ` or the Kelvin sign), so case-insensitive uniqueness holds on every path."""
    if not USERNAME.fullmatch(username):
        raise ValidationFailed("Usernames are 1-64 of A-Z a-z 0-9 _ . @ -",
                               {"field": "username", "expected_format": USERNAME.pattern})


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed("Password too short",
                               {"field": "password", "expected_format": f"at least {MIN_PASSWORD} characters"})


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = by_username(session, username)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    matches = check_password_hash(user.password_hash, password)  # always: a disabled user takes as long
    return user if matches and user.is_active else None


def token_user(session: Session, claims: dict) -> tuple[User | None, str]:
    """The active user a token stands for, or None and why: "unknown user" (not a user id of ours,
    or gone), "disabled", or "revoked" (issued before the user's last password, role or
    active-flag change)."""
    subject = str(claims.get("sub", ""))
    user = None
    if subject.isascii() and subject.isdigit() and id_in_range(int(subject)):
        user = session.get(User, int(subject))
    if user is None:
        return None, "unknown user"
    if not user.is_active:
        return None, "disabled"
    if claims.get("ver") != user.token_version:
        return None, "revoked"
    return user, "ok"


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
    """A password, role or active-flag change revokes every token issued before it."""
    user = get_user(session, user_id)
    if (role not in (None, Role.ADMIN) or is_active is False) and user.role == Role.ADMIN and user.is_active:
        _keep_an_admin(session, user)
    changed = False
    if password is not None:
        _check_password(password)
        user.password_hash = generate_password_hash(password)
        changed = True
    if role is not None and role != user.role:
        user.role = Role(role).value
        changed = True
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        changed = True
    if changed:
        user.token_version += 1
    session.flush()
    return user


def _keep_an_admin(session: Session, leaving: User) -> None:
    """409 when `leaving` is the last active admin. The active admins' rows are locked first, so
    two admins demoting each other at once cannot both pass (SQLite serializes writers anyway)."""
    others = session.scalars(select(User.id).where(User.role == Role.ADMIN, User.is_active.is_(True))
                             .order_by(User.id).with_for_update()).all()
    if [i for i in others if i != leaving.id]:
        return
    raise Conflict("The last active administrator cannot be demoted or deactivated; make another admin first",
                   {"user_id": leaving.id})


def ensure_admin(session: Session, username: str, password: str | None) -> str | None:
    """Create or reset the start-up admin. Returns a generated password when none was given and the
    admin is new (the caller prints it once), else None."""
    _check_username(username)
    user = by_username(session, username)
    generated = None
    if password is None:
        if user is not None:
            return None
        password = generated = secrets.token_urlsafe(12)
    if user is None:
        create_user(session, username, password, Role.ADMIN)
    elif not (user.role == Role.ADMIN and user.is_active and check_password_hash(user.password_hash, password)):
        # a real reset revokes earlier tokens; a restart with the same password (every process does it) does not
        user.password_hash = generate_password_hash(password)
        user.role = Role.ADMIN.value
        user.is_active = True
        user.token_version += 1
    log.info("admin user ensured username=%s", username)
    return generated
