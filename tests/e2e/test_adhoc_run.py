"""`opsconductor run` end to end: the real command (a subprocess, as a user types it) against a running
`opsconductor standalone`, its branches run over SSH on the suite's sshd targets (127.0.0.2-4): results per
branch as they finish, output from the stream, a failing branch's exit status, `--json` parsed, a config file
with a username and password, `--job`, an unreachable host's reason, refusals (exit 2), Ctrl-C cancelling."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TEST_HOSTS, Api, e2e_sshd  # noqa: F401  (e2e_sshd: a fixture)
from tests.gate import Gate
from tests.processes import ManagedProcess
from tests.sdk.conftest import live_server
from tests.sdk.test_event_resume import CuttableProxy
from tests.sshd import free_port, wait_until

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "opsconductor")


@pytest.fixture(scope="module")
def server(tmp_path_factory, e2e_sshd, client_key, ssh_user) -> Iterator[dict]:  # noqa: F811
    with live_server(tmp_path_factory.mktemp("adhoc"), RATE_LIMIT_ADMIN="100000 per minute",
                     RATE_LIMIT_STANDARD="100000 per minute", RATE_LIMIT_LOGIN="100000 per minute") as live:
        api = Api(live.base_url)
        try:
            api.login(live.admin_username, live.admin_password)
            credential = api.post("/api/credentials", {"name": "adhoc-key", "username": ssh_user.name,
                                                       "auth_type": "key", "private_key": client_key.private_key})
            names = []
            for i, host in enumerate(TEST_HOSTS, 1):
                api.post("/api/targets", {"name": f"web-{i}", "ip_address": host, "port": e2e_sshd.port,
                                          "credential_id": credential["id"], "tags": ["web", "adhoc"]})
                names.append(f"web-{i}")
            # nothing listens on this port of 127.0.0.9: the connect is refused
            api.post("/api/targets", {"name": "gone-1", "ip_address": "127.0.0.9", "port": free_port(["127.0.0.9"]),
                                      "credential_id": credential["id"], "tags": ["broken"]})
            yield {"url": live.base_url, "token": api.token, "api": api, "names": names,
                   "username": live.admin_username, "password": live.admin_password,
                   "port": live.base_url.rsplit(":", 1)[1]}
        finally:
            api.close()


@pytest.fixture
def env(server, tmp_path) -> dict[str, str]:
    """The user's shell: the server's URL and token, and no config file of the machine's own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPSCONDUCTOR_")}
    return {**clean, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "OPSCONDUCTOR_URL": server["url"], "OPSCONDUCTOR_TOKEN": server["token"]}


