"""Login, refresh, /me, and every way a bearer token can be wrong (SPEC §5 Auth, §7 errors)."""
from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import timedelta

import jwt as pyjwt
from flask_jwt_extended import create_access_token, decode_token

from tests.api.conftest import assert_error, row_counts
from tests.conftest import JWT_SECRET, PASSWORD

JOB = {"name": "n", "actions": [{"action_type": "command", "action_name": "a",
                                 "action_parameters": {"command": "true"}}]}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _user_id(client, headers) -> int:
    response = client.get("/api/auth/me", headers=headers)
    assert response.status_code == 200
    return response.get_json()["id"]


def _token_version(headers) -> int:
    """The user's token version, from a token the API issued (a hand-made token needs it to be accepted)."""
    token = headers["Authorization"].split()[1]
    return pyjwt.decode(token, options={"verify_signature": False})["ver"]


def _claims(user_id: int, role: str = "admin", **extra) -> dict:
    now = int(time.time())
    claims = {"sub": str(user_id), "type": "access", "fresh": False, "jti": str(uuid.uuid4()), "iat": now,
              "nbf": now, "exp": now + 600, "role": role, "username": role}
    claims.update(extra)
    return claims


# ---------------------------------------------------------------- login

def test_login_returns_bearer_tokens(client, users, app):
    users.create("alice", "operator")
    response = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 60 * 60
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert isinstance(body["refresh_token"], str) and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    with app.app_context():
        access = decode_token(body["access_token"])
        refresh = decode_token(body["refresh_token"])
    assert access["type"] == "access" and refresh["type"] == "refresh"
    assert access["role"] == "operator"
    assert access["exp"] - access["iat"] == 3600


def test_wrong_password_is_401_in_error_format(client, users):
    users.create("alice", "operator")
    response = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD + "x"})
    body = assert_error(response, 401, "unauthorized")
    assert "access_token" not in response.get_data(as_text=True)
    assert body["message"] == "Invalid username or password"


def test_unknown_user_is_401_with_the_same_message(client, users):
    users.create("alice", "operator")
    wrong = assert_error(client.post("/api/auth/login", json={"username": "alice", "password": "nope-nope"}), 401)
    unknown = assert_error(client.post("/api/auth/login", json={"username": "nobody", "password": "nope-nope"}), 401)
    assert unknown == wrong  # no hint whether the user exists


def test_login_validation_errors(client):
    assert_error(client.post("/api/auth/login", json={"username": "alice"}), 422, "validation_error",
                 field="password")
    assert_error(client.post("/api/auth/login", json={"username": "", "password": "x"}), 422, field="username")


# ---------------------------------------------------------------- refresh and /me

