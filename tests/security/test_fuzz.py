"""The OpenAPI document tells the truth, proven by a fuzzer (issue 9): schemathesis runs every operation of
GET /api/openapi.json against a live embedded server, with every check, and finds nothing: no server error,
no undocumented status, no schema-valid request rejected, no schema-violating request accepted, no
response that breaks its schema or its documented headers.

Nothing the fuzzer sends can run a command on this machine, three times over:
- No worker exists. The server is `opsconductor.standalone.build()`'s app (migrations, admin, the embedded
  dispatcher on Celery's in-memory transport, the in-process event bus) served the way `Embedded.start()`
  serves it, without the two threads `start()` adds to turn messages into processes: the Celery worker
  and the sweep/scheduler loop. The in-memory transport lives inside this process, so a branch message has
  no consumer anywhere; the test ends by checking that no branch ever left `queued`. (A dispatcher to an
  unconsumed queue would not be enough with the sweep running: it re-sends branches to their target's
  queue, which the fuzzer may set to `default`.)
- The fuzzer is an operator, never the admin: only an admin may create, change or run on a `local`
  target (one that runs commands on the worker host), so every such attempt is a 403.
- Its targets are SSH targets in TEST-NET (192.0.2.0/24, 2001:db8::/32, *.fuzz.invalid) with a made-up
  password: even a worker would reach nothing.

Rules of state and time no schema can state (an id that exists, a time in the future; the document's
descriptions say them) are met by mapping schema-valid cases into the platform's state: ids of existing
targets and credentials, TEST-NET addresses, future times, a finished execution to retry, an
Idempotency-Key of its own for each distinct request (`_register_hooks`, loaded into the schemathesis
process as its hooks file). Writes on the targets the mapped ids point at go to a spare target instead, so
they stay live and enabled. Deleting a job or target archives it, and its history stays addressable by
design (SPEC §5), so `use_after_free` is off for the reads of archivable resources.

Bounded (FUZZ_EXAMPLES per operation, one seed) so it takes about a minute on two cores and is repeatable;
OPSCONDUCTOR_FUZZ_EXAMPLES and OPSCONDUCTOR_FUZZ_SEED explore further, OPSCONDUCTOR_FUZZ_OUTPUT=FILE keeps
schemathesis's own report of the run."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("OPSCONDUCTOR_FUZZ_EXAMPLES", "10"))
FUZZ_SEED = int(os.environ.get("OPSCONDUCTOR_FUZZ_SEED", "20250109"))
STATE_ENV = "OPSCONDUCTOR_FUZZ_STATE"  # what the hooks need to know, handed to the schemathesis process
ADMIN_PASSWORD = "fuzz-admin-password-1"
OPERATOR_PASSWORD = "fuzz-operator-password-1"
TEST_NET_4 = ipaddress.ip_network("192.0.2.0/24")
TEST_NET_6 = ipaddress.ip_network("2001:db8::/32")
NO_LIMIT = "1000000 per minute"  # the limiter stays on (its headers are documented), far above the fuzz


@pytest.fixture
def live_server(tmp_path):
    """The embedded composition without its worker and sweep threads, on a free port; SQLite in tmp_path."""
    from werkzeug.serving import make_server

    from common.config import Settings
    from opsconductor import standalone
    from tests.conftest import FERNET_SECRET, JWT_SECRET

    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    settings = Settings(database_url=f"sqlite:///{var / 'opsconductor.db'}", jwt_secret_key=JWT_SECRET,
                        secret_key=FERNET_SECRET, embedded=True, var_dir=str(var), admin_username="admin",
                        admin_password=ADMIN_PASSWORD, rate_limit_standard=NO_LIMIT, rate_limit_admin=NO_LIMIT,
                        rate_limit_login=NO_LIMIT)
    embedded = standalone.build(settings)
    server = make_server("127.0.0.1", 0, embedded.app, threaded=True, request_handler=standalone._QuietQueryHandler)
    thread = threading.Thread(target=server.serve_forever, name="fuzz-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", embedded
    finally:
        server.shutdown()
        thread.join(10)
        embedded.runtime.close()


def _seed(base_url: str) -> dict[str, Any]:
    """As the admin: the operator, a credential only TEST-NET may use, targets, a job and an execution
    (queued forever), so lookups find something. Returns the operator's tokens and the ids the hooks use."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=30) as http:
        def call(method: str, path: str, token: str | None = None, **kwargs) -> dict:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = http.request(method, path, headers=headers, **kwargs)
            assert response.status_code < 300, (method, path, response.status_code, response.text)
            return response.json()

        admin = call("POST", "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})["access_token"]
        call("POST", "/api/users", admin, json={"username": "fuzzer", "password": OPERATOR_PASSWORD,
                                                "role": "operator"})
        credential_in = call("GET", "/api/openapi.json")["components"]["schemas"]["CredentialIn"]
        credential = {"name": "fuzz-testnet", "username": "nobody", "auth_type": "password",
                      "password": "not-a-real-password"}
        if "allowed_hosts" in credential_in["properties"]:
            credential["allowed_hosts"] = [str(TEST_NET_4), str(TEST_NET_6), "*.fuzz.invalid"]
        credential_id = call("POST", "/api/credentials", admin, json=credential)["id"]
        # the spare first: it takes id 1, which the document's examples name, and the examples phase runs
        # without hooks (a DELETE /api/targets/1 there archives the spare, not a target the jobs use)
        spare, *kept = [call("POST", "/api/targets", admin, json={
            "name": f"fuzz-testnet-{n}", "credential_id": credential_id, "ip_address": str(TEST_NET_4[10 + n])})
            for n in range(3)]
        job = call("POST", "/api/jobs", admin, json={
            "name": "fuzz-seed", "target_ids": [t["id"] for t in kept],
            "actions": [{"action_type": "command", "action_name": "never-runs",
                         "action_parameters": {"command": "echo never-runs"}}]})
        call("POST", f"/api/jobs/{job['job_serial']}/execute", admin)
        # a finished execution (cancelled while queued) for retries to start from (theirs stay queued too), of
        # a job of its own that writes leave alone: archived, it would answer every retry 409
        retried = call("POST", "/api/jobs", admin, json={
            "name": "fuzz-retried", "target_ids": [t["id"] for t in kept],
            "actions": [{"action_type": "command", "action_name": "never-runs",
                         "action_parameters": {"command": "echo never-runs"}}]})
        finished = call("POST", f"/api/jobs/{retried['job_serial']}/execute", admin)["execution_serial"]
        call("POST", f"/api/executions/serial/{finished}/cancel", admin)
        tokens = call("POST", "/api/auth/login", json={"username": "fuzzer", "password": OPERATOR_PASSWORD})
    return {"access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
            "credential_id": credential_id, "target_ids": [t["id"] for t in kept],
            "target_serials": [t["target_serial"] for t in kept], "spare_target": spare["target_serial"],
            "finished_execution": finished, "retried_job": [str(retried["id"]), retried["job_serial"]],
            "seed_job": job["job_serial"]}


def _toml(value: Any) -> str:
    return json.dumps(value)  # JSON strings, numbers, booleans and arrays are TOML too


def _config(state: dict[str, Any], report: Path) -> str:
    """schemathesis.toml: every check, the operator's tokens, bounded and repeatable generation."""
    return f"""
seed = {FUZZ_SEED}
workers = 1
continue-on-failure = true
hooks = {_toml(str(Path(__file__).resolve()))}

[cache]
enabled = false

[generation]
max-examples = {FUZZ_EXAMPLES}
database = "none"

[checks]
enabled = true

[phases.stateful]
max-steps = 6

[auth.openapi.bearerAuth]
bearer = {_toml(state["access_token"])}

[auth.openapi.refreshToken]
bearer = {_toml(state["refresh_token"])}

[reports.json]
enabled = true
path = {_toml(str(report))}

# DELETE archives a job or a target; its history stays addressable by id and serial (SPEC §5)
[[operations]]
include-path-regex = "^/api/(jobs|targets|analytics/jobs)/\\\\{{"
include-method = "GET"
checks.use_after_free.enabled = false
"""


def test_the_api_does_what_its_openapi_document_says(live_server, tmp_path):
    base_url, embedded = live_server
    state = _seed(base_url)
    report = tmp_path / "report.json"
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(state, report))
    env = {**os.environ, STATE_ENV: json.dumps(state), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
                          f"{base_url}/api/openapi.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    if os.environ.get("OPSCONDUCTOR_FUZZ_OUTPUT"):
        Path(os.environ["OPSCONDUCTOR_FUZZ_OUTPUT"]).write_text(output)
    assert report.exists(), output
    result = json.loads(report.read_text())
    cases = result["test_cases"]["generated"]
    failures = sum(f["count"] for f in result["failures"])
    print(f"\nschemathesis {result['schemathesis_version']}: {result['operations']['tested']} operations, "
          f"{cases} cases, {failures} failures, {len(result['errors'])} errors in {elapsed:.0f} s "
          f"(seed {FUZZ_SEED}, {FUZZ_EXAMPLES} examples per operation)")
    assert result["operations"]["tested"] == result["operations"]["total"] >= 30, result["operations"]
    assert not result["warnings"]["unsupported_regex"], result["warnings"]  # every pattern shapes the cases
    assert failures == 0 and not result["errors"], output
    assert run.returncode == 0, output
    _assert_nothing_ran(embedded)


def _assert_nothing_ran(embedded) -> None:
    """No branch ever left `queued` (unless cancelled there), no local target exists."""
    from sqlalchemy import func, select

    from common.models import Branch, Target

    with embedded.runtime.db.session(read_only=True) as session:
        statuses = dict(session.execute(select(Branch.status, func.count()).group_by(Branch.status)).all())
        local = session.scalar(select(func.count()).select_from(Target).where(Target.connection == "local"))
    assert set(statuses) <= {"queued", "cancelled"} and sum(statuses.values()) > 0, statuses
    assert local == 0


# ---------------------------------------------------------------- the hooks, run inside schemathesis

def _digest(value: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(value).encode()).digest()[:4], "big")


