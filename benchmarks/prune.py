"""The API's read latency while retention prunes the history of a million branches, against idle.

Starts gunicorn as read_api does on DATABASE_URL (filled by `benchmarks.seed_history --details`: outputs,
steps and events on every branch), sends a mix of reads one request at a time before anything else
runs, then starts `opsconductor prune --older-than AGE` as a process of its own (the code and batches
of the maintenance loop's hourly pass) and sends the same mix until the prune is done, pausing the
prune (SIGSTOP) every other --window seconds: the requests sent while it is paused are the idle ones,
taken under the same background load as the others (on a shared machine, the load of a minute before
is no baseline). Prints p50/p99 per endpoint before, idle and while pruning, the p99 ratio (target:
under 2x idle), the prune's running time and rows per second, and the average branch row before and
after. --window 0 prunes through and compares with the requests before.

    DATABASE_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/opsc_bench \\
        .venv/bin/python -m benchmarks.seed_history --details --reset
    DATABASE_URL=... .venv/bin/python -m benchmarks.prune [--older-than 1h] [--window 5]

The prune cannot be undone: seed again (--reset) before the next run. Exits 1 when a ratio misses.
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from benchmarks.read_api import Client, percentile, sample, start_gunicorn
from benchmarks.stack import free_port
from common.db import make_engine

BIN = Path(sys.executable).parent
TARGET_RATIO = 2.0

Request = Callable[[random.Random], str]


def endpoints(data: dict[str, list[str]]) -> dict[str, Request]:
    def pick(key: str) -> Callable[[random.Random], str]:
        return lambda rng: rng.choice(data[key])

    execution, job, target = pick("executions"), pick("jobs"), pick("targets")
    return {
        "GET /api/executions/serial/{serial}": lambda r: f"/api/executions/serial/{execution(r)}",
        "GET /api/analytics/executions 90d by day": lambda r: "/api/analytics/executions?period=90d&group_by=day",
        "GET /api/analytics/jobs/{serial}/metrics 90d": lambda r: f"/api/analytics/jobs/{job(r)}/metrics?period=90d",
        "GET /api/targets/{serial}/performance?days=30": lambda r: f"/api/targets/{target(r)}/performance?days=30",
    }


def measure(client: Client, cases: dict[str, Request], rng: random.Random, timings: dict[str, list[float]],
            until: Callable[[], bool]) -> None:
    """The endpoints in turn, one request at a time, each timing (ms) appended, until `until()`."""
    while not until():
        for name, path in cases.items():
            began = time.perf_counter()
            status, body = client.call("GET", path(rng))
            timings[name].append((time.perf_counter() - began) * 1000)
            if status != 200:
                raise SystemExit(f"{name}: HTTP {status} {body[:200]!r}")


def window(began: float, seconds: float, pruner: subprocess.Popen | None) -> Callable[[], bool]:
    """An `until` true `seconds` after `began` (0: never) or once `pruner` has exited."""
    return lambda: ((pruner is not None and pruner.poll() is not None)
                    or (seconds > 0 and time.monotonic() - began > seconds))


def rounds(n: int) -> Callable[[], bool]:
    """An `until` that is true after n calls."""
    calls = iter(range(n + 1))
    return lambda: next(calls) >= n


def row_sizes(database_url: str) -> dict[str, float | int]:
    """Average bytes of a branch row (its output inline or TOASTed), and the rows of the pruned kinds."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            def one(sql: str) -> float | int:
                return conn.execute(text(sql)).scalar_one()

            return {
                "branch_row_bytes": float(one("SELECT avg(pg_column_size(b.*)) FROM branches b")),
                "outputs": one("SELECT count(*) FROM branches WHERE result_output IS NOT NULL "
                               "OR result_error IS NOT NULL"),
                "steps": one("SELECT count(*) FROM branch_steps"),
                "events": one("SELECT count(*) FROM execution_events"),
            }
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--older-than", default="1h", help="the prune's age (default 1h: nearly everything)")
    parser.add_argument("--idle-requests", type=int, default=500, help="requests per endpoint before the prune")
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds the prune runs, then is paused, in turn (0: runs through, idle = before)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or DATABASE_URL is required")
    rng = random.Random(args.seed)
    data = sample(args.database_url, rng)
    before = row_sizes(args.database_url)
    port = free_port()
    username, password = "bench-admin", secrets.token_urlsafe(16)
    server = start_gunicorn(args.database_url, port, args.workers, args.threads, username, password)
    pruner: subprocess.Popen | None = None
    try:
        client = Client.signed_in(port, username, password)
        cases = endpoints(data)
        measure(client, cases, rng, {name: [] for name in cases}, rounds(10))  # warm-up
        before_idle: dict[str, list[float]] = {name: [] for name in cases}
        paused: dict[str, list[float]] = {name: [] for name in cases}
        busy: dict[str, list[float]] = {name: [] for name in cases}
        loads = [os.getloadavg()[0]]
        measure(client, cases, rng, before_idle, rounds(args.idle_requests))
        loads.append(os.getloadavg()[0])

        env = {**os.environ, "DATABASE_URL": args.database_url, "OPSCONDUCTOR_EMBEDDED": "0",
               "JWT_SECRET_KEY": secrets.token_urlsafe(48), "OPSCONDUCTOR_SECRET_KEY": secrets.token_urlsafe(48),
               "LOG_LEVEL": "WARNING"}
        pruner = subprocess.Popen([str(BIN / "opsconductor"), "prune", "--older-than", args.older_than], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        prune_seconds = 0.0
        while pruner.poll() is None:
            began = time.monotonic()
            measure(client, cases, rng, busy, window(began, args.window, pruner))
            prune_seconds += time.monotonic() - began
            if args.window and pruner.poll() is None:
                pruner.send_signal(signal.SIGSTOP)
                measure(client, cases, rng, paused, window(time.monotonic(), args.window, None))
                pruner.send_signal(signal.SIGCONT)
        loads.append(os.getloadavg()[0])
        output = pruner.stdout.read() if pruner.stdout else ""
        if pruner.returncode != 0:
            raise SystemExit(f"prune failed ({pruner.returncode}):\n{output}")
        client.close()
    finally:
        if pruner is not None and pruner.poll() is None:
            pruner.kill()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    after = row_sizes(args.database_url)

    print(f"data: {int(data['counts'][2]):,} executions, {int(data['counts'][3]):,} branches; gunicorn gthread "
          f"--workers {args.workers} --threads {args.threads}; one request at a time, endpoints in turn; "
          f"load average {loads[0]:.1f} -> {loads[1]:.1f} idle, -> {loads[2]:.1f} pruning")
    if args.window:
        print(f"the prune alternately runs and is paused (SIGSTOP) for {args.window:g} s: idle = requests while it "
              f"is paused, under the same background load of the machine")
    print(output.rstrip())
    removed = sum(before[k] - after[k] for k in ("outputs", "steps", "events"))
    print(f"prune --older-than {args.older_than}: {prune_seconds:.1f} s, {removed / prune_seconds:,.0f} rows/s "
          f"(outputs cleared + steps and events deleted); average branch row {before['branch_row_bytes']:.0f} -> "
          f"{after['branch_row_bytes']:.0f} bytes")
    idle = paused if args.window else before_idle
    width = max(len(name) for name in cases)
    print(f"{'endpoint':<{width}}  {'before p50/p99':>14}  {'idle n':>6}  {'p50':>5}  {'p99':>5}  {'pruning n':>9}  "
          f"{'p50':>5}  {'p99':>5}  {'p99 ratio':>9}  ok")
    missed = 0
    for name in cases:
        quiet, loaded = idle[name], busy[name]
        ratio = percentile(loaded, 99) / percentile(quiet, 99)
        verdict = "yes" if ratio < TARGET_RATIO and len(loaded) >= 100 else "NO"
        missed += verdict == "NO"
        first = f"{statistics.median(before_idle[name]):.1f}/{percentile(before_idle[name], 99):.1f}"
        print(f"{name:<{width}}  {first:>14}  {len(quiet):>6}  {statistics.median(quiet):>5.1f}  "
              f"{percentile(quiet, 99):>5.1f}  {len(loaded):>9}  {statistics.median(loaded):>5.1f}  "
              f"{percentile(loaded, 99):>5.1f}  {ratio:>9.2f}  {verdict}")
    print(f"(ms; before: {args.idle_requests} requests each before the prune started; target: p99 while pruning "
          f"< {TARGET_RATIO:.0f}x idle p99, over at least 100 requests)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
