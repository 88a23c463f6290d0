"""No secret in clear anywhere it could be read back (SPEC §5 Credentials): not in a response body or
header, not in a log record, not in a database row. The secrets are a credential's password, a real
private key (no 16-character run of its body may show), its passphrase, and users' passwords; the
ciphertext and the password hashes are what may be stored."""
from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import inspect, text

from tests.api.conftest import assert_error

WINDOW = 16


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_urlsafe(18)}"


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    """Fresh secrets for the module: nothing else in the system can contain them by chance."""
    passphrase = _secret("passphrase")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.BestAvailableEncryption(passphrase.encode())).decode()
    return {
        "password": _secret("cred-password"),
        "rotated_password": _secret("rotated-password"),
        "private_key": private_key,
        "passphrase": passphrase,
        "rotated_passphrase": _secret("rotated-passphrase"),
        "user_password": _secret("user-password"),
        "changed_user_password": _secret("changed-user-password"),
        "wrong_password": _secret("wrong-password"),
    }


class Leaks:
    """Finds any of the secrets, or any 16-character run of the key's body, in a piece of text."""

    def __init__(self, secret: dict[str, Any]):
        self.whole = {name: value for name, value in secret.items() if name != "private_key"}
        body = [line for line in secret["private_key"].splitlines() if line and not line.startswith("-----")]
        assert sum(map(len, body)) > 1000, "the key should be long enough to matter"
        self.windows: set[str] = set()
        for run in (*body, "".join(body)):  # line by line (escaped newlines) and joined (newlines dropped)
            self.windows.update(run[i:i + WINDOW] for i in range(len(run) - WINDOW + 1))

    def found(self, value: Any) -> list[str]:
        texts = _strings(value)
        hits = [name for name, s in self.whole.items() if any(s in t for t in texts)]
        for t in texts:
            if any(t[i:i + WINDOW] in self.windows for i in range(len(t) - WINDOW + 1)):
                hits.append("private_key")
                break
        return hits


