"""Local targets are the platform's own hosts: every path that would put a branch on one needs an
administrator (issue 9, finding 1: an operator ran a command as the worker's user on an admin's
local target, read the signing key and forged an admin token)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from common.models import Job, Target, utcnow
from common.services import executions as svc
from tests.api.conftest import assert_error, table_snapshot

ACTIONS = [{"action_type": "command", "action_name": "id", "action_parameters": {"command": "id"}}]


def _job(client, headers, target_ids, **extra) -> dict:
    response = client.post("/api/jobs", json={"name": "job", "actions": ACTIONS, "target_ids": target_ids, **extra},
                           headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def local(make) -> dict:
    return make.target(connection="local")


@pytest.fixture
def fleet(make) -> dict:
    """An SSH target an operator may use (its credential allows its address)."""
    cred = make.credential(allowed_hosts=["192.168.1.0/24"])
    return make.target(credential_id=cred["id"])


def _refused(client, db, method: str, path: str, headers, body=None, *, target: dict | None = None) -> dict:
    before = table_snapshot(db)
    response = client.open(path, method=method, json=body, headers=headers)
    error = assert_error(response, 403, "forbidden")
    assert table_snapshot(db) == before
    if target is not None:
        assert error["details"]["targets"] == [target["target_serial"]], error
    return error


def test_operator_cannot_create_a_job_on_a_local_target(client, db, operator, local, fleet):
    body = {"name": "steal", "actions": ACTIONS, "target_ids": [fleet["id"], local["id"]]}
    error = _refused(client, db, "POST", "/api/jobs", operator, body, target=local)
    assert local["target_serial"] in error["message"] or "Local targets" in error["message"]


def test_operator_cannot_add_a_local_target_to_their_job(client, db, operator, local, fleet):
    job = _job(client, operator, [fleet["id"]])
    _refused(client, db, "PATCH", f"/api/jobs/{job['job_serial']}", operator, {"target_ids": [local["id"]]},
             target=local)


def test_operator_cannot_edit_an_admins_job_that_runs_on_a_local_target(client, db, admin, operator, local):
    job = _job(client, admin, [local["id"]])
    evil = [{"action_type": "command", "action_name": "x", "action_parameters": {"command": "cat var/secrets.json"}}]
    for change in ({"actions": evil}, {"name": "renamed"}, {"target_ids": []}):
        _refused(client, db, "PATCH", f"/api/jobs/{job['job_serial']}", operator, change, target=local)


def test_operator_cannot_execute_an_admins_local_job(client, db, admin, operator, local):
    job = _job(client, admin, [local["id"]])
    _refused(client, db, "POST", f"/api/jobs/{job['job_serial']}/execute", operator, target=local)


def test_operator_cannot_redirect_a_job_to_a_local_target_at_execute(client, db, admin, operator, local, fleet):
    job = _job(client, admin, [fleet["id"]])
    _refused(client, db, "POST", f"/api/jobs/{job['id']}/execute", operator, {"target_ids": [local["id"]]},
             target=local)
    own = _job(client, operator, [fleet["id"]])
    _refused(client, db, "POST", f"/api/jobs/{own['id']}/execute", operator,
             {"target_ids": [fleet["id"], local["id"]]}, target=local)


def test_operator_cannot_create_change_or_archive_a_local_target(client, db, operator, local):
    _refused(client, db, "POST", "/api/targets", operator, {"name": "mine", "connection": "local"})
    _refused(client, db, "PATCH", f"/api/targets/{local['target_serial']}", operator, {"description": "x"})
    _refused(client, db, "DELETE", f"/api/targets/{local['id']}", operator)


def test_operator_still_runs_fleet_jobs(client, operator, fleet):
    """The control: the same operator creates, edits and executes jobs on SSH targets."""
    job = _job(client, operator, [fleet["id"]])
    assert client.patch(f"/api/jobs/{job['id']}", json={"name": "renamed"}, headers=operator).status_code == 200
    response = client.post(f"/api/jobs/{job['id']}/execute", headers=operator)
    assert response.status_code == 201, response.get_json()


def test_admin_may_do_all_of_it(client, admin, local, fleet):
    job = _job(client, admin, [fleet["id"], local["id"]])
    assert client.patch(f"/api/jobs/{job['id']}", json={"actions": ACTIONS}, headers=admin).status_code == 200
    assert client.post(f"/api/jobs/{job['id']}/execute", json={"target_ids": [local["id"]]},
                       headers=admin).status_code == 201
    assert client.delete(f"/api/targets/{local['id']}", headers=admin).status_code == 204


def _make_due(db, job_id: int) -> None:
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(scheduled_at=utcnow() - timedelta(seconds=1)))


def test_an_admin_cannot_be_made_to_run_an_operators_commands_locally(client, db, admin, operator, local, fleet):
    """The confused deputy: an operator edits the actions of an admin's job; the admin then executes it
    on a local target. The actions' last writer must be an admin too."""
    job = _job(client, admin, [fleet["id"]])
    evil = [{"action_type": "command", "action_name": "x", "action_parameters": {"command": "cat var/secrets.json"}}]
    assert client.patch(f"/api/jobs/{job['id']}", json={"actions": evil}, headers=operator).status_code == 200
    error = _refused(client, db, "POST", f"/api/jobs/{job['id']}/execute", admin, {"target_ids": [local["id"]]},
                     target=local)
    assert error["details"]["job_serial"] == job["job_serial"]
    # an admin's own save of the actions makes them the admin's word again
    assert client.patch(f"/api/jobs/{job['id']}", json={"actions": ACTIONS}, headers=admin).status_code == 200
    assert client.post(f"/api/jobs/{job['id']}/execute", json={"target_ids": [local["id"]]},
                       headers=admin).status_code == 201


