"""Retry what failed, end to end: the API on PostgreSQL with its Celery producer, a real worker, and OpenSSH
sshd on 127.0.0.2-4; the retry runs its parent's actions again on exactly the targets that failed."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.engine_helpers import branch_rows, command, wait_execution_done
from tests.sshd import TEST_HOSTS

pytestmark = pytest.mark.usefixtures("default_worker")


def test_a_retry_reruns_exactly_the_failed_targets_with_the_parents_actions(api, engine_db, ssh_targets,
                                                                           default_worker):
    marker = Path(f"/tmp/opsc-retry-{uuid.uuid4().hex[:8]}")
    log, fixed = marker.with_suffix(".log"), marker.with_suffix(".fixed")
    # every run appends the host it ran on; the second host fails until `fixed` exists
    script = (f"echo $(echo $SSH_CONNECTION | cut -d' ' -f3) >> {log}; "
              f'case " $SSH_CONNECTION " in *" {TEST_HOSTS[1]} "*) test -e {fixed} || exit 7;; esac; echo ok')
    job = api.job([command("flaky", script)], [t["id"] for t in ssh_targets])
    parent = api.execute(job["id"])
    assert wait_execution_done(engine_db, parent["execution_serial"], logs=default_worker.log_tail).status == "failed"
    statuses = [b.status for b in branch_rows(engine_db, parent["execution_serial"])]
    assert statuses == ["completed", "failed", "completed"]
    assert sorted(log.read_text().split()) == sorted(TEST_HOSTS[:3])
    try:
        fixed.touch()
        # the job changes after the parent ran: the retry runs what the parent ran
        api.call("PATCH", f"/api/jobs/{job['id']}", 200, {"actions": [command("broken", "exit 99")]})
        retry = api.call("POST", f"/api/executions/serial/{parent['execution_serial']}/retry", 201,
                         {"only": "failed"})
        assert retry["trigger"] == "retry" and retry["retry_of"] == parent["execution_serial"]
        assert [b["target_id"] for b in retry["branches"]] == [ssh_targets[1]["id"]]
        done = wait_execution_done(engine_db, retry["execution_serial"], logs=default_worker.log_tail)
        assert done.status == "completed"
        [branch] = branch_rows(engine_db, retry["execution_serial"])
        assert (branch.status, branch.exit_code, branch.result_output) == ("completed", 0, "ok\n")
        assert log.read_text().split()[3:] == [TEST_HOSTS[1]]  # one more run, on the host that failed
        shown = api.call("GET", f"/api/executions/serial/{parent['execution_serial']}", 200)
        assert shown["retries"] == [retry["execution_serial"]]
        # nothing left to retry
        api.call("POST", f"/api/executions/serial/{retry['execution_serial']}/retry", 422)
    finally:
        for path in (log, fixed):
            path.unlink(missing_ok=True)
