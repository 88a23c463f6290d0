"""Users: one namespace without regard to case, and never without an active administrator
(issue 9, finding 6: `Op1` and `op1` were both creatable; the last admin could demote itself)."""
from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, table_snapshot
from tests.conftest import PASSWORD


def _create(client, admin, username: str, role: str = "operator"):
    return client.post("/api/users", json={"username": username, "password": PASSWORD, "role": role}, headers=admin)


def _me(client, headers) -> dict:
    return client.get("/api/auth/me", headers=headers).get_json()


@pytest.mark.parametrize("variant", ["OP1", "oP1", "op1"])
def test_usernames_are_unique_without_regard_to_case(client, db, admin, variant):
    assert _create(client, admin, "Op1").status_code == 201
    before = table_snapshot(db)
    assert_error(_create(client, admin, variant), 409, "conflict")
    assert table_snapshot(db) == before


def test_login_ignores_the_case_of_the_username(client, admin):
    assert _create(client, admin, "Mixed.Case").status_code == 201
    response = client.post("/api/auth/login", json={"username": "mixed.case", "password": PASSWORD})
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("change", [{"role": "operator"}, {"role": "viewer"}, {"is_active": False}])
def test_the_last_active_admin_cannot_be_demoted_or_deactivated(client, db, admin, change):
    me = _me(client, admin)
    before = table_snapshot(db)
    error = assert_error(client.patch(f"/api/users/{me['id']}", json=change, headers=admin), 409, "conflict")
    assert "last active administrator" in error["message"]
    assert table_snapshot(db) == before
    assert client.get("/api/users", headers=admin).status_code == 200  # still an admin, token still good


def test_an_inactive_admin_does_not_count(client, admin):
    me = _me(client, admin)
    other = _create(client, admin, "dormant", role="admin").get_json()
    assert client.patch(f"/api/users/{other['id']}", json={"is_active": False}, headers=admin).status_code == 200
    assert_error(client.patch(f"/api/users/{me['id']}", json={"role": "operator"}, headers=admin), 409, "conflict")


def test_with_a_second_admin_either_may_step_down(client, admin):
    me = _me(client, admin)
    other = _create(client, admin, "deputy", role="admin").get_json()
    response = client.patch(f"/api/users/{me['id']}", json={"role": "operator"}, headers=admin)
    assert response.status_code == 200 and response.get_json()["role"] == "operator"
    deputy = client.post("/api/auth/login", json={"username": "deputy", "password": PASSWORD}).get_json()
    headers = {"Authorization": f"Bearer {deputy['access_token']}"}
    assert_error(client.patch(f"/api/users/{other['id']}", json={"is_active": False}, headers=headers), 409)


def test_the_last_admin_may_still_change_its_own_password(client, admin):
    me = _me(client, admin)
    response = client.patch(f"/api/users/{me['id']}", json={"password": "a-new-password-9"}, headers=admin)
    assert response.status_code == 200
    assert client.post("/api/auth/login", json={"username": me["username"],
                                                "password": "a-new-password-9"}).status_code == 200


@pytest.mark.parametrize("username", ["JÜRGEN", "İSMAIL", "\u212a1", "ß"])
def test_usernames_are_ascii_on_every_path(db, username):
    """Python's lower() and the databases' disagree beyond ASCII (SQLite folds only ASCII), which would
    let `JÜRGEN` and `jürgen` coexist: the CLI and the start-up admin refuse such names like the API."""
    from common.errors import ValidationFailed
    from common.services.users import create_user, ensure_admin

    with db.session() as session:
        with pytest.raises(ValidationFailed):
            create_user(session, username, PASSWORD, "operator")
        with pytest.raises(ValidationFailed):
            ensure_admin(session, username, PASSWORD)


def test_conflicts_do_not_echo_user_or_credential_values(client, admin, make):
    assert _create(client, admin, "Echo.Me").status_code == 201
    body = assert_error(_create(client, admin, "ECHO.ME"), 409, "conflict")
    assert "received" not in body["details"] and "ECHO.ME" not in str(body)
    make.credential(name="cred-echo")
    duplicate = {"name": "cred-echo", "username": "u", "auth_type": "password", "password": "pw-123456"}
    body = assert_error(client.post("/api/credentials", json=duplicate, headers=admin), 409, "conflict")
    assert "received" not in body["details"] and "cred-echo" not in str(body)
