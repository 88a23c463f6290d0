"""The role matrix of every route (SPEC §5 Auth; the security brief's threat model): anonymous callers
reach login and the probes only; viewers read; operators write jobs, SSH targets and executions but
never users, credentials or host keys; administrators do everything. The mutating routes are
enumerated from app.url_map, so a new route fails the coverage check until its row is added here.
Every refusal is the error envelope and changes no row of any table.

Local targets (operators may not create, change, delete or run them) have their own matrix in
tests/security/test_local_targets.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from common.models import Credential
from tests.api.conftest import assert_error, table_snapshot
from tests.conftest import PASSWORD

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OWN_TESTS = frozenset({"/api/auth/login", "/api/auth/refresh"})  # tests/api/test_auth.py, test_tokens.py
# reachable without a token: login, the API description (tests/api/test_openapi.py makes it public) and its
# explorer page, which holds no data (tests/api/test_docs.py)
PUBLIC_API = frozenset({("POST", "/api/auth/login"), ("GET", "/api/openapi.json"), ("GET", "/api/docs")})
ADMIN_ONLY_READS = ("/api/users", "/api/credentials")  # prefixes: lists and items

OPERATOR_NET = "192.168.1.0/24"  # the fleet the operator may point the shared credential at
JOB_ACTIONS = [{"action_type": "command", "action_name": "uptime", "action_parameters": {"command": "uptime"}}]


@dataclass(frozen=True)
class Case:
    method: str
    rule: str
    path: str  # str.format()ed with the world
    body: Any  # a body the allowed roles succeed with (a refusal must not be a validation error)
    who: str  # "admin": administrators only; "writers": admin and operator; "readers": every role
    ok: int  # the allowed roles' status

    def url(self, world: dict) -> str:
        return self.path.format(**world)

    def payload(self, world: dict) -> Any:
        return _fill(self.body, world)


def _fill(value: Any, world: dict) -> Any:
    """Bodies name world objects as "{key}" strings (a whole "{key}" becomes the value itself)."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in world:
        return world[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    return value


# every mutating route; objects come from _world, each route on objects of its own so the order is free
MATRIX = [
    Case("POST", "/api/users", "/api/users",
         {"username": "newcomer", "password": "long-enough-pw", "role": "admin"}, "admin", 201),
    Case("PATCH", "/api/users/<int:user_id>", "/api/users/{promotee_id}", {"role": "admin"}, "admin", 200),
    Case("POST", "/api/credentials", "/api/credentials",
         {"name": "new-cred", "username": "root", "auth_type": "password", "password": "new-cred-secret"},
         "admin", 201),
    Case("PATCH", "/api/credentials/<int:credential_id>", "/api/credentials/{credential_id}",
         {"password": "rotated-cred-secret"}, "admin", 200),
    Case("DELETE", "/api/credentials/<int:credential_id>", "/api/credentials/{spare_credential_id}", None,
         "admin", 204),
    Case("POST", "/api/targets", "/api/targets",
         {"name": "new-target", "ip_address": "192.168.1.77", "credential_id": "{credential_id}"}, "writers", 201),
    Case("PATCH", "/api/targets/<target_ref>", "/api/targets/{target_serial}",
         {"description": "changed", "tags": ["web"]}, "writers", 200),
    Case("DELETE", "/api/targets/<target_ref>", "/api/targets/{doomed_target_serial}", None, "writers", 204),
    Case("POST", "/api/targets/<target_ref>/reset-host-key", "/api/targets/{pinned_target_serial}/reset-host-key",
         None, "admin", 200),
    Case("POST", "/api/jobs", "/api/jobs",
         {"name": "new-job", "actions": JOB_ACTIONS, "target_ids": ["{target_id}"]}, "writers", 201),
    Case("PATCH", "/api/jobs/<job_id>", "/api/jobs/{job_serial}", {"description": "changed"}, "writers", 200),
    Case("DELETE", "/api/jobs/<job_id>", "/api/jobs/{doomed_job_serial}", None, "writers", 204),
    Case("POST", "/api/jobs/<job_id>/execute", "/api/jobs/{job_id}/execute", {"target_ids": ["{target_id}"]},
         "writers", 201),
    Case("POST", "/api/executions/serial/<execution_serial>/cancel",
         "/api/executions/serial/{execution_serial}/cancel", None, "writers", 200),
    Case("POST", "/api/executions/serial/<execution_serial>/retry",
         "/api/executions/serial/{finished_execution_serial}/retry", {"only": "all"}, "writers", 201),
    # a lookup sent as POST for its long body: a read
    Case("POST", "/api/executions/bulk", "/api/executions/bulk",
         {"serials": ["{execution_serial}", "{branch_serial}", "J20990001.0001"]}, "readers", 200),
]

# where a GET rule's path variables come from
GET_ARGS = {"job_id": "job_serial", "job_serial": "job_serial", "target_ref": "target_serial",
            "target_serial": "target_serial", "execution_serial": "execution_serial",
            "branch_serial": "branch_serial", "user_id": "promotee_id", "credential_id": "credential_id"}
GET_QUERY = {"/api/executions/search": "?q=J"}  # required query parameters


def _allowed(case: Case, role: str) -> bool:
    return role == "admin" or case.who == "readers" or (case.who == "writers" and role == "operator")


def _send(client, method: str, url: str, body: Any, headers: dict[str, str] | None):
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    return client.open(url, method=method, **kwargs)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _me(client, headers) -> dict:
    response = client.get("/api/auth/me", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _allow_hosts(client, admin, db, credential_id: int, hosts: list[str]) -> None:
    """Let operators point the credential at `hosts` (least privilege: an operator may attach a
    credential only to an address an administrator allowed). Through the API where it takes
    allowed_hosts; straight into the row while it does not yet."""
    response = client.patch(f"/api/credentials/{credential_id}", json={"allowed_hosts": hosts}, headers=admin)
    if response.status_code == 200:
        return
    assert response.status_code == 422, response.get_json()
    if hasattr(Credential, "allowed_hosts"):
        with db.session() as session:
            session.get(Credential, credential_id).allowed_hosts = hosts


def _world(client, db, make, admin, users) -> dict:
    """One object of each kind per route that uses it, made by the admin, and the ids/serials naming them."""
    credential = make.credential(name="fleet-cred")
    _allow_hosts(client, admin, db, credential["id"], [OPERATOR_NET])
    spare = make.credential(name="spare-cred")
    target = make.target(credential_id=credential["id"], name="web-1", ip_address="192.168.1.10")
    doomed_target = make.target(credential_id=credential["id"], name="web-2", ip_address="192.168.1.11")
    pinned = make.target(credential_id=credential["id"], name="web-3", ip_address="192.168.1.12")
    with db.engine.begin() as conn:  # as a worker's first connection would have left it
        conn.execute(text("UPDATE targets SET host_key = :k, host_key_fingerprint = :f WHERE id = :i"),
                     {"k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedHostKeyForTheRoleMatrix0000",
                      "f": "SHA256:pinned-host-key-fingerprint", "i": pinned["id"]})
    jobs = {}
    for key in ("job", "doomed_job", "run_job"):
        response = client.post("/api/jobs", json={"name": key, "actions": JOB_ACTIONS, "target_ids": [target["id"]]},
                               headers=admin)
        assert response.status_code == 201, response.get_json()
        jobs[key] = response.get_json()
    execution = client.post(f"/api/jobs/{jobs['run_job']['id']}/execute", json={}, headers=admin)
    assert execution.status_code == 201, execution.get_json()
    execution = execution.get_json()
    finished = client.post(f"/api/jobs/{jobs['run_job']['id']}/execute", json={}, headers=admin).get_json()
    cancel = client.post(f"/api/executions/serial/{finished['execution_serial']}/cancel", headers=admin)
    assert cancel.status_code == 200 and cancel.get_json()["status"] == "cancelled", cancel.get_json()
    users.create("promotee", "viewer")
    promotee = users.token("promotee")
    return {
        "credential_id": credential["id"], "spare_credential_id": spare["id"],
        "target_id": target["id"], "target_serial": target["target_serial"],
        "doomed_target_serial": doomed_target["target_serial"], "pinned_target_serial": pinned["target_serial"],
        "job_id": jobs["job"]["id"], "job_serial": jobs["job"]["job_serial"],
        "doomed_job_serial": jobs["doomed_job"]["job_serial"],
        "execution_serial": execution["execution_serial"], "finished_execution_serial": finished["execution_serial"],
        "branch_serial": execution["branches"][0]["branch_serial"],
        "promotee_id": _me(client, _bearer(promotee["access_token"]))["id"],
    }


@pytest.fixture
def world(client, db, make, admin, users) -> dict:
    return _world(client, db, make, admin, users)


def _api_rules(app) -> list[tuple[str, str]]:
    """(method, rule) of every /api route, HEAD and OPTIONS aside."""
    return sorted((method, rule.rule) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
                  for method in rule.methods - {"HEAD", "OPTIONS"})


def _get_url(rule: str, world: dict) -> str:
    url = rule
    for part in rule.split("<")[1:]:
        variable = part.split(">")[0]
        name = variable.split(":")[-1]
        assert name in GET_ARGS, f"GET {rule}: add its path variable {name!r} to GET_ARGS"
        url = url.replace(f"<{variable}>", str(world[GET_ARGS[name]]))
    return url + GET_QUERY.get(rule, "")


def _request_for(method: str, rule: str, world: dict) -> tuple[str, Any]:
    for case in MATRIX:
        if (case.method, case.rule) == (method, rule):
            return case.url(world), case.payload(world)
    if method == "GET":
        return _get_url(rule, world), None
    return _get_url(rule, world), {}  # login and refresh: their own tests give them bodies


def _check_refusal(client, db, method: str, url: str, body: Any, headers, status: int, error: str) -> str | None:
    """None when the request is refused in the envelope and nothing changed; else what went wrong."""
    before = table_snapshot(db)
    response = _send(client, method, url, body, headers)
    try:
        assert_error(response, status, error)
    except AssertionError as exc:
        return f"{method} {url}: {exc}"
    if table_snapshot(db) != before:
        return f"{method} {url}: refused with {status} but changed the database"
    return None


# ---------------------------------------------------------------- coverage of the matrix

def test_the_matrix_names_every_mutating_route(app):
    routed = {(m, r) for m, r in _api_rules(app) if m in MUTATING and r not in OWN_TESTS}
    listed = {(case.method, case.rule) for case in MATRIX}
    assert len(listed) == len(MATRIX), "a route is listed twice"
    assert routed - listed == set(), "mutating routes missing from the role matrix: add a Case for each"
    assert listed - routed == set(), "the matrix lists routes the app no longer has"


# ---------------------------------------------------------------- anonymous

def test_anonymous_gets_401_on_every_api_route_but_login(app, client, db, world):
    failures = []
    checked = 0
    for method, rule in _api_rules(app):
        if (method, rule) in PUBLIC_API:
            continue
        url, body = _request_for(method, rule, world)
        failures.append(_check_refusal(client, db, method, url, body, None, 401, "unauthorized"))
        checked += 1
    assert checked >= len(MATRIX) + 10
    assert [f for f in failures if f] == []


def test_anonymous_reaches_login_and_the_probes(client, users):
    users.create("alice", "viewer")
    login = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200, login.get_json()
    assert login.get_json()["access_token"]
    for probe in ("/healthz", "/readyz"):
        response = client.get(probe)
        assert response.status_code == 200, (probe, response.get_data(as_text=True))
        assert response.get_json()["status"] == "ok"


def test_an_unknown_api_route_is_401_or_404_never_a_listing(client):
    for path in ("/api/", "/api/admin", "/api/users/", "/api/credentials/1/secret", "/api/debug"):
        response = client.get(path)
        assert response.status_code in (401, 404), (path, response.status_code)
        assert_error(response, response.status_code)


# ---------------------------------------------------------------- authenticated roles on the mutating routes

@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_role_matrix_of_the_mutating_routes(client, db, users, world, role):
    headers = users.headers(role)
    failures = []
    for case in MATRIX:
        url, body = case.url(world), case.payload(world)
        if _allowed(case, role):
            response = _send(client, case.method, url, body, headers)
            if response.status_code != case.ok:
                failures.append(f"{case.method} {url}: {role} expected {case.ok}, got {response.status_code} "
                                f"{response.get_data(as_text=True)[:300]}")
        else:
            failures.append(_check_refusal(client, db, case.method, url, body, headers, 403, "forbidden"))
    assert [f for f in failures if f] == []


def test_viewer_and_operator_cannot_promote_themselves(client, db, users):
    for role in ("viewer", "operator"):
        headers = users.headers(role)
        me = _me(client, headers)
        for body in ({"role": "admin"}, {"password": "taken-over-pw"}, {"is_active": True}):
            failure = _check_refusal(client, db, "PATCH", f"/api/users/{me['id']}", body, headers, 403, "forbidden")
            assert failure is None, failure
        assert _me(client, headers)["role"] == role


def test_the_refusal_names_the_role_not_the_object(client, users, world):
    """A 403 must not depend on (or reveal) whether the object exists: the role is checked first."""
    for role in ("viewer", "operator"):
        headers = users.headers(role)
        real = assert_error(client.patch(f"/api/credentials/{world['credential_id']}", json={"name": "x"},
                                         headers=headers), 403, "forbidden")
        missing = assert_error(client.patch("/api/credentials/999999", json={"name": "x"}, headers=headers),
                               403, "forbidden")
        assert real == missing
        assert real["details"].get("role") == role


# ---------------------------------------------------------------- reads

def _reads(app) -> list[str]:
    return [rule for method, rule in _api_rules(app) if method == "GET" and ("GET", rule) not in PUBLIC_API]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_non_admins_read_everything_but_users_and_credentials(app, client, db, users, world, role):
    headers = users.headers(role)
    failures = []
    admin_only = 0
    for rule in _reads(app):
        url = _get_url(rule, world)
        if rule.startswith(ADMIN_ONLY_READS):
            admin_only += 1
            failures.append(_check_refusal(client, db, "GET", url, None, headers, 403, "forbidden"))
        else:
            response = client.get(url, headers=headers)
            if response.status_code != 200:
                failures.append(f"GET {url}: {role} expected 200, got {response.status_code}")
    assert admin_only == 4  # /api/users, /api/users/<id>, /api/credentials, /api/credentials/<id>
    assert [f for f in failures if f] == []


def test_admin_reads_everything(app, client, admin, world):
    failures = []
    for rule in _reads(app):
        url = _get_url(rule, world)
        response = client.get(url, headers=admin)
        if response.status_code != 200:
            failures.append(f"GET {url}: admin expected 200, got {response.status_code}")
    assert failures == []


def test_operator_sees_no_secret_through_the_readable_routes(app, client, users, world):
    """What operators may read about targets and jobs never carries the credential's secret."""
    headers = users.headers("operator")
    for rule in _reads(app):
        if rule.startswith(ADMIN_ONLY_READS):
            continue
        response = client.get(_get_url(rule, world), headers=headers)
        raw = response.get_data(as_text=True)
        assert "s3cret-password" not in raw, rule  # the factory credentials' password
        assert "secret_encrypted" not in raw and "gAAAAA" not in raw, rule  # nor its ciphertext
