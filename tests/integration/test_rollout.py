"""Rollout brakes with a real worker on real sshd: an execution's max_concurrency (never more branches
running at once, the next starting as one ends), its max_errors (at exactly the budget it goes on;
one failure more and the queued branches end skipped), and a target's max_concurrent_runs across
executions (two executions on an exclusive host never overlap). Each command writes when it started
and ended on the target, so overlap is read from the target's own clock, not from the database."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.services.rollout import concurrency_limit, error_budget
from tests.integration.engine_helpers import (
    branch_rows,
    command,
    describe_execution,
    execution_row,
    unique,
    wait_execution_done,
)

pytestmark = pytest.mark.usefixtures("default_worker")


@pytest.fixture
def timeline():
    path = Path(f"/tmp/{unique('opsc-rollout')}.log")
    path.touch()
    path.chmod(0o666)
    yield path
    path.unlink(missing_ok=True)


def _timed(timeline: Path, seconds: float, fail_on: str | None = None) -> dict:
    """A command that logs `start|end <time> <branch host:port tag>` around a sleep; exits 1 on `fail_on`."""
    tag = '"$(echo $SSH_CONNECTION | cut -d" " -f3)-$$"'
    fail = f'; case "$SSH_CONNECTION" in *" {fail_on} "*) exit 1;; esac' if fail_on else ""
    return command("timed", f'echo "start $(date +%s.%N) {tag}" >> {timeline}; sleep {seconds}; '
                            f'echo "end $(date +%s.%N) {tag}" >> {timeline}{fail}')


def intervals(timeline: Path) -> list[tuple[float, float]]:
    """(start, end) of each command from its `start|end <time> <tag>` lines."""
    starts: dict[str, float] = {}
    spans = []
    for line in timeline.read_text().splitlines():
        kind, moment, tag = line.split()
        if kind == "start":
            starts[tag] = float(moment)
        else:
            spans.append((starts.pop(tag), float(moment)))
    assert not starts, f"commands that never ended: {starts}"
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end sorts before a start
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.fixture
def six_targets(api, sshd, ssh_credential) -> list[dict]:
    """Six targets on the three sshd addresses (two rows each: targets are rows, not addresses)."""
    return [api.target(ip=ip, port=sshd.port, credential_id=ssh_credential)
            for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4") for _ in range(2)]


def test_limits_round_as_the_readme_says():
    assert [concurrency_limit(s, 10) for s in ("3", "25%", "1%", "100%")] == [3, 3, 1, 10]
    assert [error_budget(s, 15) for s in ("0", "2", "10%", "0%", "100%")] == [0, 2, 1, 0, 15]
    assert concurrency_limit(None, 5) is None and error_budget(None, 5) is None


def test_max_concurrency_never_exceeded_and_the_next_starts_as_one_ends(api, engine_db, six_targets, timeline,
                                                                        default_worker):
    job = api.job([_timed(timeline, 0.6)], [t["id"] for t in six_targets])
    body = api.call("POST", f"/api/jobs/{job['id']}/execute", 201, {"max_concurrency": "2"})
    assert body["max_concurrency"] == "2"
    done = wait_execution_done(engine_db, body["execution_serial"], timeout=30, logs=default_worker.log_tail)
    assert done.status == "completed", describe_execution(engine_db, body["execution_serial"])
    spans = intervals(timeline)
    assert len(spans) == 6 and most_at_once(spans) == 2, spans
    # no waves: with 2 slots and 6 equal commands the whole run takes about 3 commands' time
    assert max(e for _, e in spans) - min(s for s, _ in spans) < 3 * 0.6 + 4.0  # slack for a loaded machine


def test_percentage_concurrency_and_a_job_default(api, engine_db, six_targets, timeline, default_worker):
    job = api.job([_timed(timeline, 0.4)], [t["id"] for t in six_targets], max_concurrency="34%")
    assert job["max_concurrency"] == "34%"
    body = api.execute(job["id"])  # 34% of 6 rounds up to 3
    wait_execution_done(engine_db, body["execution_serial"], timeout=30, logs=default_worker.log_tail)
    assert most_at_once(intervals(timeline)) == 3


@pytest.mark.parametrize("failing, budget, skipped", [(1, "1", 0), (2, "1", 2)])
def test_max_errors_at_the_threshold_goes_on_and_one_more_stops_the_rollout(
        api, engine_db, sshd, ssh_credential, timeline, default_worker, failing, budget, skipped):
    # one branch at a time, in branch order: hosts .2 fail first, then the rest
    hosts = ["127.0.0.2"] * failing + ["127.0.0.3"] * (4 - failing)
    targets = [api.target(ip=ip, port=sshd.port, credential_id=ssh_credential) for ip in hosts]
    job = api.job([_timed(timeline, 0.05, fail_on="127.0.0.2")], [t["id"] for t in targets])
    body = api.call("POST", f"/api/jobs/{job['id']}/execute", 201,
                    {"max_concurrency": "1", "max_errors": budget})
    serial = body["execution_serial"]
    done = wait_execution_done(engine_db, serial, timeout=30, logs=default_worker.log_tail)
    branches = branch_rows(engine_db, serial)
    statuses = [(b.status, b.error_type) for b in branches]
    assert statuses.count(("failed", "command_failed")) == failing, statuses
    assert statuses.count(("skipped", "rollout_stopped")) == skipped, statuses
    assert len(intervals(timeline)) == 4 - skipped  # a skipped branch never ran
    assert done.status == "failed"
    execution = execution_row(engine_db, serial)
    if skipped:
        assert "rollout stopped: 2 of 4 branches failed" in execution.stop_reason
        assert all("rollout stopped" in b.result_error for b in branches if b.status == "skipped")
    else:
        assert execution.stop_reason is None
    shown = api.call("GET", f"/api/executions/serial/{serial}", 200)
    assert shown["stop_reason"] == execution.stop_reason and shown["max_errors"] == budget


def test_an_exclusive_target_never_runs_two_executions_at_once(api, engine_db, sshd, ssh_credential, timeline,
                                                              default_worker):
    target = api.call("POST", "/api/targets", 201, {"name": unique("exclusive"), "ip_address": "127.0.0.4",
                                                    "port": sshd.port, "credential_id": ssh_credential,
                                                    "max_concurrent_runs": 1})
    assert target["max_concurrent_runs"] == 1
    jobs = [api.job([_timed(timeline, 0.5)], [target["id"]]) for _ in range(3)]
    serials = [api.execute(job["id"])["execution_serial"] for job in jobs]
    for serial in serials:
        assert wait_execution_done(engine_db, serial, timeout=30, logs=default_worker.log_tail).status == "completed"
    spans = sorted(intervals(timeline))
    assert len(spans) == 3 and most_at_once(spans) == 1, spans
    # in arrival order: each execution's command started after the previous one's ended
    starts = [min(b.started_at for b in branch_rows(engine_db, s)) for s in serials]
    assert starts == sorted(starts)


@pytest.mark.parametrize("body, field", [({"max_concurrency": "0"}, "max_concurrency"),
                                         ({"max_concurrency": "101%"}, "max_concurrency"),
                                         ({"max_errors": "ten"}, "max_errors"),
                                         ({"max_errors": 3}, "max_errors")])
def test_bad_limits_are_422_naming_the_field(api, ssh_targets, body, field):
    job = api.job([command("noop", "true")], [ssh_targets[0]["id"]])
    response = api.client.post(f"/api/jobs/{job['id']}/execute", json=body, headers=api.headers)
    assert response.status_code == 422, response.get_data(True)
    assert field in response.get_data(True)
    assert api.get_job(job["id"])["execution_count"] == 0
