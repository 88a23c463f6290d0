"""Login, refresh and the current user; JWT loaders that answer in the error envelope."""
from __future__ import annotations

from flask import Blueprint, g
from flask_jwt_extended import create_access_token, create_refresh_token, current_user
from flask_limiter.util import get_remote_address

from api.context import platform, transaction
from api.endpoint import endpoint
from api.errors import ApiError, error_response
from api.extensions import jwt, limiter
from api.limits import login_limit_value
from api.schemas.auth import LoginIn, TokenOut, UserOut
from common.models import User
from common.services import users

bp = Blueprint("auth", __name__, url_prefix="/api/auth")


def _tokens(user: User, *, with_refresh: bool) -> TokenOut:
    settings = platform().settings
    claims = {"role": user.role, "username": user.username, "ver": user.token_version}
    return TokenOut(
        access_token=create_access_token(identity=str(user.id), additional_claims=claims),
        refresh_token=create_refresh_token(identity=str(user.id), additional_claims=claims) if with_refresh else None,
        expires_in=settings.access_token_minutes * 60,
    )


@bp.post("/login")
@limiter.limit(login_limit_value, key_func=lambda: f"login:{get_remote_address()}")
@endpoint("Exchange a username and password for an access and a refresh token", body=LoginIn,
          response=TokenOut, auth=False, errors=(401,))
def login(body: LoginIn):
    with transaction() as session:
        user = users.authenticate(session, body.username, body.password)
        if user is None:
            raise ApiError(401, "Invalid username or password", {})
        return _tokens(user, with_refresh=True)


@bp.post("/refresh")
@endpoint("Exchange a refresh token (as the bearer token) for a new access token", response=TokenOut, refresh=True)
def refresh():
    return _tokens(current_user, with_refresh=False)


@bp.get("/me")
@endpoint("The authenticated user", response=UserOut)
def me():
    return UserOut.model_validate(current_user)


def register_jwt_handlers() -> None:
    @jwt.user_lookup_loader
    def _load_user(_header, payload):
        with platform().db.session(read_only=True) as session:
            user, g.token_refusal = users.token_user(session, payload)  # None: the lookup-error 401
            if user is not None:
                session.expunge(user)
            return user

    @jwt.user_lookup_error_loader
    def _user_gone(_header, _payload):
        reason = g.get("token_refusal", "unknown user")
        if reason == "revoked":
            return error_response(401, "Token has been revoked (password, role or status changed); log in again",
                                  {"reason": "revoked"})
        return error_response(401, "The token's user no longer exists or is disabled", {"reason": reason})

    @jwt.unauthorized_loader
    def _missing(reason: str):
        return error_response(401, "Missing or malformed Authorization header", {"reason": reason})

    @jwt.invalid_token_loader
    def _invalid(reason: str):
        return error_response(401, "Invalid token", {"reason": reason})

    @jwt.expired_token_loader
    def _expired(_header, _payload):
        return error_response(401, "Token has expired", {"reason": "expired"})

    @jwt.revoked_token_loader
    def _revoked(_header, _payload):
        return error_response(401, "Token has been revoked", {"reason": "revoked"})

    @jwt.needs_fresh_token_loader
    def _not_fresh(_header, _payload):
        return error_response(401, "Fresh token required", {"reason": "not fresh"})

    @jwt.token_verification_failed_loader
    def _failed(_header, _payload):
        return error_response(401, "Token verification failed", {})
