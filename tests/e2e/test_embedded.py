"""`make run`'s path: `opsconductor standalone` as a subprocess in a fresh working directory with no
DATABASE_URL / REDIS_URL: SQLite and kept secrets in ./var, a generated admin password printed once,
a local-target job run end to end, a restart that keeps tokens valid, a scheduled job firing by itself."""
from __future__ import annotations

import os
import re
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    VENV_BIN,
    Api,
    EventSocket,
    ManagedProcess,
    Processes,
    assert_utc,
    clean_env,
    wait_http_ready,
    ws_url,
)
from tests.integration.test_rollout import intervals, most_at_once
from tests.sshd import wait_until

pytestmark = pytest.mark.slow

PASSWORD_LINE = re.compile(r"OpsConductor admin created: username=(\S+) password=(\S+)")
SERVING_LINE = re.compile(r"serving http://127\.0\.0\.1:(\d+)")


def start_standalone(processes: Processes, workdir: Path, name: str) -> tuple[ManagedProcess, str]:
    """`opsconductor standalone --port 0` in ``workdir``; returns the process and its base URL."""
    env = clean_env()
    for var in ("DATABASE_URL", "REDIS_URL", "OPSCONDUCTOR_EMBEDDED"):
        assert var not in env
    proc = processes.start(name, [str(VENV_BIN / "opsconductor"), "standalone", "--host", "127.0.0.1",
                                  "--port", "0"], cwd=workdir, env=env)

    def serving() -> str | None:
        if not proc.running():
            raise AssertionError(f"standalone exited at start-up\n{proc.logs()}")
        match = SERVING_LINE.search(proc.stderr())
        return match.group(1) if match else None

    port = wait_until(serving, timeout=60, interval=0.05, message="standalone to print its URL")
    base_url = f"http://127.0.0.1:{port}"
    wait_http_ready(base_url, proc, timeout=30)
    return proc, base_url


def printed_admin(proc: ManagedProcess) -> tuple[str, str]:
    matches = PASSWORD_LINE.findall(proc.stderr())
    assert len(matches) == 1, f"expected the generated admin password printed exactly once\n{proc.logs()}"
    return matches[0]


def stop_cleanly(proc: ManagedProcess) -> None:
    assert proc.stop(timeout=20) == 0, f"SIGTERM must stop the embedded server cleanly\n{proc.logs()}"


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "workdir"
    path.mkdir()
    return path


def local_job(api: Api, name: str, **extra) -> tuple[dict, dict]:
    target = api.post("/api/targets", {"name": f"{name}-host", "connection": "local"})
    job = api.post("/api/jobs", {
        "name": name, "job_type": "command", "target_ids": [target["id"]],
        "actions": [
            {"action_type": "command", "action_name": "say",
             "action_parameters": {"command": "echo embedded-ok; uname -s"}},
            {"action_type": "script", "action_name": "script",
             "action_parameters": {"script": "set -e\nx=$((6 * 7))\necho \"script-ok $x\"\n"}},
        ], **extra})
    return target, job


def assert_local_branch(api: Api, execution: dict, target: dict) -> None:
    assert execution["status"] == "completed", execution
    assert len(execution["branches"]) == 1
    branch = api.get(f"/api/executions/branch/{execution['branches'][0]['branch_serial']}")
    assert branch["status"] == "completed" and branch["exit_code"] == 0, branch
    assert branch["target"]["target_serial"] == target["target_serial"]
    output = branch["result_output"]
    assert "embedded-ok" in output, output
    assert os.uname().sysname in output, output
    assert "script-ok 42" in output, output
    assert output.index("embedded-ok") < output.index("script-ok 42")
    assert [s["action_name"] for s in branch["steps"]] == ["say", "script"]
    assert_utc(branch["completed_at"])


