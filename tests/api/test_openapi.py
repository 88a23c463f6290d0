"""GET /api/openapi.json is valid OpenAPI 3 and describes every route truthfully (path formats, every
status, input rules; tests/security/test_fuzz.py holds it to that with a fuzzer); /healthz and /readyz."""
from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api.app import create_app
from tests.api.conftest import assert_error
from tests.conftest import make_settings
from tests.sshd import free_port

SKIPPED_RULES = {"/ws/executions"}  # a WebSocket, described by its path item's x-websocket (no HTTP operation)
IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def document(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule)


def test_document_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on any structural problem, including dangling $refs


def test_openapi_needs_no_token(client):
    assert client.get("/api/openapi.json").status_code == 200


def test_every_route_and_method_is_documented(app, document):
    paths = document["paths"]
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("web.") or rule.rule in SKIPPED_RULES:
            continue
        path = _openapi_path(rule.rule)
        assert path in paths, f"{rule.rule} is not documented"
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            operation = paths[path].get(method.lower())
            assert operation is not None, f"{method} {rule.rule} is not documented"
            assert operation["responses"], f"{method} {rule.rule} documents no responses"
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(rule.arguments), f"{method} {rule.rule}: path parameters {declared}"
            checked += 1
    assert checked >= 30  # the whole API, not a trivially empty map
    documented = {(p, m) for p, ops in paths.items() for m in ops if m in HTTP_METHODS}
    routed = {(_openapi_path(r.rule), m.lower()) for r in app.url_map.iter_rules()
              for m in (r.methods or set()) - IGNORED_METHODS if r.endpoint != "static"}
    assert documented <= routed, f"documented but not routed: {documented - routed}"


def test_operations_declare_bodies_queries_security_and_errors(document):
    create_job = document["paths"]["/api/jobs"]["post"]
    assert create_job["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobIn")
    assert "201" in create_job["responses"] and "422" in create_job["responses"]
    assert create_job["security"] == [{"bearerAuth": []}]
    list_jobs = document["paths"]["/api/jobs"]["get"]
    query = {p["name"] for p in list_jobs["parameters"] if p["in"] == "query"}
    assert {"page", "per_page", "sort", "order", "status", "name"} <= query
    assert document["paths"]["/api/auth/login"]["post"]["security"] == []
    assert document["paths"]["/api/auth/refresh"]["post"]["security"] == [{"refreshToken": []}]
    assert {"bearerAuth", "refreshToken"} <= set(document["components"]["securitySchemes"])
    delete = document["paths"]["/api/targets/{target_ref}"]["delete"]
    assert "204" in delete["responses"] and "409" in delete["responses"]


def _validator(document: dict, operation: dict, status: int) -> Draft202012Validator:
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def test_responses_match_their_documented_schemas(client, admin, document, make):
    """The schemas are accurate: real responses validate against them."""
    target = make.target()
    job_body = {"name": "doc", "actions": [{"action_type": "command", "action_name": "a",
                                            "action_parameters": {"command": "true"}}],
                "target_ids": [target["id"]]}
    cases = [
        (client.post("/api/jobs", json=job_body, headers=admin), document["paths"]["/api/jobs"]["post"], 201),
        (client.get("/api/jobs", headers=admin), document["paths"]["/api/jobs"]["get"], 200),
        (client.get(f"/api/targets/{target['target_serial']}", headers=admin),
         document["paths"]["/api/targets/{target_ref}"]["get"], 200),
        (client.get("/api/targets", headers=admin), document["paths"]["/api/targets"]["get"], 200),
        (client.get("/api/users", headers=admin), document["paths"]["/api/users"]["get"], 200),
        (client.get("/api/credentials", headers=admin), document["paths"]["/api/credentials"]["get"], 200),
        (client.get("/api/auth/me", headers=admin), document["paths"]["/api/auth/me"]["get"], 200),
        (client.post("/api/jobs", json={"name": "x"}, headers=admin), document["paths"]["/api/jobs"]["post"], 422),
        (client.get("/api/jobs/J20990001", headers=admin), document["paths"]["/api/jobs/{job_id}"]["get"], 404),
    ]
    for response, operation, status in cases:
        assert response.status_code == status, response.get_json()
        errors = list(_validator(document, operation, status).iter_errors(response.get_json()))
        assert not errors, [e.message for e in errors]
    # and a wrong body does not validate: the check has teeth
    wrong = {"data": [{"id": "not-an-int"}], "pagination": {}}
    assert list(_validator(document, document["paths"]["/api/jobs"]["get"], 200).iter_errors(wrong))


# ---------------------------------------------------------------- health

def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_database_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok"}}


