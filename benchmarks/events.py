"""The live event stream on the Procfile stack:

1. Latency: --monitors WebSocket clients (spread over --client-procs processes, each reading its
   sockets through one selector) watch an execution of --branches local branches; for every event
   each client receives, the time from the moment its transaction recorded it (execution_events.
   created_at, just before the commit) to its arrival; p50/p99 over all. Beside it, the same
   figure for one lone monitor in the same run: the floor of commit → publish → relay.
2. Resume: a client reads the first --cut events of a --resume-branches execution, disconnects for
   --away seconds while it runs on, and reconnects with `since`; the seqs it received must be exactly
   1..n, every one the execution committed, none twice.

    .venv/bin/python -m benchmarks.events --monitors 200 --branches 100 --resume-branches 1000
"""
from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import re
import selectors
import socket
import statistics
import time

import psycopg2
import websocket

from benchmarks.stack import PG_ADMIN_DSN, Stack


def _job(app: Stack, name: str, target_ids: list[int], command: str, **extra: object) -> dict:
    return app.post("/api/jobs", {"name": name, "target_ids": target_ids, **extra, "actions": [
        {"action_type": "command", "action_name": "step", "action_parameters": {"command": command}}]})


def _connect(port: int, token: str, query: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/executions?{query}",
                                     header=[f"Authorization: Bearer {token}"], timeout=300)
    assert json.loads(ws.recv())["type"] == "subscribed"
    return ws


SEQ = re.compile(rb'"seq": (\d+)')
COMPLETED = b'{"type": "execution_completed"'


