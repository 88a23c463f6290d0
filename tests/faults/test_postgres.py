"""PostgreSQL restarted or stopped under the platform: a fast restart while branches run loses
nothing; a ten-second outage while branches finish still ends every branch completed with its
output and every event published; reads during an outage answer 503 with Retry-After."""
from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import EventSocket, ws_url
from tests.faults.harness import wait_for

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 10.0


def test_a_fast_restart_while_branches_run_loses_nothing(new_case, platform, fleet, pg_cluster):
    case = new_case("postgres-restarted")
    platform.start_worker("fault-pg-restart", concurrency=10)
    serial = case.execute(case.job("sleep 3; echo out-{run}", fleet.pick(40, 10)))["execution_serial"]
    case.wait_running([serial])

    began = time.monotonic()
    pg_cluster.restart("fast")
    restart_took = time.monotonic() - began

    bound = 3.0 + 5.0  # the rest of the sleep, plus slack
    watch, completed = case.watch_completed([serial], 10, bound, since=began, what="across a fast restart")
    case.figure(f"fast restart took {restart_took:.1f} s; {completed}/10 completed {watch.slowest:.1f} s after it "
                f"began (bound {bound:g} s)")
    case.check_invariants()
    case.finish()


def test_a_ten_second_outage_while_branches_finish_ends_them_completed_with_output_and_events(
        new_case, platform, fleet, pg_cluster, fault_api):
    case = new_case("postgres-down-10s")
    platform.start_worker("fault-pg-outage", concurrency=20)
    token = case.sleep_token()
    job = case.job(f"sleep 2 {token}; echo out-{{run}}", fleet.pick(40, 20))
    with EventSocket(ws_url(platform.base_url, f"job_serial={job['job_serial']}"),
                     headers={"Authorization": f"Bearer {fault_api.token}"}) as socket:
        assert socket.next_json(timeout=10)["type"] == "subscribed"
        serial = case.execute(job)["execution_serial"]
        case.wait_running([serial])

        stopped = time.monotonic()
        pg_cluster.stop("fast")
        wait_for(lambda: not case.remote_pids(token), 10, message="the remote commands to finish during the outage",
                 describe=case.describe)
        # the outage's length is the case's subject, not a synchronisation: hold it for its full ten seconds
        time.sleep(max(0.0, stopped + OUTAGE_SECONDS - time.monotonic()))
        pg_cluster.start()
        back = time.monotonic()

        bound = 10.0
        watch = case.watch([serial], bound + 20, since=back)
        completed = [b for b in watch.branches.values() if b["status"] == "completed"]
        lost = [b for b in watch.branches.values() if b["error_type"] == "worker_lost"]
        case.check(len(completed) == 20, f"{len(completed)}/20 branches completed after the outage: {watch.tally()}")
        case.check(not lost, f"{len(lost)} branches ended worker_lost while their worker was alive")
        if watch.complete:
            case.check_bound("the branches after PostgreSQL came back", watch.slowest, bound)
        run_id = job["run_id"]
        outputs = {b["branch_serial"]: (case.branch(b["branch_serial"]) or {}).get("result_output") or ""
                   for b in completed}
        missing_output = [s for s, output in outputs.items() if f"out-{run_id}" not in output]
        case.check(not missing_output, f"completed without their output: {missing_output}")
        case.figure(f"PostgreSQL down {back - stopped:.1f} s while 20 branches finished: {len(completed)}/20 "
                    f"completed with output {len(outputs) - len(missing_output)}/20, {len(lost)} worker_lost, "
                    f"{watch.slowest:.1f} s after it was back (bound {bound:g} s)")

        try:
            events = socket.collect_until(lambda e: e["type"] == "execution_completed", timeout=15)
        except AssertionError as exc:
            case.failures.append(f"no execution_completed event on the WebSocket: {str(exc)[:1500]}")
            events = []
    published = {e["data"].get("branch_serial") for e in events if e["type"] == "branch_completed"}
    expected = set(watch.branches)
    case.check(expected <= published, f"branch_completed never published for {sorted(expected - published)}")
    case.figure(f"WebSocket: branch_completed for {len(published & expected)}/20 branches, "
                f"execution_completed {'seen' if events else 'missing'}")
    case.check_invariants()
    case.finish()


def test_reads_during_a_database_outage_answer_503_with_retry_after(new_case, pg_cluster, fault_api):
    case = new_case("reads-during-db-outage")
    assert fault_api.request("GET", "/api/jobs").status_code == 200
    pg_cluster.stop("fast")
    try:
        began = time.monotonic()
        response = fault_api.request("GET", "/api/jobs", timeout=30)
        answered = time.monotonic() - began
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        case.check(response.status_code == 503, f"GET /api/jobs with the database down -> {response.status_code} "
                                                f"{response.text[:500]}")
        case.check(isinstance(body, dict) and {"error", "message", "details"} <= set(body),
                   f"not the error envelope: {response.text[:500]}")
        retry_after = response.headers.get("Retry-After", "")
        case.check(retry_after.isdigit() and int(retry_after) >= 1, f"Retry-After header: {retry_after!r}")
    finally:
        pg_cluster.start()
    back = time.monotonic()
    wait_for(lambda: fault_api.request("GET", "/api/jobs").status_code == 200, 10, interval=0.1,
                            message="GET /api/jobs to answer 200 after the restart", describe=case.platform.logs)
    case.figure(f"GET /api/jobs with PostgreSQL down -> {response.status_code} in {answered * 1000:.0f} ms, "
                f"Retry-After {retry_after or 'missing'}; 200 again {time.monotonic() - back:.1f} s after it was back")
    case.finish()