def _test_net_address(value: str) -> str:
    """A generated address, moved into TEST-NET (IPv4 or IPv6 as it was)."""
    net = TEST_NET_6 if ":" in value else TEST_NET_4
    return str(net[1 + _digest(value) % 250])


def _future(value: Any) -> str:
    """A time the API accepts for scheduled_at: in the future (a day to a year ahead), before 2101."""
    when = datetime.now(UTC) + timedelta(days=1, seconds=_digest(value) % (365 * 86400))
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _like(generated: Any, value: int) -> int | float:
    """An id in the generated number's form: JSON Schema's integer 7.0 stays 7.0, so the API is still asked to
    take it."""
    return float(value) if isinstance(generated, float) else value


CRONS = ("*/5 * * * *", "0 9 * * MON-FRI", "30 2 * * *", "0 0 1 * *", "15,45 */2 * JAN-JUN SUN")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")


def _map_schedule(schedule: dict[str, Any]) -> None:
    """A valid cron expression and IANA zone for generated text: no schema states what the library parses."""
    if "cron" in schedule:
        schedule["cron"] = CRONS[_digest(schedule["cron"]) % len(CRONS)]
    if "timezone" in schedule:
        schedule["timezone"] = ZONES[_digest(schedule["timezone"]) % len(ZONES)]


