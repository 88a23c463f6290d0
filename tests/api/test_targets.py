"""Targets CRUD (SPEC §5): refs by id or serial, validation, roles, pagination, archive-on-delete."""
from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import text as sql
from sqlalchemy.orm import Session

from api.app import create_app
from common.models import Target
from common.services.users import create_user
from tests.api.conftest import assert_error, row_counts
from tests.conftest import make_settings

YEAR = datetime.now(UTC).year
SERIAL = re.compile(rf"^T{YEAR}\d{{4,}}$")


@pytest.fixture
def cred(make) -> dict:
    return make.credential()


def _post(client, headers, **body):
    return client.post("/api/targets", json=body, headers=headers)


# ---------------------------------------------------------------- create and read

def test_create_target_201_with_every_field(client, admin, cred):
    response = _post(client, admin, name="prod-server-01", ip_address="192.168.1.100", credential_id=cred["id"],
                     tags=["prod", "web"], queue="dc1", description="first", port=2222)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["target_serial"] == f"T{YEAR}0001"
    assert SERIAL.match(body["target_serial"])
    assert re.fullmatch(r"[0-9a-f-]{36}", body["target_uuid"])
    assert body["name"] == "prod-server-01"
    assert body["ip_address"] == "192.168.1.100"
    assert body["hostname"] is None
    assert body["port"] == 2222
    assert body["credential_id"] == cred["id"]
    assert body["connection"] == "ssh"
    assert body["tags"] == ["prod", "web"]
    assert body["queue"] == "dc1"
    assert body["enabled"] is True
    assert body["description"] == "first"
    assert body["host_key_fingerprint"] is None
    assert body["archived_at"] is None
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    assert "host_key" not in body


def test_defaults_and_hostname(client, admin, cred):
    body = _post(client, admin, name="web", hostname="web01.example.com", credential_id=cred["id"]).get_json()
    assert body["port"] == 22
    assert body["connection"] == "ssh"
    assert body["queue"] == "default"
    assert body["tags"] == []
    assert body["hostname"] == "web01.example.com"


def test_serials_are_consecutive(client, admin, cred):
    serials = [_post(client, admin, name=f"t{i}", ip_address="10.0.0.1", credential_id=cred["id"])
               .get_json()["target_serial"] for i in range(3)]
    assert serials == [f"T{YEAR}0001", f"T{YEAR}0002", f"T{YEAR}0003"]


def test_get_by_id_and_by_serial(client, viewer, make):
    target = make.target(name="prod-server-01")
    by_id = client.get(f"/api/targets/{target['id']}", headers=viewer)
    by_serial = client.get(f"/api/targets/{target['target_serial']}", headers=viewer)
    assert by_id.status_code == 200 and by_serial.status_code == 200
    assert by_id.get_json() == by_serial.get_json() == target


MALFORMED_REFS = ["invalid_serial", "T2025", "J20250001", "t20250001", "T20250001x", "T2025.0001",
                  "%C2%B2", "%D9%A3", "-1", "1.5"]


def test_malformed_serial_is_422_with_reference_details(client, viewer):
    from urllib.parse import unquote

    for ref in MALFORMED_REFS:
        body = assert_error(client.get(f"/api/targets/{ref}", headers=viewer), 422, "validation_error")
        assert body["details"] == {"field": "target_serial", "expected_format": "T20250001",
                                   "received": unquote(ref)}, ref


def test_unknown_target_404(client, viewer, admin):
    assert_error(client.get(f"/api/targets/T{YEAR}0099", headers=viewer), 404, "not_found")
    assert_error(client.get("/api/targets/424242", headers=viewer), 404, "not_found")
    assert_error(client.get("/api/targets/99999999999999999999999", headers=viewer), 404, "not_found")
    assert_error(client.patch("/api/targets/424242", json={"port": 23}, headers=admin), 404)
    assert_error(client.delete(f"/api/targets/T{YEAR}0099", headers=admin), 404)


# ---------------------------------------------------------------- validation

