"""LocalRunner: same contract as the SSH runner, on the worker host itself, both as the unprivileged
LOCAL_RUN_AS account a root worker switches to and as the worker's own user."""
from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from common.output import TRUNCATION_MARKER
from tests.sshd import find_processes, wait_until
from worker.runners import local
from worker.runners.base import ConnectionSpec, StepResult
from worker.runners.local import LocalRunner

pytestmark = pytest.mark.timeout(60)

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(params=["nobody", None], ids=["as-nobody", "as-worker-user"])
def runner(request) -> LocalRunner:
    return LocalRunner(kill_grace=2.0, run_as=request.param)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory whichever account the command runs as can write to (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="local-runner-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def run(runner: LocalRunner, command: str, **kwargs: Any) -> StepResult:
    with runner.open(ConnectionSpec(host="ignored.invalid", password="ignored")) as session:
        return session.run(command, **kwargs)


def unique_sleep(base: int) -> str:
    return f"sleep {base + secrets.randbelow(1000) / 1000 + 0.0001:.4f}"


def test_open_ignores_target_and_has_no_host_key(runner: LocalRunner) -> None:
    session = runner.open(ConnectionSpec(host="does-not-exist.invalid", port=1))
    assert session.host_key is None
    assert session.run("echo local").stdout == "local\n"
    session.close()


def test_success_with_stdout_and_stderr(runner: LocalRunner) -> None:
    result = run(runner, "echo out; echo err >&2")
    assert (result.exit_code, result.error_type, result.error_message) == (0, None, None)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert result.started_at.tzinfo is not None and result.duration >= 0


def test_nonzero_exit(runner: LocalRunner) -> None:
    result = run(runner, "echo partial; exit 7")
    assert (result.exit_code, result.error_type) == (7, "command_failed")
    assert result.stdout == "partial\n"


def test_killed_by_signal(runner: LocalRunner) -> None:
    result = run(runner, "kill -9 $$")
    assert result.exit_code is None
    assert result.error_type == "command_failed"
    assert "SIGKILL" in (result.error_message or "")


def test_no_stdin_means_eof(runner: LocalRunner) -> None:
    result = run(runner, "cat; echo done", timeout=10)
    assert result.stdout == "done\n"


def test_stdin_script(runner: LocalRunner) -> None:
    result = run(runner, "/bin/sh -s", stdin=b"echo \"answer $((6 * 7))\"\necho err >&2\nexit 2\n")
    assert (result.stdout, result.stderr, result.exit_code) == ("answer 42\n", "err\n", 2)


def test_large_stdin_while_output_flows(runner: LocalRunner) -> None:
    data = os.urandom(3 * 1024 * 1024)
    result = run(runner, "tee /dev/stderr | wc -c", stdin=data, timeout=30)
    assert result.error_type is None
    assert result.stdout.strip() == str(len(data))


def test_stdin_not_read_is_not_an_error(runner: LocalRunner) -> None:
    result = run(runner, "echo ignored-stdin", stdin=os.urandom(4 * 1024 * 1024), timeout=10)
    assert result.error_type is None and result.stdout == "ignored-stdin\n"


def test_output_capped_with_marker(runner: LocalRunner) -> None:
    five_mib = 5 * 1024 * 1024
    result = run(runner, f"head -c {five_mib} /dev/zero | tr '\\0' a", timeout=30)
    half = "a" * (512 * 1024)
    assert result.stdout == half + TRUNCATION_MARKER.format(n=4194304) + half


def test_both_streams_flooded_concurrently(runner: LocalRunner) -> None:
    three_mib = 3 * 1024 * 1024
    cmd = f"head -c {three_mib} /dev/zero | tr '\\0' e >&2 & head -c {three_mib} /dev/zero | tr '\\0' o; wait"
    result = run(runner, cmd, timeout=30)
    marker = TRUNCATION_MARKER.format(n=2 * 1024 * 1024)
    assert result.stdout == "o" * 524288 + marker + "o" * 524288
    assert result.stderr == "e" * 524288 + marker + "e" * 524288


def test_small_cap() -> None:
    result = run(LocalRunner(output_cap=10), "printf 0123456789abcdefghij")
    assert result.stdout == "01234" + TRUNCATION_MARKER.format(n=10) + "fghij"


def test_invalid_utf8_replaced(runner: LocalRunner) -> None:
    result = run(runner, r"printf 'ok \377\376 end\n'")
    assert result.stdout == "ok \ufffd\ufffd end\n"


def test_timeout_kills_process_group(runner: LocalRunner) -> None:
    fg, bg = unique_sleep(30), unique_sleep(31)
    t0 = time.monotonic()
    result = run(runner, f"{bg} & echo started; {fg}; echo unreachable", timeout=1)
    elapsed = time.monotonic() - t0
    assert result.error_type == "timeout"
    assert result.exit_code is None
    assert result.stdout == "started\n"
    assert 1 <= elapsed < 4
    wait_until(lambda: not find_processes(fg) and not find_processes(bg), timeout=2, message="sleeps killed")


def test_term_ignoring_process_is_killed_after_grace() -> None:
    runner = LocalRunner(kill_grace=0.3)
    tag = unique_sleep(33)
    t0 = time.monotonic()
    result = run(runner, f"trap '' TERM; echo armed; {tag}", timeout=0.5)
    elapsed = time.monotonic() - t0
    assert result.error_type == "timeout"
    assert result.stdout == "armed\n"  # the trap was in place before the timeout
    assert 0.5 + 0.3 <= elapsed < 3  # TERM was ignored for the whole grace, then KILL
    wait_until(lambda: not find_processes(tag), timeout=2, message="TERM-ignoring sleep killed")


def test_timeout_after_command_closed_its_output(runner: LocalRunner) -> None:
    tag = unique_sleep(34)
    result = run(runner, f"echo bye; exec >/dev/null 2>&1; {tag}", timeout=1)
    assert result.error_type == "timeout"
    assert result.stdout == "bye\n"
    wait_until(lambda: not find_processes(tag), timeout=2, message="sleep killed")


def test_cancel_mid_command(runner: LocalRunner, shared_dir: Path) -> None:
    flag = shared_dir / "started"
    tag = unique_sleep(32)
    cancel = threading.Event()

    def cancel_when_started() -> None:
        wait_until(flag.exists, timeout=10, message="command start")
        cancel.set()

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    t0 = time.monotonic()
    result = run(runner, f"touch {flag}; {tag}; echo unreachable", cancel=cancel, timeout=20)
    canceller.join()
    assert result.error_type == "cancelled"
    assert result.exit_code is None
    assert time.monotonic() - t0 < 5
    wait_until(lambda: not find_processes(tag), timeout=2, message="sleep killed")


def test_cancel_before_start(runner: LocalRunner, shared_dir: Path) -> None:
    assert run(runner, f"touch {shared_dir / 'can'}").error_type is None  # so "never" below means something
    cancel = threading.Event()
    cancel.set()
    result = run(runner, f"touch {shared_dir / 'never'}", cancel=cancel)
    assert result.error_type == "cancelled"
    assert not (shared_dir / "never").exists()


def test_background_child_holding_output_is_waited_for(runner: LocalRunner) -> None:
    # Like sshd: the action ends when its output closes, not when the shell exits.
    result = run(runner, "(sleep 0.2; echo late) & echo early", timeout=10)
    assert result.stdout == "early\nlate\n"


def test_root_worker_runs_commands_as_the_account_without_its_own_groups() -> None:
    assert os.geteuid() == 0, "these tests run as root, like the worker in its container"
    result = run(LocalRunner(), "id -u; id -g; id -G; echo $USER $LOGNAME")
    assert result.error_type is None, result
    assert result.stdout.split("\n")[:4] == [str(NOBODY.pw_uid), str(NOBODY.pw_gid), str(NOBODY.pw_gid),
                                             "nobody nobody"]


def test_as_the_worker_user_keeps_the_worker_identity_cwd_and_home(tmp_path: Path) -> None:
    runner = LocalRunner(run_as=None, cwd=str(tmp_path), env={"HOME": "/root", "PATH": os.environ["PATH"]})
    result = run(runner, "id -u; pwd; echo $HOME")
    assert result.stdout == f"0\n{tmp_path}\n/root\n"


def test_a_session_has_a_fresh_private_home_shared_by_its_actions_and_removed_on_close() -> None:
    runner = LocalRunner(env={"PATH": os.environ["PATH"], "HOME": "/root"})
    with runner.open() as session:
        first = session.run('pwd; echo "$HOME"; echo kept > note; ls -A')
        home = first.stdout.split("\n")[0]
        assert first.stdout == f"{home}\n{home}\nnote\n", first
        assert Path(home).stat().st_uid == NOBODY.pw_uid
        assert Path(home).stat().st_mode & 0o777 == 0o700
        assert session.run("cat ~/note").stdout == "kept\n"  # the next action of the branch sees it
        with runner.open() as other:
            assert other.run("pwd; ls -A").stdout.split("\n")[0] != home  # another branch does not
    assert not Path(home).exists()


def test_home_is_removed_even_with_what_the_command_left_there() -> None:
    runner = LocalRunner()
    with runner.open() as session:
        home = session.run("mkdir -p a/b && touch a/b/c && ln -s /etc/passwd link && chmod 000 a; pwd").stdout.strip()
    assert not Path(home).exists()
    assert Path("/etc/passwd").exists()  # the symlink was removed, not followed


def test_unknown_account_is_a_config_error_when_the_runner_is_built() -> None:
    with pytest.raises(ConfigError, match="LOCAL_RUN_AS='no-such-account-xyz': no such account"):
        LocalRunner(run_as="no-such-account-xyz")


def test_numeric_uid_names_the_account() -> None:
    assert run(LocalRunner(run_as=str(NOBODY.pw_uid)), "id -un").stdout == "nobody\n"


def test_the_identity_is_logged_once_when_the_runner_is_built(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=local.__name__):
        runner = LocalRunner()
        run(runner, "true")
        run(runner, "true")
    assert [r.getMessage() for r in caplog.records] == [
        f"local commands run as nobody (uid {NOBODY.pw_uid}), not as the root worker"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=local.__name__):
        LocalRunner(run_as=None)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "LOCAL_RUN_AS=self: local commands run as root, the worker's own user, and can read its secrets")]


def test_a_worker_that_is_not_root_runs_commands_as_itself(monkeypatch, caplog) -> None:
    # The decision only: this machine's tests run as root, and nobody cannot run this interpreter.
    monkeypatch.setattr(local.os, "geteuid", lambda: NOBODY.pw_uid)
    with caplog.at_level(logging.INFO, logger=local.__name__):
        runner = LocalRunner(run_as="nobody")
    assert runner.account is None
    assert [r.getMessage() for r in caplog.records] == [
        f"local commands run as the worker's own user nobody (uid {NOBODY.pw_uid}): only a root worker "
        f"switches to LOCAL_RUN_AS=nobody"]
