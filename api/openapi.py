"""OpenAPI 3.1 document built from the routes' endpoint declarations and their pydantic models.

What a declaration implies is added here once, for every route: the path parameters' formats, and
every status the edges around a view can answer (auth, roles, body parsing, size limits, rate limits),
so that a schema-valid request is never refused for its shape and no status goes undocumented.
`tests/security/test_fuzz.py` holds the document to that with schemathesis."""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import core_schema
from werkzeug.http import HTTP_STATUS_CODES

from api.endpoint import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_PATTERN
from api.errors import HTTP_CODES
from api.schemas.base import ErrorOut

bp = Blueprint("openapi", __name__)
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
REF = "#/components/schemas/{model}"
MAX_ID = 2**31 - 1  # ids are INTEGER columns (common/services/refs.py)

# Path parameters by name; the patterns are common/serials.py's formats (digits grow past 4), written with
# [0-9] and no look-arounds so that every JSON Schema dialect reads them alike. A value that fits reaches the
# lookup (found, or 404); only a value that does not is the serial check's 422.
_SERIAL = {
    "job_serial": ("J[0-9]{8,}", "J20250001"),
    "target_serial": ("T[0-9]{8,}", "T20250001"),
    "execution_serial": (r"J[0-9]{8,}\.[0-9]{4,}", "J20250001.0001"),
    "branch_serial": (r"J[0-9]{8,}\.[0-9]{4,}\.[0-9]{4,}", "J20250001.0001.0001"),
}
_ID_OR_SERIAL = {"job_id": "job_serial", "target_ref": "target_serial"}


def _path_schema(name: str, converter: str) -> tuple[dict[str, Any], str | None]:
    if converter == "int":  # werkzeug's int converter: unsigned decimal digits
        return {"type": "integer", "minimum": 0, "maximum": MAX_ID}, None
    if name in _SERIAL:
        pattern, example = _SERIAL[name]
        return {"type": "string", "pattern": f"^{pattern}$", "examples": [example]}, f"A {name.replace('_', ' ')}"
    if name in _ID_OR_SERIAL:
        pattern, example = _SERIAL[_ID_OR_SERIAL[name]]
        return ({"type": "string", "pattern": f"^(?:[0-9]+|{pattern})$", "examples": ["1", example]},
                f"The numeric id or the {_ID_OR_SERIAL[name].replace('_', ' ')}")
    return {"type": "string"}, None


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        schema, description = _path_schema(name, converter)
        param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": schema}
        if description:
            param["description"] = description
        params.append(param)
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", rule), params


# Strings in requests, as api/endpoint.py and the InModel config read them: a NUL anywhere is refused (the
# databases cannot store it), and surrounding whitespace is stripped before the length and pattern checks.
# Whitespace is spelled out, since regex dialects disagree on \s (ECMA-262's lacks \x85 and has \ufeff),
# and there are two: what pydantic strips (Unicode White_Space, Rust's str::trim) and what Python's
# str.strip() removes in a validator (str.isspace: those and \x1c-\x1f).
STRIPPED = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PY_SPACE = STRIPPED + r"\u001c-\u001f"
NO_NUL = r"^[^\u0000]*$"
NOT_BLANK = rf"^[^\u0000]*[^\u0000{STRIPPED}][^\u0000]*$"  # stripped, still at least one character
NOT_PY_BLANK = rf"^[^\u0000]*[^\u0000{PY_SPACE}][^\u0000]*$"  # `value.strip()` is not empty
_ANCHORED = re.compile(r"^\^(.*)(?<!\\)\$$", re.DOTALL)


class InputSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, plus what validation does to strings that it cannot say on its own."""

    def str_schema(self, schema: core_schema.StringSchema) -> dict[str, Any]:
        json_schema = super().str_schema(schema)
        if self.mode != "validation":
            return json_schema
        strip = schema.get("strip_whitespace", self._config.str_strip_whitespace)
        pattern = json_schema.get("pattern")
        if pattern is None:
            json_schema["pattern"] = NOT_BLANK if strip and json_schema.get("minLength", 0) >= 1 else NO_NUL
        elif strip and (anchored := _ANCHORED.match(pattern)):
            json_schema["pattern"] = rf"^[{STRIPPED}]*(?:{anchored.group(1)})[{STRIPPED}]*$"
        return json_schema


def _branches(schema: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The `kind` branches of a property (a `T | None` property is an anyOf with a null branch)."""
    return [b for b in schema.get("anyOf", [schema]) if b.get("type") == kind]


