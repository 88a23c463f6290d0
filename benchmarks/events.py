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
import json
import multiprocessing
import selectors
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


def _monitor_group(port: int, token: str, job_serial: str, count: int, ready, results) -> None:
    """A process of monitors: every socket read as its frames arrive; (arrival, seq) per event."""
    sockets = [_connect(port, token, f"job_serial={job_serial}") for _ in range(count)]
    selector = selectors.DefaultSelector()
    for ws in sockets:
        selector.register(ws.sock, selectors.EVENT_READ, ws)
    ready.put(count)
    arrivals: list[tuple[float, int]] = []
    open_sockets = len(sockets)
    while open_sockets:
        for key, _ in selector.select(timeout=300):
            ws = key.data
            event = json.loads(ws.recv())
            arrivals.append((time.time(), event["data"]["seq"]))
            if event["type"] == "execution_completed":
                selector.unregister(ws.sock)
                ws.close()
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
