"""`opsconductor targets import`: real ansible-core reading INI and YAML inventories (children groups,
group_vars and host_vars directories, templated values), written through the targets service to SQLite and
PostgreSQL; the same refusals as the API; re-runs update in place; a dry run and a rejected host write nothing."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from common.models import Target
from opsconductor.inventory import import_inventory
from tests.conftest import FERNET_SECRET
from tests.integration.conftest import run_cli

INI = """\
web1 ansible_host=10.0.0.1 ansible_port=2222
web2.example.com

[web]
web1
web2.example.com

[db]
db1 ansible_host=db1.internal

[prod:children]
web
db

[prod:vars]
ansible_user=deploy
"""

YAML = """\
all:
  hosts:
    lone:
      ansible_host: "{{ inventory_hostname }}.example.org"
  children:
    edge:
      children:
        edge_eu:
          hosts:
            e1:
              ansible_host: 2001:db8::1
              ansible_port: 22
            e2: {}
      vars:
        ansible_user: deploy
"""


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def credential(client, admin) -> dict:
    response = client.post("/api/credentials", headers=admin, json={
        "name": "deploy-key", "username": "deploy", "auth_type": "password", "password": "pw-not-used"})
    assert response.status_code == 201, response.json
    return response.json


def targets(db) -> dict[str, dict]:
    with db.session() as session:
        rows = session.scalars(select(Target).where(Target.archived_at.is_(None))).all()
        return {t.name: {"ip_address": t.ip_address, "hostname": t.hostname, "port": t.port, "tags": sorted(t.tags),
                         "credential_id": t.credential_id, "connection": t.connection, "queue": t.queue,
                         "description": t.description, "serial": t.target_serial} for t in rows}


def counts(result) -> tuple[int, int, int]:
    report = result.report
    return report.count("created"), report.count("updated"), report.count("unchanged")


def test_ini_inventory_groups_children_and_group_vars(db, credential, tmp_path):
    path = write(tmp_path, "hosts.ini", INI)
    write(tmp_path, "group_vars/db.yml", "ansible_port: 2022\n")  # a vars plugin's file next to the inventory
    result = import_inventory(db, path, "deploy-key")
    assert result.written and not result.rejected and counts(result) == (3, 0, 0)
    got = targets(db)
    cid = credential["id"]
    assert {n: {k: v for k, v in t.items() if k not in ("serial", "queue", "description")} for n, t in got.items()} == {
        "web1": {"ip_address": "10.0.0.1", "hostname": None, "port": 2222, "tags": ["prod", "web"],
                 "credential_id": cid, "connection": "ssh"},
        "web2.example.com": {"ip_address": None, "hostname": "web2.example.com", "port": 22, "tags": ["prod", "web"],
                             "credential_id": cid, "connection": "ssh"},
        "db1": {"ip_address": None, "hostname": "db1.internal", "port": 2022, "tags": ["db", "prod"],
                "credential_id": cid, "connection": "ssh"},
    }


def test_yaml_inventory_nested_children_templates_and_host_vars(db, credential, tmp_path):
    path = write(tmp_path, "inventory.yml", YAML)
    write(tmp_path, "host_vars/e2.yml", "ansible_host: 192.0.2.7\nansible_port: '2200'\n")
    result = import_inventory(db, path, "deploy-key")
    assert result.written and counts(result) == (3, 0, 0), result
    got = targets(db)
    assert (got["lone"]["hostname"], got["lone"]["tags"]) == ("lone.example.org", [])
    assert (got["e1"]["ip_address"], got["e1"]["tags"]) == ("2001:db8::1", ["edge", "edge_eu"])
    assert (got["e2"]["ip_address"], got["e2"]["port"]) == ("192.0.2.7", 2200)


def test_rerun_updates_in_place_and_leaves_unmapped_fields(db, client, admin, credential, tmp_path):
    path = write(tmp_path, "hosts.ini", INI)
    assert counts(import_inventory(db, path, "deploy-key")) == (3, 0, 0)
    before = targets(db)
    # an administrator's own settings on an imported target stay: the inventory does not speak of them
    web1 = before["web1"]["serial"]
    response = client.patch(f"/api/targets/{web1}", headers=admin, json={"queue": "dc-east", "description": "kept"})
    assert response.status_code == 200, response.json

    again = import_inventory(db, path, "deploy-key")
    assert counts(again) == (0, 0, 3)
    assert {o.name: o.action for o in again.report.outcomes} == dict.fromkeys(before, "unchanged")

    changed = INI.replace("ansible_port=2222", "ansible_port=2223").replace("[db]\n", "[db]\nweb2.example.com\n")
    path = write(tmp_path, "hosts.ini", changed)
    third = import_inventory(db, path, "deploy-key")
    assert counts(third) == (0, 2, 1)
    outcomes = {o.name: o for o in third.report.outcomes}
    assert outcomes["web1"].changed == ("port",)
    assert outcomes["web2.example.com"].changed == ("tags",)
    after = targets(db)
    assert len(after) == 3 and {n: t["serial"] for n, t in after.items()} == {n: t["serial"] for n, t in before.items()}
    assert (after["web1"]["port"], after["web1"]["queue"], after["web1"]["description"]) == (2223, "dc-east", "kept")
    assert after["web2.example.com"]["tags"] == ["db", "prod", "web"]


def test_dry_run_counts_what_would_happen_and_writes_nothing(db, credential, tmp_path):
    path = write(tmp_path, "hosts.ini", INI)
    dry = import_inventory(db, path, "deploy-key", dry_run=True)
    assert not dry.written and counts(dry) == (3, 0, 0)
    assert targets(db) == {}
    import_inventory(db, path, "deploy-key")
    before = targets(db)
    path = write(tmp_path, "hosts.ini", INI.replace("ansible_port=2222", "ansible_port=2400"))
    dry = import_inventory(db, path, "deploy-key", dry_run=True)
    assert counts(dry) == (0, 1, 2)
    assert targets(db) == before


@pytest.mark.parametrize("line, says", [
    ('evil ansible_host="a;rm -rf /"', "ansible_host 'a;rm -rf /' is neither an IP address nor a host name"),
    ("evil ansible_host='$(id).example.com'", "ansible_host '$(id).example.com' is neither an IP address"),
    ("evil ansible_host=999.1.1.1", "a host name's last label may not be all digits"),
    ("evil ansible_host=fe80::1%$(id)", "an IPv6 zone id may only contain"),
    ("evil ansible_host=10.0.0.9 ansible_port=70000", "ansible_port 70000: Input should be less than or equal"),
    ("evil ansible_host=10.0.0.9 ansible_port=ssh", "ansible_port 'ssh'"),
    ("evil ansible_host=10.0.0.9 ansible_user=root", "ansible_user is 'root' but credential 'deploy-key' logs in as"),
    ("evil ansible_host=10.0.0.9 ansible_connection=winrm", "ansible_connection is 'winrm'"),
])
def test_a_hostile_or_unmappable_host_is_named_and_nothing_is_written(db, client, admin, credential, tmp_path,
                                                                      line, says):
    path = write(tmp_path, "hosts.ini", f"good ansible_host=10.0.0.8\n{line}\n")
    result = import_inventory(db, path, "deploy-key")
    assert not result.written and result.report is None
    assert list(result.rejected) == ["evil"] and says in result.rejected["evil"], result.rejected
    assert targets(db) == {}


def test_the_api_refuses_the_same_addresses(client, admin, credential):
    """Parity with the API: the values the import refuses above are 422s there too."""
    for field, value in (("hostname", "a;rm -rf /"), ("hostname", "999.1.1.1"), ("ip_address", "fe80::1%$(id)")):
        response = client.post("/api/targets", headers=admin, json={
            "name": "evil", field: value, "credential_id": credential["id"]})
        assert response.status_code == 422 and response.json["details"]["field"] == field, response.json


def test_a_refusal_by_the_targets_service_rolls_back_the_whole_import(db, client, admin, credential, tmp_path):
    response = client.post("/api/targets", headers=admin, json={"name": "web1", "connection": "local"})
    assert response.status_code == 201
    path = write(tmp_path, "hosts.ini", INI)
    result = import_inventory(db, path, "deploy-key")
    assert not result.written
    assert result.rejected == {"web1": "A target's connection cannot change; archive it and create another"}
    assert list(targets(db)) == ["web1"]


def test_ansible_connection_local_makes_a_local_target_without_a_credential(db, tmp_path):
    path = write(tmp_path, "hosts.ini", "[ctl]\ncontrol ansible_connection=local\n")
    result = import_inventory(db, path, None)
    assert result.written and counts(result) == (1, 0, 0)
    assert targets(db)["control"]["connection"] == "local" and targets(db)["control"]["credential_id"] is None
    path = write(tmp_path, "more.ini", "web9 ansible_host=10.0.0.9\n")
    assert import_inventory(db, path, None).rejected == {
        "web9": "an SSH target needs a credential: give --credential NAME"}


# ---------------------------------------------------------------------------- the command itself


def test_the_command_prints_each_host_and_a_summary(empty_pg, tmp_path):
    from common.crypto import SecretBox
    from common.db import Database
    from common.services.credentials import create_credential

    assert run_cli(["db", "upgrade"], empty_pg).returncode == 0
    database = Database(empty_pg)
    try:
        with database.session() as session:
            create_credential(session, SecretBox(FERNET_SECRET), name="deploy-key", username="deploy",
                              auth_type="password", password="pw-not-used")
    finally:
        database.dispose()
    path = write(tmp_path, "hosts.ini", INI)

    missing = run_cli(["targets", "import", path, "--credential", "nope"], empty_pg)
    assert missing.returncode == 1 and "no credential named 'nope' (credentials: deploy-key)" in missing.stderr

    dry = run_cli(["targets", "import", path, "--credential", "deploy-key", "--dry-run"], empty_pg)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == ("3 hosts: 3 would create, 0 would update, 0 unchanged; "
                                           "dry run: nothing was written")

    real = run_cli(["targets", "import", path, "--credential", "deploy-key"], empty_pg)
    assert real.returncode == 0, real.stderr
    lines = real.stdout.splitlines()
    assert lines[-1] == "3 hosts: 3 created, 0 updated, 0 unchanged"
    assert sorted(line.split()[:2][0] for line in lines[:-1]) == ["db1", "web1", "web2.example.com"]

    again = run_cli(["targets", "import", path, "--credential", "deploy-key"], empty_pg)
    assert again.stdout.splitlines()[-1] == "3 hosts: 0 created, 0 updated, 3 unchanged"

    bad = write(tmp_path, "bad.ini", 'evil ansible_host="a;b"\n' + INI)
    refused = run_cli(["targets", "import", bad, "--credential", "deploy-key"], empty_pg)
    assert refused.returncode == 1
    assert "evil: ansible_host 'a;b' is neither an IP address nor a host name" in refused.stderr
    assert "nothing was imported: 1 of 4 hosts rejected" in refused.stderr

    broken = write(tmp_path, "broken.yml", "all:\n  hosts: [oops\n")
    unreadable = run_cli(["targets", "import", broken, "--credential", "deploy-key"], empty_pg)
    assert unreadable.returncode == 1 and "no hosts in" in unreadable.stderr
