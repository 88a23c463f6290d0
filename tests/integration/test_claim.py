"""Claiming a branch on both backends (one statement on PostgreSQL, two on SQLite), on a bare
connection as the worker does and in an ORM session as other callers do: everything the worker
needs comes back, and a branch is claimed once."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from common.crypto import SecretBox
from common.models import Branch, Job
from common.services.credentials import create_credential
from common.services.executions import claim_branch, start_execution
from common.services.jobs import create_job
from common.services.targets import create_target
from tests.conftest import FERNET_SECRET
from tests.integration.engine_helpers import admin_id, end_execution

ACTIONS = [{"action_type": "command", "action_name": "first", "action_parameters": {"command": "true"},
            "timeout_seconds": 7, "continue_on_error": True},
           {"action_type": "script", "action_name": "second", "action_parameters": {"script": "exit 0"},
            "timeout_seconds": None, "continue_on_error": False}]


@pytest.fixture
def branch_ids(db) -> Iterator[list[int]]:
    """An execution with a branch on an SSH target with a credential and one on a local target."""
    with db.session() as session:
        cred = create_credential(session, SecretBox(FERNET_SECRET), name="claim-cred", username="deploy",
                                 auth_type="password", password="s3cret-pw")
        ssh = create_target(session, {"name": "claim-ssh", "ip_address": "192.0.2.7", "port": 2222,
                                      "credential_id": cred.id}, user_id=admin_id(session), role="admin")
        local = create_target(session, {"name": "claim-local", "connection": "local"}, user_id=admin_id(session),
                              role="admin")
        job = create_job(session, {"name": "claim-job", "target_ids": [ssh.id, local.id], "actions": ACTIONS},
                         user_id=admin_id(session), role="admin")
        execution = start_execution(session, session.get(Job, job.id), role="admin")
        serial, ids = execution.execution_serial, [b.id for b in execution.branches]
    yield ids
    end_execution(db, serial)


@pytest.mark.parametrize("how", ["connection", "session"])
def test_claim_returns_the_work_once(db, branch_ids, how):
    ssh_branch, local_branch = branch_ids

    def claim(branch_id: int):
        if how == "connection":
            with db.connection() as conn:
                result = claim_branch(conn, branch_id, "claim-test")
                conn.commit()
                return result
        with db.session() as session:
            return claim_branch(session, branch_id, "claim-test")

    work, events = claim(ssh_branch)
    assert work is not None
    assert (work.host, work.port, work.connection, work.host_key) == ("192.0.2.7", 2222, "ssh", None)
    assert work.branch_serial.endswith(".0001") and work.execution_serial == work.branch_serial.rsplit(".", 1)[0]
    assert work.credential.username == "deploy" and work.credential.auth_type == "password"
    assert SecretBox(FERNET_SECRET).decrypt(work.credential.secret_encrypted) == "s3cret-pw"
    # an admin paired it with this address and port (the credential's allowed_hosts is empty)
    assert work.credential.allowed_hosts == [] and work.credential.grant.endswith("@192.0.2.7:2222/default")
    assert work.credential.allowed_for("192.0.2.7", 2222, "default")
    assert not work.credential.allowed_for("192.0.2.7", 22, "default")
    assert not work.credential.allowed_for("192.0.2.7", 2222, "dc-east")
    assert [(a["position"], a["action_name"], a["timeout_seconds"], a["continue_on_error"]) for a in work.actions] \
        == [(1, "first", 7, True), (2, "second", None, False)]
    assert [e[0] for e in events] == ["branch_started"]
    assert events[0][1]["branch_serial"] == work.branch_serial and events[0][1]["status"] == "running"

    local_work, _ = claim(local_branch)
    assert local_work.connection == "local" and local_work.credential is None

    assert claim(ssh_branch) == (None, [])  # a redelivered task finds nothing to claim
    with db.session() as session:
        rows = session.execute(select(Branch.status, Branch.worker).where(Branch.id.in_(branch_ids))).all()
    assert rows == [("running", "claim-test")] * 2