INVALID = [
    ({"ip_address": "999.1.1.1"}, "ip_address"),
    ({"ip_address": "not-an-ip"}, "ip_address"),
    ({"ip_address": "192.168.1"}, "ip_address"),
    ({"port": 0}, "port"),
    ({"port": 65536}, "port"),
    ({"port": -1}, "port"),
    ({"port": "ssh"}, "port"),
    ({"hostname": "bad host!"}, "hostname"),
    ({"connection": "telnet"}, "connection"),
    ({"queue": "bad queue"}, "queue"),
    ({"tags": "prod"}, "tags"),
    ({"name": ""}, "name"),
    ({"colour": "blue"}, "colour"),
    ({"credential_id": 999999}, "credential_id"),
    ({"credential_id": 10**30}, "credential_id"),
]


def test_invalid_fields_422(client, admin, cred, db):
    before = row_counts(db)
    for overrides, field in INVALID:
        body = {"name": "t", "ip_address": "10.0.0.1", "credential_id": cred["id"], **overrides}
        assert_error(_post(client, admin, **body), 422, "validation_error", field=field)
    assert row_counts(db) == before


def test_ipv6_is_accepted_and_normalized(client, admin, cred):
    body = _post(client, admin, name="v6", ip_address="2001:DB8::0001", credential_id=cred["id"]).get_json()
    assert body["ip_address"] == "2001:db8::1"


def test_ssh_target_needs_credential_and_address(client, admin, cred, db):
    before = row_counts(db)
    assert_error(_post(client, admin, name="t", ip_address="10.0.0.1"), 422, "validation_error",
                 field="credential_id")
    assert_error(_post(client, admin, name="t", credential_id=cred["id"]), 422, "validation_error",
                 field="ip_address")
    assert row_counts(db) == before


def test_local_target_is_admin_only(client, admin, operator, db):
    before = row_counts(db)
    assert_error(_post(client, operator, name="here", connection="local"), 403, "forbidden")
    assert row_counts(db) == before
    response = _post(client, admin, name="here", connection="local")
    assert response.status_code == 201
    assert response.get_json()["connection"] == "local"
    assert response.get_json()["credential_id"] is None


def test_operator_may_create_ssh_targets_viewer_may_not(client, operator, viewer, make):
    cred = make.credential(allowed_hosts=["10.0.0.0/24"])
    assert _post(client, operator, name="op", ip_address="10.0.0.2", credential_id=cred["id"]).status_code == 201
    assert_error(_post(client, viewer, name="vw", ip_address="10.0.0.3", credential_id=cred["id"]), 403)


def test_operator_cannot_switch_a_target_to_local(client, operator, make):
    target = make.target()
    assert_error(client.patch(f"/api/targets/{target['id']}", json={"connection": "local"}, headers=operator), 403)


def test_duplicate_live_name_409(client, admin, make, cred, db):
    make.target(name="prod-server-01")
    before = row_counts(db)
    body = assert_error(_post(client, admin, name="prod-server-01", ip_address="10.0.0.9", credential_id=cred["id"]),
                        409, "conflict", field="name")
    assert body["details"]["received"] == "prod-server-01"
    assert row_counts(db) == before
    other = make.target(name="other")
    assert_error(client.patch(f"/api/targets/{other['id']}", json={"name": "prod-server-01"}, headers=admin), 409)


# ---------------------------------------------------------------- update

def test_patch_target(client, admin, make, cred):
    target = make.target(name="old", tags=["a"])
    response = client.patch(f"/api/targets/{target['target_serial']}",
                            json={"name": "new", "tags": ["b", "c"], "enabled": False, "port": 2200}, headers=admin)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["name"], body["tags"], body["enabled"], body["port"]) == ("new", ["b", "c"], False, 2200)
    assert body["target_serial"] == target["target_serial"]
    assert client.get(f"/api/targets/{target['id']}", headers=admin).get_json()["name"] == "new"
    assert_error(client.patch(f"/api/targets/{target['id']}", json={"port": 70000}, headers=admin), 422, field="port")
    assert_error(client.patch(f"/api/targets/{target['id']}", json={"target_serial": "T20990001"}, headers=admin), 422)