def test_readyz_with_redis(db, redis_url):
    app = create_app(make_settings(db.url, redis_url=redis_url), db=db)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_reports_a_dead_redis_503(db):
    app = create_app(make_settings(db.url, redis_url=f"redis://127.0.0.1:{free_port()}/0"), db=db)
    body = assert_error(app.test_client().get("/readyz"), 503, "not_ready")
    assert body["details"]["database"] == "ok"
    assert body["details"]["redis"].startswith("error")


# ---------------------------------------------------------------- the document tells the truth

def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _path_schema(document: dict, path: str, name: str) -> dict:
    operation = next(op for p, _m, op in _operations(document) if p == path)
    return next(p["schema"] for p in operation["parameters"] if p["in"] == "path" and p["name"] == name)


def _ecma(pattern: str) -> re.Pattern:
    """A JSON Schema pattern as ECMA-262 reads it: `$` is the end of the text, never before a final newline."""
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


@pytest.mark.parametrize("path, name, kind", [
    ("/api/jobs/{job_id}", "job_id", "job_serial"),
    ("/api/targets/{target_ref}", "target_ref", "target_serial"),
    ("/api/analytics/jobs/{job_serial}/metrics", "job_serial", "job_serial"),
    ("/api/targets/{target_serial}/executions", "target_serial", "target_serial"),
    ("/api/executions/serial/{execution_serial}", "execution_serial", "execution_serial"),
    ("/api/executions/branch/{branch_serial}", "branch_serial", "branch_serial"),
])
def test_path_parameter_patterns_are_the_serial_formats(document, path, name, kind):
    """A value the pattern admits reaches the lookup (404 at worst); only one it refuses is the serial's 422."""
    from common import serials

    pattern = _ecma(_path_schema(document, path, name)["pattern"])
    by_id = name in ("job_id", "target_ref")
    samples = ["J20250001", "J202500001", "J2025000123456", "T20250001", "T202512345", "J20250001.0001",
               "J20250001.12345", "J20250001.0001.0001", "J202510000.10000.10000", "J2025001", "J20250001.001",
               "J20250001.0001.001", "j20250001", "J20250001.", "J20250001\n", "J２０２５0001", "1", "42", "0007",
               "1.5", "-1", "", " 1", "J20250001 "]
    for value in samples:
        accepted = bool(pattern.search(value))
        expected = serials.is_valid(kind, value) or (by_id and value.isascii() and value.isdigit())
        assert accepted == expected, (name, value, accepted)


def test_integer_path_parameters_are_bounded_ids(document):
    schema = _path_schema(document, "/api/users/{user_id}", "user_id")
    assert schema == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def test_every_operation_documents_what_its_declaration_implies(app, document):
    """401 with auth, 403 with roles, 400/413/415/422 with a body, 400 with a query, 404 and 422 (not a
    serial) with string path values, 429 on /api, 414/431/500 from the server everywhere."""
    checked = 0
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions[rule.endpoint], "endpoint_spec", None)
        if spec is None:
            continue
        path = _openapi_path(rule.rule)
        for method in (rule.methods or set()) - IGNORED_METHODS:
            responses = set(document["paths"][path][method.lower()]["responses"])
            expected = {str(spec.status), "414", "429", "431", "500"} | {str(code) for code in spec.errors}
            if spec.auth:
                expected.add("401")
            if spec.roles:
                expected.add("403")
            if spec.body is not None:
                expected |= {"400", "413", "415", "422"}
            if spec.query is not None:
                expected.add("400")
            if rule.arguments:
                expected.add("404")
            if set(rule.arguments) - {"user_id", "credential_id"}:
                expected.add("422")
            assert expected <= responses, (method, path, expected - responses)
            checked += 1
    assert checked >= 30


def test_error_responses_are_the_envelope_and_429_says_when_to_retry(document):
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
        if path.startswith("/api/"):
            assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True


def test_documented_response_headers_are_sent(client, admin, document, make):
    target = make.target()
    job = client.post("/api/jobs", headers=admin, json={
        "name": "headers", "target_ids": [target["id"]],
        "actions": [{"action_type": "command", "action_name": "a", "action_parameters": {"command": "true"}}]})
    response = client.get(f"/api/jobs/{job.get_json()['job_serial']}/executions", headers=admin)
    headers = document["paths"]["/api/jobs/{job_id}/executions"]["get"]["responses"]["200"]["headers"]
    assert headers["X-Total-Count"]["required"] is True
    assert response.headers["X-Total-Count"] == "0"
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert name in headers and response.headers[name].isdigit(), name