def _map_declarations(declared: list[Any]) -> None:
    """Parameter declarations as the API takes them (their descriptions say so): unique names, no pattern (no
    schema says which text compiles), no default on a secret; none required, so any job runs with none given."""
    names: set[str] = set()
    for decl in list(declared):
        name = decl.get("name").strip() if isinstance(decl, dict) and isinstance(decl.get("name"), str) else None
        if name is None or name in names:  # the API strips names: " A" and "A" are one
            declared.remove(decl)
            continue
        names.add(name)
        decl.pop("pattern", None)
        decl["required"] = False
        if decl.get("secret"):
            decl.pop("default", None)


def _map_body(state: dict[str, Any], path: str, body: dict[str, Any]) -> None:
    """Give a schema-valid body what only the platform's state decides."""
    ids = state["target_ids"]
    if "target_ids" in body or path == "/api/jobs":  # existing live targets, each once, never none: every job
        given = body.get("target_ids") or [0]  # can run without naming its targets
        body["target_ids"] = list(dict.fromkeys(_like(v, ids[_digest(v) % len(ids)]) for v in given))
    if body.get("target_selector") is not None:  # ids or a selector, one that selects the seeded live targets
        body.pop("target_ids", None)
        body["target_selector"] = {"name": "fuzz-testnet-?"}
    if isinstance(body.get("parameters"), list):
        _map_declarations(body["parameters"])
    elif path.endswith("/execute"):  # no job the fuzzer may execute asks for values
        body.pop("parameters", None)
    if body.get("scheduled_at") is not None:
        body["scheduled_at"] = _future(body["scheduled_at"])
    if isinstance(body.get("schedule"), dict):
        _map_schedule(body["schedule"])
    if path.startswith("/api/jobs/"):  # a PATCH: the job may have the other kind of schedule pending
        if body.get("schedule") is not None and "scheduled_at" not in body:
            body["scheduled_at"] = None
        if body.get("scheduled_at") is not None and "schedule" not in body:
            body["schedule"] = None
    if path.startswith("/api/targets"):
        if "credential_id" in body:
            body["credential_id"] = _like(body["credential_id"], state["credential_id"])
        if isinstance(body.get("ip_address"), str):
            body["ip_address"] = _test_net_address(body["ip_address"])
        elif "ip_address" in body and not body.get("hostname"):  # clearing the only address
            body["ip_address"] = str(TEST_NET_4[200])
        hostname = body.get("hostname")
        if isinstance(hostname, str) and not hostname.endswith(".fuzz.invalid") and len(hostname.strip()) <= 235:
            body["hostname"] = body["hostname"].strip() + ".fuzz.invalid"


