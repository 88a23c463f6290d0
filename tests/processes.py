"""Subprocesses for tests, stopped with their whole tree: TERM to every process group they made,
a wait on an observable condition, then KILL for whatever is left. Used wherever a test starts a
server (the Procfile stack, `opsconductor standalone`, gunicorn)."""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.sshd import wait_until


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie is dead (PID 1 may never reap it)


def _all_pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[1], []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if _alive(p)]


class ManagedProcess:
    """A subprocess started in its own session, logging to files, stopped with its whole tree.

    Children that put themselves in new sessions (honcho does, for every Procfile entry) are found
    through /proc before anything is signalled, so nothing survives as an orphan.
    """

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.argv = argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)
        self._groups: set[int] = {self.proc.pid}
        self._pids: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self, tail: int = 6000) -> str:
        return (f"--- {self.name} {self.argv} rc={self.proc.poll()}\n--- stdout:\n{self.stdout()[-tail:]}"
                f"\n--- stderr:\n{self.stderr()[-tail:]}")

    def remember_tree(self) -> None:
        """Record every current descendant and its process group (call again after forks)."""
        for pid in descendants(self.proc.pid):
            st = _stat(pid)
            if st is not None:
                self._pids.add(pid)
                self._groups.add(st[2])

    def _survivors(self) -> list[int]:
        group_members = [p for p in _all_pids() if (st := _stat(p)) is not None and st[2] in self._groups]
        return [p for p in set(group_members) | self._pids | {self.proc.pid} if _alive(p)]

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group and wait for the whole tree; SIGKILL whatever is left."""
        self.remember_tree()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: not self._survivors(), timeout=timeout, interval=0.05,
                       message=f"{self.name} and its children to exit after SIGTERM")
        except TimeoutError:
            for group in self._groups:
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            for pid in self._pids | {self.proc.pid}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_until(lambda: not self._survivors(), timeout=10, interval=0.05,
                       message=f"{self.name} tree to die after SIGKILL")
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


class Processes:
    """Starts ManagedProcesses and stops every one of them (newest first) in ``stop_all``."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[ManagedProcess] = []

    def start(self, name: str, argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, cwd=cwd, env=env, log_dir=self.log_dir)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        errors = []
        for proc in reversed(self.started):
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{proc.name}: {exc}")
        self.started.clear()
        assert not errors, errors
