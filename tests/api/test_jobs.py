"""Jobs CRUD against the reference's create-job example and pagination contract."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.api.conftest import assert_error, row_counts

YEAR = datetime.now(UTC).year
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def _future(days: int = 1) -> str:
    moment = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _reference_body(target_ids: list[int], scheduled_at: str | None) -> dict:
    """The reference's "Create Job" body, with real target ids and a future scheduled_at."""
    body = {
        "name": "System Update",
        "description": "Update all production servers",
        "job_type": "command",
        "actions": [
            {
                "action_type": "command",
                "action_name": "update_system",
                "action_parameters": {
                    "command": "sudo apt update && sudo apt upgrade -y"
                }
            }
        ],
        "target_ids": target_ids,
        "scheduled_at": scheduled_at,
    }
    if scheduled_at is None:
        del body["scheduled_at"]
    return body


def _simple(name: str = "job", **extra) -> dict:
    return {"name": name, "actions": [{"action_type": "command", "action_name": "a",
                                       "action_parameters": {"command": "true"}}], **extra}


@pytest.fixture
def three_targets(make) -> list[int]:
    cred = make.credential()
    return [make.target(credential_id=cred["id"], name=f"prod-server-0{i}")["id"] for i in (1, 2, 3)]


def _counter(db, scope: str):
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT value FROM serial_counters WHERE scope = :s"), {"s": scope}).scalar()


# ---------------------------------------------------------------- create

def test_create_with_the_reference_body(client, operator, three_targets):
    scheduled_at = _future()
    response = client.post("/api/jobs", json=_reference_body(three_targets, scheduled_at), headers=operator)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    for field in ("id", "job_uuid", "job_serial", "name", "description", "job_type", "status", "created_at",
                  "scheduled_at", "actions"):
        assert field in body, field
    assert isinstance(body["id"], int)
    assert str(uuid.UUID(body["job_uuid"])) == body["job_uuid"]
    assert body["job_serial"] == f"J{YEAR}0001"
    assert len(body["job_serial"]) == 9
    assert body["name"] == "System Update"
    assert body["description"] == "Update all production servers"
    assert body["job_type"] == "command"
    assert body["status"] == "scheduled"
    assert RFC3339_Z.match(body["created_at"]), body["created_at"]
    assert body["scheduled_at"] == scheduled_at
    assert body["actions"] == [{
        "position": 1, "action_type": "command", "action_name": "update_system",
        "action_parameters": {"command": "sudo apt update && sudo apt upgrade -y"},
        "timeout_seconds": None, "continue_on_error": False,
    }]
    assert body["target_ids"] == three_targets
    assert body["execution_count"] == 0
    assert body["archived_at"] is None
    created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


def test_scheduled_at_with_offset_is_returned_in_utc(client, operator, three_targets):
    moment = datetime.now(timezone(timedelta(hours=5, minutes=30))).replace(microsecond=0) + timedelta(days=2)
    response = client.post("/api/jobs", json=_reference_body(three_targets, moment.isoformat()), headers=operator)
    assert response.status_code == 201
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert response.get_json()["scheduled_at"] == expected


def test_without_scheduled_at_status_is_ready(client, operator, three_targets):
    response = client.post("/api/jobs", json=_reference_body(three_targets, None), headers=operator)
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["scheduled_at"] is None
    minimal = client.post("/api/jobs", json=_simple(), headers=operator).get_json()
    assert minimal["status"] == "ready"
    assert minimal["job_type"] == "command"
    assert minimal["target_ids"] == []
    assert minimal["job_serial"] == f"J{YEAR}0002"