def test_patch_null_for_a_required_field_is_422(client, admin, make, db):
    target = make.target(name="keep", tags=["a"])
    before = client.get(f"/api/targets/{target['id']}", headers=admin).get_json()
    for field in ("name", "port", "connection", "tags", "queue", "enabled"):
        assert_error(client.patch(f"/api/targets/{target['id']}", json={field: None}, headers=admin), 422,
                     "validation_error", field=field)
    assert client.get(f"/api/targets/{target['id']}", headers=admin).get_json() == before
    cleared = client.patch(f"/api/targets/{target['id']}", json={"description": None}, headers=admin)
    assert cleared.status_code == 200 and cleared.get_json()["description"] is None


# ---------------------------------------------------------------- list

def test_list_pagination(client, admin, make):
    cred = make.credential()
    for i in range(25):
        make.target(credential_id=cred["id"], name=f"host-{i:02d}")
    pages = [client.get(f"/api/targets?per_page=10&page={p}&sort=name&order=asc", headers=admin).get_json()
             for p in (1, 2, 3, 4)]
    assert [len(p["data"]) for p in pages] == [10, 10, 5, 0]
    assert pages[0]["pagination"] == {"page": 1, "per_page": 10, "total": 25, "pages": 3, "has_next": True,
                                      "has_prev": False}
    assert pages[1]["pagination"] == {"page": 2, "per_page": 10, "total": 25, "pages": 3, "has_next": True,
                                      "has_prev": True}
    assert pages[2]["pagination"] == {"page": 3, "per_page": 10, "total": 25, "pages": 3, "has_next": False,
                                      "has_prev": True}
    names = [t["name"] for p in pages for t in p["data"]]
    assert names == [f"host-{i:02d}" for i in range(25)]


def test_list_sort_by_name(client, admin, make):
    cred = make.credential()
    for name in ("bravo", "alpha", "delta", "charlie"):
        make.target(credential_id=cred["id"], name=name)
    asc = client.get("/api/targets?sort=name&order=asc", headers=admin).get_json()["data"]
    desc = client.get("/api/targets?sort=name&order=desc", headers=admin).get_json()["data"]
    assert [t["name"] for t in asc] == ["alpha", "bravo", "charlie", "delta"]
    assert [t["name"] for t in desc] == ["delta", "charlie", "bravo", "alpha"]
    default = client.get("/api/targets", headers=admin).get_json()["data"]  # created_at desc
    assert [t["name"] for t in default] == ["charlie", "delta", "alpha", "bravo"]


def test_list_filters(client, admin, make):
    cred = make.credential()
    make.target(credential_id=cred["id"], name="prod-web-1", tags=["prod", "web"])
    make.target(credential_id=cred["id"], name="prod-db-1", tags=["prod", "db"], enabled=False)
    make.target(credential_id=cred["id"], name="stage-web-1", tags=["stage", "web"], queue="dc2")
    make.target(credential_id=cred["id"], name="under_score%", tags=["odd"])

    def names(query: str) -> list[str]:
        response = client.get(f"/api/targets?sort=name&order=asc&{query}", headers=admin)
        assert response.status_code == 200, response.get_json()
        return [t["name"] for t in response.get_json()["data"]]

    assert names("name=prod") == ["prod-db-1", "prod-web-1"]
    assert names("name=WEB") == ["prod-web-1", "stage-web-1"]
    assert names("name=e_s") == []  # "_" is literal, not a wildcard
    assert names("name=%25") == ["under_score%"]
    assert names("tag=web") == ["prod-web-1", "stage-web-1"]
    assert names("tag=prod") == ["prod-db-1", "prod-web-1"]
    assert names("tag=we") == []  # whole tags only
    assert names("enabled=false") == ["prod-db-1"]
    assert names("enabled=true") == ["prod-web-1", "stage-web-1", "under_score%"]
    assert names("tag=prod&enabled=true") == ["prod-web-1"]
    assert names("queue=dc2") == ["stage-web-1"]
    total = client.get("/api/targets?tag=web", headers=admin).get_json()["pagination"]["total"]
    assert total == 2


