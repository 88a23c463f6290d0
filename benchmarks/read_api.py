"""Latency of every read endpoint over HTTP, served by gunicorn, on a seeded database.

Starts `gunicorn api.wsgi:app` against DATABASE_URL (filled by benchmarks/seed_history.py), logs in
as a start-up admin, then requests each endpoint many times with random existing serials, one
request at a time, and prints p50/p99 (client-side wall time, body read) against the targets.

    DATABASE_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/opsc_bench \\
        .venv/bin/python -m benchmarks.read_api [--requests 300] [--workers 2]

REDIS_URL is passed through when set (rate-limit storage); the admin's rate limit is raised so the
benchmark measures the endpoints, not the limiter. Exits 1 when a target is missed or a request fails.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from benchmarks.stack import free_port
from common.db import make_engine

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    name: str
    target_ms: float | None  # None: reported, no target
    make: Callable[[random.Random], tuple[str, str, dict | None]]  # -> (method, path, json body)
    requests: int | None = None  # default: --requests


class Client:
    """One keep-alive HTTP/1.1 connection, as a real client would hold; reopened if the server closes it."""

    def __init__(self, port: int):
        self.port = port
        self.headers: dict[str, str] = {}
        self.conn: http.client.HTTPConnection | None = None

    @classmethod
    def signed_in(cls, port: int, username: str, password: str) -> Client:
        client = cls(port)
        status, body = client.call("POST", "/api/auth/login", {"username": username, "password": password})
        if status != 200:
            raise SystemExit(f"login failed: HTTP {status} {body[:200]!r}")
        client.headers["Authorization"] = f"Bearer {json.loads(body)['access_token']}"
        return client

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def start_gunicorn(database_url: str, port: int, workers: int, threads: int, username: str,
                   password: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url,
        "OPSCONDUCTOR_EMBEDDED": "0",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "OPSCONDUCTOR_SECRET_KEY": secrets.token_urlsafe(48),
        "OPSCONDUCTOR_ADMIN_USERNAME": username,
        "OPSCONDUCTOR_ADMIN_PASSWORD": password,
        "RATE_LIMIT_ADMIN": "1000000 per minute",
        "LOG_LEVEL": "WARNING",
    })
    # as the Procfile's `web` process: threaded workers (keep-alive), here without the access log
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(workers),
               "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "api.wsgi:app"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        probe = Client(port)
        try:
            if probe.call("GET", "/healthz")[0] == 200:
                return process
        except OSError:
            pass
        finally:
            probe.close()
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("gunicorn did not answer /healthz within 60 s")


def sample(database_url: str, rng: random.Random) -> dict[str, list[str]]:
    """Random existing serials and names to request (TABLESAMPLE keeps this fast on big tables)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            def column(sql: str) -> list[str]:
                return [r[0] for r in conn.execute(text(sql))]

            data = {
                "executions": column("SELECT execution_serial FROM executions TABLESAMPLE SYSTEM (2) LIMIT 2000"),
                "branches": column("SELECT branch_serial FROM branches TABLESAMPLE SYSTEM (0.5) LIMIT 4000"),
                "jobs": column("SELECT job_serial FROM jobs ORDER BY random() LIMIT 1000"),
                "job_names": column("SELECT name FROM jobs ORDER BY random() LIMIT 1000"),
                "targets": column("SELECT target_serial FROM targets ORDER BY random() LIMIT 500"),
                "target_names": column("SELECT name FROM targets ORDER BY random() LIMIT 500"),
                "counts": [str(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                           for t in ("targets", "jobs", "executions", "branches")],
            }
    finally:
        engine.dispose()
    for key in ("executions", "branches"):
        rng.shuffle(data[key])
    return data


def cases(data: dict[str, list[str]]) -> list[Case]:
    def pick(key: str) -> Callable[[random.Random], str]:
        return lambda rng: rng.choice(data[key])

    execution, branch, job, job_name, target, target_name = (pick(k) for k in (
        "executions", "branches", "jobs", "job_names", "targets", "target_names"))

    def bulk(rng: random.Random) -> tuple[str, str, dict]:
        serials = rng.sample(data["executions"], 300) + rng.sample(data["branches"], min(700, len(data["branches"])))
        rng.shuffle(serials)
        return "POST", "/api/executions/bulk", {"serials": serials}

    def q(value: str) -> str:
        return value.replace(" ", "%20")

    return [
        Case("GET /api/executions/serial/{serial}", 20,
             lambda r: ("GET", f"/api/executions/serial/{execution(r)}", None)),
        Case("GET /api/executions/branch/{serial}", 20, lambda r: ("GET", f"/api/executions/branch/{branch(r)}", None)),
        Case("GET /api/jobs/{serial}/executions", 20, lambda r: ("GET", f"/api/jobs/{job(r)}/executions", None)),
        Case("POST /api/executions/bulk (1,000 serials)", 150, bulk, 100),
        Case("GET search q=<job serial> type=all", 100,
             lambda r: ("GET", f"/api/executions/search?q={job(r)}&type=all", None)),
        Case("GET search q=<execution serial> type=branch", 100,
             lambda r: ("GET", f"/api/executions/search?q={execution(r)}&type=branch", None)),
        Case("GET search q=<job name> type=all", 100,
             lambda r: ("GET", f"/api/executions/search?q={q(job_name(r))}&type=all", None)),
        Case("GET search q=<target name> type=branch", 100,
             lambda r: ("GET", f"/api/executions/search?q={target_name(r)}&type=branch", None)),
        Case("GET search q=J2026 (broad: every 2026 job)", None,
             lambda r: ("GET", f"/api/executions/search?q=J{time.gmtime().tm_year}&type=all", None), 30),
        Case("GET search q=prod (broad: a third of targets)", None,
             lambda r: ("GET", "/api/executions/search?q=prod&type=all", None), 30),
        Case("GET /api/targets/{serial}/performance?days=30", 50,
             lambda r: ("GET", f"/api/targets/{target(r)}/performance?days=30", None)),
        Case("GET /api/targets/{serial}/executions", 50,
             lambda r: ("GET", f"/api/targets/{target(r)}/executions?limit=20&offset={r.choice((0, 0, 100, 500))}",
                        None)),
        Case("GET /api/analytics/executions 90d by day", 300,
             lambda r: ("GET", "/api/analytics/executions?period=90d&group_by=day", None), 50),
        Case("GET /api/analytics/executions 90d by week", 300,
             lambda r: ("GET", "/api/analytics/executions?period=90d&group_by=week", None), 50),
        Case("GET /api/analytics/executions 7d by hour", 300,
             lambda r: ("GET", "/api/analytics/executions?period=7d&group_by=hour", None), 50),
        Case("GET /api/analytics/jobs/{serial}/metrics 90d", 50,
             lambda r: ("GET", f"/api/analytics/jobs/{job(r)}/metrics?period=90d", None)),
    ]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run(client: Client, case: Case, rng: random.Random, requests: int, warmup: int) -> dict:
    timings: list[float] = []
    failures = 0
    for i in range(warmup + requests):
        method, path, body = case.make(rng)
        began = time.perf_counter()
        status, _ = client.call(method, path, body)
        elapsed = (time.perf_counter() - began) * 1000
        if status != 200:
            failures += 1
            print(f"  {case.name}: HTTP {status} for {method} {path[:120]}", file=sys.stderr)
        if i >= warmup:
            timings.append(elapsed)
            if case.target_ms and elapsed > 3 * case.target_ms:
                print(f"  slow: {elapsed:.0f} ms {method} {path[:100]}", file=sys.stderr)
    return {"name": case.name, "n": len(timings), "p50": statistics.median(timings),
            "p99": percentile(timings, 99), "max": max(timings), "target": case.target_ms, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--requests", type=int, default=300, help="timed requests per light endpoint")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile: WEB_WORKERS=2)")
    parser.add_argument("--threads", type=int, default=64, help="threads per worker (Procfile: WEB_THREADS=64)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or DATABASE_URL is required")
    rng = random.Random(args.seed)
    data = sample(args.database_url, rng)
    port = free_port()
    username, password = "bench-admin", secrets.token_urlsafe(16)
    server = start_gunicorn(args.database_url, port, args.workers, args.threads, username, password)
    try:
        client = Client.signed_in(port, username, password)
        print(f"data: {int(data['counts'][0]):,} targets, {int(data['counts'][1]):,} jobs, "
              f"{int(data['counts'][2]):,} executions, {int(data['counts'][3]):,} branches; "
              f"gunicorn gthread --workers {args.workers} --threads {args.threads}; one request at a time, "
              f"keep-alive")
        rows = [run(client, case, rng, case.requests or args.requests, args.warmup) for case in cases(data)
                if args.only in case.name]
        client.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    if not rows:
        raise SystemExit(f"no endpoint matches --only {args.only!r}")
    width = max(len(r["name"]) for r in rows)
    print(f"{'endpoint':<{width}}  {'n':>4}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  {'target':>7}  ok")
    missed = 0
    for r in rows:
        if r["target"] is None:
            target, verdict = "-", "-" if not r["failures"] else "NO"
        else:
            target, verdict = "<" + format(r["target"], ".0f"), "yes" if r["p99"] < r["target"] else "NO"
        verdict = "NO" if r["failures"] else verdict
        missed += verdict == "NO"
        print(f"{r['name']:<{width}}  {r['n']:>4}  {r['p50']:>7.1f}  {r['p99']:>7.1f}  {r['max']:>7.1f}  "
              f"{target:>7}  {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