def test_script_action_and_per_action_options(client, operator):
    body = _simple(actions=[
        {"action_type": "script", "action_name": "s",
         "action_parameters": {"script": "echo hi", "interpreter": "/bin/sh"},
         "timeout_seconds": 30, "continue_on_error": True},
        {"action_type": "command", "action_name": "c", "action_parameters": {"command": "uptime"}},
    ])
    response = client.post("/api/jobs", json=body, headers=operator)
    assert response.status_code == 201, response.get_json()
    actions = response.get_json()["actions"]
    assert [a["position"] for a in actions] == [1, 2]
    assert actions[0]["action_parameters"] == {"script": "echo hi", "interpreter": "/bin/sh"}
    assert actions[0]["timeout_seconds"] == 30
    assert actions[0]["continue_on_error"] is True


# ---------------------------------------------------------------- create: rejected, nothing written

def _rejected(client, db, headers, body, status: int = 422, field: str | None = None) -> dict:
    before = row_counts(db)
    counter = _counter(db, f"J{YEAR}")
    error = assert_error(client.post("/api/jobs", json=body, headers=headers), status, field=field)
    assert row_counts(db) == before, "a rejected job wrote rows"
    assert _counter(db, f"J{YEAR}") == counter, "a rejected job advanced the serial counter"
    return error


def test_scheduled_at_in_the_past_422(client, operator, three_targets, db):
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    error = _rejected(client, db, operator, _reference_body(three_targets, past), field="scheduled_at")
    assert error["error"] == "validation_error"
    _rejected(client, db, operator, _reference_body(three_targets, "2025-01-08T10:00:00Z"), field="scheduled_at")


def test_naive_scheduled_at_422(client, operator, three_targets, db):
    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    _rejected(client, db, operator, _reference_body(three_targets, naive), field="scheduled_at")
    _rejected(client, db, operator, _reference_body(three_targets, "tomorrow"), field="scheduled_at")


def test_unknown_target_id_422_and_nothing_written(client, operator, three_targets, db):
    error = _rejected(client, db, operator, _reference_body([three_targets[0], 999999], _future()),
                      field="target_ids")
    assert error["details"]["received"] == [999999]
    _rejected(client, db, operator, _simple(target_ids=[10**30]), field="target_ids")
    _rejected(client, db, operator, _simple(target_ids=[three_targets[0], three_targets[0]]), field="target_ids")
    # the failed attempts consumed no serial
    assert client.post("/api/jobs", json=_simple(), headers=operator).get_json()["job_serial"] == f"J{YEAR}0001"


def test_archived_target_cannot_be_a_job_target(client, operator, admin, three_targets, db):
    assert client.delete(f"/api/targets/{three_targets[0]}", headers=admin).status_code == 204
    _rejected(client, db, operator, _simple(target_ids=[three_targets[0]]), field="target_ids")


def test_scheduled_job_needs_targets(client, operator, db):
    _rejected(client, db, operator, _simple(scheduled_at=_future()), field="target_ids")


VIOLATIONS = [
    (_simple(owner="me"), "owner"),
    (_simple(actions=[]), "actions"),
    ({"name": "x"}, "actions"),
    (_simple(name=""), "name"),
    (_simple(target_ids="1,2"), "target_ids"),
    (_simple(target_ids=["one"]), "target_ids.0"),
    (_simple(actions=[{"action_type": "command", "action_name": "a", "action_parameters": {}}]), "actions.0"),
    (_simple(actions=[{"action_type": "command", "action_name": "a", "action_parameters": {"command": "  "}}]),
     "actions.0"),
    (_simple(actions=[{"action_type": "command", "action_name": "a", "action_parameters": {"script": "x"}}]),
     "actions.0"),
    (_simple(actions=[{"action_type": "script", "action_name": "a", "action_parameters": {"command": "x"}}]),
     "actions.0"),
    (_simple(actions=[{"action_type": "shell", "action_name": "a", "action_parameters": {"command": "x"}}]),
     "actions.0.action_type"),
    (_simple(actions=[{"action_type": "command", "action_name": "a", "action_parameters": {"command": "x"},
                       "timeout_seconds": 0}]), "actions.0.timeout_seconds"),
    (_simple(actions=[{"action_type": "command", "action_name": "a", "action_parameters": {"command": "x"},
                       "retries": 3}]), "actions.0.retries"),
]


