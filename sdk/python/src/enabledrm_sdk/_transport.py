"""HTTP transport: base URL handling, bearer auth, JSON, error mapping and bounded 429 retries."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import quote

import httpx

from enabledrm_sdk._version import __version__
from enabledrm_sdk.errors import TransportError, make_error

DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_WAIT = 60.0  # a 429 asking for a longer wait is raised to the caller, never slept through


def api_roots(base_url: str) -> tuple[str, str]:
    """(server root, API root) for a base URL given with or without its trailing ``/api``."""
    root = base_url.strip().rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if root.endswith("/api"):
        root = root[: -len("/api")]
    return root, root + "/api"


def segment(value: Any) -> str:
    """One URL path segment (a serial, an id), percent-encoded."""
    return quote(str(value), safe="")


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def query_params(params: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Drop unset (None) parameters; booleans as true/false."""
    out: Dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, datetime):
            value = iso(value)
        out[key] = value
    return out


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("datetimes sent to the API must be timezone-aware")
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Request bodies: datetimes become RFC 3339 strings; everything else as is."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class Transport:
    def __init__(self, base_url: str, token: Optional[str] = None, *, max_retries: int = 3,
                 timeout: Optional[float] = 30.0, http_client: Optional[httpx.Client] = None,
                 sleep: Callable[[float], None] = time.sleep, user_agent: Optional[str] = None) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.root, self.api_root = api_roots(base_url)
        self.token = token
        self.refresh_token: Optional[str] = None
        self.max_retries = max_retries
        self.timeout = timeout
        self._sleep = sleep
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(timeout=timeout)
        self._user_agent = user_agent or f"enabledrm-sdk-python/{__version__}"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def request(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
                json: Any = None, token: Optional[str] = None, auth: bool = True,
                headers: Optional[Mapping[str, str]] = None) -> httpx.Response:
        """Send one API request (``path`` relative to ``/api``, with extra ``headers``); 429s are retried
        after Retry-After up to ``max_retries`` times; any other error answer raises its ApiError subclass."""
        url = self.api_root + (path if path.startswith("/") else "/" + path)
        sent = {"Accept": "application/json", "User-Agent": self._user_agent, **dict(headers or {})}
        bearer = token if token is not None else (self.token if auth else None)
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        kwargs: Dict[str, Any] = {"headers": sent, "params": query_params(params)}
        if json is not None:
            kwargs["json"] = jsonable(json)
        attempt = 0
        while True:
            try:
                response = self._client.request(method, url, timeout=self.timeout, **kwargs)
            except httpx.TimeoutException as exc:
                raise TransportError(f"{method} {url} timed out: {exc}") from exc
            except httpx.HTTPError as exc:
                raise TransportError(f"{method} {url} failed: {exc}") from exc
            if response.status_code < 400:
                return response
            retry_after = None
            if response.status_code == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                wait = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
                if attempt < self.max_retries and wait <= MAX_RETRY_WAIT:
                    attempt += 1
                    self._sleep(wait)
                    continue
            raise make_error(response.status_code, _body(response), dict(response.headers), retry_after)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text

