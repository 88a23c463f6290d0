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


def _names_group(result_error: str) -> bool:
    return bool(re.search(r"process group", result_error, re.IGNORECASE))


def test_the_only_worker_killed_fails_its_branches_and_the_next_worker_kills_the_orphans(
        new_case, platform, fleet):
    case = new_case("only-worker-killed")
    worker = platform.start_worker("fault-only", concurrency=10)
    token = case.sleep_token()
    targets = fleet.pick(40, 10)
    # each sleep carries its target's address in its command line, so /proc says whose it is
    body = f"sleep 30 {token}$(echo $SSH_CONNECTION | cut -d' ' -f3 | tr -d .)"
    serial = case.execute(case.job(body, targets))["execution_serial"]
    case.wait_running([serial])
    assert len(case.remote_pids(token)) >= 10, "the remote sleeps are not visible in /proc"

    # the heartbeat writes each action's process group as soon as its PID arrives (a few ms); a worker
    # dying inside that window leaves its command unknown, which the README states
    case.wait_remote_pids_recorded([serial], 10)
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

    def orphans_left() -> list[str]:
        return [t["ip_address"] for t in targets if case.remote_pids(token + t["ip_address"].replace(".", ""))]

    platform.start_worker("fault-next")
    _, elapsed = case.soft_wait(lambda: not orphans_left(), ORPHAN_KILL_BOUND,
                                "the orphaned remote sleeps to be killed by the next worker")
    left = orphans_left()
    case.check(not left, f"orphaned sleeps still running on {left}")
    case.figure(f"orphaned remote sleeps killed {took(elapsed)} after the next worker was ready "
                f"(bound {ORPHAN_KILL_BOUND:g} s); {10 - len(left)}/10 gone")

    def errors() -> dict[str, str]:
        return {b["branch_serial"]: (case.branch(b["branch_serial"]) or {}).get("result_error") or ""
                for b in watch.branches.values()}

    def all_name_the_group() -> dict[str, str] | None:
        found = errors()
        return found if all(_names_group(e) for e in found.values()) else None

    named, _ = case.soft_wait(all_name_the_group, 5, "every branch's result_error to mention the remote process group")
    if named is None:
        silent = {serial: e[:100] for serial, e in errors().items() if not _names_group(e)}
        case.check(False, f"result_error without the remote process group: {silent}")
    else:
        case.figure(f"result_error: {next(iter(named.values()))[:160]!r}")
    case.check_invariants()
    case.finish()


def test_one_of_two_workers_killed_loses_only_its_branches_and_the_survivor_kills_its_orphans(
        new_case, platform, fleet):
    case = new_case("one-of-two-workers-killed")
    # Who runs what is made certain, not guessed: the doomed worker (5 threads) is alone when job A's
    # 5 branches are executed, so it holds all of them; the survivor (8 threads, 3 left free for the
    # orphan kills) starts afterwards and takes job B's.
    doomed = platform.start_worker("fault-doomed", concurrency=5)
    doomed_targets, survivor_targets = fleet.pick(40, 5), fleet.pick(45, 5)
    token = case.sleep_token()
    doomed_serial = case.execute(case.job(f"sleep 30 {token}", doomed_targets))["execution_serial"]
    case.wait_running([doomed_serial])
    survivor = platform.start_worker("fault-survivor", concurrency=8)
    survivor_serial = case.execute(case.job("sleep 8; echo survived", survivor_targets))["execution_serial"]
    case.wait_running([survivor_serial])

    platform.kill(doomed)
    killed_at = time.monotonic()

    def orphaned() -> list[int] | None:
        """The doomed worker's remote commands, once every one has lost its SSH session."""
        pids = case.remote_pids(token)
        return pids if pids and all(is_orphan(p) for p in pids) else None

    orphans, _ = case.soft_wait(orphaned, 5, "the doomed worker's SSH sessions to end")
    case.check(len(orphans or []) >= 5, f"{len(orphans or [])} orphaned remote processes, expected the doomed "
                                        "worker's 5 sleeps (and their shells)")

    lost_watch = case.watch([doomed_serial], WORKER_LOST_BOUND + 7, since=killed_at, done=_lost,
                            message="the doomed worker's branches to end worker_lost")
    if lost_watch.complete:
        case.check_bound("worker_lost of the doomed worker's branches", lost_watch.slowest, WORKER_LOST_BOUND)
    lost = sum(_lost(b) for b in lost_watch.branches.values())
    case.figure(f"{lost}/5 of the killed worker's branches worker_lost "
                f"{took(lost_watch.slowest if lost_watch.complete else None)} (bound {WORKER_LOST_BOUND:g} s)")

    _, elapsed = case.soft_wait(lambda: not case.remote_pids(token), ORPHAN_KILL_BOUND,
                                "the survivor to kill the dead worker's orphaned sleeps")
    case.figure(f"orphans of the killed worker killed {took(elapsed)} after worker_lost was seen "
                f"(bound {ORPHAN_KILL_BOUND:g} s; they would have slept 30 s)")

    done = case.watch([survivor_serial], 20, since=killed_at)
    completed = sum(b["status"] == "completed" for b in done.branches.values())
    case.check(completed == 5, f"the survivor's branches: {done.tally()}")
    case.figure(f"{completed}/5 of the survivor's branches completed, {done.slowest:.1f} s after the kill")
    case.check(survivor.running(), f"the survivor exited\n{survivor.logs()}")
    case.check_invariants()
    case.finish()
