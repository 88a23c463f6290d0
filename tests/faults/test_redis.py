"""Redis (the broker) SIGKILLed and started again empty: an execute while it is down still commits
(201) and its branches run once Redis is back; branches whose messages died with Redis are sent
again within seconds, and nothing runs twice."""
from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    DISPATCH_GRACE_SECONDS,
    SWEEP_INTERVAL_SECONDS,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_redis_down_at_execute_still_commits_and_every_branch_runs_once_when_it_is_back(
        new_case, platform, fleet, redis_server):
    case = new_case("redis-down-at-execute")
    platform.start_worker("fault-redis-exec")
    job = case.job("echo ran-{run}", fleet.pick(40, 10))

    redis_server.kill()
    try:
        response = case.api.request("POST", f"/api/jobs/{job['job_serial']}/execute")
    finally:
        redis_server.start()
    back = time.monotonic()
    assert response.status_code == 201, f"execute with Redis down -> {response.status_code} {response.text}"
    serial = response.json()["execution_serial"]
    case.record(job, serial)

    bound = DISPATCH_GRACE_SECONDS + SWEEP_INTERVAL_SECONDS + 4.0
    watch, completed = case.watch_completed([serial], 10, bound, since=back, what="after Redis came back")
    case.figure(f"execute with Redis down -> 201; {completed}/10 completed {watch.slowest:.1f} s after Redis "
                f"was back (bound {bound:g} s = DISPATCH_GRACE + sweep + 4)")
    case.check_invariants()
    case.finish()


def test_redis_killed_with_branches_queued_runs_every_branch_once_within_seconds_of_its_return(
        new_case, platform, fleet, redis_server):
    case = new_case("redis-killed-with-queue")
    platform.start_worker("fault-redis-queue", concurrency=2)
    jobs = [case.job("sleep 0.5", fleet.pick(40, 10)) for _ in range(3)]
    serials = [case.execute(job)["execution_serial"] for job in jobs]
    wait_for(lambda: case.marker_count() >= 2, 20, interval=0.02, message="the first branches to start",
             describe=case.describe)

    redis_server.kill()
    queued = 30 - case.marker_count()
    redis_server.start()
    back = time.monotonic()
    case.check(queued >= 20, f"only {queued} branches were still queued when Redis died: not the case asked for")

    run_time = 30 * 0.5 / 2
    bound = 10.0 + run_time
    watch, completed = case.watch_completed(serials, 30, bound, since=back,
                                            what="queued when Redis died, after it came back empty")
    case.figure(f"Redis killed with {queued} of 30 branches not started; {completed}/30 completed "
                f"{watch.slowest:.1f} s after it was back (bound {bound:g} s = 10 + {run_time:g} s of running)")
    case.check_invariants()
    case.finish()