class _RawMonitor:
    """A monitor that reads its socket in bulk and parses frames itself: websocket-client's per-frame
    reads cost more CPU than the server's sends, and on two shared cores that would be measured as
    latency. The server's frames are unmasked and, with no permessage-deflate offered, uncompressed;
    pings are answered, other control frames ignored."""

    def __init__(self, port: int, token: str, query: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws/executions?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        while not (messages := self.parse()):
            self.buffer += self.sock.recv(65536)
        assert json.loads(messages[0])["type"] == "subscribed"

    def read(self) -> list[bytes]:
        """The complete messages received so far (one recv)."""
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed a monitor's socket")
        self.buffer += data
        return self.parse()

    def parse(self) -> list[bytes]:
        messages, buffer, at = [], self.buffer, 0
        while len(buffer) - at >= 2:
            opcode, size, start = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, at + 2
            if size == 126:
                size, start = int.from_bytes(buffer[at + 2:at + 4], "big"), at + 4
            elif size == 127:
                size, start = int.from_bytes(buffer[at + 2:at + 10], "big"), at + 10
            if len(buffer) < start + size:
                break
            payload, at = buffer[start:start + size], start + size
            if opcode == 0x1:
                messages.append(payload)
            elif opcode == 0x9:  # the server's keep-alive ping: a client's pong is masked
                mask = os.urandom(4)
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask
                                  + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        self.buffer = buffer[at:]
        return messages


def _monitor_group(port: int, token: str, job_serial: str, count: int, ready, results) -> None:
    """A process of monitors: every socket read as its frames arrive; (arrival, seq) per event."""
    sockets = [_RawMonitor(port, token, f"job_serial={job_serial}") for _ in range(count)]
    selector = selectors.DefaultSelector()
    for monitor in sockets:
        selector.register(monitor.sock, selectors.EVENT_READ, monitor)
    ready.put(count)
    arrivals: list[tuple[float, int]] = []
    open_sockets = len(sockets)
    while open_sockets:
        for key, _ in selector.select(timeout=300):
            monitor = key.data
            messages = monitor.read()
            now = time.time()
            for message in messages:  # json.loads of every event would be most of this process's time
                arrivals.append((now, int(SEQ.search(message)[1])))
                if message.startswith(COMPLETED):
                    selector.unregister(monitor.sock)
                    monitor.sock.close()
                    open_sockets -= 1
    results.put(arrivals)


def _recorded_at(app: Stack, execution_serial: str) -> dict[int, float]:
    conn = psycopg2.connect(PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={app.db_name}"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT e.seq, extract(epoch FROM e.created_at) FROM execution_events e "
                        "JOIN executions x ON x.id = e.execution_id WHERE x.execution_serial = %s", (execution_serial,))
            return {seq: float(at) for seq, at in cur.fetchall()}
    finally:
        conn.close()


def latency(app: Stack, job: dict, monitors: int, procs: int) -> tuple[list[float], int]:
    """Latencies (s) of every event at every monitor, and the number of events per monitor."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    shares = [monitors // procs + (i < monitors % procs) for i in range(procs)]
    workers = [ctx.Process(target=_monitor_group, args=(app.port, app.token, job["job_serial"], n, ready, results))
               for n in shares if n]
    for w in workers:
        w.start()
    assert sum(ready.get(timeout=120) for _ in workers) == monitors
    execution = app.post(f"/api/jobs/{job['job_serial']}/execute")
    arrivals = [a for _ in workers for a in results.get(timeout=600)]
    for w in workers:
        w.join(30)
    recorded = _recorded_at(app, execution["execution_serial"])
    return [at - recorded[seq] for at, seq in arrivals], len(recorded)


def resume(app: Stack, job: dict, cut: int, away: float) -> tuple[list[int], int]:
    """The seqs one client received across a disconnect, and how many the execution committed."""
    execution = app.post(f"/api/jobs/{job['job_serial']}/execute")
    serial = execution["execution_serial"]
    received: list[int] = []
    ws = _connect(app.port, app.token, f"execution_serial={serial}&since=0")
    while len(received) < cut:
        received.append(json.loads(ws.recv())["data"]["seq"])
    ws.close()
    time.sleep(away)  # the disconnect being measured, not a synchronisation
    ws = _connect(app.port, app.token, f"execution_serial={serial}&since={received[-1]}")
    while True:
        event = json.loads(ws.recv())
        received.append(event["data"]["seq"])
        if event["type"] == "execution_completed":
            break
    ws.close()
    return received, len(_recorded_at(app, serial))


def _ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--monitors", type=int, default=200)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--branches", type=int, default=100)
    parser.add_argument("--resume-branches", type=int, default=1000)
    parser.add_argument("--cut", type=int, default=200)
    parser.add_argument("--away", type=float, default=5.0)
    args = parser.parse_args()
    # a WebSocket holds a web thread: room for every monitor on the two web processes
    threads = str(max(64, args.monitors // 2 + 16))
    with Stack(env={"WEB_THREADS": threads}) as app:
        ids = [app.post("/api/targets", {"name": f"local-{i}", "connection": "local"})["id"]
               for i in range(max(args.branches, args.resume_branches))]
        watched = _job(app, "watched", ids[:args.branches], "sleep 0.2")
        lone, _ = latency(app, watched, 1, 1)
        many, per_monitor = latency(app, watched, args.monitors, args.client_procs)
        print(f"{args.monitors} monitors x {per_monitor} events of a {args.branches}-branch execution: "
              f"commit -> client p50 {_ms(many, 50):.1f} ms, p99 {_ms(many, 99):.1f} ms "
              f"(one monitor: p50 {_ms(lone, 50):.1f} ms, p99 {_ms(lone, 99):.1f} ms; target p99 < 50 ms)")
        paced = _job(app, "paced", ids[:args.resume_branches], "sleep 0.05", max_concurrency="50")
        received, committed = resume(app, paced, args.cut, args.away)
        exact = received == list(range(1, committed + 1))
        print(f"resume after {args.away:.0f} s away from a {args.resume_branches}-branch execution: received "
              f"{len(received)} events ({len(set(received))} distinct), committed {committed}: "
              f"{'exact' if exact else 'NOT EXACT'}")


if __name__ == "__main__":
    main()
