"""Heavy output on the Procfile stack: --hosts sshd targets each printing --mb MB (text lines), timed
from POST execute to execution_completed on the WebSocket (a monitor with `include=output` watching
the live output), beside the same command over plain parallel OpenSSH and a bare paramiko thread
pool reading all of it, in the same run; and the peak memory (RSS) of the worker and web processes
while it ran.

    .venv/bin/python -m benchmarks.output --hosts 100 --mb 10 [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack

import websocket

from benchmarks.fanout import (
    addresses,
    bare_paramiko,
    plain_openssh,
    private_key_file,
    ssh_targets,
    start_targets,
)
from benchmarks.stack import Stack
from tests.processes import descendants
from tests.sshd import ensure_test_user, generate_client_key


def _command(mb: int) -> str:
    return f"yes 'OpsConductor output benchmark: a line of ordinary log text' | head -c {mb * 1000 * 1000}"


def _kind(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "celery" in cmdline and " worker" in cmdline:
        return "worker"
    if "gunicorn" in cmdline:
        return "web"
    return None


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


class PeakMemory:
    """The highest total RSS of each kind of stack process, sampled every 0.1 s."""

    def __init__(self, root: int):
        self.root = root
        self.peak: dict[str, int] = {}
        self.before: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for pid in descendants(self.root):
            kind = _kind(pid)
            if kind:
                totals[kind] = totals.get(kind, 0) + _rss_kib(pid)
        return totals

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            for kind, kib in self._totals().items():
                self.peak[kind] = max(self.peak.get(kind, 0), kib)

    def __enter__(self) -> PeakMemory:
        self.before = self._totals()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def platform_run(app: Stack, job_serial: str) -> tuple[float, dict, int]:
    """Seconds from execute to execution_completed, its data, and the live-output bytes the monitor saw."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{app.port}/ws/executions?job_serial={job_serial}&include=output",
                                     header=[f"Authorization: Bearer {app.token}"], timeout=600)
    try:
        assert json.loads(ws.recv())["type"] == "subscribed"
        t0 = time.perf_counter()
        app.post(f"/api/jobs/{job_serial}/execute")
        seen = 0
        while True:
            message = ws.recv()
            if not message:  # a control frame
                continue
            event = json.loads(message)
            if event["type"] == "branch_output":
                seen += len(event["data"]["data"])
            elif event["type"] == "execution_completed":
                return time.perf_counter() - t0, event["data"], seen
    finally:
        ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--mb", type=int, default=10, help="MB each host prints")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (honcho -c worker=N)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_test_user()
    key = generate_client_key("ed25519")
    hosts = addresses(args.hosts)
    command = _command(args.mb)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        key_path = private_key_file(tmp, key.private_key)
        port = start_targets(stack, hosts, key.public_line)
        app = stack.enter_context(Stack(env={"WORKER_CONCURRENCY": str(max(64, args.hosts // args.workers))},
                                        workers=args.workers))
        ids = ssh_targets(app, hosts, port, key.private_key)
        job = app.post("/api/jobs", {"name": "output", "target_ids": ids, "actions": [
            {"action_type": "command", "action_name": "print", "action_parameters": {"command": command}}]})
        assert app.proc is not None
        with PeakMemory(app.proc.pid) as memory:
            elapsed, data, seen = platform_run(app, job["job_serial"])
        assert data["status"] == "completed", data
        openssh_s = plain_openssh(hosts, port, str(key_path), command)
        paramiko_s = bare_paramiko(hosts, port, str(key_path), command)
        total_mb = args.hosts * args.mb
        print(f"\n{args.hosts} hosts x {args.mb} MB of output ({total_mb} MB), {args.workers} worker process(es), "
              f"one monitor with include=output "
              f"(saw {seen / 1e6:.0f} MB live)")
        print(f"  OpsConductor (POST execute -> execution_completed): {elapsed:7.2f} s")
        print(f"  plain parallel OpenSSH (output to /dev/null):        {openssh_s:7.2f} s")
        print(f"  bare paramiko threads (reading all output):          {paramiko_s:7.2f} s")
        print(f"  OpsConductor / OpenSSH = {elapsed / openssh_s:.2f}, / paramiko = {elapsed / paramiko_s:.2f} "
              f"(target <= 1.5)")
        for kind in ("worker", "web"):
            print(f"  peak RSS {kind}: {memory.peak.get(kind, 0) / 1024:.0f} MiB "
                  f"(before the run {memory.before.get(kind, 0) / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
