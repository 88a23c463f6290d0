"""Forged and misused bearer tokens, and revocation (SPEC §5 Auth, §7 errors; issue 9).

Each forgery is tried on an admin-only write (POST /api/users, where an accepted forgery would make
an admin account) and, in its refresh-token form, on /api/auth/refresh: always the 401 envelope,
never a 200 or a 500, and no row changes. Tokens carry `ver`, the user's token version: a password,
role or active-flag change revokes every earlier access and refresh token of that user."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from api.app import create_app
from tests.api.conftest import assert_error, table_snapshot
from tests.conftest import JWT_SECRET, PASSWORD, make_settings

OTHER_KEY = "another-deployment-jwt-secret-" + "k" * 40
INTRUDER = {"username": "intruder", "password": "long-enough-pw", "role": "admin"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(value: dict) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _claims(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def _sign(claims: dict, key=JWT_SECRET, algorithm: str = "HS256", headers: dict | None = None) -> str:
    return pyjwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _with(token: str, **changes) -> dict:
    """The token's claims with `changes` applied; a value of ... removes the claim."""
    claims = _claims(token)
    for key, value in changes.items():
        if value is ...:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _tamper(token: str, **changes) -> str:
    """The token with its payload changed and its original header and signature kept."""
    header, _payload, signature = token.split(".")
    return f"{header}.{_b64json(_with(token, **changes))}.{signature}"


def _unsigned(claims: dict, alg: str = "none") -> str:
    return f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(claims)}."


def _hmac_under_another_alg(claims: dict, alg: str) -> str:
    """Key confusion: the header names an asymmetric algorithm, the signature is HMAC with the secret."""
    signing_input = f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(claims)}"
    signature = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Tokens:
    """Real tokens of the admin and a viewer, and their user ids."""

    def __init__(self, client, users):
        users.create("root", "admin")
        users.create("victor", "viewer")
        self.admin = users.token("root")
        self.viewer = users.token("victor")
        self.admin_id = int(_claims(self.admin["access_token"])["sub"])
        self.viewer_id = int(_claims(self.viewer["access_token"])["sub"])


# each forgery: (its Authorization header for an access token, for a refresh token)
Forge = Callable[[Tokens, str], "str | None"]  # (tokens, "access_token" | "refresh_token") -> header value


def _now() -> int:
    return int(time.time())


FORGERIES: dict[str, Forge] = {
    "no token": lambda t, kind: None,
    "empty bearer": lambda t, kind: "Bearer ",
    "malformed": lambda t, kind: "Bearer not.a-jwt",
    "two tokens": lambda t, kind: f"Bearer {t.admin[kind]} {t.admin[kind]}",
    "basic scheme": lambda t, kind: f"Basic {t.admin[kind]}",
    "token scheme": lambda t, kind: f"Token {t.admin[kind]}",
    "no scheme": lambda t, kind: t.admin[kind],
    "role changed to admin, original signature": lambda t, kind: "Bearer " + _tamper(
        t.viewer[kind], role="admin", username="root"),
    "sub changed to the admin's id, original signature": lambda t, kind: "Bearer " + _tamper(
        t.viewer[kind], sub=str(t.admin_id)),
    "type changed, original signature": lambda t, kind: "Bearer " + _tamper(
        t.admin["refresh_token" if kind == "access_token" else "access_token"],
        type="access" if kind == "access_token" else "refresh"),
    "expiry extended, original signature": lambda t, kind: "Bearer " + _tamper(
        t.admin[kind], exp=_now() + 10 * 365 * 86400),
    "signed with another key": lambda t, kind: "Bearer " + _sign(_claims(t.admin[kind]), OTHER_KEY),
    "alg none": lambda t, kind: "Bearer " + _unsigned(_claims(t.admin[kind])),
    "alg None": lambda t, kind: "Bearer " + _unsigned(_claims(t.admin[kind]), "None"),
    "alg none, original signature": lambda t, kind: "Bearer " + _unsigned(_claims(t.admin[kind]))
    + t.admin[kind].split(".")[2],
    "HS512 with the real key": lambda t, kind: "Bearer " + _sign(_claims(t.admin[kind]), JWT_SECRET, "HS512"),
    "RS256 with an attacker's key": lambda t, kind: "Bearer " + _sign(_claims(t.admin[kind]), _RSA_KEY, "RS256"),
    "RS256 header, HMAC signature": lambda t, kind: "Bearer " + _hmac_under_another_alg(
        _claims(t.admin[kind]), "RS256"),
    "expired": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], iat=_now() - 7200, nbf=_now() - 7200,
                                                      exp=_now() - 60)),
    "not yet valid (nbf)": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], nbf=_now() + 3600)),
    "issued in the future (iat)": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], iat=_now() + 3600)),
    "wrong type (refresh as access, access on refresh)": lambda t, kind: "Bearer " + t.admin[
        "refresh_token" if kind == "access_token" else "access_token"],
    "sub of a user that does not exist": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub="987654")),
    "sub not a number": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub="root")),
    "sub a huge number": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub="9" * 40)),
    "sub with NUL": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub=f"{t.admin_id}\x00")),
    "sub an integer": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub=t.admin_id)),
    "sub a list": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub=[t.admin_id])),
    "sub missing": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], sub=...)),
    "ver missing (a token from before revocation)": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], ver=...)),
    "ver of a later version": lambda t, kind: "Bearer " + _sign(_with(t.admin[kind], ver=10**6)),
}


