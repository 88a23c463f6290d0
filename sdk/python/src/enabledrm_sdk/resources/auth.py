"""``client.auth``: login, refresh, the current user."""
from __future__ import annotations

from typing import Optional

from enabledrm_sdk.models import Token, User
from enabledrm_sdk.resources._base import Resource


class AuthResource(Resource):
    def login(self, username: str, password: str) -> Token:
        """Exchange a username and password for tokens; the client then uses the access token
        (and keeps the refresh token for :meth:`refresh`)."""
        token = Token(self._t.json("POST", "/auth/login", json={"username": username, "password": password},
                                   auth=False))
        self._t.token = token.access_token
        self._t.refresh_token = token.refresh_token
        return token

    def refresh(self, refresh_token: Optional[str] = None) -> Token:
        """A new access token from the refresh token (the one from :meth:`login` by default);
        the client then uses it."""
        bearer = refresh_token or self._t.refresh_token
        if not bearer:
            raise ValueError("no refresh token: call auth.login() first or pass refresh_token")
        token = Token(self._t.json("POST", "/auth/refresh", token=bearer))
        self._t.token = token.access_token
        return token

    def me(self) -> User:
        """The authenticated user."""
        return User(self._t.json("GET", "/auth/me"))

    def logout(self) -> None:
        """Forget the tokens held by this client (tokens are stateless JWTs: nothing is sent)."""
        self._t.token = None
        self._t.refresh_token = None
