"""Helpers for the API tests: the error-envelope check, row counts and ready-made credentials/targets."""
from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from common.models import Base, User
from common.statuses import Role
from tests.conftest import PASSWORD, Users

TABLES = tuple(Base.metadata.tables)

# the fixture users' password hash, made once (same algorithm and cost as production) instead of per user
_PASSWORD_HASH = generate_password_hash(PASSWORD)


class _Users(Users):
    """tests/conftest.py's Users, minus re-hashing the shared test password for every user of every test."""

    def create(self, username: str, role: str, password: str = PASSWORD) -> None:
        if password != PASSWORD:
            return super().create(username, role, password)
        with self.db.session() as session:
            session.add(User(username=username, password_hash=_PASSWORD_HASH, role=Role(role).value))


@pytest.fixture
def users(db, client) -> Users:
    return _Users(db, client)


def assert_error(response, status: int, error: str | None = None, field: str | None = None) -> dict[str, Any]:
    """The reference's error format: exactly {error, message, details}, JSON, with the given status."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.mimetype
    body = response.get_json()
    assert isinstance(body, dict), body
    assert set(body) == {"error", "message", "details"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    if error is not None:
        assert body["error"] == error, body
    if field is not None:
        assert body["details"].get("field") == field, body
    return body


def row_counts(db) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}


def table_snapshot(db) -> dict[str, list]:
    """Every row of every table, to prove a failed request changed nothing at all."""
    with db.engine.connect() as conn:
        return {t: sorted(map(repr, conn.execute(text(f"SELECT * FROM {t}")).all())) for t in TABLES}


_names = itertools.count(1)


class Factory:
    """Creates credentials and targets through the API as the admin."""

    def __init__(self, client, admin):
        self.client = client
        self.admin = admin

    def credential(self, **overrides) -> dict:
        body = {"name": f"cred-{next(_names)}", "username": "deploy", "auth_type": "password",
                "password": "s3cret-password"}
        body.update(overrides)
        response = self.client.post("/api/credentials", json=body, headers=self.admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def target(self, credential_id: int | None = None, **overrides) -> dict:
        if credential_id is None and overrides.get("connection") != "local":
            credential_id = self.credential()["id"]
        body = {"name": f"target-{next(_names)}", "ip_address": "192.168.1.100"}
        if credential_id is not None:
            body["credential_id"] = credential_id
        body.update(overrides)
        response = self.client.post("/api/targets", json=body, headers=self.admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()


@pytest.fixture
def make(client, admin) -> Factory:
    return Factory(client, admin)
