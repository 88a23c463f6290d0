"""A burst, not a fault: 100 executes posted at the same instant (10 jobs, 10 times each, 10 targets
apiece) all commit with unique serials, and each of the 1,000 branches runs exactly once."""
from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.faults.harness import ACTIVE

pytestmark = pytest.mark.slow

JOBS = 10
EXECUTES_PER_JOB = 10
BOUND_SECONDS = 45.0


def test_a_hundred_concurrent_executes_on_ten_targets_run_a_thousand_branches_exactly_once(
        new_case, platform, fleet, fault_api):
    case = new_case("hundred-concurrent-executes")
    platform.start_worker("fault-burst", concurrency=64)
    targets = fleet.pick(40, 10)
    jobs = [case.job("echo ran", targets) for _ in range(JOBS)]
    posts = [job for job in jobs for _ in range(EXECUTES_PER_JOB)]
    barrier = threading.Barrier(len(posts) + 1)
    answers: list[tuple[int, dict | str] | None] = [None] * len(posts)

    def post(index: int) -> None:
        with httpx.Client(base_url=platform.base_url, timeout=60, headers=fault_api.headers) as http:
            barrier.wait(timeout=30)
            try:
                response = http.post(f"/api/jobs/{posts[index]['job_serial']}/execute")
                created = response.status_code == 201
                answers[index] = (response.status_code, response.json() if created else response.text)
            except httpx.HTTPError as exc:
                answers[index] = (0, repr(exc))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(posts))]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=90)
    posted_in = time.monotonic() - began

    refused = [(posts[i]["job_serial"], a) for i, a in enumerate(answers) if a is None or a[0] != 201]
    assert not refused, f"{len(refused)} executes not answered 201: {refused[:5]}"
    bodies = [a[1] for a in answers if a is not None and isinstance(a[1], dict)]
    for index, body in enumerate(bodies):
        case.record(posts[index], body["execution_serial"])

    def all_done() -> dict[str, list[dict]] | None:
        lists = {}
        for job in jobs:
            listed = case.api.poll(f"/api/jobs/{job['job_serial']}/executions?limit=50")
            if listed is None or any(b["status"] in ACTIVE for ex in listed for b in ex["branches"]):
                return None
            lists[job["job_serial"]] = listed
        return lists

    # each poll reads 10 lists of 100 branches: every half second, or the polling competes with the work
    lists, _ = case.soft_wait(all_done, BOUND_SECONDS + 30, "all 1,000 branches to end", interval=0.5)
    finished_in = time.monotonic() - began
    lists = lists or {job["job_serial"]: case.api.poll(f"/api/jobs/{job['job_serial']}/executions?limit=50") or []
                      for job in jobs}
    executions = [ex for listed in lists.values() for ex in listed]
    branches = [b for ex in executions for b in ex["branches"]]
    completed = sum(b["status"] == "completed" for b in branches)
    tally = Counter(f"{b['status']}/{b['error_type']}" for b in branches)
    case.check(completed == 1000, f"{completed}/1000 branches completed: {dict(tally)}")
    case.check(len({ex["execution_serial"] for ex in executions}) == 100 == len(executions),
               f"{len(executions)} executions, {len({ex['execution_serial'] for ex in executions})} distinct serials")
    for job_serial, listed in lists.items():
        numbers = sorted(ex["execution_number"] for ex in listed)
        case.check(numbers == list(range(1, EXECUTES_PER_JOB + 1)), f"{job_serial}: execution numbers {numbers}")
    case.check(len({b["branch_serial"] for b in branches}) == len(branches) == 1000,
               f"{len(branches)} branches, {len({b['branch_serial'] for b in branches})} distinct serials")
    if lists:
        case.check_bound("1,000 branches from the burst", finished_in, BOUND_SECONDS)
    markers = case.markers()
    case.figure(f"100 concurrent executes answered 201 in {posted_in:.1f} s; {completed}/1000 branches completed "
                f"{finished_in:.1f} s after the burst (bound {BOUND_SECONDS:g} s); {sum(markers.values())} marker "
                f"lines for {len(markers)} (job, target) pairs")
    case.check_invariants()
    case.finish()
