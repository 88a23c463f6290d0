"""Lookups by serial, a job's executions, search and bulk, over HTTP against the hand-made history."""
from __future__ import annotations

import pytest

from common.services import lookups
from tests.history_data import NOW, build_history


@pytest.fixture
def history(db):
    with db.session() as session:
        return build_history(session)


def error_of(response):
    assert set(response.json) == {"error", "message", "details"}
    return response.json


# ---------------------------------------------------------------- execution by serial


def test_execution_by_serial(client, viewer, history):
    response = client.get("/api/executions/serial/J20250001.0004", headers=viewer)
    assert response.status_code == 200, response.json
    body = response.json
    assert {k: body[k] for k in ("execution_serial", "execution_number", "status", "started_at", "completed_at")} == {
        "execution_serial": "J20250001.0004", "execution_number": 4, "status": "completed",
        "started_at": "2025-01-08T10:00:00Z", "completed_at": "2025-01-08T10:05:00Z"}
    assert body["job"] == {"id": history.job_ids["J20250001"], "job_serial": "J20250001", "name": "System Update"}
    assert len(body["execution_uuid"]) == 36 and isinstance(body["id"], int)
    assert [(b["branch_serial"], b["branch_id"], b["target_id"], b["target_serial_ref"], b["status"], b["exit_code"],
             b["duration"]) for b in body["branches"]] == [
        ("J20250001.0004.0001", "001", history.target_ids["T20250001"], "T20250001", "completed", 0, 120.0),
        ("J20250001.0004.0002", "002", history.target_ids["T20240008"], "T20240008", "completed", 0, 180.0),
    ]
    assert body["branches"][0]["started_at"] == "2025-01-08T10:00:00Z"
    assert body["branches"][0]["completed_at"] == "2025-01-08T10:02:00Z"


def test_running_execution_has_null_completion(client, viewer, history):
    body = client.get("/api/executions/serial/J20250001.0005", headers=viewer).json
    assert (body["status"], body["completed_at"]) == ("running", None)
    assert [(b["status"], b["started_at"]) for b in body["branches"]] == [
        ("running", "2025-01-08T10:20:00Z"), ("queued", None)]


def test_archived_job_execution_is_found(client, viewer, history):
    body = client.get("/api/executions/serial/J20240042.0001", headers=viewer).json
    assert body["job"]["name"] == "Old Cleanup"
    assert [b["target_serial_ref"] for b in body["branches"]] == ["T20240007"]


@pytest.mark.parametrize("bad", ["invalid_serial", "J20250001", "J20250001.0001.0001", "J2025001.0001",
                                 "j20250001.0001", "J20250001.001"])
def test_malformed_execution_serial_is_422(client, viewer, history, bad):
    response = client.get(f"/api/executions/serial/{bad}", headers=viewer)
    assert response.status_code == 422
    assert error_of(response) == {"error": "validation_error", "message": "Invalid execution serial format",
                                  "details": {"field": "execution_serial", "expected_format": "J20250001.0001",
                                              "received": bad}}


def test_unknown_execution_is_404(client, viewer, history):
    response = client.get("/api/executions/serial/J20250001.0099", headers=viewer)
    assert response.status_code == 404
    assert error_of(response)["error"] == "not_found"


def test_lookup_needs_a_token(client, history):
    assert client.get("/api/executions/serial/J20250001.0004").status_code == 401


# ---------------------------------------------------------------- branch by serial


def test_branch_by_serial(client, viewer, history):
    response = client.get("/api/executions/branch/J20250001.0003.0002", headers=viewer)
    assert response.status_code == 200, response.json
    body = response.json
    assert {k: body[k] for k in ("branch_serial", "branch_id", "execution_serial", "target_id", "target_serial_ref",
                                 "status", "started_at", "completed_at", "result_output", "result_error",
                                 "exit_code", "error_type", "duration", "steps")} == {
        "branch_serial": "J20250001.0003.0002", "branch_id": "002", "execution_serial": "J20250001.0003",
        "target_id": history.target_ids["T20240008"], "target_serial_ref": "T20240008", "status": "failed",
        "started_at": "2025-01-08T09:59:59Z", "completed_at": "2025-01-08T10:01:29Z",
        "result_output": "failed output", "result_error": "boom", "exit_code": 1, "error_type": "command_failed",
        "duration": 90.0, "steps": []}
    assert body["target"] == {"id": history.target_ids["T20240008"], "target_serial": "T20240008",
                              "name": "prod-db-01", "ip_address": "192.168.1.101", "hostname": None}


