"""Retry what failed (POST /api/executions/serial/{serial}/retry) and idempotent execute and retry
(the Idempotency-Key header), on SQLite and PostgreSQL; the same-key race on PostgreSQL with real threads."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from common.events import LocalEventBus
from common.models import Branch, Execution, IdempotencyKey, utcnow
from common.services.executions import finish_and_close
from common.statuses import BranchStatus, ErrorType
from tests.api.conftest import Factory, assert_error, table_snapshot
from tests.conftest import make_settings

ACTIONS = [{"action_type": "command", "action_name": "hello", "action_parameters": {"command": "echo hello"}}]


def _job(client, headers, target_ids, actions=ACTIONS) -> dict:
    response = client.post("/api/jobs", json={"name": "retry-me", "actions": actions, "target_ids": target_ids},
                           headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _execute(client, headers, job, **kwargs) -> dict:
    response = client.post(f"/api/jobs/{job['job_serial']}/execute", headers=headers, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _finish(db, execution: dict, outcomes: list) -> None:
    """End the execution's branches, in branch order, as a worker would: (status, error_type) or a status."""
    for branch, outcome in zip(execution["branches"], outcomes, strict=True):
        status, error_type = outcome if isinstance(outcome, tuple) else (outcome, None)
        finish_and_close(db, branch["id"], BranchStatus(status), error_type=error_type,
                         exit_code=0 if status == "completed" else None)


def _retry(client, headers, serial, body=None, **kwargs):
    if body is None:
        return client.post(f"/api/executions/serial/{serial}/retry", headers=headers, **kwargs)
    return client.post(f"/api/executions/serial/{serial}/retry", json=body, headers=headers, **kwargs)


@pytest.fixture
def fleet(make: Factory) -> list[dict]:
    credential = make.credential()["id"]
    return [make.target(credential) for _ in range(4)]


@pytest.fixture
def finished(client, db, operator, fleet) -> dict:
    """An execution on four targets that ended completed, failed, timed out and worker_lost."""
    job = _job(client, operator, [t["id"] for t in fleet])
    execution = _execute(client, operator, job)
    _finish(db, execution, ["completed", ("failed", ErrorType.COMMAND_FAILED), ("timed_out", ErrorType.TIMEOUT),
                            ("failed", ErrorType.WORKER_LOST)])
    return {"job": job, "execution": execution}


# ---------------------------------------------------------------- retry


def test_retry_runs_the_unfinished_targets_with_the_parents_actions(client, db, operator, fleet, finished):
    parent = finished["execution"]
    # the job changes after the parent ran: the retry still runs what the parent ran
    changed = [{**ACTIONS[0], "action_parameters": {"command": "echo changed"}}]
    assert client.patch(f"/api/jobs/{finished['job']['job_serial']}", json={"actions": changed},
                        headers=operator).status_code == 200
    response = _retry(client, operator, parent["execution_serial"])
    assert response.status_code == 201, response.get_json()
    retry = response.get_json()
    assert retry["trigger"] == "retry" and retry["retry_of"] == parent["execution_serial"]
    assert retry["retries"] == [] and retry["status"] == "running"
    assert retry["execution_serial"] == f"{finished['job']['job_serial']}.0002"
    assert [b["target_id"] for b in retry["branches"]] == [t["id"] for t in fleet[1:]]
    assert {b["status"] for b in retry["branches"]} == {"queued"}
    with db.session() as session:
        actions = {e.execution_serial: e.actions for e in session.scalars(select(Execution))}
    assert actions[retry["execution_serial"]] == actions[parent["execution_serial"]]
    assert actions[retry["execution_serial"]][0]["parameters"] == {"command": "echo hello"}

    shown = client.get(f"/api/executions/serial/{parent['execution_serial']}", headers=operator).get_json()
    assert shown["retries"] == [retry["execution_serial"]] and shown["retry_of"] is None
    again = client.get(f"/api/executions/serial/{retry['execution_serial']}", headers=operator).get_json()
    assert again["retry_of"] == parent["execution_serial"]
    listed = client.get(f"/api/jobs/{finished['job']['job_serial']}/executions", headers=operator).get_json()
    assert [(e["retry_of"], e["retries"]) for e in listed] == [(parent["execution_serial"], []),
                                                               (None, [retry["execution_serial"]])]