def _strings(value: Any) -> list[str]:
    """Every rendering of a value a reader could see: str, repr, bytes decoded, JSON decoded."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("latin-1")
    out = [str(value), repr(value)]
    if isinstance(value, str) and value[:1] in "{[\"":
        try:
            out.append(json.dumps(json.loads(value), ensure_ascii=False))
        except ValueError:
            pass
    if isinstance(value, (dict, list, tuple)):
        out.append(json.dumps(value, ensure_ascii=False, default=str))
    return out


@pytest.fixture
def leaks(secret) -> Leaks:
    return Leaks(secret)


class Recorder:
    """A test client wrapper that keeps every response, to inspect them all afterwards."""

    def __init__(self, client):
        self.client = client
        self.responses: list[tuple[str, Any]] = []

    def __call__(self, method: str, url: str, **kwargs):
        response = self.client.open(url, method=method, **kwargs)
        self.responses.append((f"{method} {url} -> {response.status_code}", response))
        return response

    def leaked(self, leaks: Leaks) -> dict[str, list[str]]:
        found = {}
        for label, response in self.responses:
            texts = [response.get_data(as_text=True), *(f"{k}: {v}" for k, v in response.headers.items())]
            data = response.get_json(silent=True)
            if data is not None:
                texts.append(json.dumps(data, ensure_ascii=False))
            hits = sorted({hit for t in texts for hit in leaks.found(t)})
            if hits:
                found[label] = hits
        return found


def _credential_traffic(call: Recorder, secret: dict, admin: dict) -> dict[str, int]:
    """Everything an admin does with the two credentials, successes and failures, with the secrets in play."""
    pw = call("POST", "/api/credentials", headers=admin, json={
        "name": "db-root", "username": "root", "auth_type": "password", "password": secret["password"]})
    assert pw.status_code == 201, pw.get_json()
    key = call("POST", "/api/credentials", headers=admin, json={
        "name": "deploy-key", "username": "deploy", "auth_type": "key", "private_key": secret["private_key"],
        "passphrase": secret["passphrase"], "description": "the deploy key"})
    assert key.status_code == 201, key.get_json()
    ids = {"password": pw.get_json()["id"], "key": key.get_json()["id"]}
    for cred_id in ids.values():
        assert call("GET", f"/api/credentials/{cred_id}", headers=admin).status_code == 200
    assert call("GET", "/api/credentials", headers=admin).status_code == 200
    assert call("PATCH", f"/api/credentials/{ids['key']}", headers=admin,
                json={"description": "renamed", "name": "deploy-key-2"}).status_code == 200
    assert call("PATCH", f"/api/credentials/{ids['key']}", headers=admin,
                json={"passphrase": secret["rotated_passphrase"]}).status_code == 200
    assert call("PATCH", f"/api/credentials/{ids['password']}", headers=admin,
                json={"password": secret["rotated_password"]}).status_code == 200
    # failures with the secrets in the body: a taken name, a too-long secret, a key that is not one
    assert call("POST", "/api/credentials", headers=admin, json={
        "name": "db-root", "username": "root", "auth_type": "password", "password": secret["password"]}
    ).status_code == 409
    assert call("POST", "/api/credentials", headers=admin, json={
        "name": "x", "username": "root", "auth_type": "key", "private_key": secret["private_key"],
        "passphrase": secret["passphrase"] * 40}).status_code == 422
    assert call("POST", "/api/credentials", headers=admin, json={
        "name": "x", "username": "root", "auth_type": "password", "password": secret["password"] * 40}
    ).status_code == 422
    assert call("POST", "/api/credentials", headers=admin, json={
        "name": "x", "username": "root", "auth_type": "key", "private_key": secret["password"]}).status_code == 422
    assert call("PATCH", f"/api/credentials/{ids['password']}", headers=admin, json={
        "auth_type": "key", "private_key": secret["rotated_password"]}).status_code == 422
    # what reads a credential indirectly: a target using it
    target = call("POST", "/api/targets", headers=admin, json={
        "name": "web-1", "ip_address": "192.168.1.10", "credential_id": ids["key"]})
    assert target.status_code == 201, target.get_json()
    assert call("GET", f"/api/targets/{target.get_json()['target_serial']}", headers=admin).status_code == 200
    assert call("GET", "/api/targets", headers=admin).status_code == 200
    return ids


def _user_traffic(call: Recorder, secret: dict, admin: dict) -> None:
    """Logins (good and bad), a user made with a password, and that password changed."""
    created = call("POST", "/api/users", headers=admin,
                   json={"username": "carol", "password": secret["user_password"], "role": "operator"})
    assert created.status_code == 201, created.get_json()
    assert call("POST", "/api/auth/login",
                json={"username": "carol", "password": secret["user_password"]}).status_code == 200
    assert call("POST", "/api/auth/login",
                json={"username": "carol", "password": secret["wrong_password"]}).status_code == 401
    assert call("POST", "/api/auth/login",
                json={"username": "nobody", "password": secret["wrong_password"]}).status_code == 401
    assert call("PATCH", f"/api/users/{created.get_json()['id']}", headers=admin,
                json={"password": secret["changed_user_password"]}).status_code == 200
    assert call("POST", "/api/auth/login",
                json={"username": "carol", "password": secret["changed_user_password"]}).status_code == 200
    assert call("POST", "/api/auth/login",
                json={"username": "carol", "password": secret["user_password"]}).status_code == 401
    assert call("POST", "/api/users", headers=admin,
                json={"username": "carol", "password": secret["user_password"]}).status_code == 409


# ---------------------------------------------------------------- responses

def test_no_secret_in_any_response_body_or_header(client, admin, secret, leaks):
    call = Recorder(client)
    _credential_traffic(call, secret, admin)
    _user_traffic(call, secret, admin)
    assert len(call.responses) > 20
    assert call.leaked(leaks) == {}


def test_the_leak_detector_sees_a_fragment_of_the_key(secret, leaks):
    """The checks above mean something only if a 16-character run of the key's body is caught."""
    body = "".join(line for line in secret["private_key"].splitlines() if not line.startswith("-----"))
    assert leaks.found(f'{{"note": "...{body[500:516]}..."}}') == ["private_key"]
    assert leaks.found(secret["passphrase"].encode()) == ["passphrase"]
    assert leaks.found({"x": [secret["user_password"]]}) == ["user_password"]
    assert leaks.found("nothing secret here, only a long and harmless sentence") == []


LOGIN_FAILURES = [
    ("wrong password", lambda s: {"username": "alice", "password": s}),
    ("unknown user", lambda s: {"username": "nobody", "password": s}),
    ("password too long", lambda s: {"username": "alice", "password": s * 100}),
    ("password with NUL", lambda s: {"username": "alice", "password": s + "\x00"}),
    ("password not a string", lambda s: {"username": "alice", "password": [s]}),
    ("password as the username", lambda s: {"username": s, "password": s}),
    ("username missing", lambda s: {"password": s}),
]


@pytest.mark.parametrize("case", [name for name, _ in LOGIN_FAILURES])
def test_login_failures_do_not_echo_the_password(client, users, secret, case):
    users.create("alice", "operator")
    body = dict(LOGIN_FAILURES)[case](secret["wrong_password"])
    response = client.post("/api/auth/login", json=body)
    assert response.status_code in (400, 401, 422), response.get_data(as_text=True)
    assert_error(response, response.status_code)
    raw = response.get_data(as_text=True) + "".join(f"{k}: {v}" for k, v in response.headers.items())
    assert secret["wrong_password"] not in raw
    assert "access_token\": \"" not in raw


