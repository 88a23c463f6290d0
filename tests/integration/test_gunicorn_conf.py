"""api/gunicorn_conf.py under a real gunicorn: the multiprocess directory it makes is removed at exit, a given
one is emptied of prometheus-client's files only (and refused when it holds other .db files), and a USR2
upgrade leaves the new arbiter a directory of its own that the old one's exit does not remove."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx

from tests.processes import ManagedProcess, Processes
from tests.sshd import free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
APP = 'def app(environ, start_response):\n    start_response("200 OK", [])\n    return [b"ok"]\n'


class Web:
    def __init__(self, processes: Processes, tmp: Path, **env: str) -> None:
        (tmp / "probe_app.py").write_text(APP)
        self.port = free_port()
        self.tmpdir = tmp / "tmpdir"
        self.tmpdir.mkdir(exist_ok=True)
        self.pidfile = tmp / "gunicorn.pid"
        environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        environ.update(PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{tmp}", TMPDIR=str(self.tmpdir), **env)
        self.proc: ManagedProcess = processes.start(
            "gunicorn", [str(GUNICORN), "probe_app:app", "-c", "python:api.gunicorn_conf", "--workers", "1",
                         "--bind", f"127.0.0.1:{self.port}", "--pid", str(self.pidfile)],
            cwd=REPO_ROOT, env=environ)

    def answers(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/", timeout=2).text == "ok"
        except httpx.HTTPError:
            return False

    def wait_serving(self) -> None:
        wait_until(lambda: self.answers() or not self.proc.running(), timeout=30, message="gunicorn to serve")
        assert self.answers(), self.proc.logs()

    def made(self) -> list[Path]:
        return sorted(self.tmpdir.glob("opsconductor-web-metrics-*"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_a_given_directory_is_emptied_of_the_librarys_files_only(processes, tmp_path):
    given = tmp_path / "metrics"
    given.mkdir()
    for name in ("counter_424242.db", "gauge_livesum_424242.db", "histogram_7.db"):
        (given / name).write_bytes(b"\0" * 16)
    (given / "notes.txt").write_text("kept")
    web = Web(processes, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(given))
    web.wait_serving()
    assert not [p.name for p in given.glob("*_424242.db")] and not (given / "histogram_7.db").exists()
    assert (given / "notes.txt").read_text() == "kept"
    assert web.made() == []  # the given one is used, none made
    assert web.proc.stop() is not None
    assert given.is_dir()  # not ours to remove


def test_a_directory_holding_other_db_files_is_refused_and_left_alone(processes, tmp_path):
    given = tmp_path / "var"
    given.mkdir()
    (given / "opsconductor.db").write_text("someone's SQLite database")
    (given / "counter_424242.db").write_bytes(b"\0" * 16)
    web = Web(processes, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(given))
    wait_until(lambda: not web.proc.running(), timeout=30, message="gunicorn to refuse the directory")
    assert web.proc.proc.returncode != 0
    assert "holds files prometheus-client did not write (opsconductor.db)" in web.proc.stderr(), web.proc.logs()
    assert (given / "opsconductor.db").read_text() == "someone's SQLite database"
    assert (given / "counter_424242.db").exists()


def test_the_made_directory_outlives_a_usr2_upgrade_and_each_arbiter_removes_its_own(processes, tmp_path):
    web = Web(processes, tmp_path)
    web.wait_serving()
    (first,) = web.made()
    old = web.proc.pid
    os.kill(old, signal.SIGUSR2)  # a new arbiter, re-executed from this one, on the same sockets
    upgraded = web.pidfile.with_name(web.pidfile.name + ".2")  # gunicorn's pid file of the new arbiter
    wait_until(lambda: len(web.made()) == 2 and upgraded.exists() and upgraded.read_text().strip(), timeout=30,
               message="the new arbiter to start")
    new = int(upgraded.read_text())
    web.proc.remember_tree()  # the new arbiter and its worker are stopped with the rest
    os.kill(old, signal.SIGTERM)
    wait_until(lambda: not _alive(old), timeout=30, message="the old arbiter to exit")
    wait_until(lambda: not first.exists(), timeout=10, message="the old arbiter's directory to go")
    (second,) = web.made()
    assert web.answers()  # served by the new arbiter's worker
    os.kill(new, signal.SIGTERM)
    wait_until(lambda: not _alive(new), timeout=30, message="the new arbiter to exit")
    wait_until(lambda: not second.exists(), timeout=10, message="the new arbiter's directory to go")
