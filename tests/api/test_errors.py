"""The error envelope on every failure path (SPEC §7), and that bad input changes nothing."""
from __future__ import annotations

import json

import pytest

from tests.api.conftest import assert_error, table_snapshot

JOB = {"name": "n", "actions": [{"action_type": "command", "action_name": "a",
                                 "action_parameters": {"command": "true"}}]}


@pytest.fixture
def boom_app(app):
    """The app with a throwaway route that fails in an unexpected way."""

    @app.get("/api/test-boom")
    def _boom():
        raise RuntimeError("secret-internal-detail")

    @app.get("/test-boom-outside-api")
    def _boom_outside():
        raise KeyError("another-secret-detail")

    return app


def test_unknown_route_404_envelope(client, admin):
    for path in ("/api/nope", "/nope", "/api/jobs/1/nope/deeper"):
        body = assert_error(client.get(path, headers=admin), 404, "not_found")
        assert path in body["message"]
    assert_error(client.get("/api/nope"), 404, "not_found")  # even without a token
    assert_error(client.post("/api/nope", data="x", content_type="text/plain"), 404, "not_found")


def test_405_envelope_with_allow_header(client, admin):
    response = client.put("/api/jobs", json=JOB, headers=admin)
    body = assert_error(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "PUT" not in allowed
    assert set(body["details"]["allowed_methods"]) == allowed
    response = client.delete("/api/auth/login")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_oversized_body_413(client, operator, db):
    before = table_snapshot(db)
    payload = json.dumps({**JOB, "description": "x" * (2 * 1024 * 1024)})
    response = client.post("/api/jobs", data=payload, content_type="application/json", headers=operator)
    body = assert_error(response, 413, "payload_too_large")
    assert body["details"]["max_bytes"] == 1024 * 1024
    assert table_snapshot(db) == before


def test_oversized_login_body_413(client):
    response = client.post("/api/auth/login", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                           content_type="application/json")
    assert_error(response, 413, "payload_too_large")


def test_malformed_json_400(client, operator, db):
    before = table_snapshot(db)
    for raw in (b"{", b'{"name": }', b"not json", b'{"name": "x",}', b"\xff\xfe\x00", b"{'name': 'x'}"):
        response = client.post("/api/jobs", data=raw, content_type="application/json", headers=operator)
        body = assert_error(response, 400, "bad_request")
        assert "Traceback" not in json.dumps(body)
    assert table_snapshot(db) == before


def test_non_object_json_body_422(client, operator, db):
    before = table_snapshot(db)
    for payload in ([JOB], "a string", 42, None, True):
        body = assert_error(client.post("/api/jobs", data=json.dumps(payload), content_type="application/json",
                                        headers=operator), 422, "validation_error", field="body")
        assert body["details"]["expected_format"] == "object"
    assert table_snapshot(db) == before


def test_wrong_content_type_415(client, operator, db):
    before = table_snapshot(db)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        kwargs = {"data": json.dumps(JOB)}
        if content_type is not None:
            kwargs["content_type"] = content_type
        assert_error(client.post("/api/jobs", headers=operator, **kwargs), 415, "unsupported_media_type")
    assert table_snapshot(db) == before


def test_json_content_type_with_charset_is_accepted(client, operator):
    response = client.post("/api/jobs", data=json.dumps(JOB), content_type="application/json; charset=utf-8",
                           headers=operator)
    assert response.status_code == 201


def test_unexpected_exception_500_without_leaks(boom_app, client, admin):
    for path in ("/api/test-boom", "/test-boom-outside-api"):
        response = client.get(path, headers=admin)
        body = assert_error(response, 500, "internal_error")
        raw = response.get_data(as_text=True)
        assert "Traceback" not in raw
        assert "secret-internal-detail" not in raw
        assert "another-secret-detail" not in raw
        assert "RuntimeError" not in raw and "KeyError" not in raw
        assert body["details"] == {}


def test_every_bad_input_leaves_the_database_unchanged(client, admin, operator, make, db):
    cred = make.credential()
    target = make.target(credential_id=cred["id"])
    job = client.post("/api/jobs", json={**JOB, "target_ids": [target["id"]]}, headers=operator).get_json()
    before = table_snapshot(db)
    attempts = [
        client.post("/api/jobs", data=b"{", content_type="application/json", headers=operator),
        client.post("/api/jobs", json=[JOB], headers=operator),
        client.post("/api/jobs", data=json.dumps(JOB), content_type="text/plain", headers=operator),
        client.post("/api/jobs", json={**JOB, "description": "x" * (2 * 1024 * 1024)}, headers=operator),
        client.post("/api/jobs", json={**JOB, "target_ids": [target["id"], 424242]}, headers=operator),
        client.post("/api/jobs", json={**JOB, "bogus": 1}, headers=operator),
        client.put("/api/jobs", json=JOB, headers=operator),
        client.patch(f"/api/jobs/{job['id']}", json={"actions": []}, headers=operator),
        client.patch(f"/api/jobs/{job['id']}", data=b"[", content_type="application/json", headers=operator),
        client.post("/api/targets", json={"name": target["name"], "ip_address": "10.0.0.1",
                                          "credential_id": cred["id"]}, headers=admin),
        client.post("/api/targets", json={"name": "x", "ip_address": "300.0.0.1", "credential_id": cred["id"]},
                    headers=admin),
        client.patch(f"/api/targets/{target['id']}", json={"port": 0}, headers=admin),
        client.post("/api/credentials", json={"name": "c", "username": "u", "auth_type": "key"}, headers=admin),
        client.delete(f"/api/credentials/{cred['id']}", headers=admin),
        client.post("/api/users", json={"username": "u", "password": "short"}, headers=admin),
        client.post("/api/users", json={"username": "u", "password": "long-enough", "role": "god"}, headers=admin),
        client.post("/api/jobs", json=JOB),
        client.get("/api/jobs?per_page=0", headers=operator),
    ]
    statuses = [r.status_code for r in attempts]
    assert statuses == [400, 422, 415, 413, 422, 422, 405, 422, 400, 409, 422, 422, 422, 409, 422, 422, 401, 400]
    for response in attempts:
        assert_error(response, response.status_code)
    assert table_snapshot(db) == before


def test_a_rejected_secret_is_never_echoed_back(client, admin):
    response = client.post("/api/users", json={"username": "echo-check", "password": "short7!"}, headers=admin)
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert response.get_json()["details"]["field"] == "password"
    assert "short7!" not in body


def test_a_nul_character_is_a_clear_error_not_a_500(client, admin, db):
    response = client.post("/api/jobs", json={"name": "bad\x00name", "actions": [
        {"action_type": "command", "action_name": "a", "action_parameters": {"command": "true"}}]}, headers=admin)
    assert response.status_code == 422
    assert response.get_json()["details"]["field"] == "name"
    listed = client.get("/api/jobs?name=a%00b", headers=admin)
    assert listed.status_code == 400 and listed.get_json()["details"]["field"] == "name"


def test_an_offset_past_any_row_is_a_400(client, admin):
    response = client.get("/api/jobs/J20260001/executions?offset=99999999999999999999", headers=admin)
    assert response.status_code == 400
    assert response.get_json()["details"]["field"] == "offset"