def opsc(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def address_of(name: str) -> str:
    return TEST_HOSTS[int(name.rsplit("-", 1)[1]) - 1]


def test_each_branch_is_printed_with_its_own_output_and_exit_0(server, env):
    result = opsc(["run", "--selector", "tag:web", "--", "echo", "on", "${SSH_CONNECTION#* * }"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    headers = [line for line in lines if " | " in line]
    assert sorted(h.split(" ")[0] for h in headers) == server["names"]
    for header in headers:
        name = header.split(" ")[0]
        assert "| COMPLETED | rc=0 |" in header, header
        # the block's output is that target's own: the address sshd was reached on
        assert lines[lines.index(header) + 1].startswith(f"on {address_of(name)} "), result.stdout
    assert lines[-1].startswith(f"{result.stderr.split(':')[0]} completed: 3 branches (3 completed) in ")
    job = server["api"].get(f"/api/jobs/{lines[-1].split('.')[0]}")
    assert (job["name"], job["job_type"], job["target_selector"]["tags_all"]) == (
        "adhoc: echo on ${SSH_CONNECTION#* * }", "adhoc", ["web"])


def test_a_failing_branch_exits_1_and_json_is_one_object_per_line(server, env):
    command = ('case "$SSH_CONNECTION" in *" 127.0.0.3 "*) echo broken >&2; exit 4;; esac; '
               'head -c 300000 /dev/zero | tr "\\0" a')  # five 64 KiB output events and a tail
    result = opsc(["run", "--json", "--selector", "tag:web,tag:adhoc", "--", command], env)
    assert result.returncode == 1, result.stdout + result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["type"] for o in objects] == ["execution", "branch", "branch", "branch", "summary"]
    start, branches, summary = objects[0], {o["target_name"]: o for o in objects[1:4]}, objects[4]
    assert start["branches"] == 3
    assert (branches["web-2"]["status"], branches["web-2"]["exit_code"], branches["web-2"]["error_type"],
            branches["web-2"]["stderr"], branches["web-2"]["stdout"]) == ("failed", 4, "command_failed", "broken\n", "")
    for name in ("web-1", "web-3"):
        assert (branches[name]["status"], branches[name]["exit_code"]) == ("completed", 0)
        assert branches[name]["stdout"] == "a" * 300000
        stored = server["api"].get(f"/api/executions/branch/{branches[name]['branch_serial']}")
        assert stored["result_output"] == branches[name]["stdout"]
    assert (summary["execution_serial"], summary["status"], summary["statuses"], summary["failed"],
            summary["exit_code"]) == (start["execution_serial"], "failed", {"completed": 2, "failed": 1}, 1, 1)


def test_an_unreachable_target_shows_the_reason(server, env):
    result = opsc(["run", "--selector", "tag:broken", "--", "uptime"], env)
    assert result.returncode == 1
    assert "gone-1 (T" in result.stdout and "| FAILED | rc=- | unreachable |" in result.stdout, result.stdout
    assert "connection refused by 127.0.0.9:" in result.stderr, result.stderr  # the stored reason


def test_a_config_file_with_a_login_and_a_saved_job(server, env, tmp_path):
    job = server["api"].post("/api/jobs", {"name": "whoami", "target_selector": {"tags_all": ["web"]}, "actions": [
        {"action_type": "command", "action_name": "who", "action_parameters": {"command": "echo I am $(id -un)"}}]})
    config = tmp_path / "config" / "opsconductor" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{server["url"]}"\nusername = "{server["username"]}"\n'
                      f'password = "{server["password"]}"\n')
    config.chmod(0o600)
    env = {k: v for k, v in env.items() if k not in ("OPSCONDUCTOR_URL", "OPSCONDUCTOR_TOKEN")}
    result = opsc(["run", "--job", job["job_serial"], "--selector", "name:web-1"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web-1 (T" in result.stdout and "I am " in result.stdout and "web-2" not in result.stdout
    assert server["api"].get(f"/api/jobs/{job['job_serial']}")["execution_count"] == 1


def test_refusals_exit_2_and_leave_no_job_behind(server, env):
    before = server["api"].get("/api/jobs?job_type=adhoc&per_page=100")["pagination"]["total"]
    nothing = opsc(["run", "--selector", "tag:no-such-tag", "--", "uptime"], env)
    assert nothing.returncode == 2
    assert "422 validation_error: target_selector matched no enabled target" in nothing.stderr
    assert server["api"].get("/api/jobs?job_type=adhoc&per_page=100")["pagination"]["total"] == before

    bad_token = opsc(["run", "--selector", "tag:web", "--", "uptime"], {**env, "OPSCONDUCTOR_TOKEN": "not-a-jwt"})
    assert bad_token.returncode == 2 and "401 unauthorized" in bad_token.stderr
    down = opsc(["run", "--selector", "tag:web", "--", "uptime"],
                {**env, "OPSCONDUCTOR_URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == 2 and "Error:" in down.stderr
    usage = opsc(["run", "--", "uptime"], env)
    assert usage.returncode == 2 and "a command needs --selector" in usage.stderr


def test_ctrl_c_cancels_the_execution_and_reports_its_branches(server, env, tmp_path):
    proc = ManagedProcess("run", [CLI, "run", "--json", "--selector", "tag:web", "--", "sleep 60; echo never"],
                          cwd=tmp_path, env=env, log_dir=tmp_path)
    try:
        start = wait_until(lambda: proc.stdout().splitlines()[:1], timeout=30, interval=0.05,
                           message="the execution line")
        serial = json.loads(start[0])["execution_serial"]
        wait_until(lambda: all(b["status"] == "running" for b in
                               server["api"].get(f"/api/executions/serial/{serial}")["branches"]),
                   timeout=30, interval=0.05, message="every branch running")
        os.kill(proc.pid, signal.SIGINT)
        assert proc.proc.wait(timeout=60) == 1, proc.logs()
    finally:
        proc.stop()
    objects = [json.loads(line) for line in proc.stdout().splitlines()]
    assert objects[1] == {"type": "note", "message": f"cancelling {serial} (Ctrl-C again to stop waiting)"}
    assert sorted(o["status"] for o in objects if o["type"] == "branch") == ["cancelled"] * 3
    assert objects[-1]["status"] == "cancelled" and objects[-1]["exit_code"] == 1
    assert "never" not in proc.stdout()


def test_a_stream_cut_while_branches_finish_still_reports_every_branch_from_the_server(server, env, tmp_path):
    """The events of the branches that finished while the CLI was reconnecting are not replayed to a job's
    stream: it notices the quiet, reads the execution, and reports those branches from their stored rows."""
    proxy = CuttableProxy(int(server["port"]))
    gate = Gate(Path("/tmp"))
    proc = ManagedProcess("run", [CLI, "run", "--json", "--selector", "tag:web", "--", f"echo first; {gate.command}"],
                          cwd=tmp_path, env={**env, "OPSCONDUCTOR_URL": proxy.url}, log_dir=tmp_path)
    try:
        serial = json.loads(wait_until(lambda: proc.stdout().splitlines()[:1], timeout=30, interval=0.05,
                                       message="the execution line")[0])["execution_serial"]
        gate.wait_for_waiting(3)
        proxy.cut(refuse=True)
        gate.release_all()
        server["api"].wait_execution_done(serial)
        proxy.reopen()
        assert proc.proc.wait(timeout=60) == 0, proc.logs()
    finally:
        proc.stop()
        gate.__exit__()
        proxy.close()
    objects = [json.loads(line) for line in proc.stdout().splitlines()]
    branches = [o for o in objects if o["type"] == "branch"]
    assert sorted(b["target_name"] for b in branches) == server["names"]
    assert all((b["status"], b["stdout"]) == ("completed", "first\nreleased\n") for b in branches), branches
    assert objects[-1]["status"] == "completed"
    assert len(proxy.ws_requests()) >= 2  # it did reconnect
