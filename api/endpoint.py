"""The route decorator: declares auth, query/body schemas and the response model in one place;
the same declaration validates requests and feeds the OpenAPI document."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import request
from flask_jwt_extended import current_user, verify_jwt_in_request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from api.errors import ApiError, pydantic_details


@dataclass
class EndpointSpec:
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    roles: frozenset[str] | None = None  # None: any authenticated user
    auth: bool = True
    refresh: bool = False
    optional_body: bool = False
    errors: tuple[int, ...] = ()


def _nul_path(value: Any, path: str) -> str | None:
    """Where a NUL character hides in a request (PostgreSQL text and JSONB cannot store one)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _nul_path(key, path) if isinstance(key, str) and "\x00" in key else \
            _nul_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _parse_body(model: type[BaseModel], optional: bool) -> BaseModel:
    if optional and not request.get_data(cache=True):
        return model()
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json", {"received": request.content_type})
    try:
        payload = request.get_json()
    except (BadRequest, UnsupportedMediaType) as exc:
        raise ApiError(400, "Malformed JSON body", {"reason": "the body is not valid JSON"}) from exc
    if not isinstance(payload, dict):
        raise ApiError(422, "Request body must be a JSON object",
                       {"field": "body", "expected_format": "object", "received": type(payload).__name__},
                       "validation_error")
    nul = _nul_path(payload, "")
    if nul is not None:
        raise ApiError(422, "Text may not contain NUL characters", {"field": nul or "body"}, "validation_error")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, "Request body failed validation", pydantic_details(exc), "validation_error") from exc


def _parse_query(model: type[BaseModel]) -> BaseModel:
    args: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        args[key] = values if len(values) > 1 else values[0]
    nul = _nul_path(args, "")
    if nul is not None:
        raise ApiError(400, "Query parameters may not contain NUL characters", {"field": nul})
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise ApiError(400, "Invalid query parameters", pydantic_details(exc, location="query")) from exc


def _serialize(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def endpoint(summary: str, *, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             response: Any = None, status: int = 200, roles: Iterable[str] | None = None, auth: bool = True,
             refresh: bool = False, optional_body: bool = False, errors: Iterable[int] = ()) -> Callable:
    """Wrap a view: authenticate, check the role, parse `body`/`query` into models passed as kwargs,
    and serialize the returned model with `status`."""
    spec = EndpointSpec(summary=summary, body=body, query=query, response=response, status=status,
                        roles=frozenset(roles) if roles else None, auth=auth, refresh=refresh,
                        optional_body=optional_body, errors=tuple(errors))

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if spec.auth:
                verify_jwt_in_request(refresh=spec.refresh)
                if spec.roles is not None and current_user.role not in spec.roles:
                    raise ApiError(403, "Your role may not do this",
                                   {"role": current_user.role, "required": sorted(spec.roles)})
            if spec.query is not None:
                kwargs["query"] = _parse_query(spec.query)
            if spec.body is not None:
                kwargs["body"] = _parse_body(spec.body, spec.optional_body)
            result = view(*args, **kwargs)
            if isinstance(result, tuple) or hasattr(result, "status_code"):
                return result
            return _serialize(result), spec.status

        wrapper.endpoint_spec = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


WRITERS = ("admin", "operator")
ADMIN = ("admin",)