def test_the_websocket_is_described_not_offered_as_an_http_operation(document):
    item = document["paths"]["/ws/executions"]
    assert not set(item) & HTTP_METHODS
    handshake = item["x-websocket"]["handshake"]
    assert handshake["method"] == "get" and set(handshake["responses"]) == {"101", "400"}
    names = {(p["in"], p["name"]) for p in handshake["parameters"]}
    assert {("header", "Upgrade"), ("header", "Sec-WebSocket-Key"), ("query", "token"),
            ("query", "execution_serial"), ("query", "job_serial")} <= names
    assert {"1008", "1011"} <= set(item["x-websocket"]["close_codes"])


def _body_validator(document: dict, model: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{model}", "components": document["components"]},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_body_schemas_state_the_input_rules_the_api_applies(client, admin, document, make):
    """What the schema admits is created, what it refuses is a 422: the rules of validators, stripping and the
    NUL check that pydantic's own schema does not state."""
    target = make.target()
    names = iter(range(1000))

    def check(path: str, model: str, body: dict, valid: bool) -> None:
        body = {**body, "name": f"{body['name']}-{next(names)}"} if body.get("name") != "  " else body
        assert _body_validator(document, model).is_valid(body) is valid, (model, body)
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == (201 if valid else 422), (model, body, response.get_json())

    action = {"action_type": "command", "action_name": "a", "action_parameters": {"command": "uptime"}}
    script = {"action_type": "script", "action_name": "s", "action_parameters": {"script": "ls", "command": ""}}
    for body, valid in [
        ({"name": "ok", "actions": [action]}, True),
        ({"name": "  ", "actions": [action]}, False),  # stripped to nothing
        ({"name": "nul\x00", "actions": [action]}, False),
        ({"name": "ok", "actions": [{**action, "action_type": "script"}]}, False),  # a script action needs script
        ({"name": "ok", "actions": [{**action, "action_parameters": {"command": " "}}]}, False),
        ({"name": "ok", "actions": [{**action, "action_parameters": {"command": "ls", "extra": "x"}}]}, False),
        ({"name": "ok", "actions": [script]}, True),  # only the parameter the type runs must be non-blank
        ({"name": "ok", "actions": [action], "target_ids": [target["id"], target["id"]]}, False),
        ({"name": "ok", "actions": [action], "scheduled_at": "2099-01-01T00:00:00Z"}, False),  # needs targets
        ({"name": "ok", "actions": [action], "scheduled_at": "2099-01-01T00:00:00Z", "target_ids": [target["id"]]},
         True),
    ]:
        check("/api/jobs", "JobIn", body, valid)
    ssh = {"name": "t", "credential_id": target["credential_id"]}
    for body, valid in [
        ({**ssh, "ip_address": "192.0.2.1"}, True),
        ({**ssh, "hostname": "web-1.example.com"}, True),
        ({**ssh, "hostname": "web-1.example.c0m"}, True),
        ({**ssh, "hostname": "999.1.1.1"}, False),  # the last label of a host name is not a number
        ({**ssh, "hostname": "0"}, False),
        ({"name": "t", "ip_address": "192.0.2.1"}, False),  # an SSH target needs a credential
        (ssh, False),  # and an address
        ({**ssh, "ip_address": "not-an-ip"}, False),
        ({"name": "t", "connection": "local"}, True),
        ({**ssh, "ip_address": "192.0.2.1", "queue": " edge "}, True),  # stripped before the pattern
    ]:
        check("/api/targets", "TargetIn", body, valid)


def test_the_whitespace_the_patterns_name_is_what_validation_strips():
    """pydantic's str_strip_whitespace (Rust's trim) for model strings, str.strip() in validators."""
    from pydantic import BaseModel, ConfigDict

    from api.openapi import NOT_BLANK, NOT_PY_BLANK, PY_SPACE, STRIPPED

    class Stripped(BaseModel):
        model_config = ConfigDict(str_strip_whitespace=True)
        value: str

    everything = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    stripped, py_space = re.compile(f"[{STRIPPED}]"), re.compile(f"[{PY_SPACE}]")
    pydantic_strips = {c for c in everything if Stripped(value=f"x{c}").value == "x"}
    assert {c for c in everything if stripped.fullmatch(c)} == pydantic_strips
    assert {c for c in everything if py_space.fullmatch(c)} == {c for c in everything if c.isspace()}
    assert _ecma(NOT_BLANK).search(" \u3000x\t") and not _ecma(NOT_BLANK).search(" \u3000\t")
    assert _ecma(NOT_BLANK).search("\x1c") and not _ecma(NOT_PY_BLANK).search("\x1c ")
    assert not _ecma(NOT_BLANK).search("x\x00")
