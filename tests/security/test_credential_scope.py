"""Credentials go only where an administrator allowed (issue 9, finding 2: an operator pointed an
admin's credential at their own SSH server, or re-addressed an admin's target, and received the
stored password in clear). The API half; the worker's own check is in test_credential_worker.py."""
from __future__ import annotations

import pytest
from sqlalchemy import select, update

from common.models import Target
from common.services.access import address_allowed, normalize_allowed_host
from tests.api.conftest import assert_error, table_snapshot


def _target(client, headers, **body):
    return client.post("/api/targets", json={"name": "t", **body}, headers=headers)


def _refused(client, db, response_of) -> dict:
    before = table_snapshot(db)
    error = assert_error(response_of(), 403, "forbidden")
    assert table_snapshot(db) == before
    return error


def test_an_operator_cannot_attach_a_credential_with_no_allowed_hosts(client, db, operator, make):
    cred = make.credential()
    error = _refused(client, db, lambda: _target(client, operator, ip_address="127.0.0.1", port=2299,
                                                 credential_id=cred["id"]))
    assert error["details"] == {"field": "credential_id", "credential_id": cred["id"], "address": "127.0.0.1"}


@pytest.mark.parametrize("address, allowed", [
    ({"ip_address": "10.1.2.3"}, True),
    ({"ip_address": "10.1.3.3"}, False),
    ({"ip_address": "2001:db8::7"}, True),
    ({"ip_address": "2001:db9::7"}, False),
    ({"hostname": "web-1.prod.example.com"}, True),
    ({"hostname": "WEB-1.PROD.example.com"}, True),
    ({"hostname": "prod.example.com.evil.net"}, False),
    ({"hostname": "evil.example.com"}, False),
])
def test_an_operator_may_use_exactly_the_allowed_addresses(client, db, operator, make, address, allowed):
    cred = make.credential(allowed_hosts=["10.1.2.0/24", "2001:db8::/32", "*.prod.example.com"])
    if allowed:
        response = _target(client, operator, credential_id=cred["id"], **address)
        assert response.status_code == 201, response.get_json()
    else:
        _refused(client, db, lambda: _target(client, operator, credential_id=cred["id"], **address))


@pytest.mark.parametrize("change", [
    {"ip_address": "127.0.0.1"}, {"port": 2299}, {"hostname": "attacker.example.net", "ip_address": None},
    {"credential_id": "OTHER"},
])
def test_an_operator_cannot_readdress_an_admins_target(client, db, operator, make, change):
    """The admin paired the credential with 192.168.1.100:22; the list is empty, so any move is refused."""
    target = make.target()
    other = make.credential()
    change = {k: other["id"] if v == "OTHER" else v for k, v in change.items()}
    _refused(client, db, lambda: client.patch(f"/api/targets/{target['id']}", json=change, headers=operator))


def test_an_operator_may_still_rename_or_disable_an_admins_target(client, operator, make):
    target = make.target()
    response = client.patch(f"/api/targets/{target['id']}", json={"name": "renamed", "enabled": False},
                            headers=operator)
    assert response.status_code == 200, response.get_json()


def test_an_operator_may_move_a_target_within_the_list(client, operator, make):
    cred = make.credential(allowed_hosts=["192.168.1.0/24"])
    target = make.target(credential_id=cred["id"])
    assert client.patch(f"/api/targets/{target['id']}", json={"ip_address": "192.168.1.7", "port": 2222},
                        headers=operator).status_code == 200
    assert_error(client.patch(f"/api/targets/{target['id']}", json={"ip_address": "192.168.2.7"},
                              headers=operator), 403, "forbidden")


def test_an_admins_pairing_is_recorded_and_an_operators_move_drops_it(client, db, admin, operator, make):
    cred = make.credential(allowed_hosts=["192.168.1.0/24"])
    target = make.target(credential_id=cred["id"], ip_address="203.0.113.5", port=2022)  # off the list: admin's call

    def grant():
        with db.session() as session:
            return session.scalar(select(Target.credential_grant).where(Target.id == target["id"]))

    assert grant() == f"{cred['id']}@203.0.113.5:2022/default"
    assert client.patch(f"/api/targets/{target['id']}", json={"name": "kept", "ip_address": "203.0.113.5"},
                        headers=operator).status_code == 200  # the same address is no move
    assert grant() == f"{cred['id']}@203.0.113.5:2022/default"
    assert client.patch(f"/api/targets/{target['id']}", json={"ip_address": "192.168.1.9"},
                        headers=operator).status_code == 200
    assert grant() is None  # an operator's move stands on the list alone
    assert client.patch(f"/api/targets/{target['id']}", json={"port": 2022}, headers=admin).status_code == 200
    assert grant() == f"{cred['id']}@192.168.1.9:2022/default"


