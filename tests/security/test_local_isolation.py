"""Issue 9: a command on a `connection: local` target ran as the worker's user (root), read the embedded
default's var/secrets.json and /proc/<worker pid>/environ, and forged an admin token. Here the same
commands go through the local runner exactly as a worker builds it (Settings.from_env, WorkerRuntime)
in a root worker with the default LOCAL_RUN_AS, beside a control run as the worker's own user that shows
each probe would have found the secret, so a pass is never a typo in a path."""
from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import Settings
from tests.sshd import find_processes, wait_until
from worker.runners.base import ConnectionSpec, StepResult
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.timeout(60)

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def app_dir(monkeypatch) -> Iterator[Path]:
    """Where `opsconductor standalone` was started: a readable directory (a checkout, /app), not
    pytest's root-only tmp_path, so only the protections under test stand between a command and var/."""
    path = Path(tempfile.mkdtemp(prefix="local-isolation-"))
    path.chmod(0o755)
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY", "OPSCONDUCTOR_SECRET_KEY", "OPSCONDUCTOR_EMBEDDED",
                 "OPSCONDUCTOR_VAR_DIR", "LOCAL_RUN_AS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(path)
    yield path
    shutil.rmtree(path)


def runtime(monkeypatch, local_run_as: str | None = None) -> WorkerRuntime:
    """The worker's runtime as production builds it from the environment (the embedded default here)."""
    if local_run_as is not None:
        monkeypatch.setenv("LOCAL_RUN_AS", local_run_as)
    return WorkerRuntime(Settings.from_env())


@pytest.fixture
def worker(monkeypatch, app_dir) -> Iterator[WorkerRuntime]:
    assert os.geteuid() == 0, "the attack needs a root worker; these tests run as root"
    rt = runtime(monkeypatch)
    assert rt.settings.local_run_as == "nobody"  # the default, not something this test chose
    yield rt
    rt.close()


@pytest.fixture
def control(monkeypatch, app_dir) -> Iterator[WorkerRuntime]:
    """LOCAL_RUN_AS=self: the opt-out, i.e. what every root worker did before."""
    rt = runtime(monkeypatch, "self")
    yield rt
    rt.close()


def run(rt: WorkerRuntime, command: str, **kwargs) -> StepResult:
    with rt.local.open(ConnectionSpec(host="localhost")) as session:  # as worker/executor.py opens it
        return session.run(command, timeout=20, **kwargs)


@pytest.mark.parametrize("switch", ["setpriv", "subprocess"])
def test_a_local_command_runs_as_nobody_without_root_groups(worker, switch) -> None:
    """Both ways of switching: setpriv in the child (the fast path, where util-linux is installed) and
    subprocess's own user=/group=/extra_groups= (where it is not)."""
    assert worker.local.setpriv, "util-linux's setpriv is expected on this machine"
    if switch == "subprocess":
        worker.local.setpriv = None
    result = run(worker, "id -u; id -G")
    assert result.error_type is None, result
    uid, groups = result.stdout.splitlines()
    assert uid == str(NOBODY.pw_uid) != "0"
    assert groups.split() == [str(NOBODY.pw_gid)]


def test_a_local_command_cannot_read_the_generated_secrets(worker, control, app_dir) -> None:
    secrets_file = app_dir / "var" / "secrets.json"
    kept = json.loads(secrets_file.read_text())  # written by common/config.py's generator at from_env()
    assert (worker.settings.jwt_secret_key, worker.settings.secret_key) == (kept["jwt_secret_key"], kept["secret_key"])
    probe = f"cat {secrets_file}; cat {app_dir}/var/opsconductor.db; ls {app_dir}/var"

    leaked = run(control, probe)
    assert kept["jwt_secret_key"] in leaked.stdout and "secrets.json" in leaked.stdout, leaked
    assert "Permission denied" not in leaked.stderr

    result = run(worker, probe)
    assert kept["jwt_secret_key"] not in result.stdout + result.stderr
    assert kept["secret_key"] not in result.stdout + result.stderr
    assert "secrets.json" not in result.stdout  # not even the listing
    assert result.stderr.count("Permission denied") == 3, result.stderr

    # the files themselves, not only the 0700 directory, keep nobody out
    (app_dir / "var").chmod(0o755)
    result = run(worker, f"cat {secrets_file}; cat {app_dir}/var/opsconductor.db")
    assert kept["jwt_secret_key"] not in result.stdout
    assert result.stdout == "" and result.stderr.count("Permission denied") == 2, result