def test_retry_all_runs_every_target_and_a_retry_can_be_retried(client, db, operator, fleet, finished):
    parent = finished["execution"]
    response = _retry(client, operator, parent["execution_serial"], {"only": "all"})
    assert response.status_code == 201, response.get_json()
    first = response.get_json()
    assert [b["target_id"] for b in first["branches"]] == [t["id"] for t in fleet]
    _finish(db, first, ["completed", "completed", "cancelled", "completed"])
    second = _retry(client, operator, first["execution_serial"], {"only": "failed"}).get_json()
    assert second["retry_of"] == first["execution_serial"]
    assert [b["target_id"] for b in second["branches"]] == [fleet[2]["id"]]
    shown = client.get(f"/api/executions/serial/{parent['execution_serial']}", headers=operator).get_json()
    assert shown["retries"] == [first["execution_serial"]]


def test_retry_of_a_cancelled_execution_reruns_its_cancelled_branches(client, db, operator, fleet):
    job = _job(client, operator, [t["id"] for t in fleet[:2]])
    execution = _execute(client, operator, job)
    finish_and_close(db, execution["branches"][0]["id"], BranchStatus.COMPLETED, exit_code=0)
    cancelled = client.post(f"/api/executions/serial/{execution['execution_serial']}/cancel", headers=operator)
    assert cancelled.get_json()["status"] == "cancelled"
    retry = _retry(client, operator, execution["execution_serial"], {}).get_json()
    assert [b["target_id"] for b in retry["branches"]] == [fleet[1]["id"]]


def test_nothing_to_retry_is_a_422_that_says_so(client, db, operator, fleet):
    job = _job(client, operator, [t["id"] for t in fleet[:2]])
    execution = _execute(client, operator, job)
    _finish(db, execution, ["completed", "completed"])
    before = table_snapshot(db)
    error = assert_error(_retry(client, operator, execution["execution_serial"]), 422, "validation_error", "only")
    assert "Nothing to retry" in error["message"] and "only: all" in error["message"]
    assert table_snapshot(db) == before
    assert _retry(client, operator, execution["execution_serial"], {"only": "all"}).status_code == 201


def test_a_running_execution_cannot_be_retried(client, db, operator, fleet):
    job = _job(client, operator, [t["id"] for t in fleet[:2]])
    execution = _execute(client, operator, job)
    finish_and_close(db, execution["branches"][0]["id"], BranchStatus.FAILED)
    before = table_snapshot(db)
    error = assert_error(_retry(client, operator, execution["execution_serial"]), 409, "conflict")
    assert "still running" in error["message"]
    assert table_snapshot(db) == before


