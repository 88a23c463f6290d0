"""Run commands on the worker host itself, with the same semantics as the SSH runner.

The command runs in its own session (``start_new_session=True``) so on timeout or cancel the
whole process group can be signalled (TERM, then KILL after a grace period); killing only the
shell would orphan its children. Output is read with one selector loop (no reader threads, no
deadlock when both pipes fill) and capped per stream.

A root worker runs the commands as an unprivileged account (``LOCAL_RUN_AS``, default ``nobody``),
without supplementary groups, in a fresh home directory per session: as root they could read the
worker's secrets (``var/secrets.json``, ``/proc/<worker pid>/environ``) and forge admin tokens.
Root may still signal that account's processes, so the group kill works the same.
"""
from __future__ import annotations

import errno
import logging
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from common.config import DEFAULT_LOCAL_RUN_AS, LOCAL_RUN_AS_SELF, local_account
from common.output import DEFAULT_OUTPUT_CAP, OutputCollector

from .base import ConnectionSpec, OutputTaps, StepRecorder, StepResult

logger = logging.getLogger(__name__)

DEFAULT_KILL_GRACE = 2.0
_CANCEL_POLL = 0.02  # a threading.Event cannot be selected on: how often to look at it
_IDLE_POLL = 1.0
_READ_CHUNK = 64 * 1024
_STDIN_CHUNK = 64 * 1024


def _pidfd(pid: int) -> int | None:
    """A pollable handle that becomes readable when ``pid`` exits (without reaping it)."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


class _Process:
    """One running command: pumps stdin/stdout/stderr and notices exit, all in one selector."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes | None, out: OutputCollector, err: OutputCollector):
        self.proc = proc
        self.out = out
        self.err = err
        self.sel = selectors.DefaultSelector()
        self._stdin_data = memoryview(stdin) if stdin else memoryview(b"")
        self._open_outputs = 0
        for stream, collector in ((proc.stdout, out), (proc.stderr, err)):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            self.sel.register(stream.fileno(), selectors.EVENT_READ, collector)
            self._open_outputs += 1
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            self.sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        self.pidfd = _pidfd(proc.pid)
        self.exited = False
        if self.pidfd is not None:
            self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")

    @property
    def finished(self) -> bool:
        return self._open_outputs == 0 and self.exited

    def _check_exit_without_pidfd(self) -> None:
        if self.pidfd is None and not self.exited and self.proc.poll() is not None:
            self.exited = True

    def pump(self, timeout: float | None) -> None:
        """Move data / note exit for at most ``timeout`` seconds."""
        if self.pidfd is None and self._open_outputs == 0:
            # Nothing selectable left: wait on the process itself.
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            self._check_exit_without_pidfd()
            return
        for key, _ in self.sel.select(timeout):
            tag = key.data
            fd = key.fd
            if tag == "exit":
                self.exited = True
                self.sel.unregister(fd)
            elif tag == "stdin":
                self._write_stdin(fd)
            else:
                try:
                    data = os.read(fd, _READ_CHUNK)
                except BlockingIOError:
                    continue
                if data:
                    tag.feed(data)
                else:
                    self.sel.unregister(fd)
                    self._open_outputs -= 1
        self._check_exit_without_pidfd()

    def _write_stdin(self, fd: int) -> None:
        try:
            if self._stdin_data:
                written = os.write(fd, self._stdin_data[:_STDIN_CHUNK])
                self._stdin_data = self._stdin_data[written:]
        except BlockingIOError:
            return
        except OSError as exc:  # EPIPE: the command stopped reading stdin, not an error by itself
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                raise
            self._stdin_data = memoryview(b"")
        if not self._stdin_data:
            self.sel.unregister(fd)
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def signal_group(self, sig: signal.Signals) -> None:
        # The leader is not reaped before the final KILL, so its PID (= the group id) cannot
        # have been reused by an unrelated process.
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        self.sel.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class LocalSession:
    """Runs commands on the worker host. ``host_key`` is always None (nothing to pin)."""

    host_key: str | None = None

    def __init__(self, runner: LocalRunner) -> None:
        self._runner = runner
        self._home: str | None = None  # the run-as account's home for this session, made on first run
        self._launch: tuple[list[str], dict[str, Any]] | None = None  # argv prefix, Popen keywords

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the session's home, if it made one. Each run owns (and has reaped) its own process."""
        home, self._home, self._launch = self._home, None, None
        if home is not None:
            # a command may have left anything there; rmtree does not follow its symlinks
            shutil.rmtree(home, onerror=_log_cleanup)

    def _launcher(self) -> tuple[list[str], dict[str, Any]]:
        """Who the command runs as, where, and with which environment: an argv prefix and Popen keywords."""
        if self._launch is not None:
            return self._launch
        runner = self._runner
        account = runner.account
        if account is None:
            self._launch = [], {"env": runner.env, "cwd": runner.cwd}
            return self._launch
        # An empty home of its own, so tools that write to $HOME or the working directory work and
        # what one branch leaves there is gone for the next (hygiene, not isolation: branches share
        # the account, and with it /tmp and each other's processes); removed on close().
        home = tempfile.mkdtemp(prefix=f"opsconductor-{account.pw_name}-")
        try:
            os.chown(home, account.pw_uid, account.pw_gid)
        except OSError:
            os.rmdir(home)
            raise
        self._home = home
        env = dict(os.environb if runner.env is None else runner.env)
        env.update({b"HOME": os.fsencode(home), b"USER": os.fsencode(account.pw_name),
                    b"LOGNAME": os.fsencode(account.pw_name)})
        if runner.setpriv:  # --clear-groups drops root's supplementary groups; it then execs the shell
            self._launch = ([runner.setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                             "--clear-groups", "--"], {"env": env, "cwd": home})
        else:  # the same switch by subprocess itself (which then forks instead of vforking: slower)
            self._launch = [], {"env": env, "cwd": home, "user": account.pw_uid, "group": account.pw_gid,
                                "extra_groups": []}
        return self._launch

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        on_start: Callable[[int], None] | None = None,  # not called: only a remote group is killed by PID later
        env: dict[str, str] | None = None,
        output: OutputTaps | None = None,
    ) -> StepResult:
        deadline = time.monotonic() + timeout if timeout is not None else None
        recorder = StepRecorder(self._runner.output_cap, output)
        out, err, result = recorder.out, recorder.err, recorder.result

        if cancel is not None and cancel.is_set():
            return result(None, "cancelled", "cancelled before the command started")
        try:
            prefix, popen_args = self._launcher()
        except OSError as exc:
            return result(None, "command_failed", f"cannot make a home for the command: {exc}")
        if env:  # added after the worker's secrets were scrubbed (worker/runtime.py): a parameter is the job's own
            base = popen_args.get("env")
            popen_args = {**popen_args, "env": {**(os.environb if base is None else base),
                                                **{os.fsencode(k): os.fsencode(v) for k, v in env.items()}}}
        try:
            proc = subprocess.Popen(
                [*prefix, self._runner.shell, "-c", command],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # own process group: killable as a whole
                close_fds=True,
                **popen_args,
            )
        except OSError as exc:
            return result(None, "command_failed", f"cannot start {self._runner.shell}: {exc.strerror or exc}")

        p = _Process(proc, stdin, out, err)
        reason: str | None = None
        try:
            while not p.finished:
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    reason = "timeout"
                    break
                wait = _IDLE_POLL if deadline is None else min(_IDLE_POLL, deadline - now)
                if cancel is not None:
                    wait = min(wait, _CANCEL_POLL)
                p.pump(wait)

            if reason is not None:
                self._terminate(p)
                what = (
                    f"command did not finish within {timeout:g}s"
                    if reason == "timeout"
                    else "command cancelled while running"
                )
                return result(None, reason, f"{what}; process group {proc.pid} terminated")

            code = proc.wait()
            if code == 0:
                return result(0, None, None)
            if code > 0:
                return result(code, "command_failed", f"command exited with status {code}")
            return result(None, "command_failed", f"command killed by {signal.Signals(-code).name}")
        finally:
            if proc.returncode is None:  # only on an unexpected exception: leave nothing behind
                p.signal_group(signal.SIGKILL)
                proc.wait()
            p.close()

    def _terminate(self, p: _Process) -> None:
        """TERM the group, give it the grace period to exit, then KILL whatever is left."""
        p.signal_group(signal.SIGTERM)
        grace_deadline = time.monotonic() + self._runner.kill_grace
        while not p.finished:
            remaining = grace_deadline - time.monotonic()
            if remaining <= 0:
                break
            p.pump(min(remaining, 0.05))
        p.signal_group(signal.SIGKILL)
        # Collect what is still buffered in the pipes, bounded: a process that escaped the group
        # (setsid) may hold them open forever.
        drain_deadline = time.monotonic() + 1.0
        while not p.finished and time.monotonic() < drain_deadline:
            p.pump(0.05)
        p.proc.wait()