def test_a_local_command_cannot_read_the_worker_process_environment(worker, control) -> None:
    environ = Path(f"/proc/{os.getpid()}/environ").read_bytes()
    first_variable = environ.split(b"\0")[0].decode()
    assert first_variable
    probe = f"cat /proc/{os.getpid()}/environ; cat /proc/$PPID/environ"

    assert first_variable in run(control, probe).stdout

    result = run(worker, probe)
    assert first_variable not in result.stdout
    assert result.stdout == "" and result.stderr.count("Permission denied") == 2, result
    assert result.exit_code == 1


def _uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _group_as_nobody(markers: tuple[str, ...]) -> list[int] | None:
    """The PIDs behind ``markers``, once each runs as nobody in one process group other than ours."""
    pids = [find_processes(marker) for marker in markers]
    if not all(pids):
        return None
    flat = [pid for found in pids for pid in found]
    try:
        groups = {os.getpgid(pid) for pid in flat}
    except ProcessLookupError:
        return None
    if all(_uid(pid) == NOBODY.pw_uid for pid in flat) and len(groups) == 1 and os.getpgrp() not in groups:
        return flat
    return None


def _sleeps() -> tuple[str, str]:
    tag = f"{secrets.randbelow(10**6):06d}"
    return f"sleep 41.{tag}1", f"sleep 42.{tag}2"


def _watch(markers: tuple[str, ...], then: threading.Event | None = None) -> tuple[threading.Thread, list]:
    seen: list = []

    def watch() -> None:
        seen.extend(wait_until(lambda: _group_as_nobody(markers), timeout=15, message="the sleeps, as nobody"))
        if then is not None:
            then.set()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, seen


@pytest.mark.parametrize("ignore_term", [False, True], ids=["term", "term-ignored-then-kill"])
def test_timeout_kills_the_whole_group_of_a_command_running_as_nobody(worker, ignore_term) -> None:
    background, foreground = _sleeps()
    trap = "trap '' TERM; " if ignore_term else ""  # ignored signals stay ignored in the children
    watcher, seen = _watch((background, foreground))
    with worker.local.open(ConnectionSpec(host="localhost")) as session:
        result = session.run(f"{trap}{background} & {foreground}; echo unreachable", timeout=3)
    watcher.join()
    assert seen, "the sleeps were never seen running as nobody"
    assert result.error_type == "timeout", result
    assert "unreachable" not in result.stdout
    wait_until(lambda: not find_processes(background) and not find_processes(foreground), timeout=3,
               message="every process of the group gone")


def test_cancel_kills_the_whole_group_of_a_command_running_as_nobody(worker) -> None:
    background, foreground = _sleeps()
    cancel = threading.Event()
    watcher, seen = _watch((background, foreground), then=cancel)
    result = run(worker, f"{background} & {foreground}; echo unreachable", cancel=cancel)
    watcher.join()
    assert seen and cancel.is_set()
    assert result.error_type == "cancelled", result
    wait_until(lambda: not find_processes(background) and not find_processes(foreground), timeout=3,
               message="every process of the group gone")


def test_no_url_dsn_or_secret_named_variable_reaches_a_local_command(monkeypatch):
    """Broker URLs and DSNs carry passwords whatever their names: the scrub goes by shape, not by list."""
    from worker.runtime import _command_env

    leaky = {"CELERY_BROKER_URL": "amqp://u:pw@mq/", "SENTRY_DSN": "https://k@s/1", "MY_API_TOKEN": "t",
             "DB_PASSWD": "p", "AWS_SECRET_ACCESS_KEY": "k", "VAULT_URI": "https://v", "GIT_CREDENTIALS": "c"}
    for name, value in leaky.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = _command_env()
    assert not set(leaky) & set(env)
    assert env["LANG"] == "C.UTF-8"
