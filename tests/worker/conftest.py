"""Fixtures for runner tests: real sshd servers on loopback aliases, a login user, client keys.

The main server is session-scoped (one sshd on three addresses for the whole run) so the suite
stays fast; tests that restart a server get their own.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests` is a package at the repo root; make it importable however pytest was invoked.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.sshd import (  # noqa: E402
    TEST_HOSTS,
    TEST_KEY_PASSPHRASE,
    ClientKey,
    HungListener,
    SshdServer,
    TestUser,
    generate_client_key,
)


@pytest.fixture(scope="session")
def client_keys(ssh_user: TestUser) -> dict[str, ClientKey]:
    """Authorized client keys by name: ed25519, rsa, ecdsa, rsa_pem, ed25519_passphrase."""
    return {
        "ed25519": generate_client_key("ed25519"),
        "rsa": generate_client_key("rsa"),
        "ecdsa": generate_client_key("ecdsa"),
        "rsa_pem": generate_client_key("rsa", pem=True),
        "ed25519_passphrase": generate_client_key("ed25519", passphrase=TEST_KEY_PASSPHRASE),
    }


@pytest.fixture(scope="session")
def unauthorized_key(ssh_user: TestUser) -> ClientKey:
    """A valid key the servers do not trust."""
    return generate_client_key("ed25519")


def _authorized_server(addresses: tuple[str, ...], keys: dict[str, ClientKey]) -> SshdServer:
    server = SshdServer(addresses)
    for key in keys.values():
        server.authorize(key.public_line)
    return server


@pytest.fixture(scope="session")
def sshd(ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> Iterator[SshdServer]:
    """One sshd for the whole session, listening on 127.0.0.2-4 (three distinct hosts)."""
    with _authorized_server(TEST_HOSTS, client_keys) as server:
        yield server


@pytest.fixture
def rekeyable_sshd(ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> Iterator[SshdServer]:
    """A private sshd on 127.0.0.5 that a test may restart with a new host key."""
    with _authorized_server(("127.0.0.5",), client_keys) as server:
        yield server


@pytest.fixture
def hung_listener() -> Iterator[HungListener]:
    """Accepts TCP on 127.0.0.2 and never sends an SSH banner."""
    with HungListener("127.0.0.2") as listener:
        yield listener