def test_schema_violations_422_name_the_field(client, operator, db):
    for body, field in VIOLATIONS:
        error = _rejected(client, db, operator, body)
        assert error["error"] == "validation_error"
        assert error["details"]["field"] == field, error


# ---------------------------------------------------------------- read, update, archive

def test_get_by_id_and_serial(client, operator, viewer, three_targets):
    job = client.post("/api/jobs", json=_reference_body(three_targets, _future()), headers=operator).get_json()
    by_id = client.get(f"/api/jobs/{job['id']}", headers=viewer)
    by_serial = client.get(f"/api/jobs/{job['job_serial']}", headers=viewer)
    assert by_id.status_code == 200 and by_serial.status_code == 200
    assert by_id.get_json() == by_serial.get_json() == job
    assert_error(client.get(f"/api/jobs/J{YEAR}0099", headers=viewer), 404, "not_found")
    assert_error(client.get("/api/jobs/424242", headers=viewer), 404, "not_found")
    body = assert_error(client.get("/api/jobs/invalid_serial", headers=viewer), 422, "validation_error")
    assert body["details"] == {"field": "job_serial", "expected_format": "J20250001", "received": "invalid_serial"}


def test_patch_job(client, operator, three_targets):
    job = client.post("/api/jobs", json=_simple("before"), headers=operator).get_json()
    new_actions = [{"action_type": "script", "action_name": "s1", "action_parameters": {"script": "echo 1"}},
                   {"action_type": "command", "action_name": "c2", "action_parameters": {"command": "echo 2"}}]
    response = client.patch(f"/api/jobs/{job['job_serial']}", headers=operator, json={
        "name": "after", "description": "changed", "actions": new_actions, "target_ids": three_targets[:2]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["name"] == "after" and body["description"] == "changed"
    assert [a["action_name"] for a in body["actions"]] == ["s1", "c2"]
    assert body["target_ids"] == three_targets[:2]
    assert body["job_serial"] == job["job_serial"] and body["job_uuid"] == job["job_uuid"]
    assert client.get(f"/api/jobs/{job['id']}", headers=operator).get_json() == body

    scheduled_at = _future(3)
    scheduled = client.patch(f"/api/jobs/{job['id']}", json={"scheduled_at": scheduled_at}, headers=operator)
    assert scheduled.status_code == 200
    assert scheduled.get_json()["status"] == "scheduled"
    assert scheduled.get_json()["scheduled_at"] == scheduled_at
    unscheduled = client.patch(f"/api/jobs/{job['id']}", json={"scheduled_at": None}, headers=operator)
    assert unscheduled.get_json()["status"] == "ready"
    assert unscheduled.get_json()["scheduled_at"] is None


def test_patch_rejections_change_nothing(client, operator, viewer, db):
    job = client.post("/api/jobs", json=_simple("keep"), headers=operator).get_json()
    before = client.get(f"/api/jobs/{job['id']}", headers=operator).get_json()
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"scheduled_at": past}, headers=operator), 422,
                 field="scheduled_at")
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"scheduled_at": _future()}, headers=operator), 422,
                 field="target_ids")
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"actions": []}, headers=operator), 422,
                 field="actions")
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"target_ids": [999999]}, headers=operator), 422,
                 field="target_ids")
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"job_serial": "J20990001"}, headers=operator), 422,
                 field="job_serial")
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"name": "x"}, headers=viewer), 403)
    for field in ("name", "job_type", "actions"):
        assert_error(client.patch(f"/api/jobs/{job['id']}", json={field: None}, headers=operator), 422,
                     "validation_error", field=field)
    assert client.get(f"/api/jobs/{job['id']}", headers=operator).get_json() == before


