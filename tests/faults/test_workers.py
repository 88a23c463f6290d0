"""Workers SIGKILLed mid-command (the whole process group: no warm shutdown, no acks): their branches
end worker_lost within the stated bound even with no worker left (the sweep runs in beat), a second
worker's branches are untouched, and the remote commands the dead worker left running are killed."""
from __future__ import annotations

import re
import time

import pytest

from tests.faults.harness import (
    SWEEP_INTERVAL_SECONDS,
    WORKER_LOST_SECONDS,
    is_orphan,
    took,
)

pytestmark = pytest.mark.slow

WORKER_LOST_BOUND = WORKER_LOST_SECONDS + SWEEP_INTERVAL_SECONDS + 2.0  # + heartbeat age and slack
ORPHAN_KILL_BOUND = 10.0


def _lost(branch: dict) -> bool:
    return branch["status"] == "failed" and branch["error_type"] == "worker_lost"


def test_the_only_worker_killed_fails_its_branches_and_the_next_worker_kills_the_orphans(
        new_case, platform, fleet):
    case = new_case("only-worker-killed")
    worker = platform.start_worker("fault-only", concurrency=10)
    token = case.sleep_token()
    serial = case.execute(case.job(f"sleep 30 {token}", fleet.pick(40, 10)))["execution_serial"]
    case.wait_running([serial])
    assert len(case.remote_pids(token)) >= 10, "the remote sleeps are not visible in /proc"

    platform.kill(worker)
    killed_at = time.monotonic()
    watch = case.watch([serial], WORKER_LOST_BOUND + 7, since=killed_at, done=lambda b: b["status"] != "running",
                       message="every branch to leave running with no worker alive")
    lost = [b for b in watch.branches.values() if _lost(b)]
    case.check(len(lost) == 10, f"with no worker running, {len(lost)}/10 branches ended worker_lost: {watch.tally()}")
    if watch.complete:
        case.check_bound("worker_lost with no worker alive", watch.slowest, WORKER_LOST_BOUND)
    case.figure(f"{len(lost)}/10 branches worker_lost {took(watch.slowest if watch.complete else None)} with no "
                f"worker running (bound {WORKER_LOST_BOUND:g} s)")
    case.check(bool(case.remote_pids(token)), "the remote sleeps ended with the worker: nothing left to test")

    platform.start_worker("fault-next")
    _, elapsed = case.soft_wait(lambda: not case.remote_pids(token), ORPHAN_KILL_BOUND,
                                "the orphaned remote sleeps to be killed by the next worker")
    case.figure(f"orphaned remote sleeps killed {took(elapsed)} after the next worker was ready "
                f"(bound {ORPHAN_KILL_BOUND:g} s)")

    def errors_name_the_group() -> list[str] | None:
        errors = [(case.branch(b) or {}).get("result_error") or "" for b in watch.branches]
        return errors if all(re.search(r"process group", e, re.IGNORECASE) for e in errors) else None

    errors, _ = case.soft_wait(errors_name_the_group, 5, "every branch's result_error to mention the remote "
                                                         "process group")
    if errors:
        case.figure(f"result_error: {errors[0][:160]!r}")
    case.check_invariants()
    case.finish()


def test_one_of_two_workers_killed_loses_only_its_branches_and_the_survivor_kills_its_orphans(
        new_case, platform, fleet):
    case = new_case("one-of-two-workers-killed")
    doomed, survivor = platform.start_workers("fault-doomed", "fault-survivor", concurrency=5)
    token = case.sleep_token()
    # each sleep carries its target's address in its command line, so /proc says whose it is
    body = f"sleep 18 {token}$(echo $SSH_CONNECTION | cut -d' ' -f3 | tr -d .)"
    targets = fleet.pick(40, 10)
    serial = case.execute(case.job(body, targets))["execution_serial"]
    case.wait_running([serial])  # 10 branches, 5 threads each: each worker holds 5

    platform.kill(doomed)
    killed_at = time.monotonic()

    def sleeps() -> dict[str, list[int]]:
        return {t["ip_address"]: case.remote_pids(token + t["ip_address"].replace(".", "")) for t in targets}

    def orphaned() -> set[str] | None:
        """Addresses whose remote sleep lost its SSH session: the doomed worker's branches."""
        found = {a for a, pids in sleeps().items() if pids and all(is_orphan(p) for p in pids)}
        return found if len(found) == 5 else None

    doomed_addresses, _ = case.soft_wait(orphaned, 5, "the doomed worker's 5 SSH sessions to end")
    doomed_addresses = doomed_addresses or set()

    watch = case.watch([serial], WORKER_LOST_BOUND + 7, since=killed_at, count=5, done=_lost,
                       message="5 branches to end worker_lost")
    lost = {case.fleet.address_of(b["target_id"]) for b in watch.branches.values() if _lost(b)}
    case.check(len(lost) == 5, f"{len(lost)} branches worker_lost, expected the doomed worker's 5: {watch.tally()}")
    if doomed_addresses:
        case.check(lost == doomed_addresses, f"worker_lost on {sorted(lost)}, but the doomed worker ran "
                                             f"{sorted(doomed_addresses)}")
    if watch.complete:
        case.check_bound("worker_lost of the doomed worker's branches", watch.slowest, WORKER_LOST_BOUND)
    case.figure(f"{len(lost)}/5 of the killed worker's branches worker_lost "
                f"{took(watch.slowest if watch.complete else None)} (bound {WORKER_LOST_BOUND:g} s)")

    def orphans_gone() -> bool:
        alive = sleeps()
        if not all(alive[a] for a in alive if a not in doomed_addresses):
            # they ended on their own: too late to tell a kill from a natural end
            raise AssertionError("the survivor's sleeps ended before the orphans were killed")
        return not any(alive[a] for a in doomed_addresses)

    if doomed_addresses:
        _, elapsed = case.soft_wait(orphans_gone, ORPHAN_KILL_BOUND, "the survivor to kill the dead worker's orphans")
        case.figure(f"orphans of the killed worker killed {took(elapsed)} after worker_lost was seen "
                    f"(bound {ORPHAN_KILL_BOUND:g} s)")

    done = case.watch([serial], 20, since=killed_at)
    survived = [b for b in done.branches.values() if case.fleet.address_of(b["target_id"]) not in lost]
    case.check(all(b["status"] == "completed" for b in survived),
               f"the survivor's branches: {[(b['branch_serial'], b['status'], b['error_type']) for b in survived]}")
    case.figure(f"{sum(b['status'] == 'completed' for b in survived)}/{len(survived)} of the survivor's branches "
                f"completed ({done.slowest:.1f} s after the kill)")
    case.check(survivor.running(), f"the survivor exited\n{survivor.logs()}")
    case.check_invariants()
    case.finish()
