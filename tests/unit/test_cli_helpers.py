"""Pure pieces of `opsconductor targets import` and `opsconductor run`: inventory host -> target body,
the message when ansible-core is missing, selector terms, where the server's URL and token come from."""
from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from opsconductor import adhoc, remote
from opsconductor.cli import main
from opsconductor.inventory import (
    ANSIBLE_MISSING,
    AnsibleMissing,
    CredentialRef,
    HostRejected,
    InventoryHost,
    read_inventory,
    to_target,
)
from tests.conftest import FERNET_SECRET, JWT_SECRET

CRED = CredentialRef(7, "deploy-key", "deploy")


def test_a_host_maps_to_a_target_body():
    body = to_target(InventoryHost("web1", ("prod", "web"), {"ansible_host": "10.0.0.1", "ansible_port": "2222",
                                                             "ansible_user": "deploy"}), CRED)
    assert {k: body[k] for k in ("name", "ip_address", "hostname", "port", "credential_id", "connection", "tags")} == {
        "name": "web1", "ip_address": "10.0.0.1", "hostname": None, "port": 2222, "credential_id": 7,
        "connection": "ssh", "tags": ["prod", "web"]}
    named = to_target(InventoryHost("db1.example.com", ()), CRED)
    assert (named["hostname"], named["ip_address"], named["port"]) == ("db1.example.com", None, 22)
    v6 = to_target(InventoryHost("e1", (), {"ansible_host": "2001:db8:0::1"}), CRED)
    assert v6["ip_address"] == "2001:db8::1"  # stored in the API's canonical form


def test_a_template_error_or_bad_group_is_the_hosts_own_refusal():
    with pytest.raises(HostRejected, match="ansible_host: ansible could not template it"):
        to_target(InventoryHost("x", (), error="ansible_host: ansible could not template it: 'no' is undefined"), CRED)
    with pytest.raises(HostRejected, match="group 'a b' is not a valid tag"):
        to_target(InventoryHost("x", ("a b",), {"ansible_host": "10.0.0.1"}), CRED)


def test_without_ansible_core_the_message_says_what_to_install(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "ansible" or m.startswith("ansible.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ansible", None)  # `import ansible...` now raises ImportError
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("web1\n")
    with pytest.raises(AnsibleMissing) as raised:
        read_inventory(str(inventory))
    assert str(raised.value) == ANSIBLE_MISSING and "pip install '.[ansible]'" in ANSIBLE_MISSING
    result = CliRunner().invoke(main, ["targets", "import", str(inventory), "--credential", "k"], env={
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}", "JWT_SECRET_KEY": JWT_SECRET,
        "OPSCONDUCTOR_SECRET_KEY": FERNET_SECRET})
    assert result.exit_code == 1 and ANSIBLE_MISSING in result.output


@pytest.mark.parametrize("terms, selector", [
    (["tag:web"], {"tags_all": ["web"]}),
    (["tag:web,tag:prod", "name:web-*"], {"tags_all": ["web", "prod"], "name": "web-*"}),
    (["anytag:a, anytag:b"], {"tags_any": ["a", "b"]}),
    ([], {}),
])
def test_selector_terms(terms, selector):
    assert adhoc.parse_selector(terms) == selector


@pytest.mark.parametrize("terms, says", [(["web"], "expected tag:NAME"), (["host:x"], "unknown kind 'host'"),
                                         (["name:a,name:b"], "once"), (["tag:"], "expected")])
def test_bad_selector_terms(terms, says):
    with pytest.raises(ValueError, match=says):
        adhoc.parse_selector(terms)


def test_the_ad_hoc_job_is_named_after_the_command():
    assert adhoc.adhoc_job_name("uptime  -p") == "adhoc: uptime -p"
    assert len(adhoc.adhoc_job_name("x" * 400)) == 255


def test_connection_settings_options_then_environment_then_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('url = "http://file:1"\nusername = "alice"\npassword = "from-file"\n')
    config.chmod(0o600)
    env = {"OPSCONDUCTOR_CONFIG": str(config)}
    warnings: list[str] = []
    assert remote.resolve(environ=env, warn=warnings.append) == remote.Remote(
        "http://file:1", username="alice", password="from-file")
    env_token = {**env, "OPSCONDUCTOR_URL": "http://env:2", "OPSCONDUCTOR_TOKEN": "env-token"}
    assert remote.resolve(environ=env_token, warn=warnings.append) == remote.Remote("http://env:2", token="env-token")
    env_token_only = {**env, "OPSCONDUCTOR_TOKEN": "env-token"}  # no server named with it: any server
    assert remote.resolve(url="http://opt:3/", environ=env_token_only, warn=warnings.append) == remote.Remote(
        "http://opt:3/", token="env-token")
    assert remote.resolve(url="http://file:1/", environ=env, warn=warnings.append).username == "alice"
    assert warnings == []
    config.chmod(0o644)
    remote.resolve(environ=env, warn=warnings.append)
    assert warnings and "others may read it" in warnings[0]


def test_credentials_go_only_to_the_server_named_with_them(tmp_path):
    """A token kept for one server is never sent to another one given by --url or OPSCONDUCTOR_URL."""
    config = tmp_path / "config.toml"
    config.write_text('url = "https://prod.example"\ntoken = "prod-token"\n')
    config.chmod(0o600)
    env = {"OPSCONDUCTOR_CONFIG": str(config)}
    assert remote.resolve(environ=env).token == "prod-token"
    for kwargs, environ in (({}, {**env, "OPSCONDUCTOR_URL": "http://staging.example"}),
                            ({"url": "http://staging.example"}, env)):
        with pytest.raises(remote.RemoteError, match=f"{config} has them for https://prod.example"):
            remote.resolve(environ=environ, **kwargs)
    env_pair = {**env, "OPSCONDUCTOR_URL": "http://staging.example", "OPSCONDUCTOR_TOKEN": "staging-token"}
    assert remote.resolve(environ=env_pair) == remote.Remote("http://staging.example", token="staging-token")
    with pytest.raises(remote.RemoteError, match="the environment has them for http://staging.example"):
        remote.resolve(url="http://elsewhere.example", environ=env_pair)


def test_connection_settings_missing_or_malformed(tmp_path):
    env = {"OPSCONDUCTOR_CONFIG": str(tmp_path / "absent.toml")}
    with pytest.raises(remote.RemoteError, match="set OPSCONDUCTOR_TOKEN"):
        remote.resolve(environ=env)
    bad = tmp_path / "bad.toml"
    bad.write_text('tokn = "x"\n')
    with pytest.raises(remote.RemoteError, match="unknown keys tokn"):
        remote.resolve(environ={"OPSCONDUCTOR_CONFIG": str(bad)})
    assert remote.resolve(environ={**env, "OPSCONDUCTOR_TOKEN": "t"}).url == remote.DEFAULT_URL


def test_captured_output_is_trusted_only_while_its_offsets_follow_on():
    captured = adhoc._Captured()
    captured.add(0, "héllo\n")  # offsets count bytes: é is two
    captured.add(7, "world\n")
    assert (captured.text(), captured.next_offset, captured.complete) == ("héllo\nworld\n", 13, True)
    captured.add(20, "later\n")  # a chunk skipped for a slow socket: the stored result is read instead
    assert not captured.complete and captured.text() == ""
    big = adhoc._Captured()
    big.add(0, "x" * adhoc.CAPTURE_LIMIT)
    assert big.complete
    big.add(adhoc.CAPTURE_LIMIT, "x")
    assert not big.complete