def test_delete_archives(client, operator, viewer, db):
    job = client.post("/api/jobs", json=_simple("gone"), headers=operator).get_json()
    keep = client.post("/api/jobs", json=_simple("keep"), headers=operator).get_json()
    assert_error(client.delete(f"/api/jobs/{job['id']}", headers=viewer), 403)
    before = row_counts(db)
    response = client.delete(f"/api/jobs/{job['job_serial']}", headers=operator)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert row_counts(db) == before  # archived, not deleted

    listed = client.get("/api/jobs", headers=viewer).get_json()
    assert [j["id"] for j in listed["data"]] == [keep["id"]]
    assert listed["pagination"]["total"] == 1
    archived = client.get(f"/api/jobs/{job['job_serial']}", headers=viewer)
    assert archived.status_code == 200
    assert RFC3339_Z.match(archived.get_json()["archived_at"])
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"name": "x"}, headers=operator), 409, "conflict")
    assert_error(client.delete(f"/api/jobs/{job['id']}", headers=operator), 409, "conflict")


# ---------------------------------------------------------------- list

def test_list_exactly_as_the_reference(client, operator):
    ids = [client.post("/api/jobs", json=_simple(f"job-{i:02d}"), headers=operator).get_json()["id"]
           for i in range(25)]
    response = client.get("/api/jobs?page=1&per_page=20&sort=created_at&order=desc", headers=operator)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"data", "pagination"}
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": 25, "pages": 2, "has_next": True,
                                  "has_prev": False}
    assert [j["id"] for j in body["data"]] == list(reversed(ids))[:20]
    second = client.get("/api/jobs?page=2&per_page=20&sort=created_at&order=desc", headers=operator).get_json()
    assert second["pagination"] == {"page": 2, "per_page": 20, "total": 25, "pages": 2, "has_next": False,
                                    "has_prev": True}
    assert [j["id"] for j in second["data"]] == list(reversed(ids))[20:]
    default = client.get("/api/jobs", headers=operator).get_json()
    assert default["pagination"]["per_page"] == 20 and default["pagination"]["page"] == 1
    assert [j["id"] for j in default["data"]] == [j["id"] for j in body["data"]]
    asc = client.get("/api/jobs?sort=job_serial&order=asc&per_page=5", headers=operator).get_json()
    assert [j["job_serial"] for j in asc["data"]] == [f"J{YEAR}{n:04d}" for n in range(1, 6)]


def test_empty_list(client, viewer):
    body = client.get("/api/jobs", headers=viewer).get_json()
    assert body == {"data": [], "pagination": {"page": 1, "per_page": 20, "total": 0, "pages": 0,
                                               "has_next": False, "has_prev": False}}


def test_bad_list_parameters_400(client, viewer):
    for query, field in [("per_page=0", "per_page"), ("per_page=1000", "per_page"), ("page=0", "page"),
                         ("page=-1", "page"), ("sort=bogus", "sort"), ("order=up", "order"), ("page=abc", "page"),
                         ("status=exploded", "status"), (f"page={10**30}", "page")]:
        body = assert_error(client.get(f"/api/jobs?{query}", headers=viewer), 400, "bad_request")
        assert body["details"]["field"] == field, query


def test_list_filters(client, operator, three_targets):
    client.post("/api/jobs", json=_reference_body(three_targets, _future()), headers=operator)
    client.post("/api/jobs", json=_simple("Nightly backup"), headers=operator)
    client.post("/api/jobs", json=_simple("weekly BACKUP check", job_type="script"), headers=operator)

    def names(query: str) -> list[str]:
        response = client.get(f"/api/jobs?sort=name&order=asc&{query}", headers=operator)
        assert response.status_code == 200, response.get_json()
        return [j["name"] for j in response.get_json()["data"]]

    assert names("status=scheduled") == ["System Update"]
    assert names("status=ready") == ["Nightly backup", "weekly BACKUP check"]
    assert names("status=completed") == []
    assert names("name=backup") == ["Nightly backup", "weekly BACKUP check"]
    assert names("name=update") == ["System Update"]
    assert names("name=backup&status=scheduled") == []
    assert names("job_type=script") == ["weekly BACKUP check"]
    assert names("name=%25") == []