def test_another_queue_is_another_network(client, db, admin, operator, make):
    """A queue's workers may sit in another network where the same address is another machine: an
    operator's queue change needs the list, and any queue change forgets the pinned host key."""
    target = make.target()  # admin-paired, empty list
    with db.session() as session:
        session.execute(update(Target).where(Target.id == target["id"]).values(host_key="ssh-ed25519 AAAA",
                                                                               host_key_fingerprint="SHA256:x"))
    assert_error(client.patch(f"/api/targets/{target['id']}", json={"queue": "dc-east"}, headers=operator), 403)
    response = client.patch(f"/api/targets/{target['id']}", json={"queue": "dc-east"}, headers=admin)
    assert response.status_code == 200 and response.get_json()["host_key_fingerprint"] is None


def test_allowed_hosts_are_admin_managed_and_shown(client, admin, operator, make):
    cred = make.credential(allowed_hosts=["10.0.0.7", "*.Prod.Example.com", "2001:db8::/32"])
    assert cred["allowed_hosts"] == ["10.0.0.7/32", "*.prod.example.com", "2001:db8::/32"]
    assert_error(client.patch(f"/api/credentials/{cred['id']}", json={"allowed_hosts": ["0.0.0.0/0"]},
                              headers=operator), 403, "forbidden")
    response = client.patch(f"/api/credentials/{cred['id']}", json={"allowed_hosts": []}, headers=admin)
    assert response.status_code == 200 and response.get_json()["allowed_hosts"] == []


@pytest.mark.parametrize("entry", ["*", "**", "*.", "not a host", "10.0.0.0/33", "a" * 300, "evil.com;rm -rf /",
                                   "host\u00e9.example.com", "10.*", "192.168.1.*", "web*.example.com", "*-*",
                                   "*0*", "*.com", "*.0x1", "0x7f000001"])
def test_allowed_hosts_entries_are_validated(client, db, admin, entry):
    before = table_snapshot(db)
    body = {"name": "c", "username": "u", "auth_type": "password", "password": "pw-123456", "allowed_hosts": [entry]}
    assert_error(client.post("/api/credentials", json=body, headers=admin), 422, "validation_error")
    assert table_snapshot(db) == before


def test_allowed_hosts_are_bounded(client, admin):
    body = {"name": "c", "username": "u", "auth_type": "password", "password": "pw-123456",
            "allowed_hosts": [f"10.0.{i // 250}.{i % 250}" for i in range(101)]}
    assert_error(client.post("/api/credentials", json=body, headers=admin), 422, "validation_error")


@pytest.mark.parametrize("allowed, address, expected", [
    (["10.0.0.0/8"], "10.200.1.1", True),
    (["10.0.0.0/8"], "11.0.0.1", False),
    (["10.0.0.0/8"], "::ffff:10.0.0.1", True),  # an IPv4-mapped IPv6 address is the IPv4 address
    (["::/0"], "::ffff:127.0.0.1", False),  # … so it is not on an IPv6 list
    (["0.0.0.0/0", "::/0"], "0.0.0.0", False),  # the unspecified address reaches the local host
    (["0.0.0.0/0", "::/0"], "::", False),
    (["*.example.com"], "evil-example.com", False),
    (["*.example.com"], "a.example.com.", True),
    (["db1.example.com"], "db1.example.com", True),
    (["db1.example.com"], "x.db1.example.com", False),
    (["fe80::/10"], "fe80::1%eth0", True),
    (["0.0.0.0/0"], "db.example.com", False),  # CIDRs never admit hostnames
    (["*.example.com"], "10.0.0.1", False),  # globs never admit addresses
    (["*.example.com"], "example.com", False),
    (["*.example.com"], "a.b.example.com", True),
    ([], "10.0.0.1", False),
])
def test_address_matching(allowed, address, expected):
    assert address_allowed([normalize_allowed_host(e) for e in allowed], address) is expected