def test_a_targets_connection_never_changes(client, db, admin, make, local):
    """A branch authorised on an SSH target must never run locally because the target changed meanwhile."""
    target = make.target()
    for ref, change in ((target["id"], "local"), (local["id"], "ssh")):
        before = table_snapshot(db)
        assert_error(client.patch(f"/api/targets/{ref}", json={"connection": change}, headers=admin), 422,
                     "validation_error", field="connection")
        assert table_snapshot(db) == before


def _make_due(db, job_id: int) -> None:
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(scheduled_at=utcnow() - timedelta(seconds=1)))


def test_scheduled_firing_on_a_local_target_acts_as_the_last_writer_of_the_actions(client, db, admin, operator,
                                                                                   make):
    """An operator's scheduled job whose target is local (a row written before the rule, made here by
    hand) must not fire: the operator wrote its commands, even after an admin edited its description.
    The same job fires once an admin saved its actions, and the execution names that admin."""
    target = make.target(credential_id=make.credential(allowed_hosts=["192.168.1.0/24"])["id"])
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    job = _job(client, operator, [target["id"]], scheduled_at=soon)
    with db.session() as session:
        session.execute(update(Target).where(Target.id == target["id"]).values(connection="local"))
    assert client.patch(f"/api/jobs/{job['id']}", json={"description": "looks fine"}, headers=admin).status_code == 200

    _make_due(db, job["id"])
    with db.session() as session:
        execution, events = svc.fire_scheduled_job(session, job["id"])
    assert execution is None and events == []
    assert client.get(f"/api/jobs/{job['id']}", headers=admin).get_json()["status"] == "failed"
    assert client.get(f"/api/jobs/{job['id']}/executions", headers=admin).get_json() == []

    admin_id = client.get("/api/auth/me", headers=admin).get_json()["id"]
    assert client.patch(f"/api/jobs/{job['id']}", json={"scheduled_at": soon, "actions": ACTIONS},
                        headers=admin).status_code == 200
    _make_due(db, job["id"])
    with db.session() as session:
        execution, _ = svc.fire_scheduled_job(session, job["id"])
        assert execution is not None and execution.trigger == "schedule" and execution.triggered_by == admin_id