def _register_hooks() -> None:
    import schemathesis

    state = json.loads(os.environ[STATE_ENV])
    kept = {str(i) for i in state["target_ids"]} | set(state["target_serials"])

    @schemathesis.hook
    def map_case(context, case):
        path, method = case.path, case.method.upper()
        ref = (case.path_parameters or {}).get("target_ref")
        if method != "GET" and path.startswith("/api/targets/{target_ref}") and ref is not None:
            if str(ref).lstrip("0") in kept or str(ref) in kept:  # the targets mapped ids point at stay as they are
                case.path_parameters["target_ref"] = state["spare_target"]
        job_ref = (case.path_parameters or {}).get("job_id")
        if method != "GET" and path == "/api/jobs/{job_id}" and job_ref is not None \
                and (str(job_ref).lstrip("0") in state["retried_job"] or str(job_ref) in state["retried_job"]):
            case.path_parameters["job_id"] = state["seed_job"]  # the retried execution's job stays live
        meta = case.meta
        if meta is not None and meta.generation.mode.is_positive and path.endswith("/retry"):
            case.path_parameters["execution_serial"] = state["finished_execution"]  # one that can be retried
        if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, dict):
            _map_body(state, path, case.body)
        if meta is not None and meta.generation.mode.is_positive and case.headers \
                and case.headers.get("Idempotency-Key") is not None:
            # a key names one request (a used key on another request is a 422): one key per request sent
            sent = (method, path, case.path_parameters, case.body, case.headers["Idempotency-Key"])
            case.headers["Idempotency-Key"] = f"fuzz-{hashlib.sha256(repr(sent).encode()).hexdigest()}"
        return case


if __name__ == "_schemathesis_hooks":  # loaded by schemathesis as its hooks file (see _config)
    _register_hooks()