def test_branch_on_archived_target_is_found(client, viewer, history):
    body = client.get("/api/executions/branch/J20240042.0002.0001", headers=viewer).json
    assert body["target"]["name"] == "Legacy-Box"


def test_malformed_and_unknown_branch(client, viewer, history):
    response = client.get("/api/executions/branch/J20250001.0003", headers=viewer)
    assert response.status_code == 422
    assert error_of(response)["details"] == {"field": "branch_serial", "expected_format": "J20250001.0001.0001",
                                             "received": "J20250001.0003"}
    response = client.get("/api/executions/branch/J20250001.0003.0009", headers=viewer)
    assert response.status_code == 404


# ---------------------------------------------------------------- a job's executions


def test_job_executions_newest_first(client, viewer, history):
    response = client.get("/api/jobs/J20250001/executions", headers=viewer)
    assert response.status_code == 200, response.json
    assert response.headers["X-Total-Count"] == "5"
    body = response.json
    assert [e["execution_serial"] for e in body] == [
        "J20250001.0005", "J20250001.0004", "J20250001.0003", "J20250001.0002", "J20250001.0001"]
    assert [len(e["branches"]) for e in body] == [2, 2, 2, 2, 2]
    assert body[1]["branches"][1]["branch_serial"] == "J20250001.0004.0002"
    assert {"id", "execution_uuid", "execution_serial", "execution_number", "status", "started_at", "completed_at",
            "branches"} <= set(body[0])


def test_job_executions_by_id_and_pages(client, viewer, history):
    job_id = history.job_ids["J20240043"]
    response = client.get(f"/api/jobs/{job_id}/executions?limit=3&offset=2", headers=viewer)
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "8"
    assert [e["execution_serial"] for e in response.json] == ["J20240043.0006", "J20240043.0005", "J20240043.0004"]
    assert client.get(f"/api/jobs/{job_id}/executions?offset=8", headers=viewer).json == []


def test_archived_job_executions(client, viewer, history):
    body = client.get("/api/jobs/J20240042/executions", headers=viewer).json
    assert [e["execution_serial"] for e in body] == ["J20240042.0002", "J20240042.0001"]


def test_job_executions_errors(client, viewer, history):
    response = client.get("/api/jobs/not-a-job/executions", headers=viewer)
    assert response.status_code == 422
    assert error_of(response)["details"] == {"field": "job_serial", "expected_format": "J20250001",
                                             "received": "not-a-job"}
    assert client.get("/api/jobs/J20259999/executions", headers=viewer).status_code == 404
    assert client.get("/api/jobs/999999/executions", headers=viewer).status_code == 404
    assert client.get("/api/jobs/99999999999999999999/executions", headers=viewer).status_code == 404
    for query in ("limit=0", "limit=501", "offset=-1", "limit=x"):
        response = client.get(f"/api/jobs/J20250001/executions?{query}", headers=viewer)
        assert response.status_code == 400, query
        assert error_of(response)["error"] == "bad_request"


# ---------------------------------------------------------------- search