def test_retry_follows_executes_rules(client, db, admin, operator, viewer, fleet, finished):
    serial = finished["execution"]["execution_serial"]
    before = table_snapshot(db)
    assert_error(_retry(client, viewer, serial), 403, "forbidden")
    assert_error(_retry(client, {}, serial), 401)
    assert_error(_retry(client, operator, "J20259999.0001"), 404, "not_found")
    error = assert_error(_retry(client, operator, "not-a-serial"), 422, "validation_error", "execution_serial")
    assert error["details"]["expected_format"] == "J20250001.0001"
    assert_error(_retry(client, operator, serial, {"only": "some"}), 422, "validation_error", "only")
    assert_error(_retry(client, operator, serial, {"only": "all", "extra": 1}), 422, "validation_error", "extra")
    assert_error(_retry(client, operator, serial, data="{", content_type="application/json"), 400)
    # disabled and archived targets: the same answers as execute
    client.patch(f"/api/targets/{fleet[1]['id']}", json={"enabled": False}, headers=admin)
    before = table_snapshot(db)
    error = assert_error(_retry(client, operator, serial), 422, "validation_error", "target_ids")
    assert error["details"]["received"] == [fleet[1]["id"]]
    execute = client.post(f"/api/jobs/{finished['job']['job_serial']}/execute", headers=operator)
    assert assert_error(execute, 422)["message"] == error["message"]
    client.patch(f"/api/targets/{fleet[1]['id']}", json={"enabled": True}, headers=admin)
    assert client.delete(f"/api/targets/{fleet[2]['id']}", headers=admin).status_code in (200, 204)
    before = table_snapshot(db)
    error = assert_error(_retry(client, operator, serial), 422, "validation_error", "target_ids")
    assert "Archived" in error["message"] and error["details"]["received"] == [fleet[2]["id"]]
    # an archived job cannot run
    assert client.delete(f"/api/jobs/{finished['job']['job_serial']}", headers=operator).status_code in (200, 204)
    before = table_snapshot(db)
    assert_error(_retry(client, operator, serial, {"only": "all"}), 409, "conflict")
    assert table_snapshot(db) == before


def test_retry_on_local_targets_needs_an_admin_and_an_admin_written_job(client, db, admin, operator, make):
    local = make.target(connection="local")
    job = _job(client, admin, [local["id"]])
    execution = _execute(client, admin, job)
    _finish(db, execution, [("failed", ErrorType.COMMAND_FAILED)])
    serial = execution["execution_serial"]
    before = table_snapshot(db)
    error = assert_error(_retry(client, operator, serial), 403, "forbidden", "target_ids")
    assert error["details"]["targets"] == [local["target_serial"]]
    assert table_snapshot(db) == before
    assert _retry(client, admin, serial).status_code == 201
    # an operator's hand on the job's actions: as for execute, no admin may run it on a local target
    with db.session() as session:
        session.execute(text("UPDATE jobs SET updated_by = (SELECT id FROM users WHERE username = 'operator')"))
    retry = client.get(f"/api/jobs/{job['job_serial']}/executions", headers=admin).get_json()[0]
    _finish(db, retry, ["failed"])
    before = table_snapshot(db)
    error = assert_error(_retry(client, admin, serial), 403, "forbidden", "target_ids")
    assert "administrator" in error["message"]
    assert table_snapshot(db) == before


def test_a_retry_never_runs_an_older_snapshot_on_a_local_target(client, db, admin, operator, make, fleet):
    """The last writer vouches for the job's actions as they are, not for what an older execution ran."""
    job = _job(client, operator, [fleet[0]["id"]])
    execution = _execute(client, operator, job)
    _finish(db, execution, ["failed"])
    local = make.target(connection="local")
    # the admin saves other actions and points the job at a local target; the parent's snapshot is the operator's
    changed = [{**ACTIONS[0], "action_parameters": {"command": "echo admin"}}]
    assert client.patch(f"/api/jobs/{job['job_serial']}", json={"actions": changed}, headers=admin).status_code == 200
    with db.session() as session:
        session.execute(update(Branch).values(target_id=local["id"]))
    before = table_snapshot(db)
    error = assert_error(_retry(client, admin, execution["execution_serial"]), 403, "forbidden", "target_ids")
    assert "earlier version" in error["message"]
    assert table_snapshot(db) == before


def test_retry_publishes_its_start_and_a_replay_publishes_nothing(app, client, db, operator, finished):
    bus = app.extensions["opsconductor"].events = LocalEventBus()
    with bus.subscribe() as events:
        headers = {**operator, "Idempotency-Key": "once"}
        retry = _retry(client, headers, finished["execution"]["execution_serial"]).get_json()
        assert _retry(client, headers, finished["execution"]["execution_serial"]).status_code == 201
        seen = [events.get(timeout=0.1) for _ in range(2)]
    assert seen[1] is None
    assert seen[0] is not None and seen[0]["type"] == "execution_started"
    assert seen[0]["data"]["execution_serial"] == retry["execution_serial"]