def test_refresh_token_gives_a_new_access_token(client, users):
    users.create("alice", "operator")
    tokens = users.token("alice")
    response = client.post("/api/auth/refresh", headers=_bearer(tokens["refresh_token"]))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"] and body["access_token"] != tokens["access_token"]
    me = client.get("/api/auth/me", headers=_bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["username"] == "alice"


def test_refresh_with_an_access_token_is_401(client, users):
    users.create("alice", "operator")
    tokens = users.token("alice")
    assert_error(client.post("/api/auth/refresh", headers=_bearer(tokens["access_token"])), 401, "unauthorized")


def test_refresh_token_is_not_an_access_token(client, users):
    users.create("alice", "operator")
    tokens = users.token("alice")
    assert_error(client.get("/api/auth/me", headers=_bearer(tokens["refresh_token"])), 401, "unauthorized")
    assert_error(client.get("/api/jobs", headers=_bearer(tokens["refresh_token"])), 401, "unauthorized")


def test_me_returns_the_user_without_secrets(client, users, viewer):
    response = client.get("/api/auth/me", headers=viewer)
    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == "viewer"
    assert body["role"] == "viewer"
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z")
    assert "password" not in response.get_data(as_text=True)
    assert "password_hash" not in body


# ---------------------------------------------------------------- bad tokens: all 401 in the envelope

BAD_HEADERS = [
    None,
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Token abc",
    "bearer",
    "Bearer not-a-jwt",
    "Bearer a.b.c",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.AAAA",
]


def test_missing_or_malformed_authorization_is_401(client, db):
    before = row_counts(db)
    for header in BAD_HEADERS:
        headers = {} if header is None else {"Authorization": header}
        for path in ("/api/auth/me", "/api/jobs", "/api/targets", "/api/users"):
            assert_error(client.get(path, headers=headers), 401, "unauthorized")
        assert_error(client.post("/api/jobs", json=JOB, headers=headers), 401, "unauthorized")
    assert row_counts(db) == before


def test_expired_token_is_401(client, app, admin):
    user_id = _user_id(client, admin)
    with app.app_context():
        token = create_access_token(identity=str(user_id), additional_claims={"role": "admin"},
                                    expires_delta=timedelta(seconds=-30))
    body = assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")
    assert body["message"] == "Token has expired"


def test_expired_token_made_with_pyjwt_is_401(client, admin):
    user_id = _user_id(client, admin)
    now = int(time.time())
    token = pyjwt.encode(_claims(user_id, iat=now - 7200, nbf=now - 7200, exp=now - 3600), JWT_SECRET,
                         algorithm="HS256")
    assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")


def test_control_token_signed_with_the_real_key_is_accepted(client, admin):
    """The forged-token tests below are meaningful only if a well-formed token with the right key works."""
    user_id = _user_id(client, admin)
    token = pyjwt.encode(_claims(user_id, ver=_token_version(admin)), JWT_SECRET, algorithm="HS256")
    response = client.get("/api/auth/me", headers=_bearer(token))
    assert response.status_code == 200
    assert response.get_json()["id"] == user_id


def test_token_signed_with_another_key_is_401(client, admin):
    user_id = _user_id(client, admin)
    token = pyjwt.encode(_claims(user_id), "some-other-secret-" + "z" * 40, algorithm="HS256")
    assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")
    assert_error(client.post("/api/users", json={"username": "evil", "password": "password123"},
                             headers=_bearer(token)), 401)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_token_is_401(client, admin, db):
    user_id = _user_id(client, admin)
    unsigned = pyjwt.encode(_claims(user_id), None, algorithm="none")
    handmade = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user_id))}."
    for token in (unsigned, handmade, handmade + "sig"):
        assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")
    before = row_counts(db)
    assert_error(client.post("/api/users", json={"username": "evil", "password": "password123", "role": "admin"},
                             headers=_bearer(unsigned)), 401)
    assert row_counts(db) == before


def test_token_with_another_algorithm_is_401(client, admin):
    user_id = _user_id(client, admin)
    token = pyjwt.encode(_claims(user_id), JWT_SECRET + "-padding-for-hs512" * 4, algorithm="HS512")
    assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")


def test_token_of_a_deleted_user_is_401(client):
    token = pyjwt.encode(_claims(987654), JWT_SECRET, algorithm="HS256")
    assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")


def test_validly_signed_token_with_a_strange_subject_is_401_not_500(client, admin):
    for sub in ("abc", "1.5", "", "-1", "99999999999999999999999", "\uff11"):
        token = pyjwt.encode(_claims(0, sub=sub), JWT_SECRET, algorithm="HS256")
        assert_error(client.get("/api/auth/me", headers=_bearer(token)), 401, "unauthorized")


def test_disabled_users_token_is_401(client, users, admin):
    users.create("bob", "operator")
    tokens = users.token("bob")
    bob = _bearer(tokens["access_token"])
    bob_id = _user_id(client, bob)
    response = client.patch(f"/api/users/{bob_id}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200
    assert_error(client.get("/api/auth/me", headers=bob), 401, "unauthorized")
    assert_error(client.post("/api/auth/refresh", headers=_bearer(tokens["refresh_token"])), 401)
    assert_error(client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD}), 401)


# ---------------------------------------------------------------- roles

def test_viewer_cannot_create_a_job(client, viewer, db):
    before = row_counts(db)
    body = assert_error(client.post("/api/jobs", json=JOB, headers=viewer), 403, "forbidden")
    assert body["details"]["role"] == "viewer"
    assert row_counts(db) == before


def test_viewer_can_read(client, viewer):
    assert client.get("/api/jobs", headers=viewer).status_code == 200
    assert client.get("/api/targets", headers=viewer).status_code == 200


def test_operator_cannot_create_a_user(client, operator, db):
    before = row_counts(db)
    assert_error(client.post("/api/users", json={"username": "mallory", "password": "password123"},
                             headers=operator), 403, "forbidden")
    assert_error(client.get("/api/users", headers=operator), 403, "forbidden")
    assert row_counts(db) == before


def test_operator_can_create_a_job(client, operator):
    response = client.post("/api/jobs", json=JOB, headers=operator)
    assert response.status_code == 201, response.get_json()