def search(client, headers, **params):
    response = client.get("/api/executions/search", query_string=params, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def serials_of(body):
    return [r["serial"] for r in body["results"]]


def test_search_reference_example(client, viewer, history):
    body = search(client, viewer, q="J20250001", type="execution", limit=10)
    assert (body["query"], body["type"], body["total"]) == ("J20250001", "execution", 5)
    assert serials_of(body) == ["J20250001.0005", "J20250001.0004", "J20250001.0003", "J20250001.0002",
                                "J20250001.0001"]
    assert body["results"][1] == {
        "type": "execution", "serial": "J20250001.0004", "status": "completed", "job_serial": "J20250001",
        "job_name": "System Update", "target_serial": None, "target_name": None,
        "started_at": "2025-01-08T10:00:00Z", "completed_at": "2025-01-08T10:05:00Z"}


def test_search_branch_serial_prefix_is_case_insensitive(client, viewer, history):
    body = search(client, viewer, q="j20250001.0004", type="branch")
    assert (body["total"], serials_of(body)) == (2, ["J20250001.0004.0001", "J20250001.0004.0002"])
    assert body["results"][0] == {
        "type": "branch", "serial": "J20250001.0004.0001", "status": "completed", "job_serial": "J20250001",
        "job_name": "System Update", "target_serial": "T20250001", "target_name": "prod-web-01",
        "started_at": "2025-01-08T10:00:00Z", "completed_at": "2025-01-08T10:02:00Z"}


def test_search_job_name_all_types(client, viewer, history):
    body = search(client, viewer, q="BACKUP", limit=3)
    assert (body["type"], body["total"]) == ("all", 16)  # 8 executions and their 8 branches
    assert [(r["type"], r["serial"]) for r in body["results"]] == [
        ("execution", "J20240043.0008"), ("branch", "J20240043.0008.0001"), ("execution", "J20240043.0007")]


def test_search_target_name(client, viewer, history):
    body = search(client, viewer, q="Prod-Web", type="branch")
    assert body["total"] == 5
    assert serials_of(body) == ["J20250001.0005.0001", "J20250001.0004.0001", "J20250001.0003.0001",
                                "J20250001.0002.0001", "J20250001.0001.0001"]
    assert search(client, viewer, q="Prod-Web", type="execution")["total"] == 0
    assert search(client, viewer, q="prod", type="branch")["total"] == 18  # prod-web-01 5, prod-db-01 13


def test_search_archived_job_and_target(client, viewer, history):
    body = search(client, viewer, q="legacy")
    assert (body["total"], serials_of(body)) == (2, ["J20240042.0002.0001", "J20240042.0001.0001"])
    assert body["results"][0]["target_name"] == "Legacy-Box"
    assert serials_of(search(client, viewer, q="t20240007", type="branch")) == [
        "J20240042.0002.0001", "J20240042.0001.0001"]
    assert serials_of(search(client, viewer, q="old clean", type="execution")) == ["J20240042.0002", "J20240042.0001"]


def test_search_counts(client, viewer, history):
    assert search(client, viewer, q="J2024", type="execution")["total"] == 10
    assert search(client, viewer, q="T2024", type="branch")["total"] == 15  # prod-db-01 13, Legacy-Box 2
    assert search(client, viewer, q="update")["total"] == 15  # 5 executions, 10 branches
    body = search(client, viewer, q="update", limit=1)
    assert (body["total"], serials_of(body)) == (15, ["J20250001.0005"])


@pytest.mark.parametrize("q", ["zzz", "%", "_", "J9", "T9", "\\"])
def test_search_without_match(client, viewer, history, q):
    body = search(client, viewer, q=q)
    assert (body["query"], body["total"], body["results"]) == (q, 0, [])


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "a\x00b"}, {"q": "x" * 256}, {"q": "x", "type": "job"},
                                    {"q": "x", "limit": 0}, {"q": "x", "limit": 501}, {"q": "x", "limit": "many"}])
def test_search_bad_parameters_are_400(client, viewer, history, params):
    response = client.get("/api/executions/search", query_string=params, headers=viewer)
    assert response.status_code == 400
    assert error_of(response)["error"] == "bad_request"