# ---------------------------------------------------------------- Idempotency-Key


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def test_execute_with_a_key_twice_makes_one_execution(client, db, operator, fleet):
    job = _job(client, operator, [t["id"] for t in fleet[:2]])
    headers = {**operator, **_key("deploy-2025-01-08")}
    first = client.post(f"/api/jobs/{job['job_serial']}/execute", json={}, headers=headers)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    finish_and_close(db, first.get_json()["branches"][0]["id"], BranchStatus.COMPLETED, exit_code=0)
    again = client.post(f"/api/jobs/{job['job_serial']}/execute", json={}, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["execution_serial"] == first.get_json()["execution_serial"]
    assert again.get_json()["branches"][0]["status"] == "completed"  # the execution as it is now
    # no body and {} are the same request
    assert client.post(f"/api/jobs/{job['job_serial']}/execute", headers=headers).headers["Idempotent-Replayed"]
    with db.session() as session:
        assert len(session.scalars(select(Execution)).all()) == 1
        assert len(session.scalars(select(IdempotencyKey)).all()) == 1


def test_a_used_key_on_a_different_request_is_a_422_naming_the_header(client, db, operator, fleet):
    job = _job(client, operator, [t["id"] for t in fleet[:2]])
    headers = {**operator, **_key("k-1")}
    first = client.post(f"/api/jobs/{job['job_serial']}/execute", headers=headers).get_json()
    _finish(db, first, ["failed", "completed"])
    before = table_snapshot(db)
    other_body = client.post(f"/api/jobs/{job['job_serial']}/execute", json={"target_ids": [fleet[0]["id"]]},
                             headers=headers)
    error = assert_error(other_body, 422, "validation_error", "Idempotency-Key")
    assert error["details"]["location"] == "header"
    other_path = _retry(client, headers, first["execution_serial"])
    assert_error(other_path, 422, "validation_error", "Idempotency-Key")
    assert table_snapshot(db) == before


def test_keys_are_per_user(client, db, admin, operator, fleet):
    job = _job(client, operator, [fleet[0]["id"]])
    one = client.post(f"/api/jobs/{job['job_serial']}/execute", headers={**operator, **_key("same")}).get_json()
    two = client.post(f"/api/jobs/{job['job_serial']}/execute", headers={**admin, **_key("same")})
    assert two.status_code == 201 and "Idempotent-Replayed" not in two.headers
    assert two.get_json()["execution_serial"] != one["execution_serial"]


def test_a_key_may_be_reused_after_24_hours(client, db, operator, fleet):
    job = _job(client, operator, [fleet[0]["id"]])
    headers = {**operator, **_key("daily")}
    first = client.post(f"/api/jobs/{job['job_serial']}/execute", headers=headers).get_json()
    with db.session() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, seconds=1)))
    second = client.post(f"/api/jobs/{job['job_serial']}/execute", json={"target_ids": [fleet[0]["id"]]},
                         headers=headers)
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
    assert second.get_json()["execution_serial"] != first["execution_serial"]
    with db.session() as session:  # the expired row is gone, the new one stands
        rows = session.execute(select(IdempotencyKey.execution_id)).all()
    assert [r[0] for r in rows] == [second.get_json()["id"]]


