"""Fan-out benchmark: one-action job (`true`) on N sshd targets, from POST execute to
execution_completed on the WebSocket, against the Procfile stack; beside it, on the same targets,
Ansible, plain parallel OpenSSH and a bare paramiko thread pool. Then platform overhead with
1,000 local-target branches, on a fresh stack per worker-process count (by default one worker
process, then two: one per core, the way a Celery worker is scaled; a single process is bound by
its GIL, while the SSH runs keep one process so the second execution finds its pooled connections).

    .venv/bin/python -m benchmarks.fanout -n 100 --local 1000
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import paramiko
import websocket

from benchmarks.stack import BIN, Stack
from tests.sshd import TEST_USER, SshdServer, ensure_test_user, generate_client_key

PER_SSHD = 16


def addresses(n: int) -> list[str]:
    return [f"127.0.{10 + i // 250}.{i % 250 + 1}" for i in range(n)]


def start_targets(stack: ExitStack, hosts: list[str], public_line: str) -> int:
    """Several sshd processes (16 listen addresses each) on one shared port."""
    port = None
    for i in range(0, len(hosts), PER_SSHD):
        server = SshdServer(hosts[i:i + PER_SSHD], port=port)
        server.authorize(public_line)
        stack.enter_context(server)
        port = server.port
    return port


def private_key_file(directory: str, private_key: str) -> str:
    path = Path(directory) / "id_ed25519"
    path.write_text(private_key)
    path.chmod(0o600)
    return str(path)


def ssh_targets(app: Stack, hosts: list[str], port: int, private_key: str) -> list[int]:
    """One key credential and a target per host address: the ids."""
    cred = app.post("/api/credentials", {"name": "bench", "username": TEST_USER, "auth_type": "key",
                                         "private_key": private_key})
    return [app.post("/api/targets", {"name": f"bench-{i}", "ip_address": h, "port": port,
                                      "credential_id": cred["id"]})["id"] for i, h in enumerate(hosts)]


def run_execution(app: Stack, job_serial: str) -> tuple[float, dict]:
    ws = websocket.create_connection(f"ws://127.0.0.1:{app.port}/ws/executions?job_serial={job_serial}",
                                     header=[f"Authorization: Bearer {app.token}"], timeout=120)
    try:
        assert json.loads(ws.recv())["type"] == "subscribed"
        t0 = time.perf_counter()
        execution = app.post(f"/api/jobs/{job_serial}/execute")
        while True:
            event = json.loads(ws.recv())
            if (event["type"] == "execution_completed"
                    and event["data"]["execution_serial"] == execution["execution_serial"]):
                return time.perf_counter() - t0, event["data"]
    finally:
        ws.close()


def bare_paramiko(hosts: list[str], port: int, key_path: str, command: str = "true") -> float:
    """Connect, exec, read all of stdout, close: a thread per host."""
    key = paramiko.Ed25519Key.from_private_key_file(key_path)

    def one(host: str) -> None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a baseline only, never in the product
        client.connect(host, port=port, username=TEST_USER, pkey=key, allow_agent=False, look_for_keys=False,
                       timeout=60, banner_timeout=60)
        _, stdout, _ = client.exec_command(command)
        while stdout.channel.recv(65536):
            pass
        stdout.channel.recv_exit_status()
        client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - t0


def plain_openssh(hosts: list[str], port: int, key_path: str, command: str = "true") -> float:
    cmd = (f"xargs -P {len(hosts)} -I{{}} ssh -o KexAlgorithms=curve25519-sha256 -o StrictHostKeyChecking=no "
           f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -i {key_path} -p {port} "
           f"{TEST_USER}@{{}} \"{command}\" > /dev/null")
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, input="\n".join(hosts), text=True, check=True)
    return time.perf_counter() - t0


def ansible(hosts: list[str], port: int, key_path: str) -> float | None:
    exe = shutil.which("ansible", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if exe is None:
        print("ansible not installed (pip install '.[bench]'); skipping that baseline", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "hosts.ini"
        inventory.write_text("[all]\n" + "\n".join(hosts) + "\n")
        env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_LOCAL_TEMP": tmp,
               "ANSIBLE_HOME": tmp, "ANSIBLE_PYTHON_INTERPRETER": "auto_silent"}
        t0 = time.perf_counter()
        subprocess.run([exe, "all", "-i", str(inventory), "-m", "command", "-a", "true", "-f", str(len(hosts)),
                        "-u", TEST_USER, "--private-key", key_path, "-e", f"ansible_port={port}"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100, help="SSH targets")
    parser.add_argument("--local", type=int, default=1000, help="local-target branches for the overhead run (0: skip)")
    parser.add_argument("--skip-ansible", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the SSH runs (honcho -c worker=N)")
    parser.add_argument("--local-workers", default="1,2", help="worker-process counts for the local-target runs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear the stack and the sshds down on `timeout`

    ensure_test_user()
    key = generate_client_key("ed25519")
    hosts = addresses(args.n)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        key_path = private_key_file(tmp, key.private_key)
        port = start_targets(stack, hosts, key.public_line)
        concurrency = max(64, -(-args.n // args.workers))
        app = stack.enter_context(Stack(env={"WORKER_CONCURRENCY": str(concurrency), "WEB_WORKERS": "1"},
                                        workers=args.workers))
        target_ids = ssh_targets(app, hosts, port, key.private_key)
        job = app.post("/api/jobs", {"name": "fanout", "actions": [
            {"action_type": "command", "action_name": "true", "action_parameters": {"command": "true"}}],
            "target_ids": target_ids})
        cold, cold_data = run_execution(app, job["job_serial"])
        warm, warm_data = run_execution(app, job["job_serial"])
        for data in (cold_data, warm_data):
            assert data["status"] == "completed", data

        paramiko_s = bare_paramiko(hosts, port, str(key_path))
        openssh_s = plain_openssh(hosts, port, str(key_path))
        ansible_s = None if args.skip_ansible else ansible(hosts, port, str(key_path))

        print(f"\nfan-out to N={args.n} sshd targets (one action: true), {os.cpu_count()} cores, "
              f"{args.workers} worker process(es) x {concurrency} threads")
        print(f"  OpsConductor cold (POST execute -> execution_completed on WS): {cold:7.3f} s")
        print(f"  OpsConductor warm (same job again, pooled SSH connections):    {warm:7.3f} s")
        print(f"  bare paramiko thread pool (connect, exec, read, close):        {paramiko_s:7.3f} s")
        print(f"  plain parallel OpenSSH (xargs -P N ssh, curve25519-sha256):     {openssh_s:7.3f} s")
        if ansible_s is not None:
            print(f"  ansible all -m command -a true -f N:                          {ansible_s:7.3f} s")
        print(f"  cold / bare paramiko = {cold / paramiko_s:.2f}   (target <= 1.3)")
        if ansible_s is not None:
            print(f"  cold / ansible       = {cold / ansible_s:.3f}  (target < 0.1)")
        print(f"  warm / plain OpenSSH = {warm / openssh_s:.2f}   (target < 0.5)")

    if args.local:
        print(f"\nplatform overhead: {args.local} local-target branches, POST execute -> execution_completed on WS")
        for workers in [int(w) for w in args.local_workers.split(",")]:
            elapsed = local_overhead(args.local, workers)
            print(f"  {workers} worker process(es) x {100 // workers} threads: {elapsed:.3f} s = "
                  f"{args.local / elapsed:.0f} branches/s (target >= 300)")


def local_overhead(branches: int, workers: int) -> float:
    """A fresh stack (no SSH connections, no earlier rows) with `workers` worker processes."""
    with Stack(env={"WORKER_CONCURRENCY": str(100 // workers), "WEB_WORKERS": "1"}, workers=workers) as app:
        ids = [app.post("/api/targets", {"name": f"local-{i}", "connection": "local"})["id"]
               for i in range(branches)]
        job = app.post("/api/jobs", {"name": "local-overhead", "actions": [
            {"action_type": "command", "action_name": "true", "action_parameters": {"command": "true"}}],
            "target_ids": ids})
        elapsed, data = run_execution(app, job["job_serial"])
        assert data["status"] == "completed", data
        return elapsed


if __name__ == "__main__":
    main()