def _log_cleanup(_func: object, path: str, exc_info: tuple) -> None:
    logger.warning("cannot remove %s, left by a local session: %s", path, exc_info[1])


def _worker_user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:  # a container started with an arbitrary uid
        return f"uid {uid}"


def _account(run_as: str | None) -> pwd.struct_passwd | None:
    """The account to switch to, or None to run as the worker's own user (said once, at start)."""
    if run_as is None:
        if os.geteuid() == 0:
            logger.warning("LOCAL_RUN_AS=%s: local commands run as root, the worker's own user, and can read "
                           "its secrets", LOCAL_RUN_AS_SELF)
        else:
            logger.info("local commands run as the worker's own user %s", _worker_user())
        return None
    account = local_account(run_as)  # an unknown account is a ConfigError even where it would go unused
    if os.geteuid() != 0:
        logger.info("local commands run as the worker's own user %s: only a root worker switches to "
                    "LOCAL_RUN_AS=%s", _worker_user(), run_as)
        return None
    if account.pw_uid == 0:
        logger.warning("LOCAL_RUN_AS=%s is root: local commands can read the worker's secrets", run_as)
    logger.info("local commands run as %s (uid %d), not as the root worker", account.pw_name, account.pw_uid)
    return account


class LocalRunner:
    """Runner for the worker host itself; ``open()`` ignores host and credentials.

    ``run_as``: the account a root worker runs commands as (None: the worker's own user); a worker
    that is not root always runs them as itself. ``cwd`` applies only when running as itself: the
    other account works in its own fresh home.
    """

    def __init__(
        self,
        *,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        kill_grace: float = DEFAULT_KILL_GRACE,
        shell: str = "/bin/sh",
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        run_as: str | None = DEFAULT_LOCAL_RUN_AS,
    ) -> None:
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self.shell = shell
        # encoded once: subprocess would encode every variable on every spawn
        self.env = None if env is None else {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        self.cwd = cwd
        self.account = _account(run_as)
        # util-linux's setpriv switches user in the child; subprocess's own user=/group= would make it
        # fork instead of vfork: 1,000 local branches went 284 -> 62 per second on one worker process
        self.setpriv = shutil.which("setpriv") if self.account is not None else None

    def open(self, spec: ConnectionSpec | None = None) -> LocalSession:
        return LocalSession(self)