@pytest.mark.parametrize("value", ["", " ", " lead", "trail ", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_a_422_naming_the_header(client, db, operator, fleet, value):
    job = _job(client, operator, [fleet[0]["id"]])
    before = table_snapshot(db)
    response = client.post(f"/api/jobs/{job['job_serial']}/execute",
                           headers={**operator, "Idempotency-Key": value.encode().decode("latin-1")})
    error = assert_error(response, 422, "validation_error", "Idempotency-Key")
    assert error["details"]["location"] == "header"
    assert table_snapshot(db) == before


def test_the_longest_and_oddest_keys_are_fine(client, db, operator, fleet):
    job = _job(client, operator, [fleet[0]["id"]])
    for value in ["x" * 255, "!", "a b~{}\"'\\"]:
        first = client.post(f"/api/jobs/{job['job_serial']}/execute", headers={**operator, **_key(value)})
        again = client.post(f"/api/jobs/{job['job_serial']}/execute", headers={**operator, **_key(value)})
        assert first.status_code == again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"


def test_retry_with_a_key_is_idempotent(client, db, operator, finished):
    serial = finished["execution"]["execution_serial"]
    headers = {**operator, **_key("retry-1")}
    first = _retry(client, headers, serial, {"only": "failed"})
    again = _retry(client, headers, serial, {"only": "failed"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert_error(_retry(client, headers, serial, {"only": "all"}), 422, "validation_error", "Idempotency-Key")
    shown = client.get(f"/api/executions/serial/{serial}", headers=operator).get_json()
    assert shown["retries"] == [first.get_json()["execution_serial"]]


def test_a_failed_request_does_not_use_up_its_key(client, db, admin, operator, fleet):
    job = _job(client, operator, [fleet[0]["id"]])
    client.patch(f"/api/targets/{fleet[0]['id']}", json={"enabled": False}, headers=admin)
    headers = {**operator, **_key("after-a-422")}
    assert_error(client.post(f"/api/jobs/{job['job_serial']}/execute", headers=headers), 422)
    client.patch(f"/api/targets/{fleet[0]['id']}", json={"enabled": True}, headers=admin)
    response = client.post(f"/api/jobs/{job['job_serial']}/execute", headers=headers)
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers


# ---------------------------------------------------------------- the race, with real threads on PostgreSQL


def test_simultaneous_requests_with_one_new_key_make_one_execution(pg_db):
    """Both requests find the key unused, then queue on the job's row (held here) while each makes its
    execution; the first to commit wins the (user_id, key) constraint, the other rolls back and answers
    with the winner's execution."""
    from api.app import create_app
    from tests.api.conftest import _Users

    app = create_app(make_settings(pg_db.url), db=pg_db)
    client = app.test_client()
    users = _Users(pg_db, client)
    operator = users.headers("operator")
    make = Factory(client, users.headers("admin"))
    target = make.target()
    job = _job(client, operator, [target["id"]])
    answers: list = []

    def send() -> None:
        response = app.test_client().post(f"/api/jobs/{job['job_serial']}/execute",
                                          headers={**operator, **_key("race")})
        answers.append((response.status_code, response.headers.get("Idempotent-Replayed"), response.get_json()))

    with pg_db.engine.connect() as holder:
        holder.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job["id"]})
        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # both past the key lookup, waiting on the job's row lock
            with pg_db.engine.connect() as probe:
                waiting = probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE jobs%'")).scalar()
            if waiting == 2:
                break
            time.sleep(0.02)
        assert waiting == 2
        holder.rollback()
    for thread in threads:
        thread.join(10)
    assert sorted(a[0] for a in answers) == [201, 201], answers
    assert sorted(str(a[1]) for a in answers) == ["None", "true"]
    assert answers[0][2]["execution_serial"] == answers[1][2]["execution_serial"]
    with pg_db.session() as session:
        assert len(session.scalars(select(Execution)).all()) == 1
        assert session.scalar(text("SELECT execution_count FROM jobs")) == 1  # the loser's number rolled back


def test_a_retry_keeps_the_parents_rollout_policy(client, db, operator, fleet):
    job = _job(client, operator, [t["id"] for t in fleet[:2]])
    parent = _execute(client, operator, job, json={"max_concurrency": "1", "max_errors": "50%"})
    _finish(db, parent, ["failed", "failed"])
    retry = _retry(client, operator, parent["execution_serial"]).get_json()
    assert (retry["max_concurrency"], retry["max_errors"]) == ("1", "50%")
