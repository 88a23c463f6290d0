"""Users API for administrators (SPEC §5 Auth)."""
from __future__ import annotations

from tests.api.conftest import assert_error, row_counts
from tests.conftest import PASSWORD


def _create(client, admin, username: str, role: str = "operator", password: str = "long-enough-pw"):
    return client.post("/api/users", json={"username": username, "password": password, "role": role},
                       headers=admin)


def test_create_user_201(client, admin):
    response = _create(client, admin, "carol", "viewer")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "username", "role", "is_active", "created_at"}
    assert body["username"] == "carol"
    assert body["role"] == "viewer"
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z")
    assert "long-enough-pw" not in response.get_data(as_text=True)
    fetched = client.get(f"/api/users/{body['id']}", headers=admin)
    assert fetched.status_code == 200
    assert fetched.get_json() == body


def test_created_user_can_log_in(client, admin):
    assert _create(client, admin, "carol", "viewer").status_code == 201
    response = client.post("/api/auth/login", json={"username": "carol", "password": "long-enough-pw"})
    assert response.status_code == 200
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {response.get_json()['access_token']}"})
    assert me.get_json()["role"] == "viewer"


def test_role_defaults_to_operator(client, admin):
    response = client.post("/api/users", json={"username": "dave", "password": "long-enough-pw"}, headers=admin)
    assert response.status_code == 201
    assert response.get_json()["role"] == "operator"


def test_duplicate_username_409(client, admin, db):
    assert _create(client, admin, "carol").status_code == 201
    before = row_counts(db)
    body = assert_error(_create(client, admin, "carol", "admin"), 409, "conflict", field="username")
    assert "received" not in body["details"]  # a users body is never echoed
    assert row_counts(db) == before


def test_short_password_422_names_the_field(client, admin, db):
    before = row_counts(db)
    assert_error(_create(client, admin, "carol", password="short"), 422, "validation_error", field="password")
    assert row_counts(db) == before


def test_bad_role_422(client, admin, db):
    before = row_counts(db)
    assert_error(_create(client, admin, "carol", role="superuser"), 422, "validation_error", field="role")
    assert row_counts(db) == before


def test_bad_username_and_missing_fields_422(client, admin):
    assert_error(_create(client, admin, "bad name"), 422, field="username")
    assert_error(_create(client, admin, ""), 422, field="username")
    assert_error(client.post("/api/users", json={"username": "x"}, headers=admin), 422, field="password")
    assert_error(client.post("/api/users", json={"username": "x", "password": "long-enough-pw", "admin": True},
                             headers=admin), 422, field="admin")


def test_list_users_paginated(client, admin):
    for i in range(4):
        assert _create(client, admin, f"user{i}").status_code == 201
    response = client.get("/api/users?page=1&per_page=2&sort=username&order=asc", headers=admin)
    assert response.status_code == 200
    body = response.get_json()
    assert body["pagination"] == {"page": 1, "per_page": 2, "total": 5, "pages": 3, "has_next": True,
                                  "has_prev": False}
    assert [u["username"] for u in body["data"]] == ["admin", "user0"]
    last = client.get("/api/users?page=3&per_page=2&sort=username&order=asc", headers=admin).get_json()
    assert [u["username"] for u in last["data"]] == ["user3"]
    assert last["pagination"]["has_next"] is False and last["pagination"]["has_prev"] is True
    assert_error(client.get("/api/users?sort=password_hash", headers=admin), 400, field="sort")


def test_patch_role_active_and_password(client, admin):
    user = _create(client, admin, "erin").get_json()
    response = client.patch(f"/api/users/{user['id']}", json={"role": "admin"}, headers=admin)
    assert response.status_code == 200
    assert response.get_json()["role"] == "admin"

    response = client.patch(f"/api/users/{user['id']}", json={"password": "a-brand-new-pw"}, headers=admin)
    assert response.status_code == 200
    assert_error(client.post("/api/auth/login", json={"username": "erin", "password": "long-enough-pw"}), 401)
    login = client.post("/api/auth/login", json={"username": "erin", "password": "a-brand-new-pw"})
    assert login.status_code == 200
    erin = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    assert client.get("/api/users", headers=erin).status_code == 200  # the new role took effect

    response = client.patch(f"/api/users/{user['id']}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200
    assert response.get_json()["is_active"] is False
    assert client.get(f"/api/users/{user['id']}", headers=admin).get_json()["is_active"] is False


def test_disabled_user_cannot_log_in_and_reenabled_can(client, admin, users):
    users.create("frank", "operator")
    assert client.post("/api/auth/login", json={"username": "frank", "password": PASSWORD}).status_code == 200
    frank = next(u for u in client.get("/api/users?per_page=100", headers=admin).get_json()["data"]
                 if u["username"] == "frank")
    assert client.patch(f"/api/users/{frank['id']}", json={"is_active": False}, headers=admin).status_code == 200
    assert_error(client.post("/api/auth/login", json={"username": "frank", "password": PASSWORD}), 401,
                 "unauthorized")
    assert client.patch(f"/api/users/{frank['id']}", json={"is_active": True}, headers=admin).status_code == 200
    assert client.post("/api/auth/login", json={"username": "frank", "password": PASSWORD}).status_code == 200


def test_patch_validation_and_not_found(client, admin):
    user = _create(client, admin, "gina").get_json()
    assert_error(client.patch(f"/api/users/{user['id']}", json={"password": "short"}, headers=admin), 422,
                 field="password")
    assert_error(client.patch(f"/api/users/{user['id']}", json={"role": "root"}, headers=admin), 422, field="role")
    assert_error(client.patch(f"/api/users/{user['id']}", json={"username": "renamed"}, headers=admin), 422,
                 field="username")
    assert_error(client.patch("/api/users/999999", json={"role": "viewer"}, headers=admin), 404, "not_found")
    assert_error(client.get("/api/users/999999", headers=admin), 404, "not_found")
    assert client.get(f"/api/users/{user['id']}", headers=admin).get_json()["role"] == "operator"


def test_non_admins_cannot_manage_users(client, operator, viewer, admin):
    user = _create(client, admin, "hank").get_json()
    for headers in (operator, viewer):
        assert_error(client.get("/api/users", headers=headers), 403, "forbidden")
        assert_error(client.get(f"/api/users/{user['id']}", headers=headers), 403)
        assert_error(client.patch(f"/api/users/{user['id']}", json={"role": "admin"}, headers=headers), 403)
    assert client.get(f"/api/users/{user['id']}", headers=admin).get_json()["role"] == "operator"
