"""Credentials (SPEC §5): admin only; secrets encrypted at rest and never returned."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text

from common.crypto import SecretBox
from tests.api.conftest import assert_error, row_counts
from tests.conftest import FERNET_SECRET

PASSPHRASE = "pass-phrase-" + "q" * 12
PASSWORD_SECRET = "hunter2-very-secret-password"


@pytest.fixture(scope="module")
def private_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.BestAvailableEncryption(PASSPHRASE.encode())).decode()


def _key_body(private_key: str, **extra) -> dict:
    body = {"name": "deploy-key", "username": "deploy", "auth_type": "key", "private_key": private_key,
            "passphrase": PASSPHRASE, "description": "the deploy key"}
    body.update(extra)
    return body


def _secret_fragments(private_key: str) -> list[str]:
    """Pieces of the key body long enough to be unmistakable, plus the passphrase and password."""
    lines = [line for line in private_key.splitlines() if line and "-----" not in line]
    return [*lines, PASSPHRASE, PASSWORD_SECRET]


def _assert_no_secrets(response, private_key: str) -> None:
    raw = response.get_data(as_text=True)
    for fragment in _secret_fragments(private_key):
        assert fragment not in raw, f"secret fragment leaked: {fragment[:12]}..."
    assert "PRIVATE KEY" not in raw
    forbidden = {"private_key", "passphrase", "password", "secret", "secret_encrypted", "passphrase_encrypted"}
    assert not forbidden & _keys(response.get_json()), "a secret field is in the response"


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _raw_rows(db) -> list[dict]:
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM credentials ORDER BY id"))]


def test_key_credential_with_passphrase_never_comes_back(client, admin, db, private_key):
    created = client.post("/api/credentials", json=_key_body(private_key), headers=admin)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["name"] == "deploy-key"
    assert body["username"] == "deploy"
    assert body["auth_type"] == "key"
    assert body["has_passphrase"] is True
    assert body["description"] == "the deploy key"
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    _assert_no_secrets(created, private_key)

    got = client.get(f"/api/credentials/{body['id']}", headers=admin)
    assert got.status_code == 200
    assert got.get_json() == body
    _assert_no_secrets(got, private_key)

    listed = client.get("/api/credentials", headers=admin)
    assert listed.status_code == 200
    assert [c["id"] for c in listed.get_json()["data"]] == [body["id"]]
    _assert_no_secrets(listed, private_key)

    patched = client.patch(f"/api/credentials/{body['id']}", json={"description": "renamed", "name": "key-2"},
                           headers=admin)
    assert patched.status_code == 200
    assert patched.get_json()["name"] == "key-2"
    assert patched.get_json()["has_passphrase"] is True
    _assert_no_secrets(patched, private_key)

    rotated = client.patch(f"/api/credentials/{body['id']}",
                           json={"private_key": private_key, "passphrase": PASSPHRASE}, headers=admin)
    assert rotated.status_code == 200
    _assert_no_secrets(rotated, private_key)


def test_secrets_are_encrypted_at_rest(client, admin, db, private_key):
    key = client.post("/api/credentials", json=_key_body(private_key), headers=admin).get_json()
    pw = client.post("/api/credentials", json={"name": "pw", "username": "root", "auth_type": "password",
                                               "password": PASSWORD_SECRET}, headers=admin)
    assert pw.status_code == 201
    _assert_no_secrets(pw, private_key)
    assert pw.get_json()["has_passphrase"] is False

    rows = {r["id"]: r for r in _raw_rows(db)}
    assert set(rows) == {key["id"], pw.get_json()["id"]}
    for row in rows.values():
        for column, value in row.items():
            rendered = str(value)
            for fragment in _secret_fragments(private_key):
                assert fragment not in rendered, f"plaintext secret in column {column}"
            assert "PRIVATE KEY" not in rendered, column

    box = SecretBox(FERNET_SECRET)
    key_row, pw_row = rows[key["id"]], rows[pw.get_json()["id"]]
    assert box.decrypt(key_row["secret_encrypted"]) == private_key
    assert box.decrypt(key_row["passphrase_encrypted"]) == PASSPHRASE
    assert box.decrypt(pw_row["secret_encrypted"]) == PASSWORD_SECRET
    assert pw_row["passphrase_encrypted"] is None
    with pytest.raises(ValueError):  # another key cannot read them
        SecretBox("another-secret-" + "w" * 40).decrypt(key_row["secret_encrypted"])


def test_rotating_the_secret_reencrypts_it(client, admin, db):
    cred = client.post("/api/credentials", json={"name": "pw", "username": "root", "auth_type": "password",
                                                 "password": PASSWORD_SECRET}, headers=admin).get_json()
    old = _raw_rows(db)[0]["secret_encrypted"]
    response = client.patch(f"/api/credentials/{cred['id']}", json={"password": "another-password-1"},
                            headers=admin)
    assert response.status_code == 200
    assert "another-password-1" not in response.get_data(as_text=True)
    row = _raw_rows(db)[0]
    assert row["secret_encrypted"] != old
    assert SecretBox(FERNET_SECRET).decrypt(row["secret_encrypted"]) == "another-password-1"
    assert "another-password-1" not in str(row)


BAD_SECRETS = [
    ({"name": "k", "username": "u", "auth_type": "key"}, "private_key"),
    ({"name": "k", "username": "u", "auth_type": "key", "password": "not-a-key"}, "private_key"),
    ({"name": "k", "username": "u", "auth_type": "key", "private_key": ""}, "private_key"),
    ({"name": "p", "username": "u", "auth_type": "password"}, "password"),
    ({"name": "p", "username": "u", "auth_type": "password", "private_key": "x"}, "password"),
    ({"name": "p", "username": "u", "auth_type": "token", "password": "x"}, "auth_type"),
    ({"name": "p", "auth_type": "password", "password": "x"}, "username"),
    ({"name": "k", "username": "u", "auth_type": "key", "private_key": "just some text"}, "private_key"),
]


def test_missing_or_wrong_secret_for_type_is_422(client, admin, db):
    before = row_counts(db)
    for body, field in BAD_SECRETS:
        error = assert_error(client.post("/api/credentials", json=body, headers=admin), 422, "validation_error")
        assert "field" in error["details"]
        if field is not None:
            assert error["details"]["field"] == field, error
    assert row_counts(db) == before


def test_duplicate_name_409(client, admin, make):
    make.credential(name="dup")
    assert_error(client.post("/api/credentials", json={"name": "dup", "username": "u", "auth_type": "password",
                                                       "password": "pw-12345"}, headers=admin), 409, "conflict")


def test_operator_and_viewer_are_forbidden(client, admin, operator, viewer, db):
    cred = client.post("/api/credentials", json={"name": "pw", "username": "root", "auth_type": "password",
                                                 "password": PASSWORD_SECRET}, headers=admin).get_json()
    before = row_counts(db)
    for headers in (operator, viewer):
        assert_error(client.get("/api/credentials", headers=headers), 403, "forbidden")
        assert_error(client.get(f"/api/credentials/{cred['id']}", headers=headers), 403, "forbidden")
        assert_error(client.post("/api/credentials", json={"name": "x", "username": "u", "auth_type": "password",
                                                           "password": "pw-12345"}, headers=headers), 403)
        assert_error(client.patch(f"/api/credentials/{cred['id']}", json={"name": "y"}, headers=headers), 403)
        assert_error(client.delete(f"/api/credentials/{cred['id']}", headers=headers), 403)
    assert row_counts(db) == before


def test_patch_null_for_a_required_field_is_422(client, admin, make):
    cred = make.credential(name="keep")
    for field in ("name", "username", "auth_type"):
        assert_error(client.patch(f"/api/credentials/{cred['id']}", json={field: None}, headers=admin), 422,
                     "validation_error", field=field)
    assert client.get(f"/api/credentials/{cred['id']}", headers=admin).get_json() == cred


def test_unknown_credential_404(client, admin):
    assert_error(client.get("/api/credentials/424242", headers=admin), 404, "not_found")
    assert_error(client.patch("/api/credentials/424242", json={"name": "x"}, headers=admin), 404)
    assert_error(client.delete("/api/credentials/424242", headers=admin), 404)


def test_delete_in_use_is_409_until_the_target_is_archived(client, admin, make):
    cred = make.credential()
    target = make.target(credential_id=cred["id"])
    body = assert_error(client.delete(f"/api/credentials/{cred['id']}", headers=admin), 409, "conflict")
    assert body["details"]["targets"] == [target["target_serial"]]
    assert client.get(f"/api/credentials/{cred['id']}", headers=admin).status_code == 200

    assert client.delete(f"/api/targets/{target['id']}", headers=admin).status_code == 204
    response = client.delete(f"/api/credentials/{cred['id']}", headers=admin)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(client.get(f"/api/credentials/{cred['id']}", headers=admin), 404)
    # the archived target stays addressable by serial
    archived = client.get(f"/api/targets/{target['target_serial']}", headers=admin)
    assert archived.status_code == 200
    assert archived.get_json()["archived_at"] is not None


def test_unused_credential_deletes(client, admin, make):
    cred = make.credential()
    assert client.delete(f"/api/credentials/{cred['id']}", headers=admin).status_code == 204
    assert client.get("/api/credentials", headers=admin).get_json()["data"] == []


def test_secrets_are_stored_exactly_as_given(client, admin, db, private_key):
    """Whitespace is part of a passphrase or password: it must not be stripped."""
    spaced_phrase = f"  {PASSPHRASE} "
    spaced_password = f" {PASSWORD_SECRET}\t"
    key = client.post("/api/credentials", json=_key_body(private_key, passphrase=spaced_phrase), headers=admin)
    pw = client.post("/api/credentials", json={"name": "pw", "username": "root", "auth_type": "password",
                                               "password": spaced_password}, headers=admin)
    assert key.status_code == 201 and pw.status_code == 201
    rows = {r["id"]: r for r in _raw_rows(db)}
    box = SecretBox(FERNET_SECRET)
    assert box.decrypt(rows[key.get_json()["id"]]["secret_encrypted"]) == private_key
    assert box.decrypt(rows[key.get_json()["id"]]["passphrase_encrypted"]) == spaced_phrase
    assert box.decrypt(rows[pw.get_json()["id"]]["secret_encrypted"]) == spaced_password


def test_passphrase_alone_can_change_and_keeps_the_key(client, admin, db, private_key):
    created = client.post("/api/credentials", json=_key_body(private_key), headers=admin)
    assert created.status_code == 201, created.get_json()
    cred_id = created.get_json()["id"]
    with db.engine.connect() as conn:
        before = conn.execute(text("SELECT secret_encrypted, version FROM credentials WHERE id = :i"),
                              {"i": cred_id}).one()

    patched = client.patch(f"/api/credentials/{cred_id}", json={"passphrase": "a new passphrase"}, headers=admin)

    assert patched.status_code == 200, patched.get_json()
    with db.engine.connect() as conn:
        after = conn.execute(text("SELECT secret_encrypted, passphrase_encrypted, version FROM credentials "
                                  "WHERE id = :i"), {"i": cred_id}).one()
    box = SecretBox(FERNET_SECRET)
    assert box.decrypt(after.secret_encrypted) == box.decrypt(before.secret_encrypted) == private_key
    assert box.decrypt(after.passphrase_encrypted) == "a new passphrase"
    assert after.version == before.version + 1
