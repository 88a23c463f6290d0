"""Rollout brakes on the Procfile stack, each figure beside its baseline from the same run:

1. 1,000 local-target branches (`true`) with `max_concurrency: "50"` against the same with no limit
   (execute → execution_completed on the WebSocket; alternated, best of --rounds each).
2. An exclusive host (`max_concurrent_runs: 1`): --queued executions of `true` queued on it at
   once; for each, the time from the previous branch's completed_at to its started_at (a slot
   freeing to the next waiting branch starting), p50/p99.
3. Idle CPU: while --queued branches wait behind a `sleep` on that exclusive host, the CPU seconds
   the whole stack (web, worker, beat) burns per wall second, beside the same idle stack's.

    .venv/bin/python -m benchmarks.rollout --local 1000 --queued 200
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime

from benchmarks.fanout import run_execution
from benchmarks.stack import Stack
from tests.processes import descendants

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _job(app: Stack, name: str, target_ids: list[int], command: str = "true", **extra: object) -> dict:
    return app.post("/api/jobs", {"name": name, "target_ids": target_ids, **extra, "actions": [
        {"action_type": "command", "action_name": "step", "action_parameters": {"command": command}}]})


def _cpu_seconds(root: int) -> float:
    total = 0
    for pid in [root, *descendants(root)]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def _cpu_rate(app: Stack, seconds: float) -> float:
    assert app.proc is not None
    before = _cpu_seconds(app.proc.pid)
    time.sleep(seconds)
    return (_cpu_seconds(app.proc.pid) - before) / seconds


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def concurrency_cost(app: Stack, branches: int, rounds: int) -> tuple[float, float]:
    ids = [app.post("/api/targets", {"name": f"local-{i}", "connection": "local"})["id"] for i in range(branches)]
    free = _job(app, "no-limit", ids)
    limited = _job(app, "limited", ids, max_concurrency="50")
    times: dict[str, list[float]] = {"free": [], "limited": []}
    for _ in range(rounds):
        for name, job in (("free", free), ("limited", limited)):
            elapsed, data = run_execution(app, job["job_serial"])
            assert data["status"] == "completed", data
            times[name].append(elapsed)
    return min(times["free"]), min(times["limited"])


def exclusive_handoff(app: Stack, queued: int) -> tuple[list[float], float, float]:
    host = app.post("/api/targets", {"name": "exclusive", "connection": "local", "max_concurrent_runs": 1})
    idle = _cpu_rate(app, 5.0)
    blocker = _job(app, "blocker", [host["id"]], command="sleep 25")  # outlasts queuing and measuring
    quick = _job(app, "quick", [host["id"]])
    app.post(f"/api/jobs/{blocker['job_serial']}/execute")
    serials = [app.post(f"/api/jobs/{quick['job_serial']}/execute")["execution_serial"] for _ in range(queued)]
    waiting = _cpu_rate(app, 5.0)  # every quick branch waits behind the sleep
    deadline = time.monotonic() + 300
    while True:
        last = app.http.get(f"/api/executions/serial/{serials[-1]}").json()
        if last["status"] != "running":
            break
        assert time.monotonic() < deadline, "the queued executions did not finish"
        time.sleep(0.5)
    branches = []
    for serial in serials:
        branch = app.http.get(f"/api/executions/serial/{serial}").json()["branches"][0]
        assert branch["status"] == "completed", branch
        branches.append(branch)
    ordered = sorted(branches, key=lambda b: _when(b["started_at"]))
    gaps = [(_when(b["started_at"]) - _when(a["completed_at"])).total_seconds() * 1000
            for a, b in zip(ordered, ordered[1:], strict=False)]
    overlaps = sum(1 for g in gaps if g < 0)
    assert overlaps == 0, f"{overlaps} branches started before the previous one ended on an exclusive host"
    return gaps, idle, waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", type=int, default=1000, help="local-target branches for the concurrency run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each (no limit, limit 50), best taken")
    parser.add_argument("--queued", type=int, default=200, help="executions queued on the exclusive host")
    args = parser.parse_args()
    with Stack(env={"WEB_WORKERS": "1"}) as app:
        free, limited = concurrency_cost(app, args.local, args.rounds)
        print(f"{args.local} local branches: no limit {free:.2f} s, max_concurrency 50 {limited:.2f} s "
              f"-> limit costs {100 * (limited / free - 1):+.1f} % (target < 10 %)")
        gaps, idle, waiting = exclusive_handoff(app, args.queued)
        quantiles = statistics.quantiles(gaps, n=100)
        print(f"exclusive host, {args.queued} executions queued: slot freed -> next branch started "
              f"p50 {statistics.median(gaps):.1f} ms, p99 {quantiles[98]:.1f} ms (target < 50 ms)")
        print(f"stack CPU while {args.queued} branches wait: {waiting:.3f} CPU-s/s, idle stack {idle:.3f} CPU-s/s")


if __name__ == "__main__":
    main()
