"""Links to targets cut with nftables while the platform works: the cut itself checked on a live
session first, then a command whose link dies (with and without an action timeout), a pooled
connection whose host went dark, and a cancel that cannot reach the host."""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests.faults.harness import (
    SSH_CONNECT_TIMEOUT,
    SSH_KEEPALIVE_SECONDS,
    cut_links,
    nft_tables,
    took,
)

pytestmark = pytest.mark.slow

LINK_LOST_BOUND = 3 * SSH_KEEPALIVE_SECONDS + 3.0  # three unanswered keepalives, plus slack


def test_a_link_cut_stalls_a_live_session_and_its_table_is_gone_afterwards(fault_sshd):
    server = fault_sshd[1]
    address = "127.0.0.59"
    with socket.create_connection((address, server.port), timeout=3) as live:
        assert live.recv(256).startswith(b"SSH-"), "sshd did not greet before the cut"
        with cut_links((address, server.port)) as cut:
            assert any(cut.table in line for line in nft_tables()), nft_tables()
            live.sendall(b"SSH-2.0-fault-probe\r\n")  # sshd answers this with its KEXINIT at once
            live.settimeout(0.7)
            with pytest.raises(TimeoutError):
                live.recv(4096)
            with pytest.raises(OSError):
                socket.create_connection((address, server.port), timeout=0.7).close()
        # the link is back: the stalled bytes are retransmitted and sshd's answer arrives
        live.settimeout(10)
        assert live.recv(4096), "the session never resumed after the cut was removed"
    assert not any(cut.table in line for line in nft_tables()), nft_tables()


def test_a_target_cut_mid_command_fails_the_branch_as_connection_lost(new_case, platform, fleet):
    case = new_case("target-cut-mid-command")
    platform.start_worker("fault-cut")
    plain_target, timed_target = fleet.by_address("127.0.0.50"), fleet.by_address("127.0.0.51")
    token = case.sleep_token()
    plain = case.execute(case.job(f"sleep 60 {token}", [plain_target]))["execution_serial"]
    timed = case.execute(case.job(f"sleep 60 {token}", [timed_target], timeout=30))["execution_serial"]
    case.wait_running([plain, timed])

    with cut_links(*[(t["ip_address"], t["port"]) for t in (plain_target, timed_target)]) as cut:
        watch = case.watch([plain, timed], LINK_LOST_BOUND + 8, since=cut.at)

    for serial, label in ((plain, "no timeout"), (timed, "timeout_seconds 30")):
        branch = next(b for b in watch.branches.values() if b["branch_serial"].startswith(serial))
        elapsed = watch.times.get(branch["branch_serial"])
        case.check((branch["status"], branch["error_type"]) == ("failed", "connection_lost"),
                   f"{label}: branch {branch['branch_serial']} ended {branch['status']}/{branch['error_type']}, "
                   "expected failed/connection_lost")
        if elapsed is not None:
            case.check_bound(f"{label}: connection_lost", elapsed, LINK_LOST_BOUND)
        case.figure(f"{label}: {branch['status']}/{branch['error_type']} "
                    f"{took(elapsed)} after the cut (bound {LINK_LOST_BOUND:g} s)")
    case.check_invariants()
    case.finish()


def test_a_pooled_connection_whose_host_went_dark_fails_within_one_connect_timeout(new_case, platform, fleet):
    case = new_case("pooled-host-dark")
    platform.start_worker("fault-pool")
    target = fleet.by_address("127.0.0.52")
    first = case.execute(case.job("true", [target]))["execution_serial"]
    warm = case.watch([first], 30)
    assert [b["status"] for b in warm.branches.values()] == ["completed"], case.describe()
    second_job = case.job("true", [target])
    bound = SSH_CONNECT_TIMEOUT + 2.0

    with cut_links((target["ip_address"], target["port"])):
        started = time.monotonic()
        second = case.execute(second_job)["execution_serial"]
        watch = case.watch([second], bound + 2 * SSH_CONNECT_TIMEOUT + 5, since=started)

    (branch,) = watch.branches.values()
    elapsed = watch.times.get(branch["branch_serial"])
    case.check(branch["status"] == "failed" and branch["error_type"] in ("unreachable", "connection_lost"),
               f"second run ended {branch['status']}/{branch['error_type']}, expected failed/unreachable "
               "or failed/connection_lost")
    if elapsed is not None:
        case.check_bound("the run on the dark host", elapsed, bound)
    case.check(case.marker_count(second_job["run_id"]) == 0, "the command reached a host whose link was cut")
    case.figure(f"second run {branch['status']}/{branch['error_type']} "
                f"{took(elapsed)} after execute "
                f"(bound {bound:g} s = SSH_CONNECT_TIMEOUT + 2)")
    case.check_invariants()
    case.finish()


def test_cancel_on_a_dead_link_ends_the_branch_cancelled_at_once(new_case, platform, fleet):
    case = new_case("cancel-dead-link")
    platform.start_worker("fault-cancel")
    target = fleet.by_address("127.0.0.53")
    token = case.sleep_token()
    serial = case.execute(case.job(f"sleep 300 {token}", [target]))["execution_serial"]
    case.wait_running([serial])
    bound = 3.0

    with cut_links((target["ip_address"], target["port"])):
        started = time.monotonic()
        case.api.call("POST", f"/api/executions/serial/{serial}/cancel", 200)
        watch = case.watch([serial], bound + 10, since=started)

    (branch,) = watch.branches.values()
    elapsed = watch.times.get(branch["branch_serial"])
    case.check(branch["status"] == "cancelled",
               f"branch ended {branch['status']}/{branch['error_type']}, expected cancelled")
    if elapsed is not None:
        case.check_bound("cancel on a dead link", elapsed, bound)
    detail = case.branch(branch["branch_serial"]) or {}
    error = detail.get("result_error") or ""
    says_lost = re.search(r"(link|connection)\b.*\blost|\blost\b.*\b(link|connection)", error,
                          re.IGNORECASE | re.DOTALL)
    case.check(bool(says_lost), f"result_error does not say the link is lost: {error!r}")
    case.figure(f"cancel -> {branch['status']} {took(elapsed)} "
                f"(bound {bound:g} s); result_error {error[:120]!r}")
    case.check_invariants()
    case.finish()