def test_list_bad_query_400(client, admin):
    for query in ("per_page=0", "per_page=101", "page=0", "sort=bogus", "order=up", "enabled=maybe", "page=x"):
        assert_error(client.get(f"/api/targets?{query}", headers=admin), 400, "bad_request")


# ---------------------------------------------------------------- archive

def test_delete_archives(client, admin, make, db):
    cred = make.credential()
    target = make.target(credential_id=cred["id"], name="prod-server-01")
    keep = make.target(credential_id=cred["id"], name="keep")
    before = row_counts(db)
    response = client.delete(f"/api/targets/{target['target_serial']}", headers=admin)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert row_counts(db) == before  # archived, not deleted

    listed = client.get("/api/targets", headers=admin).get_json()
    assert [t["id"] for t in listed["data"]] == [keep["id"]]
    assert listed["pagination"]["total"] == 1

    archived = client.get(f"/api/targets/{target['target_serial']}", headers=admin)
    assert archived.status_code == 200
    assert archived.get_json()["archived_at"].endswith("Z")
    assert archived.get_json()["enabled"] is False

    assert_error(client.patch(f"/api/targets/{target['id']}", json={"port": 23}, headers=admin), 409, "conflict")
    assert_error(client.delete(f"/api/targets/{target['id']}", headers=admin), 409, "conflict")

    reused = make.target(credential_id=cred["id"], name="prod-server-01")
    assert reused["target_serial"] != target["target_serial"]
    assert client.get(f"/api/targets/{target['target_serial']}", headers=admin).get_json()["name"] == \
        "prod-server-01"


def test_viewer_cannot_modify(client, viewer, make):
    target = make.target()
    assert_error(client.patch(f"/api/targets/{target['id']}", json={"port": 23}, headers=viewer), 403)
    assert_error(client.delete(f"/api/targets/{target['id']}", headers=viewer), 403)


# ---------------------------------------------------------------- a lost race is a 409, not a 500

def test_duplicate_name_lost_to_a_concurrent_insert_is_409(pg_db):
    """The name check passes while another transaction holds an uncommitted target of the same name; the
    insert then waits on the unique index and fails once that transaction commits: the API says 409."""
    with pg_db.session() as session:
        racer = create_user(session, "racer", "password-123", "admin")
        admin_id, version = racer.id, racer.token_version
    app = create_app(make_settings(pg_db.url), db=pg_db)
    with app.app_context():
        token = create_access_token(identity=str(admin_id), additional_claims={"role": "admin", "ver": version})
    client = app.test_client()

    conn = pg_db.engine.connect()
    trans = conn.begin()
    result: dict = {}
    try:
        with Session(bind=conn) as other:
            other.add(Target(name="race", target_serial="T20990001", connection="local"))
            other.flush()
            worker = threading.Thread(target=lambda: result.setdefault("response", client.post(
                "/api/targets", json={"name": "race", "connection": "local"},
                headers={"Authorization": f"Bearer {token}"})))
            worker.start()
            deadline = time.monotonic() + 20
            with pg_db.engine.connect() as probe:
                while True:
                    waiting = probe.execute(sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO targets%'")).scalar()
                    probe.rollback()  # pg_stat_activity is a snapshot per transaction: take a fresh one
                    if waiting:
                        break
                    assert worker.is_alive(), f"request finished without waiting: {result}"
                    assert time.monotonic() < deadline, "the API's insert never waited on the other transaction"
                    time.sleep(0.02)
            trans.commit()
    finally:
        if trans.is_active:
            trans.rollback()
        conn.close()
    worker.join(timeout=20)
    assert not worker.is_alive()
    response = result["response"]
    assert_error(response, 409, "conflict")
    with pg_db.engine.connect() as check:
        assert check.execute(sql("SELECT count(*) FROM targets WHERE name = 'race'")).scalar() == 1
