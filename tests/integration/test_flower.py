"""Flower sees our tasks: the Procfile's optional `flower:` line, run against the test broker with basic auth,
turns task events on in a real worker, and its API lists the branch task of a job run over SSH by name, with
the branch id as its only argument (never a credential's secret)."""
from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import httpx
import pytest

from common.task_names import RUN_BRANCH
from tests.integration.engine_helpers import (
    REPO_ROOT,
    branch_rows,
    command,
    unique,
    wait_execution_done,
    wait_for,
)
from tests.processes import ManagedProcess
from tests.sshd import TEST_HOSTS, free_port


def procfile_flower_command() -> str:
    """The optional line, commented out in the Procfile so that `honcho start` leaves Flower off."""
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        match = re.fullmatch(r"#\s*flower:\s*(.+)", line.strip())
        if match:
            return match.group(1)
    raise AssertionError("the Procfile has no `#flower:` line")


class Flower:
    def __init__(self, proc: ManagedProcess, base_url: str, auth: tuple[str, str]):
        self.proc = proc
        self.base_url = base_url
        self.auth = auth

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.base_url + path, params=params, auth=self.auth, timeout=10)


@pytest.fixture
def flower(worker_env, tmp_path, producer) -> Iterator[Flower]:
    port = free_port()
    auth = ("flower-admin", secrets.token_urlsafe(12))
    env = {**worker_env, "FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": f"{auth[0]}:{auth[1]}",
           "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{worker_env.get('PATH', '/usr/bin:/bin')}"}
    proc = ManagedProcess("flower", ["sh", "-c", f"exec {procfile_flower_command()}"], cwd=REPO_ROOT, env=env,
                          log_dir=tmp_path)
    flower = Flower(proc, f"http://127.0.0.1:{port}", auth)

    def answers() -> bool:
        if not proc.running():
            raise AssertionError(f"flower exited\n{proc.logs()}")
        try:
            return flower.get("/api/workers").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 30, interval=0.1, message="flower's API to answer", describe=proc.logs)
        yield flower
    finally:
        proc.stop()
        producer.control.broadcast("disable_events")  # back to the workers' default for the tests after this one


def test_flower_lists_a_branch_task_by_name_with_the_branch_id_and_no_secret(
        flower, api, start_celery, sshd, ssh_user, engine_db):
    queue = unique("flower")
    worker = start_celery("worker", queues=[queue])
    # workers send no task events by default; Flower switches them on (its enable_events broadcast)
    wait_for(lambda: "enabled by remote" in worker.log_text(), 20, message="flower to enable task events",
             describe=worker.log_tail)

    assert httpx.get(flower.base_url + "/api/tasks", timeout=10).status_code == 401  # basic auth holds
    credential = api.credential(password=ssh_user.password, username=ssh_user.name)
    target = api.target(ip=TEST_HOSTS[0], port=sshd.port, credential_id=credential, queue=queue)
    execution = api.run([command("hello", "echo flower-sees-this")], [target["id"]])
    assert wait_execution_done(engine_db, execution["execution_serial"], logs=worker.log_tail).status == "completed"
    branch_id = branch_rows(engine_db, execution["execution_serial"])[0].id

    def flowers_task() -> tuple[str, dict] | None:
        tasks = flower.get("/api/tasks", taskname=RUN_BRANCH, state="SUCCESS").json()
        return next(((uuid, t) for uuid, t in tasks.items() if t["args"] == f"[{branch_id}]"), None)

    uuid, task = wait_for(flowers_task, 20, message="flower to list the branch task",
                          describe=lambda: flower.get("/api/tasks").text[:3000] + "\n" + flower.proc.logs())
    assert task["name"] == RUN_BRANCH and task["state"] == "SUCCESS"
    assert task["worker"].startswith(worker.name), task
    assert task["kwargs"] == "{}"
    info = flower.get(f"/api/task/info/{uuid}")
    assert info.status_code == 200 and info.json()["args"] == f"[{branch_id}]"
    everything = json.dumps(task) + info.text + flower.proc.stdout() + flower.proc.stderr()
    assert ssh_user.password not in everything