@pytest.fixture
def tokens(client, users) -> Tokens:
    return Tokens(client, users)


def _headers(forge: Forge, tokens: Tokens, kind: str) -> dict[str, str]:
    value = forge(tokens, kind)
    return {} if value is None else {"Authorization": value}


def _refusal(response) -> str | None:
    try:
        assert_error(response, 401, "unauthorized")
    except AssertionError as exc:
        return str(exc)[:300]
    return None


@pytest.mark.filterwarnings("ignore:The HMAC key is")  # the HS512 forgery's key is short for SHA-512
def test_forged_or_misused_tokens_are_401_on_an_admin_write(client, db, tokens):
    """Every forgery in one pass (one login per backend): the failures name each forgery that got through."""
    failures = {}
    for name, forge in FORGERIES.items():
        before = table_snapshot(db)
        failure = _refusal(client.post("/api/users", json=INTRUDER, headers=_headers(forge, tokens, "access_token")))
        if failure is None and table_snapshot(db) != before:
            failure = "refused, but the database changed"
        if failure is not None:
            failures[name] = failure
    assert failures == {}


@pytest.mark.filterwarnings("ignore:The HMAC key is")
def test_forged_or_misused_tokens_are_401_on_refresh(client, tokens):
    failures = {}
    for name, forge in FORGERIES.items():
        response = client.post("/api/auth/refresh", headers=_headers(forge, tokens, "refresh_token"))
        failure = _refusal(response)
        if failure is None and "access_token" in response.get_data(as_text=True):
            failure = "a 401 carrying a token"
        if failure is not None:
            failures[name] = failure
    assert failures == {}


def test_the_forgery_harness_is_sound(client, tokens):
    """Re-signing a real token's own claims with the real key works: the refusals above are meaningful."""
    access = _sign(_claims(tokens.admin["access_token"]))
    refresh = _sign(_claims(tokens.admin["refresh_token"]))
    assert client.get("/api/auth/me", headers=_bearer(access)).get_json()["id"] == tokens.admin_id
    assert client.post("/api/auth/refresh", headers=_bearer(refresh)).status_code == 200
    created = client.post("/api/users", json=INTRUDER, headers=_bearer(access))
    assert created.status_code == 201, created.get_json()


def test_a_deleted_then_recreated_users_old_token_is_401(client, db, users, admin):
    """Nothing in the API deletes users, but a row removed by hand must not let its old tokens
    through to whoever gets the id next (SQLite reuses the highest rowid)."""
    users.create("temp", "operator")
    old = users.token("temp")
    old_id = int(_claims(old["access_token"])["sub"])
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id = :i"), {"i": old_id})
    assert_error(client.get("/api/auth/me", headers=_bearer(old["access_token"])), 401, "unauthorized")
    created = client.post("/api/users", json={"username": "newcomer", "password": "long-enough-pw",
                                              "role": "admin"}, headers=admin)
    assert created.status_code == 201, created.get_json()
    new_id = created.get_json()["id"]  # SQLite hands the deleted id out again; PostgreSQL does not
    assert new_id >= old_id
    assert_error(client.get("/api/auth/me", headers=_bearer(old["access_token"])), 401, "unauthorized")
    assert_error(client.get("/api/users", headers=_bearer(old["access_token"])), 401, "unauthorized")
    assert_error(client.post("/api/auth/refresh", headers=_bearer(old["refresh_token"])), 401, "unauthorized")
    fresh = client.post("/api/auth/login", json={"username": "newcomer", "password": "long-enough-pw"})
    assert client.get("/api/users", headers=_bearer(fresh.get_json()["access_token"])).status_code == 200


# ---------------------------------------------------------------- revocation

def _user_id(client, admin, username: str) -> int:
    listed = client.get("/api/users?per_page=100", headers=admin).get_json()["data"]
    return next(u["id"] for u in listed if u["username"] == username)


def _revoked(response) -> None:
    body = assert_error(response, 401, "unauthorized")
    assert body["details"].get("reason") == "revoked", body