def test_standalone_runs_a_local_job_keeps_its_state_in_var_and_survives_a_restart(processes, workdir):
    proc, base_url = start_standalone(processes, workdir, "standalone-1")
    username, password = printed_admin(proc)
    assert username == "admin"
    assert password not in proc.stdout()

    api = Api(base_url)
    try:
        token = api.login(username, password)["access_token"]
        target, job = local_job(api, "embedded job")
        started = api.post(f"/api/jobs/{job['job_serial']}/execute")
        assert started["execution_serial"] == f"{job['job_serial']}.0001"
        execution = api.wait_execution_done(started["execution_serial"])
        assert_local_branch(api, execution, target)
        history = api.get(f"/api/jobs/{job['job_serial']}/executions")
        assert [e["execution_serial"] for e in history] == [started["execution_serial"]]
        assert history[0]["status"] == "completed"
    finally:
        api.close()

    var = workdir / "var"
    assert (var / "opsconductor.db").is_file()
    secrets_file = var / "secrets.json"
    assert secrets_file.is_file()
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    stop_cleanly(proc)

    # Restart in the same directory: same database, same JWT secret, no new admin password
    proc2, base_url2 = start_standalone(processes, workdir, "standalone-2")
    assert not PASSWORD_LINE.search(proc2.stderr()), proc2.logs()
    assert password not in proc2.stderr() + proc2.stdout()
    api2 = Api(base_url2, token=token)
    try:
        me = api2.get("/api/auth/me")
        assert me["username"] == "admin" and me["role"] == "admin"
        kept = api2.get(f"/api/executions/serial/{started['execution_serial']}")
        assert kept["status"] == "completed"
        # `?token=` never reaches the access log (WebSocket or plain request)
        with EventSocket(ws_url(base_url2, f"token={token}")) as socket:
            assert socket.next_json(timeout=10) == {"type": "subscribed", "data": {}}
        api2.get(f"/healthz?token={token}")
        wait_until(lambda: '"GET /healthz" 200' in proc2.stderr(), timeout=10, message="the access log line")
        assert token not in proc2.stderr() + proc2.stdout()
        api2.login(username, password)  # the printed password still works
        again = api2.post(f"/api/jobs/{job['job_serial']}/execute")
        assert again["execution_serial"] == f"{job['job_serial']}.0002"
        assert_local_branch(api2, api2.wait_execution_done(again["execution_serial"]), target)
    finally:
        api2.close()
    stop_cleanly(proc2)


def test_scheduled_job_runs_by_itself(processes, workdir):
    proc, base_url = start_standalone(processes, workdir, "standalone-sched")
    api = Api(base_url)
    try:
        api.login(*printed_admin(proc))
        when = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
        target, job = local_job(api, "scheduled job", scheduled_at=when.isoformat().replace("+00:00", "Z"))
        assert job["status"] == "scheduled", job
        assert api.get(f"/api/jobs/{job['job_serial']}/executions") == []

        def fired() -> list:
            executions = api.get(f"/api/jobs/{job['job_serial']}/executions")
            return executions if executions and executions[0]["status"] == "completed" else []

        executions = wait_until(fired, timeout=20, interval=0.2, message="the scheduled job to run and complete")
        assert len(executions) == 1, executions
        execution = executions[0]
        assert execution["trigger"] == "schedule"
        started_at = datetime.fromisoformat(execution["started_at"].replace("Z", "+00:00"))
        assert started_at >= when, (started_at, when)
        assert_local_branch(api, execution, target)
        fired_job = api.get(f"/api/jobs/{job['job_serial']}")
        assert fired_job["status"] != "scheduled", fired_job
        assert fired_job["execution_count"] == 1, fired_job
    finally:
        api.close()
    stop_cleanly(proc)


def test_rollout_brakes_work_in_the_embedded_default(processes, workdir):
    """max_concurrency, max_errors and an exclusive target, on the in-process worker and transport."""
    proc, base_url = start_standalone(processes, workdir, "standalone-rollout")
    api = Api(base_url)
    log = Path(f"/tmp/opsc-embedded-rollout-{os.getpid()}-{time.monotonic_ns()}.log")  # local commands run as nobody
    try:
        api.login(*printed_admin(proc))
        targets = [api.post("/api/targets", {"name": f"local-{i}", "connection": "local"}) for i in range(6)]
        script = f'echo "start $(date +%s.%N) $$" >> {log}; sleep 0.3; echo "end $(date +%s.%N) $$" >> {log}'
        job = api.post("/api/jobs", {"name": "rollout", "target_ids": [t["id"] for t in targets],
                                     "actions": [{"action_type": "command", "action_name": "step",
                                                  "action_parameters": {"command": script}}]})
        log.touch()
        log.chmod(0o666)
        execution = api.post(f"/api/jobs/{job['id']}/execute", {"max_concurrency": "2"})
        done = api.wait_execution_done(execution["execution_serial"], timeout=30)
        assert done["status"] == "completed", done
        spans = intervals(log)
        most = most_at_once(spans)
        assert len(spans) == 6 and most == 2, spans

        failing = api.post("/api/jobs", {"name": "failing", "target_ids": [t["id"] for t in targets],
                                         "actions": [{"action_type": "command", "action_name": "fail",
                                                      "action_parameters": {"command": "exit 3"}}]})
        stopped = api.post(f"/api/jobs/{failing['id']}/execute", {"max_concurrency": "1", "max_errors": "1"})
        done = api.wait_execution_done(stopped["execution_serial"], timeout=30)
        assert done["status"] == "failed" and "rollout stopped" in done["stop_reason"], done
        assert sorted(b["status"] for b in done["branches"]) == ["failed"] * 2 + ["skipped"] * 4, done
    finally:
        api.close()
        log.unlink(missing_ok=True)
    stop_cleanly(proc)
