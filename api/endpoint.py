"""The route decorator: declares auth, query/body schemas and the response model in one place;
the same declaration validates requests and feeds the OpenAPI document."""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from flask import request
from flask_jwt_extended import current_user, verify_jwt_in_request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import ApiError, pydantic_details

MAX_JSON_DEPTH = 64
_OPENERS_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_ALL_BUT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = [0] * 256
_STEP[ord("[")], _STEP[ord("]")] = 1, -1
_CHUNK = 4096


class JsonTooDeep(ValueError):
    """JSON nested past MAX_JSON_DEPTH levels."""


def nests_deeper_than(text: str, max_depth: int) -> bool:
    """Whether parsing `text` would go more than `max_depth` levels deep, found without recursion and
    in C-speed passes: Python's json parser recurses once per level, so ~1,000 levels raised
    RecursionError (a 500). Escapes, then strings, are cut out; the running sum of what brackets remain
    is the parser's depth. The scan stops where the parser would: past the first value's end, or at
    a stray closing bracket."""
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside_strings = "".join(unescaped.split('"')[::2])  # an unterminated string runs to the end
    brackets = outside_strings.encode("utf-8", "surrogatepass").translate(_OPENERS_AS_BRACKETS, _ALL_BUT_BRACKETS)
    if brackets.count(b"[") <= max_depth:
        return False
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        sums = list(accumulate(map(_STEP.__getitem__, brackets[start:start + _CHUNK]), initial=depth))
        if max(sums) > max_depth:
            return True
        depth = sums[-1]
        if min(sums[1:]) <= 0:
            return False
    return False


def load_json(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing (JsonTooDeep) a text nested deeper than `max_depth` before parsing it.
    Raises ValueError (JSONDecodeError, UnicodeDecodeError) for anything that is not JSON."""
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes) else data
    if nests_deeper_than(text, max_depth):
        raise JsonTooDeep(f"JSON may nest at most {max_depth} levels deep")
    return json.loads(text)


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
    idempotent: bool = False  # takes an Idempotency-Key header, passed to the view as `idempotency_key`


def _nul_path(value: Any, path: str) -> str | None:
    """Where a NUL character hides in a request (PostgreSQL text and JSONB cannot store one)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: Iterable[tuple[Any, Any]]
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


def _body_bytes() -> bytes:
    """The body, or 413. Werkzeug caps a streamed (chunked) body at MAX_CONTENT_LENGTH by silently
    stopping there, which made a 1.3 MiB chunked body a truncated, "malformed" 400; so a body that
    filled the cap is checked for one more byte on the server's own (terminated) stream."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if (limit is not None and len(data) >= limit and request.content_length is None
            and request.environ.get("wsgi.input_terminated") and request.environ["wsgi.input"].read(1)):
        raise RequestEntityTooLarge()
    return data


def _json_integers(value: Any) -> Any:
    """Integral floats (22.0) as ints, as JSON Schema counts them. Bodies are at most 64 deep."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _json_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_integers(item) for item in value]
    return value


def _parse_body(model: type[BaseModel], optional: bool) -> BaseModel:
    data = _body_bytes()
    if optional and not data:
        return model()
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json", {"received": request.content_type})
    try:
        payload = load_json(data)
    except JsonTooDeep as exc:
        raise ApiError(400, "JSON body nested too deeply", {"reason": str(exc), "max_depth": MAX_JSON_DEPTH}) from exc
    except ValueError as exc:
        raise ApiError(400, "Malformed JSON body", {"reason": "the body is not valid JSON"}) from exc
    if not isinstance(payload, dict):
        raise ApiError(422, "Request body must be a JSON object",
                       {"field": "body", "expected_format": "object", "received": type(payload).__name__},
                       "validation_error")
    nul = _nul_path(payload, "")
    if nul is not None:
        raise ApiError(422, "Text may not contain NUL characters", {"field": nul or "body"}, "validation_error")
    try:
        # strict, in JSON mode: a body means what its JSON types say ("true" is no boolean, 0 no false,
        # "5" no number) and exactly what the OpenAPI document promises (22.0 is a JSON Schema integer)
        return model.model_validate_json(json.dumps(_json_integers(payload)), strict=True)
    except ValidationError as exc:
        details = pydantic_details(exc, secret=getattr(model, "secret_bearing", False))
        raise ApiError(422, "Request body failed validation", details, "validation_error") from exc


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


IDEMPOTENCY_KEY = "Idempotency-Key"
# 1-255 printable ASCII characters; no space at either end, where HTTP would strip it and merge two keys
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def _idempotency_key() -> str | None:
    values = request.headers.getlist(IDEMPOTENCY_KEY)
    if not values:
        return None
    if len(values) > 1 or not _IDEMPOTENCY_KEY.match(values[0]):
        details: dict[str, Any] = {"field": IDEMPOTENCY_KEY, "location": "header",
                                   "expected_format": "1 to 255 printable ASCII characters, no space at either end"}
        if len(values) == 1:
            details["received"] = values[0][:256]
        raise ApiError(422, f"Invalid {IDEMPOTENCY_KEY} header", details, "validation_error")
    return values[0]


def _serialize(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def endpoint(summary: str, *, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             response: Any = None, status: int = 200, roles: Iterable[str] | None = None, auth: bool = True,
             refresh: bool = False, optional_body: bool = False, errors: Iterable[int] = (),
             idempotent: bool = False) -> Callable:
    """Wrap a view: authenticate, check the role, parse `body`/`query` into models passed as kwargs,
    and serialize the returned model with `status`. `idempotent`: the view also gets `idempotency_key`,
    the request's valid Idempotency-Key header or None."""
    spec = EndpointSpec(summary=summary, body=body, query=query, response=response, status=status,
                        roles=frozenset(roles) if roles else None, auth=auth, refresh=refresh,
                        optional_body=optional_body, errors=tuple(errors), idempotent=idempotent)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if spec.auth:
                verify_jwt_in_request(refresh=spec.refresh)
                if spec.roles is not None and current_user.role not in spec.roles:
                    raise ApiError(403, "Your role may not do this",
                                   {"role": current_user.role, "required": sorted(spec.roles)})
            if spec.idempotent:
                kwargs["idempotency_key"] = _idempotency_key()
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
