"""EnableDRMClient: one object holding the connection settings and the resource groups."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import httpx

from enabledrm_sdk._transport import Transport
from enabledrm_sdk.resources import (
    AnalyticsResource,
    AuthResource,
    CredentialsResource,
    ExecutionsResource,
    JobsResource,
    TargetsResource,
    UsersResource,
)


class EnableDRMClient:
    """A client of the OpsConductor API.

    :param base_url: the server, e.g. ``"http://localhost:8000"`` (a trailing ``/api`` is accepted).
    :param token: a JWT access token; or call ``client.auth.login(username, password)``.
    :param max_retries: how many times a 429 answer is retried after its ``Retry-After`` delay
        before :class:`~enabledrm_sdk.errors.RateLimited` is raised (0: never retry).
    :param timeout: seconds for each HTTP request (``None``: no timeout).
    :param http_client: an ``httpx.Client`` to use instead of the client's own (proxies, TLS, ...).
    """

    auth: AuthResource
    jobs: JobsResource
    executions: ExecutionsResource
    targets: TargetsResource
    credentials: CredentialsResource
    users: UsersResource
    analytics: AnalyticsResource

    def __init__(self, base_url: str, token: Optional[str] = None, *, max_retries: int = 3,
                 timeout: Optional[float] = 30.0, http_client: Optional[httpx.Client] = None,
                 user_agent: Optional[str] = None) -> None:
        self._transport = Transport(base_url, token, max_retries=max_retries, timeout=timeout,
                                    http_client=http_client, user_agent=user_agent)
        self.auth = AuthResource(self._transport)
        self.jobs = JobsResource(self._transport)
        self.executions = ExecutionsResource(self._transport)
        self.targets = TargetsResource(self._transport)
        self.credentials = CredentialsResource(self._transport)
        self.users = UsersResource(self._transport)
        self.analytics = AnalyticsResource(self._transport)

    @property
    def base_url(self) -> str:
        """The server root (without ``/api``)."""
        return self._transport.root

    @property
    def token(self) -> Optional[str]:
        """The access token sent as ``Authorization: Bearer``; settable."""
        return self._transport.token

    @token.setter
    def token(self, value: Optional[str]) -> None:
        self._transport.token = value

    @property
    def refresh_token(self) -> Optional[str]:
        return self._transport.refresh_token

    @property
    def max_retries(self) -> int:
        return self._transport.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_retries must be >= 0")
        self._transport.max_retries = value

    def request(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
                json: Any = None) -> Any:
        """Call any API route (``path`` relative to ``/api``) and return its decoded JSON (None for 204),
        with the same auth, errors and 429 retries as the resource methods."""
        return self._transport.json(method, path, params=params, json=json)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> EnableDRMClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EnableDRMClient(base_url={self.base_url!r}, authenticated={self.token is not None})"
