"""The Python SDK (sdk/python, `enabledrm_sdk`) against a live embedded server: every resource group,
every error class the server can be made to answer, live WebSocket events, and the reference's
"SDK Examples" Python snippet run with only its serials (and its placeholder address/token) changed.
The 429 retry loop is checked against a tiny local stub server (pure client logic)."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager, redirect_stdout
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import enabledrm_sdk  # noqa: E402  (the conftest makes it importable)
import pytest
from enabledrm_sdk import (
    ApiError,
    BadRequest,
    BranchDetail,
    BranchOutput,
    Conflict,
    EnableDRMClient,
    EnableDRMError,
    Event,
    Execution,
    Forbidden,
    Job,
    MethodNotAllowed,
    NotFound,
    Page,
    PayloadTooLarge,
    RateLimited,
    Schedule,
    ServerError,
    Target,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from enabledrm_sdk.models import ApiObject, parse_time

from tests.sdk.conftest import REPO_ROOT, LiveServer
from tests.sshd import wait_until

REFERENCE = REPO_ROOT.parent / "shared" / "api-reference.md"  # shared/ lies beside every checkout, CI's too

# The reference's "SDK Examples" Python snippet, verbatim.
PYTHON_SNIPPET = '''\
from enabledrm_sdk import EnableDRMClient

client = EnableDRMClient(
    base_url="http://localhost:8000",
    token="your_jwt_token"
)

# Get execution by serial
execution = client.executions.get_by_serial("J20250001.0001")
print(f"Status: {execution.status}")

# Get target performance
performance = client.targets.get_performance("T20250001", days=30)
print(f"Success rate: {performance.success_rate}%")
'''

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def echo_action(text: str = "hello") -> dict:
    return {"action_type": "command", "action_name": "say", "action_parameters": {"command": f"echo {text}"}}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def admin(sdk_server: LiveServer):
    client = EnableDRMClient(sdk_server.base_url)
    client.auth.login(sdk_server.admin_username, sdk_server.admin_password)
    yield client
    client.close()


@pytest.fixture(scope="module")
def seeded(admin):
    """A local target and an echo job with one completed execution, made through the SDK."""
    target = admin.targets.create(unique("py-local"), connection="local", tags=["sdk", "py"])
    job = admin.jobs.create(unique("py-echo"), [echo_action("hello")], target_ids=[target.id],
                            description="made by the Python SDK tests")
    execution = admin.jobs.execute(job.job_serial)
    done = admin.executions.wait(execution.execution_serial, timeout=30)
    assert done.status == "completed", done
    return {"target": target, "job": job, "execution": done}


@pytest.fixture(scope="module")
def users_by_role(admin):
    """An operator and a viewer (username, password) made through the SDK."""
    made = {}
    for role in ("operator", "viewer"):
        username = unique(f"py-{role}")
        admin.users.create(username, "py-password-123", role=role)
        made[role] = (username, "py-password-123")
    return made


def client_for(server: LiveServer, username: str, password: str, **kwargs) -> EnableDRMClient:
    client = EnableDRMClient(server.base_url, **kwargs)
    client.auth.login(username, password)
    return client


# ------------------------------------------------------------------------------------------------- auth


def test_auth_login_me_refresh_logout(sdk_server):
    client = EnableDRMClient(sdk_server.base_url + "/api/")  # a trailing /api is accepted
    assert client.base_url == sdk_server.base_url
    token = client.auth.login(sdk_server.admin_username, sdk_server.admin_password)
    assert token.token_type == "Bearer" and token.expires_in > 0 and token.refresh_token
    assert client.token == token.access_token
    me = client.auth.me()
    assert me.username == sdk_server.admin_username and me.role == "admin" and me.is_active is True
    assert RFC3339_Z.match(me.created_at)
    refreshed = client.auth.refresh()
    assert refreshed.access_token and client.token == refreshed.access_token
    assert client.auth.me().id == me.id
    client.auth.logout()
    assert client.token is None
    with pytest.raises(Unauthorized) as info:
        client.auth.me()
    assert info.value.status == 401 and info.value.error == "unauthorized"


def test_auth_wrong_password_is_unauthorized(sdk_server):
    client = EnableDRMClient(sdk_server.base_url)
    with pytest.raises(Unauthorized) as info:
        client.auth.login(sdk_server.admin_username, "not-the-password")
    assert info.value.message and isinstance(info.value.details, dict)
    assert client.token is None


def test_token_given_to_the_constructor_is_used(sdk_server):
    token = sdk_server.admin_token()
    with EnableDRMClient(base_url=sdk_server.base_url, token=token) as client:
        assert client.auth.me().username == sdk_server.admin_username


# ------------------------------------------------------------------------------------------------ users


def test_users_crud_list_iterate(admin, sdk_server):
    username = unique("py-user")
    user = admin.users.create(username, "py-password-123", role="viewer")
    assert user.username == username and user.role == "viewer" and user.is_active
    assert admin.users.get(user.id) == user
    updated = admin.users.update(user.id, role="operator", is_active=False)
    assert updated.role == "operator" and updated.is_active is False
    page = admin.users.list(page=1, per_page=2, sort="id", order="asc")
    assert isinstance(page, Page) and len(page) <= 2 and page.pagination.per_page == 2
    everyone = list(admin.users.iterate(per_page=2))
    assert username in {u.username for u in everyone}
    assert len(everyone) == page.pagination.total
    with pytest.raises(Unauthorized):  # a disabled user cannot log in
        client_for(sdk_server, username, "py-password-123")
    with pytest.raises(Conflict) as info:
        admin.users.create(username, "py-password-123")
    assert info.value.status == 409 and info.value.error == "conflict"
    with pytest.raises(ValidationError) as info:
        admin.users.create(unique("py-short"), "short")
    assert info.value.status == 422 and info.value.details["field"] == "password"
    with pytest.raises(NotFound):
        admin.users.get(999999)


def test_non_admin_roles_are_forbidden_from_users(sdk_server, users_by_role):
    viewer = client_for(sdk_server, *users_by_role["viewer"])
    with pytest.raises(Forbidden) as info:
        viewer.users.list()
    assert info.value.status == 403 and info.value.error == "forbidden"
    assert info.value.details.get("role") == "viewer"


# ------------------------------------------------------------------------------------------ credentials


def test_credentials_crud_and_secrets_never_returned(admin):
    name = unique("py-cred")
    cred = admin.credentials.create(name, "deploy", "password", password="s3cret-pass", description="sdk",
                                    allowed_hosts=["10.0.0.0/8", "*.example.com"])
    assert cred.name == name and cred.auth_type == "password" and cred.has_passphrase is False
    assert cred.allowed_hosts == ["10.0.0.0/8", "*.example.com"]
    raw = cred.to_dict()
    assert "password" not in raw and "s3cret-pass" not in json.dumps(raw)
    assert admin.credentials.get(cred.id).username == "deploy"
    changed = admin.credentials.update(cred.id, username="ops", description=None)
    assert changed.username == "ops" and changed.description is None
    assert cred.id in {c.id for c in admin.credentials.iterate(per_page=1)}
    page = admin.credentials.list(per_page=50, sort="name", order="asc")
    assert cred.id in {c.id for c in page}
    with pytest.raises(ValidationError) as info:
        admin.credentials.create(unique("py-key"), "deploy", "key")  # a key credential needs its key
    assert info.value.status == 422
    # a credential a live target uses cannot go
    target = admin.targets.create(unique("py-ssh"), ip_address="192.0.2.10", credential_id=cred.id)
    with pytest.raises(Conflict):
        admin.credentials.delete(cred.id)
    admin.targets.delete(target.id)
    admin.credentials.delete(cred.id)
    with pytest.raises(NotFound):
        admin.credentials.get(cred.id)


# ---------------------------------------------------------------------------------------------- targets


def test_targets_crud_filters_and_archive(admin):
    tag = unique("tag")
    cred = admin.credentials.create(unique("py-cred"), "deploy", "password", password="pw-123456")
    first = admin.targets.create(unique("py-t"), hostname="host-a.example.com", port=2222, tags=[tag, "web"],
                                 credential_id=cred.id)
    second = admin.targets.create(unique("py-t"), ip_address="192.0.2.11", tags=[tag], description="second",
                                  credential_id=cred.id)
    assert isinstance(first, Target) and first.target_serial.startswith("T") and first.port == 2222
    assert first.connection == "ssh" and first.tags == [tag, "web"] and first.archived_at is None
    assert admin.targets.get(first.target_serial) == admin.targets.get(first.id)
    page = admin.targets.list(tag=tag, sort="name", order="asc", per_page=1)
    assert page.pagination.total == 2 and page.pagination.has_next is True and len(page) == 1
    assert {t.id for t in admin.targets.iterate(tag=tag, per_page=1)} == {first.id, second.id}
    updated = admin.targets.update(second.target_serial, description="changed", enabled=False)
    assert updated.description == "changed" and updated.enabled is False
    assert [t.id for t in admin.targets.list(tag=tag, enabled=False)] == [second.id]
    with pytest.raises(Conflict):
        admin.targets.create(first.name, hostname="elsewhere.example.com", credential_id=cred.id)
    with pytest.raises(ValidationError) as info:
        admin.targets.create(unique("py-t"), ip_address="not-an-ip", credential_id=cred.id)
    assert info.value.details["field"] == "ip_address"
    assert admin.targets.reset_host_key(first.id).host_key_fingerprint is None
    admin.targets.delete(second.target_serial)
    assert {t.id for t in admin.targets.iterate(tag=tag)} == {first.id}
    archived = admin.targets.get(second.target_serial)  # history stays addressable
    assert archived.archived_at is not None
    with pytest.raises(NotFound):
        admin.targets.get("T20999999")
    with pytest.raises(ValidationError) as info:
        admin.targets.get_performance("not-a-serial")
    assert info.value.details["field"] == "target_serial"


def test_operator_cannot_create_a_local_target(sdk_server, users_by_role):
    operator = client_for(sdk_server, *users_by_role["operator"])
    with pytest.raises(Forbidden):
        operator.targets.create(unique("py-local"), connection="local")


def test_target_performance_and_history(admin, seeded):
    serial = seeded["target"].target_serial
    performance = admin.targets.get_performance(serial, days=30)
    assert performance.target_serial == serial and performance.period_days == 30
    assert performance.total_executions >= 1 and performance.successful_executions >= 1
    assert performance.success_rate == 100.0
    recent = performance.recent_executions[0]
    assert recent.execution_serial.startswith(seeded["job"].job_serial) and recent.status == "completed"
    assert admin.targets.get_performance(serial).period_days == 30  # the server's default
    history = admin.targets.history(serial, limit=1, offset=0)
    assert history.target_serial == serial and history.limit == 1 and history.offset == 0
    assert history.total >= 1 and len(history.executions) == 1
    item = history.executions[0]
    assert item.job_name == seeded["job"].name and item.exit_code == 0
    everything = list(admin.targets.iter_history(serial, page_size=1))
    assert len(everything) == history.total


# ------------------------------------------------------------------------------------------------- jobs


def test_jobs_crud_list_iterate(admin, seeded):
    name = unique("py-job")
    job = admin.jobs.create(name, [echo_action("a"), {"action_type": "script", "action_name": "s",
                                                      "action_parameters": {"script": "echo b", "interpreter": "sh"},
                                                      "timeout_seconds": 30, "continue_on_error": True}],
                            target_ids=[seeded["target"].id], job_type="command")
    assert isinstance(job, Job) and job.status == "ready" and job.execution_count == 0
    assert [a.action_type for a in job.actions] == ["command", "script"]
    assert job.actions[0].action_parameters.command == "echo a"
    assert job.actions[1].timeout_seconds == 30 and job.actions[1].continue_on_error is True
    assert admin.jobs.get(job.job_serial) == admin.jobs.get(job.id)
    updated = admin.jobs.update(job.job_serial, description="updated", actions=[echo_action("c")])
    assert updated.description == "updated" and len(updated.actions) == 1
    page = admin.jobs.list(page=1, per_page=1, sort="created_at", order="desc")
    assert page.pagination.page == 1 and page.pagination.total >= 2 and page.pagination.has_next
    by_name = list(admin.jobs.iterate(name=name, per_page=1))
    assert [j.id for j in by_name] == [job.id]
    assert {j.id for j in admin.jobs.iterate(per_page=1)} >= {job.id, seeded["job"].id}
    admin.jobs.delete(job.job_serial)
    assert job.id not in {j.id for j in admin.jobs.iterate()}
    assert admin.jobs.get(job.job_serial).archived_at is not None
    with pytest.raises(ApiError) as info:  # an archived job cannot run
        admin.jobs.execute(job.job_serial)
    assert info.value.status in (404, 409)


def test_scheduled_job_in_the_past_is_a_validation_error(admin, seeded):
    with pytest.raises(ValidationError):
        admin.jobs.create(unique("py-past"), [echo_action()], target_ids=[seeded["target"].id],
                          scheduled_at=datetime.now(UTC) - timedelta(hours=1))
    future = admin.jobs.create(unique("py-future"), [echo_action()], target_ids=[seeded["target"].id],
                               scheduled_at=datetime.now(UTC) + timedelta(days=1))
    assert future.status == "scheduled" and parse_time(future.scheduled_at) > datetime.now(UTC)
    admin.jobs.delete(future.id)


def test_cron_schedule_is_sent_shown_and_removed(admin, seeded):
    job = admin.jobs.create(unique("py-cron"), [echo_action()], target_ids=[seeded["target"].id],
                            schedule={"cron": "*/5 * * * *", "timezone": "Europe/Berlin"})
    try:
        assert job.status == "scheduled"
        assert isinstance(job.schedule, Schedule)
        assert (job.schedule.cron, job.schedule.timezone) == ("*/5 * * * *", "Europe/Berlin")
        tick = parse_time(job.next_run_at)
        assert datetime.now(UTC) < tick <= datetime.now(UTC) + timedelta(minutes=5) and tick.minute % 5 == 0
        assert admin.jobs.get(job.id).schedule.to_dict() == {"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}
        hourly = admin.jobs.update(job.id, schedule={"cron": "0 * * * *"})
        assert hourly.schedule.timezone == "UTC" and parse_time(hourly.next_run_at).minute == 0
        with pytest.raises(ValidationError) as info:
            admin.jobs.update(job.id, schedule={"cron": "61 * * * *"})
        assert info.value.details["field"] == "schedule.cron" and "Bad minute" in str(info.value.details)
        removed = admin.jobs.update(job.id, schedule=None)
        assert (removed.status, removed.schedule, removed.next_run_at) == ("ready", None, None)
    finally:
        admin.jobs.delete(job.id)


def test_job_execute_and_executions(admin, seeded):
    job = seeded["job"]
    execution = admin.jobs.execute(job.job_serial, target_ids=[seeded["target"].id])
    assert isinstance(execution, Execution)
    assert re.match(r"^J\d{8}\.\d{4}$", execution.execution_serial)
    assert execution.branches[0].branch_serial == execution.execution_serial + ".0001"
    assert execution.branches[0].branch_id == "001"
    admin.executions.wait(execution.execution_serial, timeout=30)
    executions = admin.jobs.executions(job.job_serial, limit=1)
    assert len(executions) == 1 and executions[0].execution_serial == execution.execution_serial  # newest first
    every = list(admin.jobs.iter_executions(job.id, page_size=1))
    assert [e.execution_number for e in every] == sorted((e.execution_number for e in every), reverse=True)
    assert len(every) >= 2


def test_selector_and_parameters_are_sent_shown_and_reach_the_actions(admin):
    tag = unique("py-sel")
    chosen = admin.targets.create(unique("py-sel-a"), connection="local", tags=[tag, "py"])
    admin.targets.create(unique("py-sel-b"), connection="local", tags=["py"])
    show = 'printf "%s|%s|%s" "$OC_PARAM_VERSION" "$OC_PARAM_BUILD_2" "$OC_PARAM_KEY"'
    job = admin.jobs.create(unique("py-params"), [
        {"action_type": "command", "action_name": "show", "action_parameters": {"command": show}}],
        target_selector={"tags_all": [tag]},
        parameters=[{"name": "VERSION", "required": True, "pattern": r"[0-9.]+"},
                    {"name": "BUILD_2", "default": "b2"}, {"name": "KEY", "secret": True}])
    assert job.target_ids == [] and job.target_selector.tags_all == [tag]
    assert [p.name for p in job.parameters] == ["VERSION", "BUILD_2", "KEY"] and job.parameters[2].secret
    with pytest.raises(ValidationError) as bad:
        admin.jobs.execute(job.job_serial, parameters={"VERSION": "one"})
    assert bad.value.details["field"] == "parameters.VERSION"
    execution = admin.jobs.execute(job.job_serial, parameters={"VERSION": "1.2", "KEY": "$(id) 's3cret'"})
    assert execution.target_selector.tags_all == [tag]
    assert [b.target_id for b in execution.branches] == [chosen.id]
    assert execution.parameters.to_dict() == {"VERSION": "1.2", "BUILD_2": "b2", "KEY": "****"}
    done = admin.executions.wait(execution.execution_serial, timeout=30)
    assert done.status == "completed", done
    branch = admin.executions.get_branch(done.branches[0].branch_serial)
    assert branch.steps[0].stdout == "1.2|b2|****"  # the secret reached the action, and its output masks it
    # the execute body's selector overrides the job's, and ids override a selector
    other = admin.jobs.execute(job.job_serial, target_selector={"tags_any": ["py"], "name": "py-sel-*"},
                               parameters={"VERSION": "2"})
    assert len(other.branches) == 2
    assert admin.executions.wait(other.execution_serial, timeout=30).status == "completed"
    updated = admin.jobs.update(job.id, target_ids=[chosen.id], parameters=[])
    assert updated.target_selector is None and updated.parameters == []


def test_viewer_cannot_create_jobs(sdk_server, users_by_role, seeded):
    viewer = client_for(sdk_server, *users_by_role["viewer"])
    with pytest.raises(Forbidden):
        viewer.jobs.create(unique("py-nope"), [echo_action()])
    assert viewer.jobs.get(seeded["job"].job_serial).id == seeded["job"].id  # reading is fine


# ------------------------------------------------------------------------------------------- executions


def test_executions_lookups_by_serial(admin, seeded):
    execution = seeded["execution"]
    found = admin.executions.get_by_serial(execution.execution_serial)
    assert found.status == "completed" and found.job.job_serial == seeded["job"].job_serial
    assert found.job.name == seeded["job"].name and found.finished
    assert RFC3339_Z.match(found.started_at) and RFC3339_Z.match(found.completed_at)
    branch_serial = found.branches[0].branch_serial
    branch = admin.executions.get_branch(branch_serial)
    assert isinstance(branch, BranchDetail) and branch.execution_serial == execution.execution_serial
    assert branch.result_output == "hello\n" and branch.exit_code == 0 and branch.error_type is None
    assert branch.target.target_serial == seeded["target"].target_serial
    assert branch.steps[0].stdout == "hello\n" and branch.steps[0].status == "completed"
    with pytest.raises(ValidationError) as info:
        admin.executions.get_by_serial("invalid_serial")
    assert info.value.details == {"field": "execution_serial", "expected_format": "J20250001.0001",
                                  "received": "invalid_serial"}
    with pytest.raises(NotFound):
        admin.executions.get_by_serial(seeded["job"].job_serial + ".9999")
    with pytest.raises(ValidationError):
        admin.executions.get_branch(execution.execution_serial)  # not a branch serial


def test_branch_output_while_running_and_after(admin, seeded):
    gate = Path("/tmp") / f"opsc-py-gate-{uuid.uuid4().hex[:8]}"  # the command waits for it (the server is local)
    try:
        job = admin.jobs.create(unique("py-live"), [{
            "action_type": "command", "action_name": "talk", "timeout_seconds": 30, "action_parameters": {
                "command": f"echo one; while [ ! -e {gate} ]; do sleep 0.05; done; echo two; echo err >&2"}}],
            target_ids=[seeded["target"].id])
        branch_serial = admin.jobs.execute(job.job_serial).branches[0].branch_serial

        def printed() -> BranchOutput | None:
            output = admin.executions.get_output(branch_serial)
            return output if output.data else None

        live = wait_until(printed, timeout=30, message="the first line")
        assert isinstance(live, BranchOutput)
        assert (live.stream, live.offset, live.data, live.next_offset, live.running, live.truncated) == \
            ("stdout", 0, "one\n", 4, True, False)
    finally:
        gate.touch()
    admin.executions.wait(job.job_serial + ".0001", timeout=30)
    gate.unlink()
    rest = admin.executions.get_output(branch_serial, offset=live.next_offset)
    assert (rest.offset, rest.data, rest.next_offset, rest.running) == (4, "two\n", 8, False)
    assert admin.executions.get_output(branch_serial, stream="stderr").data == "err\n"
    with pytest.raises(BadRequest):
        admin.executions.get_output(branch_serial, stream="stdin")
    with pytest.raises(NotFound):
        admin.executions.get_output(seeded["job"].job_serial + ".9999.0001")


def test_executions_search_and_bulk(admin, seeded):
    serial = seeded["execution"].execution_serial
    branch_serial = seeded["execution"].branches[0].branch_serial
    results = admin.executions.search(seeded["job"].job_serial, type="execution", limit=10)
    assert results.query == seeded["job"].job_serial and results.type == "execution"
    assert results.total >= 1 and serial in {r.serial for r in results.results}
    assert all(r.type == "execution" for r in results.results)
    by_name = admin.executions.search(seeded["job"].name.upper())  # case-insensitive job name
    assert {r.type for r in by_name.results} == {"execution", "branch"}
    bulk = admin.executions.bulk([branch_serial, "J20990001.0001", "garbage", serial])
    assert [r.serial for r in bulk.results] == [branch_serial, "J20990001.0001", "garbage", serial]
    assert [r.found for r in bulk.results] == [True, False, False, True]
    assert bulk.results[0].data.target_serial_ref == seeded["target"].target_serial
    assert bulk.results[3].data.job_serial == seeded["job"].job_serial
    assert bulk.not_found == ["J20990001.0001", "garbage"]
    with pytest.raises(ValidationError):
        admin.executions.bulk([])


def test_cancel_and_wait_timeout(admin, seeded):
    target = admin.targets.create(unique("py-local-sleep"), connection="local")  # keeps the seeded one at 100%
    job = admin.jobs.create(unique("py-sleep"), [{"action_type": "command", "action_name": "sleep",
                                                  "action_parameters": {"command": "sleep 30"}}],
                            target_ids=[target.id])
    execution = admin.jobs.execute(job.id)
    with pytest.raises(WaitTimeout):
        admin.executions.wait(execution.execution_serial, timeout=0.3, poll_interval=0.1)
    cancelled = admin.executions.cancel(execution.execution_serial)
    assert cancelled.execution_serial == execution.execution_serial
    final = admin.executions.wait(execution.execution_serial, timeout=20, poll_interval=0.1)
    assert final.status == "cancelled"
    assert all(b.status == "cancelled" for b in final.branches)


def test_retry_reruns_only_what_failed_and_keys_make_calls_safe_to_repeat(admin):
    """Two local targets race to create one directory: one branch completes, the other fails; a retry
    runs again on exactly the one that failed."""
    targets = [admin.targets.create(unique("py-local-retry"), connection="local") for _ in range(2)]
    lock = f"/tmp/{unique('py-retry-lock')}"
    job = admin.jobs.create(unique("py-retry"), [{"action_type": "command", "action_name": "take-lock",
                                                  "action_parameters": {"command": f"mkdir {lock}"}}],
                            target_ids=[t.id for t in targets])
    key = unique("py-key")
    first = admin.jobs.execute(job.job_serial, idempotency_key=key)
    again = admin.jobs.execute(job.job_serial, idempotency_key=key)
    assert again.execution_serial == first.execution_serial and again.retry_of is None
    with pytest.raises(ValidationError) as used:
        admin.jobs.execute(job.job_serial, [targets[0].id], idempotency_key=key)
    assert used.value.details["field"] == "Idempotency-Key"
    parent = admin.executions.wait(first.execution_serial, timeout=30, poll_interval=0.1)
    assert sorted(b.status for b in parent.branches) == ["completed", "failed"]
    failed = [b.target_id for b in parent.branches if b.status == "failed"]
    retry_key = unique("py-retry-key")
    retry = admin.executions.retry(first.execution_serial, idempotency_key=retry_key)
    assert isinstance(retry, Execution)
    assert retry.trigger == "retry" and retry.retry_of == first.execution_serial and retry.retries == []
    assert [b.target_id for b in retry.branches] == failed
    assert admin.executions.retry(first.execution_serial, idempotency_key=retry_key).execution_serial \
        == retry.execution_serial
    everything = admin.executions.retry(first.execution_serial, only="all")
    assert sorted(b.target_id for b in everything.branches) == sorted(t.id for t in targets)
    assert admin.executions.get_by_serial(first.execution_serial).retries == [retry.execution_serial,
                                                                              everything.execution_serial]
    shutil.rmtree(lock, ignore_errors=True)


def test_rollout_brakes_through_the_sdk(admin):
    """max_errors "0" with max_concurrency "1": the first failure skips every branch not yet started."""
    targets = [admin.targets.create(unique("py-rollout"), connection="local", max_concurrent_runs=1)
               for _ in range(3)]
    assert targets[0].max_concurrent_runs == 1
    job = admin.jobs.create(unique("py-rollout"), [{"action_type": "command", "action_name": "fail",
                                                    "action_parameters": {"command": "exit 7"}}],
                            target_ids=[t.id for t in targets])
    started = admin.jobs.execute(job.job_serial, max_concurrency="1", max_errors="0")
    assert (started.max_concurrency, started.max_errors, started.stop_reason) == ("1", "0", None)
    done = admin.executions.wait(started.execution_serial, timeout=30, poll_interval=0.1)
    assert done.status == "failed" and "rollout stopped" in done.stop_reason
    assert sorted(b.status for b in done.branches) == ["failed", "skipped", "skipped"]
    with pytest.raises(ValidationError) as bad:
        admin.jobs.execute(job.job_serial, max_concurrency="0")
    assert "max_concurrency" in str(bad.value.details)


def test_a_running_execution_cannot_be_retried(admin):
    target = admin.targets.create(unique("py-local-sleep"), connection="local")
    job = admin.jobs.create(unique("py-sleep"), [{"action_type": "command", "action_name": "sleep",
                                                  "action_parameters": {"command": "sleep 30"}}],
                            target_ids=[target.id])
    execution = admin.jobs.execute(job.id)
    with pytest.raises(Conflict) as running:
        admin.executions.retry(execution.execution_serial)
    assert "still running" in running.value.message
    admin.executions.cancel(execution.execution_serial)
    admin.executions.wait(execution.execution_serial, timeout=20, poll_interval=0.1)
    retry = admin.executions.retry(execution.execution_serial)
    assert retry.retry_of == execution.execution_serial
    admin.executions.cancel(retry.execution_serial)
    with pytest.raises(ValidationError) as bad:
        admin.executions.retry(execution.execution_serial, only="some")
    assert bad.value.details["field"] == "only"


def test_live_events_for_an_execution(admin, seeded):
    job_serial = seeded["job"].job_serial
    with admin.executions.events(job_serial=job_serial, timeout=20) as stream:
        assert stream.filters == {"job_serial": job_serial}
        execution = admin.jobs.execute(job_serial)
        seen = []
        for event in stream:
            assert isinstance(event, Event)
            assert event.data.execution_serial == execution.execution_serial
            seen.append(event.type)
            if event.type == "execution_completed":
                assert event.data.status == "completed"
                break
    assert seen == ["execution_started", "branch_started", "branch_completed", "execution_completed"]
    assert stream.closed
    # an execution filter: only that execution's events
    with admin.executions.events(execution_serial=execution.execution_serial, timeout=0.5) as stream:
        assert stream.filters == {"execution_serial": execution.execution_serial}
        other = admin.jobs.execute(job_serial)  # a different execution: filtered out
        admin.executions.wait(other.execution_serial, timeout=30)  # all its events are out by now
        with pytest.raises(WaitTimeout):
            stream.next(timeout=1.0)


def test_live_events_refuse_bad_tokens_and_filters(sdk_server, admin):
    with pytest.raises(ValidationError) as info:
        admin.executions.events(job_serial="J2025")
    assert info.value.details["field"] == "job_serial" and info.value.details["received"] == "J2025"
    bad = EnableDRMClient(sdk_server.base_url, token="not-a-jwt")
    with pytest.raises(Unauthorized):
        bad.executions.events()
    with pytest.raises(Unauthorized):
        EnableDRMClient(sdk_server.base_url).executions.events()  # no token at all


# -------------------------------------------------------------------------------------------- analytics


def test_analytics(admin, seeded):
    hourly = admin.analytics.executions(period="24h", group_by="hour")
    assert hourly.period == "24h" and hourly.group_by == "hour"
    assert len(hourly.data) in (24, 25) and hourly.total_executions >= 1
    assert sum(b.executions for b in hourly.data) == hourly.total_executions
    assert RFC3339_Z.match(hourly.data[-1].date)
    default = admin.analytics.executions()
    assert default.period == "7d" and default.group_by == "day"
    metrics = admin.analytics.job_metrics(seeded["job"].job_serial, period="30d")
    assert metrics.job_serial == seeded["job"].job_serial and metrics.job_name == seeded["job"].name
    assert metrics.total_executions >= 1 and metrics.period == "30d"
    assert metrics.target_performance[0].target_serial == seeded["target"].target_serial
    with pytest.raises(BadRequest) as info:
        admin.analytics.executions(period="1y")
    assert info.value.status == 400 and info.value.error == "bad_request"
    with pytest.raises(NotFound):
        admin.analytics.job_metrics("J20999999")


# ----------------------------------------------------------------------------------------------- errors


def test_error_classes_from_the_live_server(admin):
    cases = [
        (BadRequest, 400, lambda: admin.jobs.list(per_page=0)),
        (NotFound, 404, lambda: admin.request("GET", "/no-such-route")),
        (MethodNotAllowed, 405, lambda: admin.request("DELETE", "/executions/search")),
        (ValidationError, 422, lambda: admin.jobs.create("x", [])),
        (PayloadTooLarge, 413, lambda: admin.executions.bulk(["J20250001.0001" * 100] * 1000)),
    ]
    for cls, status, call in cases:
        with pytest.raises(cls) as info:
            call()
        error = info.value
        assert isinstance(error, ApiError) and isinstance(error, EnableDRMError)
        assert error.status == status, (cls, error)
        assert error.error == {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                               413: "payload_too_large", 422: "validation_error"}[status]
        assert error.message and isinstance(error.details, dict)
    assert enabledrm_sdk.ServerError is enabledrm_sdk.InternalError


def test_unreachable_server_is_a_transport_error():
    client = EnableDRMClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(TransportError):
        client.auth.me()


def test_rate_limited_without_retries_carries_retry_after(limited_server, limited_tokens):
    client = EnableDRMClient(limited_server.base_url, token=limited_tokens["python"], max_retries=0)
    with pytest.raises(RateLimited) as info:
        for _ in range(10):  # 3 a minute; a minute boundary may grant 3 more
            client.auth.me()
    error = info.value
    assert error.status == 429 and error.error == "rate_limited"
    assert error.retry_after is not None and 0 < error.retry_after <= 60
    assert error.headers.get("retry-after") or error.headers.get("Retry-After")


# --------------------------------------------------------------------------- 429 retry loop (stub server)


@contextmanager
def stub_server(responses):
    """A local HTTP server answering each request with the next (status, headers, body) of `responses`
    (the last one repeats); yields (base_url, request_times)."""
    times: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            times.append(time.monotonic())
            status, headers, body = responses[min(len(times) - 1, len(responses) - 1)]
            payload = json.dumps(body).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", times
    finally:
        server.shutdown()
        server.server_close()


LIMITED = (429, {"Retry-After": "1"}, {"error": "rate_limited", "message": "Rate limit exceeded", "details": {}})
ME = (200, {}, {"id": 7, "username": "stub", "role": "viewer", "is_active": True,
                "created_at": "2025-01-08T10:00:00Z"})


def test_429_is_retried_after_retry_after():
    with stub_server([LIMITED, ME]) as (url, times):
        client = EnableDRMClient(url, token="t", max_retries=3)
        me = client.auth.me()
    assert me.username == "stub" and len(times) == 2
    assert times[1] - times[0] >= 0.95  # waited Retry-After: 1


def test_429_retries_are_bounded():
    with stub_server([LIMITED]) as (url, times):
        client = EnableDRMClient(url, token="t", max_retries=1)
        with pytest.raises(RateLimited) as info:
            client.auth.me()
    assert len(times) == 2 and info.value.retry_after == 1.0
    with stub_server([LIMITED]) as (url, times):
        with pytest.raises(RateLimited):
            EnableDRMClient(url, token="t", max_retries=0).auth.me()
    assert len(times) == 1


def test_429_asking_for_a_long_wait_is_raised_not_slept_through():
    long_wait = (429, {"Retry-After": "3600"}, LIMITED[2])
    with stub_server([long_wait, ME]) as (url, times):
        with pytest.raises(RateLimited) as info:
            EnableDRMClient(url, token="t", max_retries=3).auth.me()
    assert len(times) == 1 and info.value.retry_after == 3600.0


def test_error_mapping_for_codes_the_live_server_cannot_be_made_to_answer():
    answers = [
        ((500, {}, {"error": "internal_error", "message": "boom", "details": {}}), ServerError),
        ((503, {}, {"message": "maintenance"}), ServerError),
        ((415, {}, {"error": "unsupported_media_type", "message": "json only", "details": {"received": "x"}}),
         UnsupportedMediaType),
        ((409, {}, {"error": "conflict", "message": "dup", "details": {"name": "a"}}), Conflict),
        ((418, {}, {"error": "teapot", "message": "short and stout"}), ApiError),
    ]
    for answer, cls in answers:
        with stub_server([answer]) as (url, _):
            with pytest.raises(cls) as info:
                EnableDRMClient(url, token="t").auth.me()
        assert type(info.value) is cls
        assert info.value.status == answer[0] and info.value.message == answer[2]["message"]
    with stub_server([(500, {}, {"error": "internal_error", "message": "boom", "details": {"a": 1}})]) as (url, _):
        with pytest.raises(ServerError) as info:
            EnableDRMClient(url).auth.me()
    assert info.value.error == "internal_error" and info.value.details == {"a": 1}


# ----------------------------------------------------------------------------------------------- models


def test_response_objects():
    execution = Execution({"execution_serial": "J20250001.0001", "status": "running",
                           "branches": [{"branch_serial": "J20250001.0001.0001", "status": "queued"}],
                           "job": {"id": 1, "job_serial": "J20250001", "name": "n"}, "extra": {"a": [{"b": 1}]}})
    assert execution.status == "running" and execution["status"] == "running" and "status" in execution
    assert type(execution.branches[0]).__name__ == "Branch" and execution.branches[0].finished is False
    assert execution.job.job_serial == "J20250001"
    assert isinstance(execution.extra, ApiObject) and execution.extra.a[0].b == 1  # unknown fields still work
    assert execution.to_dict()["branches"][0]["status"] == "queued"
    assert execution == execution.to_dict()
    with pytest.raises(AttributeError):
        execution.status = "x"
    with pytest.raises(AttributeError):
        _ = execution.missing
    page = Page({"data": [{"id": 1}, {"id": 2}], "pagination": {"page": 1, "has_next": False}}, Job)
    assert [j.id for j in page] == [1, 2] and len(page) == 2 and isinstance(page[0], Job)
    assert page.pagination.has_next is False
    assert parse_time("2025-01-08T10:00:00Z") == datetime(2025, 1, 8, 10, tzinfo=UTC)


def test_package_metadata_and_typing_marker(tmp_path):
    """`pip install ./sdk/python` installs a typed package whose only dependencies are httpx and websocket-client."""
    source = tmp_path / "source"  # a copy: setuptools leaves build/ behind in the tree it builds
    shutil.copytree(REPO_ROOT / "sdk" / "python", source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                             str(source)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("enabledrm_sdk-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "enabledrm_sdk/py.typed" in names and "enabledrm_sdk/client.py" in names
    assert "enabledrm_sdk/resources/executions.py" in names
    requires = sorted(line.split(":", 1)[1].strip().split(" ")[0].split("<")[0].split(">")[0]
                      for line in metadata.splitlines() if line.startswith("Requires-Dist:"))
    assert requires == ["httpx", "websocket-client"]


# ------------------------------------------------------------------------------------ reference snippet


def test_reference_snippet_is_the_reference_verbatim():
    text = REFERENCE.read_text()
    block = text.split("### Python SDK\n```python\n", 1)[1].split("```", 1)[0]
    assert block == PYTHON_SNIPPET


def test_reference_python_snippet_runs_with_only_serials_changed(sdk_server, admin, seeded):
    execution_serial = seeded["execution"].execution_serial
    target_serial = seeded["target"].target_serial
    # the serials, plus the two placeholders: this server's address and a real token
    code = (PYTHON_SNIPPET
            .replace('"J20250001.0001"', json.dumps(execution_serial))
            .replace('"T20250001"', json.dumps(target_serial))
            .replace('"http://localhost:8000"', json.dumps(sdk_server.base_url.replace("127.0.0.1", "localhost")))
            .replace('"your_jwt_token"', json.dumps(admin.token)))
    assert code.count("\n") == PYTHON_SNIPPET.count("\n")
    output = io.StringIO()
    with redirect_stdout(output):
        exec(compile(code, "reference_snippet.py", "exec"), {"__name__": "__main__"})
    assert output.getvalue().splitlines() == ["Status: completed", "Success rate: 100.0%"]