def _sessions(client, users, username: str, password: str = PASSWORD) -> list[dict]:
    """Two logins (two devices) plus an access token refreshed from the first: every kind of earlier token."""
    first, second = users.token(username, password), users.token(username, password)
    refreshed = client.post("/api/auth/refresh", headers=_bearer(first["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.get_json()
    return [first, second, {"access_token": refreshed.get_json()["access_token"]}]


def _assert_all_revoked(client, sessions: list[dict]) -> None:
    for tokens in sessions:
        _revoked(client.get("/api/auth/me", headers=_bearer(tokens["access_token"])))
        _revoked(client.get("/api/jobs", headers=_bearer(tokens["access_token"])))
        if "refresh_token" in tokens:
            _revoked(client.post("/api/auth/refresh", headers=_bearer(tokens["refresh_token"])))


def _assert_works(client, tokens: dict, role: str) -> None:
    me = client.get("/api/auth/me", headers=_bearer(tokens["access_token"]))
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["role"] == role
    refreshed = client.post("/api/auth/refresh", headers=_bearer(tokens["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.get_json()
    again = client.get("/api/auth/me", headers=_bearer(refreshed.get_json()["access_token"]))
    assert again.status_code == 200 and again.get_json()["role"] == role


CHANGES = {
    "password": ([{"password": "a-brand-new-pw"}], "a-brand-new-pw", "operator"),
    "role": ([{"role": "viewer"}], PASSWORD, "viewer"),
    "deactivated and reactivated": ([{"is_active": False}, {"is_active": True}], PASSWORD, "operator"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_by_an_admin_revokes_every_earlier_token(client, users, admin, change):
    patches, password, role = CHANGES[change]
    users.create("bob", "operator")
    users.create("carol", "operator")
    bob_id = _user_id(client, admin, "bob")
    before = _sessions(client, users, "bob")
    bystander = users.token("carol")

    for patch in patches:
        response = client.patch(f"/api/users/{bob_id}", json=patch, headers=admin)
        assert response.status_code == 200, response.get_json()

    _assert_all_revoked(client, before)
    after = users.token("bob", password)
    _assert_works(client, after, role)
    _assert_works(client, bystander, "operator")  # another user's tokens are untouched
    assert client.get("/api/users", headers=admin).status_code == 200  # and so are the admin's own


def test_a_deactivated_user_cannot_log_in_and_their_tokens_are_401(client, users, admin):
    users.create("dave", "operator")
    before = _sessions(client, users, "dave")
    dave_id = _user_id(client, admin, "dave")
    assert client.patch(f"/api/users/{dave_id}", json={"is_active": False}, headers=admin).status_code == 200
    assert_error(client.post("/api/auth/login", json={"username": "dave", "password": PASSWORD}), 401,
                 "unauthorized")
    for tokens in before:
        assert_error(client.get("/api/jobs", headers=_bearer(tokens["access_token"])), 401, "unauthorized")
        if "refresh_token" in tokens:
            assert_error(client.post("/api/auth/refresh", headers=_bearer(tokens["refresh_token"])), 401,
                         "unauthorized")


def test_a_patch_that_is_refused_revokes_nothing(client, users, admin):
    """A 422 (too short a password) changes nothing, so it must not log the user out either."""
    users.create("erin", "operator")
    tokens = users.token("erin")
    erin_id = _user_id(client, admin, "erin")
    assert_error(client.patch(f"/api/users/{erin_id}", json={"password": "short", "role": "admin"},
                              headers=admin), 422, "validation_error")
    _assert_works(client, tokens, "operator")


def test_a_demoted_admin_loses_admin_rights_and_the_admin_rate_tier(db, users):
    users.create("root", "admin")
    users.create("second", "admin")
    app = create_app(make_settings(db.url, rate_limits_enabled=True), db=db)
    client = app.test_client()
    root = _bearer(client.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
                   .get_json()["access_token"])
    old = client.post("/api/auth/login", json={"username": "second", "password": PASSWORD}).get_json()
    as_admin = client.get("/api/users", headers=_bearer(old["access_token"]))
    assert as_admin.status_code == 200
    assert as_admin.headers["X-RateLimit-Limit"] == "500"
    second_id = _user_id(client, root, "second")

    assert client.patch(f"/api/users/{second_id}", json={"role": "operator"}, headers=root).status_code == 200

    before = table_snapshot(db)
    _revoked(client.get("/api/users", headers=_bearer(old["access_token"])))
    _revoked(client.post("/api/users", json=INTRUDER, headers=_bearer(old["access_token"])))
    _revoked(client.post("/api/auth/refresh", headers=_bearer(old["refresh_token"])))
    assert table_snapshot(db) == before

    new = client.post("/api/auth/login", json={"username": "second", "password": PASSWORD}).get_json()
    jobs = client.get("/api/jobs", headers=_bearer(new["access_token"]))
    assert jobs.status_code == 200
    assert jobs.headers["X-RateLimit-Limit"] == "100"
    body = assert_error(client.get("/api/users", headers=_bearer(new["access_token"])), 403, "forbidden")
    assert body["details"].get("role") == "operator"
    assert client.get("/api/users", headers=root).headers["X-RateLimit-Limit"] == "500"