_IP = {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
_TEXT = {"type": "string", "pattern": NOT_PY_BLANK}


def _action(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """ActionIn's validator: the parameter its type runs is non-blank text; no other parameters."""
    if "action_parameters" in props:
        text = {"type": "string", "pattern": NO_NUL}
        props["action_parameters"] = {
            "type": "object", "additionalProperties": False,
            "properties": {"command": text, "script": text, "interpreter": {"anyOf": [_TEXT, {"type": "null"}]}},
            "description": "`command` for a command action; `script`, and optionally `interpreter`, for a script"}
        schema["anyOf"] = [{"properties": {"action_type": {"const": kind}, "action_parameters": {
            "required": [kind], "properties": {kind: _TEXT}}}} for kind in ("command", "script")]


def _target_ids(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """Distinct ids of existing live (and, to run, enabled) targets."""
    if "target_ids" in props:
        for branch in _branches(props["target_ids"], "array"):
            branch["uniqueItems"] = True
        props["target_ids"]["description"] = "Ids of existing live targets, each once"


def _ids_or_selector(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """Targets by ids or by a selector, not both (the service's check)."""
    _target_ids(schema, props)
    if {"target_ids", "target_selector"} <= props.keys():
        schema.setdefault("allOf", []).append({"not": {
            "required": ["target_ids", "target_selector"],
            "properties": {"target_ids": {"type": "array", "minItems": 1}, "target_selector": {"type": "object"}}}})


def _selector(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """TargetSelector's validator: at least one part, non-empty."""
    schema["anyOf"] = [{"required": ["tags_all"], "properties": {"tags_all": {"type": "array", "minItems": 1}}},
                       {"required": ["tags_any"], "properties": {"tags_any": {"type": "array", "minItems": 1}}},
                       {"required": ["name"], "properties": {"name": {"type": "string"}}}]


def _parameter_in(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """A secret parameter has no default (it would be shown back)."""
    if {"secret", "default"} <= props.keys():
        schema["not"] = {"required": ["secret", "default"],
                         "properties": {"secret": {"const": True}, "default": {"type": "string"}}}
    if "name" in props:
        props["name"]["description"] = "Unique in the job; the actions see OC_PARAM_<name>"
    if "pattern" in props:
        props["pattern"]["description"] = ("A Python regular expression that compiles; a value (and the default) "
                                           "must match it whole")


def _job(schema: dict[str, Any], props: dict[str, Any]) -> None:
    _ids_or_selector(schema, props)
    if "target_selector" in props:
        props["target_selector"]["description"] = ("Instead of target_ids: the live, enabled targets it selects "
                                                   "when the job executes (a 422 then if none); setting one clears "
                                                   "the other")
    if "parameters" in props:
        props["parameters"]["description"] = ("The values it takes at execute time, names unique; replaced whole "
                                              "on update")
    if "scheduled_at" in props:
        props["scheduled_at"]["description"] = ("A time in the future, before 2101: the job then runs once by itself "
                                                "at that time (it needs targets)")
    if "schedule" in props:
        props["schedule"]["description"] = ("A recurring schedule: the job runs by itself at every tick, one run per "
                                            "tick (it needs targets); null removes it. A job has a pending "
                                            "scheduled_at or a schedule, not both")
    if {"scheduled_at", "schedule"} <= props.keys():  # not both in one body
        schema["not"] = {"required": ["scheduled_at", "schedule"],
                         "properties": {"scheduled_at": {"type": "string"}, "schedule": {"type": "object"}}}


def _job_in(schema: dict[str, Any], props: dict[str, Any]) -> None:
    _job(schema, props)
    if "scheduled_at" in props and "target_ids" in props:
        schema["anyOf"] = [{"properties": {"scheduled_at": {"type": "null"}, "schedule": {"type": "null"}}},
                           {"required": ["target_ids"], "properties": {"target_ids": {"minItems": 1}}},
                           {"required": ["target_selector"], "properties": {"target_selector": {"type": "object"}}}]


# RFC 1123: a host name's last label is not all digits (the targets schema's _hostname validator); with
# HOSTNAME's structure, "a letter or hyphen followed by digits only, to the end" says it
_NAMED_LAST_LABEL = rf"[A-Za-z-][0-9]*[{STRIPPED}]*$"


def _target(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """An IP address is an IPv4 or IPv6 address, a host name's last label is not a number; a credential is an
    existing one."""
    for branch in _branches(props.get("ip_address", {}), "string"):
        branch.update(_IP)
    for branch in _branches(props.get("hostname", {}), "string"):
        branch["allOf"] = [{"pattern": _NAMED_LAST_LABEL}]
    if "credential_id" in props:
        props["credential_id"]["description"] = "The id of an existing credential (required for SSH targets)"


def _target_in(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """An SSH target (the default connection) needs an address and a credential."""
    _target(schema, props)
    if {"connection", "ip_address", "hostname", "credential_id"} <= props.keys():
        ssh = {"connection": {"const": "ssh"}, "credential_id": {"type": "integer"}}
        schema["anyOf"] = [
            {"required": ["connection"], "properties": {"connection": {"const": "local"}}},
            {"required": ["ip_address", "credential_id"], "properties": {**ssh, "ip_address": {"type": "string"}}},
            {"required": ["hostname", "credential_id"], "properties": {**ssh, "hostname": {"type": "string"}}}]


def _credential_in(schema: dict[str, Any], props: dict[str, Any]) -> None:
    """A credential carries the secret its auth_type names."""
    if {"auth_type", "private_key", "password"} <= props.keys():
        schema["anyOf"] = [
            {"required": [secret], "properties": {"auth_type": {"const": kind}, secret: {"type": "string",
                                                                                       "minLength": 1}}}
            for kind, secret in (("key", "private_key"), ("password", "password"))]


# Rules the request models enforce in validators, which pydantic cannot turn into JSON Schema. They belong in
# each model's json_schema_extra; until they move there, these say them, and tests/security/test_fuzz.py
# checks that what they say is what the API does. Rules of state and time (an id that exists, a time in
# the future) no schema can state: the descriptions say them.
REFINEMENTS: dict[str, Any] = {
    "ActionIn": _action, "JobIn": _job_in, "JobUpdate": _job, "ExecuteIn": _ids_or_selector,
    "TargetSelector": _selector, "ParameterIn": _parameter_in,
    "TargetIn": _target_in, "TargetUpdate": _target, "CredentialIn": _credential_in,
}


def _refine(schemas: dict[str, Any]) -> None:
    for name, refine in REFINEMENTS.items():
        schema = schemas.get(name)
        if schema is not None:
            refine(schema, schema.setdefault("properties", {}))


def _query_params(model, schemas: dict) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF, schema_generator=InputSchema)
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def build_document(app: Flask) -> dict[str, Any]:
    bodies: set[type] = set()
    responses: set[type] = {ErrorOut}
    routes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        spec = getattr(view, "endpoint_spec", None)
        routes.append((rule, view, spec))
        if spec is not None:
            bodies.update(m for m in (spec.body,) if isinstance(m, type))
            responses.update(m for m in (spec.response,) if isinstance(m, type))
    # request bodies as the API parses them (validation mode, the input rules below); responses as it writes them
    key_map, top = models_json_schema([(m, "validation") for m in bodies] + [(m, "serialization") for m in responses],
                                      ref_template=REF, schema_generator=InputSchema)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    _refine(schemas)
    # pydantic names generic models "PageOut_JobOut_": take each model's $ref from pydantic, not its __name__
    refs = {model: schema["$ref"] for (model, _mode), schema in key_map.items() if "$ref" in schema}
    paths: dict[str, Any] = {}
    for rule, view, spec in sorted(routes, key=lambda r: r[0].rule):
        if rule.endpoint == "static" or rule.endpoint.startswith("web."):  # the monitor's files, not the API
            continue
        path, params = _path(rule.rule)
        if rule.endpoint in NOT_OPERATIONS:
            paths[path] = NOT_OPERATIONS[rule.endpoint]
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {"operationId": f"{rule.endpoint}_{method.lower()}".replace(".", "_"),
                                  "tags": [rule.endpoint.split(".")[0]], "parameters": list(params)}
            op["summary"] = spec.summary if spec else (view.__doc__ or rule.endpoint).strip().splitlines()[0]
            if spec is None:
                op["security"] = []
                op["responses"] = _plain_responses(rule.endpoint, limited=path.startswith("/api/"))
            else:
                op["security"] = [{"refreshToken" if spec.refresh else "bearerAuth": []}] if spec.auth else []
                if spec.query is not None:
                    op["parameters"] += _query_params(spec.query, schemas)
                if spec.idempotent:
                    op["parameters"].append(IDEMPOTENCY_KEY_PARAMETER)
                if spec.body is not None:
                    op["requestBody"] = {"required": not spec.optional_body, "content": {"application/json": {
                        "schema": {"$ref": refs.get(spec.body, REF.format(model=spec.body.__name__))}}}}
                op["responses"] = _responses(spec, refs, params, rule.endpoint)
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpsConductor API", "version": "1.0.0",
                 "description": "Remote command execution with hierarchical serials."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {
                           "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                          "description": "The access_token from /api/auth/login"},
                           "refreshToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                            "description": "The refresh_token from /api/auth/login"}}},
    }


def _error(code: int, description: str | None = None, *, retry_after: str | None = None) -> dict[str, Any]:
    """An error response in the envelope; `retry_after` describes its (required) Retry-After header."""
    response: dict[str, Any] = {
        "description": description or HTTP_CODES.get(code) or HTTP_STATUS_CODES.get(code, "Error"),
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}}}
    if code == 429:
        retry_after = retry_after or "Seconds until the window resets"
    if retry_after:
        response["headers"] = {"Retry-After": {"required": True, "description": retry_after,
                                               "schema": {"type": "integer", "minimum": 0}}}
    return response


# what every declared route answers while the database cannot be reached (api/errors.py): each one reads it,
# for the token's user if nothing else
DATABASE_UNAVAILABLE = 503


def _database_unavailable() -> dict[str, Any]:
    return _error(DATABASE_UNAVAILABLE, "The database cannot be reached (error service_unavailable, "
                                        "details.retry_after); nothing was changed: retry after Retry-After seconds",
                  retry_after="Seconds to wait before retrying")


# on every /api response while rate limits are on (RATE_LIMITS_ENABLED)
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests allowed in the current window",
                          "schema": {"type": "integer", "minimum": 0}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current window",
                              "schema": {"type": "integer", "minimum": 0}},
    "X-RateLimit-Reset": {"description": "When the window resets (Unix time, seconds)",
                          "schema": {"type": "integer", "minimum": 0}},
}
# extra response headers of a success, by endpoint
SUCCESS_HEADERS = {
    "executions.job_executions": {"X-Total-Count": {
        "required": True, "description": "How many executions the job has in all",
        "schema": {"type": "integer", "minimum": 0}}},
}


# routes declared `idempotent` (api/endpoint.py): execute and retry
IDEMPOTENCY_KEY_PARAMETER = {
    "name": IDEMPOTENCY_KEY, "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY_PATTERN},
    "description": "Makes the request safe to send again: the same key, from the same user, for the same request "
                   "(method, path and body) within 24 hours answers with the execution the first one made, with "
                   "the same status and `Idempotent-Replayed: true`, and starts nothing; the key used for a "
                   "different request is a 422. 1 to 255 printable ASCII characters, no space at either end."}
REPLAYED = "Idempotent-Replayed"
REPLAYED_HEADER = {"description": "`true` when the answer is the execution an earlier request with the same "
                                  "Idempotency-Key made; absent otherwise",
                   "schema": {"type": "string", "enum": ["true"]}}


# what the HTTP server or the error handlers answer for any request: a request line or headers past the
# server's limits (opsconductor/standalone.py, api/gunicorn_worker.py), an unexpected error
SERVER_STATUSES = frozenset({414, 431, 500})


def implied_statuses(spec, path_params: list[dict[str, Any]]) -> set[int]:
    """Every status the edges around a view can answer, given its declaration (api/endpoint.py, api/errors.py,
    api/limits.py): 401/403 from auth and roles, 400/413/415/422 from the body, 400 from the query, 404/422
    from path values (unknown, or not a serial), 429 from the rate limits, 414/431 from the server's limits, 503
    while the database cannot be reached."""
    codes = set(SERVER_STATUSES) | {429, DATABASE_UNAVAILABLE}
    if spec.auth:
        codes.add(401)
    if spec.roles:
        codes.add(403)
    if spec.query is not None:
        codes.add(400)  # a query that fails its model
    if spec.body is not None:
        codes |= {400, 413, 415, 422}  # malformed or too deeply nested JSON, too large, not JSON, invalid
    if spec.idempotent:
        codes.add(422)  # a malformed Idempotency-Key, or one used for another request
    for param in path_params:
        codes.add(404)  # nothing by that id or serial
        if param["schema"].get("type") == "string":
            codes.add(422)  # not a well-formed serial
    return codes


def _responses(spec, refs: dict, path_params: list[dict[str, Any]], endpoint: str) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": spec.summary}
    if spec.response is not None and spec.status != 204:
        name = getattr(spec.response, "__name__", None)
        ref = refs.get(spec.response, REF.format(model=name))
        ok["content"] = {"application/json": {"schema": {"$ref": ref}}}
    headers = {**SUCCESS_HEADERS.get(endpoint, {}), **RATE_LIMIT_HEADERS}
    if spec.idempotent:
        headers[REPLAYED] = REPLAYED_HEADER
    ok["headers"] = headers
    responses = {str(spec.status): ok}
    for code in sorted(set(spec.errors) | implied_statuses(spec, path_params)):
        responses[str(code)] = _database_unavailable() if code == DATABASE_UNAVAILABLE else _error(code)
    return responses


def _plain_responses(endpoint: str, *, limited: bool) -> dict[str, Any]:
    """Routes without an @endpoint declaration: the probes and this document."""
    ok = PLAIN_SUCCESS.get(endpoint, {"description": "OK"})
    responses = {"200": ok}
    if endpoint == "health.readyz":
        responses["503"] = _error(503, "A dependency is not answering: error not_ready, details per check")
    if endpoint == "metrics.prometheus_metrics":
        responses["401"] = _error(401, "METRICS_TOKEN is set and the request has no `Authorization: Bearer` with it")
        responses["404"] = _error(404, "METRICS_ENABLED is false")
    if limited:
        responses["200"] = {**ok, "headers": dict(RATE_LIMIT_HEADERS)}
        responses["429"] = _error(429)
    responses.update({str(code): _error(code) for code in SERVER_STATUSES})
    return dict(sorted(responses.items()))


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PLAIN_SUCCESS: dict[str, dict[str, Any]] = {
    "health.healthz": _json({"type": "object", "required": ["status"],
                             "properties": {"status": {"const": "ok"}}}, "The process answers"),
    "health.readyz": _json({"type": "object", "required": ["status", "checks"],
                            "properties": {"status": {"const": "ok"},
                                           "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
                           "Every dependency answers"),
    "openapi.openapi_json": _json({"type": "object", "required": ["openapi", "paths"]}, "This document"),
    "metrics.prometheus_metrics": {
        "description": "Prometheus text format 0.0.4 (README: Metrics)",
        "content": {"text/plain": {"schema": {"type": "string"}}}},
}

_WS_DESCRIPTION = (
    "Live execution events. Not an HTTP operation: a GET carrying a WebSocket handshake (`Upgrade: websocket`, "
    "`Connection: Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`) is answered `101 Switching "
    "Protocols`; a GET without one is `400` in the error envelope. Authenticate with an `Authorization: Bearer` "
    "header, `?token=`, or a first message `{\"action\": \"auth\", \"token\": ...}`; otherwise the socket is "
    "closed with 1008, as it is for a malformed `execution_serial` / `job_serial` filter or, later, a token that no "
    "longer stands. The first server "
    "message is `{\"type\": \"subscribed\", \"data\": {filters}}` (with `since`, where a one-execution stream "
    "starts); then events `{\"type\", \"data\"}` of types execution_started, branch_started, branch_completed, "
    "rollout_stopped and execution_completed, each with `data.seq` (1, 2, 3 … per execution, in commit order, "
    "delivered once and in order; `?execution_serial=…&since=N` replays those after N first), and with "
    "`?include=output` branch_output (`branch_serial`, `stream`, `offset`, `data`; not numbered). A client too slow "
    "for its queue receives `{\"type\": \"resume\", \"data\": {\"since\": {execution_serial: seq}}}` and a 1013 "
    "close. See `x-websocket`.")

# Routes described without HTTP operations: an OpenAPI operation promises a request/response exchange, and a
# fuzzer would open real sockets that stay subscribed. The path item says what the route is instead.
NOT_OPERATIONS: dict[str, dict[str, Any]] = {
    "ws.executions_stream": {
        "summary": "Live execution events (WebSocket)",
        "description": _WS_DESCRIPTION,
        "x-websocket": {
            "handshake": {
                "method": "get",
                "parameters": [
                    {"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},
                    {"name": "Connection", "in": "header", "required": True, "schema": {"type": "string"},
                     "description": "Contains the token Upgrade"},
                    {"name": "Sec-WebSocket-Key", "in": "header", "required": True, "schema": {"type": "string"}},
                    {"name": "Sec-WebSocket-Version", "in": "header", "required": True, "schema": {"const": "13"}},
                    {"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "Bearer access token"},
                    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Access token for clients that cannot set headers (kept out of access logs)"},
                    {"name": "execution_serial", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": f"^{_SERIAL['execution_serial'][0]}$"},
                     "description": "Only events of this execution"},
                    {"name": "job_serial", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": f"^{_SERIAL['job_serial'][0]}$"},
                     "description": "Only events of this job's executions"},
                    {"name": "since", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 999999999},
                     "description": "With execution_serial: the recorded events with seq > since, then live ones"},
                    {"name": "include", "in": "query", "required": False, "schema": {"const": "output"},
                     "description": "`output`: also branch_output events (live stdout/stderr, not numbered)"},
                ],
                "responses": {"101": {"description": "Switching Protocols: the WebSocket is open"},
                              "400": {"description": "Not a WebSocket handshake (error envelope)"}},
            },
            "client_messages": [{"type": "object", "required": ["action", "token"],
                                 "properties": {"action": {"const": "auth"}, "token": {"type": "string"}}}],
            "server_messages": {"type": "object", "required": ["type", "data"], "properties": {
                "type": {"enum": ["subscribed", "execution_started", "branch_started", "branch_completed",
                                  "rollout_stopped", "execution_completed", "branch_output", "resume"]},
                "data": {"type": "object"}}},
            "close_codes": {"1008": "authentication missing or invalid, a malformed filter, or later a token that "
                                    "no longer stands (expired, revoked, user disabled)",
                            "1009": "a client message past the size cap (api/ws.py MAX_MESSAGE_BYTES)",
                            "1011": "events unavailable",
                            "1013": "the token cannot be checked now (database unavailable), or the client reads "
                                    "slower than events come (after a resume message): try again later"},
        },
    },
}


@bp.get("/api/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 description of every route."""
    doc = current_app.extensions.get("opsconductor.openapi")
    if doc is None:
        doc = current_app.extensions["opsconductor.openapi"] = build_document(current_app)
    return doc