@pytest.mark.parametrize("listed", [0, 1, 1000])
def test_search_plans_with_listed_or_subquery_matches(db, history, monkeypatch, listed):
    """Matched ids go in as a list up to a threshold, the condition itself beyond: same answers."""
    monkeypatch.setattr(lookups, "_LISTED", dict.fromkeys(("job", "target", "execution", "branch"), listed))
    with db.session() as session:
        assert lookups.search(session, "prod", "branch", 50).total == 18
        found = lookups.search(session, "update", "all", 3)
        assert (found.total, [h.serial for h in found.results]) == (
            15, ["J20250001.0005", "J20250001.0005.0001", "J20250001.0005.0002"])
        assert lookups.search(session, "t2024", "branch", 50).total == 15
        assert lookups.search(session, "zzz", "all", 50).total == 0
        found = lookups.search(session, "J20250001.000", "all", 50)
        assert found.total == 15
        assert [h.serial for h in found.results][:3] == ["J20250001.0005", "J20250001.0005.0001", "J20250001.0005.0002"]
        assert lookups.search(session, "J2024", "execution", 50).total == 10


def test_search_service_with_limit(db, history):
    with db.session() as session:
        found = lookups.search(session, "prod", "all", 2)
    assert found.total == 18
    assert [h.serial for h in found.results] == ["J20250001.0005.0001", "J20250001.0005.0002"]
    assert found.results[0].started_at == NOW.replace(minute=20)


# ---------------------------------------------------------------- bulk


def test_bulk_mixed_in_request_order(client, viewer, history):
    serials = ["J20250001.0004.0001", "J20240043.0003", "invalid_serial", "J20259999.0001",
               "J20240042.0001.0001", "J20250001.0004.0001", "J20250001"]
    response = client.post("/api/executions/bulk", json={"serials": serials}, headers=viewer)
    assert response.status_code == 200, response.json
    assert response.json == {
        "results": [
            {"serial": "J20250001.0004.0001", "found": True,
             "data": {"branch_serial": "J20250001.0004.0001", "status": "completed", "target_serial_ref": "T20250001"}},
            {"serial": "J20240043.0003", "found": True,
             "data": {"execution_serial": "J20240043.0003", "status": "failed", "job_serial": "J20240043"}},
            {"serial": "invalid_serial", "found": False, "data": None},
            {"serial": "J20259999.0001", "found": False, "data": None},
            {"serial": "J20240042.0001.0001", "found": True,
             "data": {"branch_serial": "J20240042.0001.0001", "status": "failed", "target_serial_ref": "T20240007"}},
            {"serial": "J20250001.0004.0001", "found": True,
             "data": {"branch_serial": "J20250001.0004.0001", "status": "completed", "target_serial_ref": "T20250001"}},
            {"serial": "J20250001", "found": False, "data": None},
        ],
        "not_found": ["invalid_serial", "J20259999.0001", "J20250001"],
    }


def test_bulk_of_a_thousand(client, viewer, history):
    serials = ["J20250001.0004.0002"] * 999 + ["J20250001.0004"]
    body = client.post("/api/executions/bulk", json={"serials": serials}, headers=viewer).json
    assert len(body["results"]) == 1000 and body["not_found"] == []
    assert body["results"][-1]["data"]["execution_serial"] == "J20250001.0004"


@pytest.mark.parametrize("payload", [{"serials": []}, {"serials": ["J20250001.0001"] * 1001}, {},
                                     {"serials": "J20250001.0001"}, {"serials": [1, 2]},
                                     {"serials": ["J20250001.0001"], "extra": 1}])
def test_bulk_bad_bodies_are_422(client, viewer, history, payload):
    response = client.post("/api/executions/bulk", json=payload, headers=viewer)
    assert response.status_code == 422
    body = error_of(response)
    assert body["error"] == "validation_error"
    assert body["details"]["field"].split(".")[0] in {"serials", "extra"}


def test_openapi_describes_the_read_routes(client):
    paths = client.get("/api/openapi.json").json["paths"]
    for path in ("/api/jobs/{job_id}/executions", "/api/executions/serial/{execution_serial}",
                 "/api/executions/branch/{branch_serial}", "/api/executions/search", "/api/executions/bulk",
                 "/api/targets/{target_serial}/performance", "/api/targets/{target_serial}/executions",
                 "/api/analytics/executions", "/api/analytics/jobs/{job_serial}/metrics"):
        assert path in paths, path
    search_params = {p["name"] for p in paths["/api/executions/search"]["get"]["parameters"]}
    assert search_params == {"q", "type", "limit"}