MISSPELLED = [
    ("POST", "/api/credentials", {"name": "k", "username": "u", "auth_type": "password"}, "pasword"),
    ("POST", "/api/credentials", {"name": "k", "username": "u", "auth_type": "key"}, "privateKey"),
    ("POST", "/api/credentials", {"name": "k", "username": "u", "auth_type": "key"}, "passPhrase"),
    ("PATCH", "/api/credentials/{id}", {}, "pasword"),
    ("PATCH", "/api/credentials/{id}", {}, "privateKey"),
    ("PATCH", "/api/credentials/{id}", {}, "passPhrase"),
    ("PATCH", "/api/credentials/{id}", {"auth_type": "key"}, "private_key_"),
]  # login and users bodies: tests/security/test_hostile_input.py


@pytest.mark.parametrize("method,path,body,field", MISSPELLED,
                         ids=[f"{m} {p} {f}" for m, p, _, f in MISSPELLED])
def test_a_misspelled_secret_field_is_not_echoed(client, admin, make, secret, leaks, method, path, body, field):
    """A typo in a secret's field name is still the secret: the 422 names the field, never its value."""
    credential = make.credential()
    url = path.format(id=credential["id"])
    value = secret["private_key"] if field.startswith("private") else secret["wrong_password"]
    response = client.open(url, method=method, json={**body, field: value}, headers=admin)
    error = assert_error(response, 422, "validation_error")
    assert field in json.dumps(error["details"]), error  # the offending field is named
    raw = response.get_data(as_text=True)
    assert leaks.found(raw) == [], error


# ---------------------------------------------------------------- logs

def test_no_secret_in_any_log_record(client, admin, secret, leaks, caplog):
    caplog.set_level(logging.DEBUG)  # the root logger: every library's debug output too
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # which pins itself to WARNING: its SQL and parameters
    muted = [name for name, logger in logging.root.manager.loggerDict.items()
             if isinstance(logger, logging.Logger) and logger.disabled
             and name.split(".")[0] in ("api", "common", "worker")]
    assert muted == [], "the application's loggers were disabled: the capture would miss them"
    call = Recorder(client)
    _credential_traffic(call, secret, admin)
    _user_traffic(call, secret, admin)
    records = caplog.records
    statements = " ".join(r.getMessage() for r in records if r.name.startswith("sqlalchemy.engine"))
    assert "INSERT INTO credentials" in statements and "INSERT INTO users" in statements, \
        "the capture does not reach the write path"
    leaked = []
    for record in records:
        rendered = [record.getMessage(), str(record.msg), repr(record.args), record.exc_text or "",
                    repr(record.__dict__)]
        if record.exc_info:
            rendered.append(logging.Formatter().formatException(record.exc_info))
        hits = sorted({hit for r in rendered for hit in leaks.found(r)})
        if hits:
            leaked.append(f"{record.name}:{record.levelname} {hits}: {record.getMessage()[:200]}")
    assert leaked == []


# ---------------------------------------------------------------- database rows

def _every_row(db) -> dict[str, list[dict]]:
    """Every row of every table the database has (the models' and any other), read raw."""
    tables = inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        return {t: [dict(r._mapping) for r in conn.execute(text(f'SELECT * FROM "{t}"'))] for t in tables}


def test_no_secret_in_clear_in_any_database_row(client, admin, db, secret, leaks):
    call = Recorder(client)
    ids = _credential_traffic(call, secret, admin)
    _user_traffic(call, secret, admin)
    rows = _every_row(db)
    assert {"users", "credentials", "targets"} <= set(rows)
    assert len(rows["credentials"]) == 2 and len(rows["users"]) == 2
    leaked = []
    for table, table_rows in rows.items():
        for row in table_rows:
            for column, value in row.items():
                if value is None:
                    continue
                hits = leaks.found(value)
                if hits:
                    leaked.append(f"{table}.{column}: {hits}")
    assert leaked == []
    # what is stored instead: ciphertext for the credentials, a salted hash for the user
    stored = {row["id"]: row for row in rows["credentials"]}
    assert stored[ids["key"]]["secret_encrypted"].startswith("gAAAAA")
    assert stored[ids["key"]]["passphrase_encrypted"].startswith("gAAAAA")
    carol = next(row for row in rows["users"] if row["username"] == "carol")
    assert carol["password_hash"].count("$") >= 2  # method$salt$hash


def test_a_second_user_with_the_same_password_gets_another_hash(client, admin, db, secret):
    """Salted: equal passwords are not visible as equal rows."""
    for name in ("erin", "frank"):
        response = client.post("/api/users", headers=admin,
                               json={"username": name, "password": secret["user_password"]})
        assert response.status_code == 201, response.get_json()
    with db.engine.connect() as conn:
        hashes = conn.execute(text("SELECT password_hash FROM users WHERE username IN ('erin', 'frank')")).scalars()
        hashes = list(hashes)
    assert len(hashes) == 2 and hashes[0] != hashes[1]
