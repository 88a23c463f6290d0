"""GET /api/openapi.json is valid OpenAPI 3 and describes every route; /healthz and /readyz."""
from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api.app import create_app
from tests.api.conftest import assert_error
from tests.conftest import make_settings
from tests.sshd import free_port

SKIPPED_RULES = {"/ws/executions"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}


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
        if rule.endpoint == "static" or rule.rule in SKIPPED_RULES:
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
    documented = {(p, m) for p, ops in paths.items() for m in ops}
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
    assert "bearerAuth" in document["components"]["securitySchemes"]
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
