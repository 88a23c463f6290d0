"""Selectors and parameters end to end: the API, a real Celery worker, a real sshd and the worker host.
Hostile parameter values reach the actions verbatim as OC_PARAM_* variables and execute nothing; a
secret's value is never stored in the clear, published or logged."""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.crypto import SecretBox
from tests.conftest import FERNET_SECRET
from tests.integration.engine_helpers import (
    branch_rows,
    command,
    describe_execution,
    execution_row,
    step_rows,
    unique,
    wait_execution_done,
)
from tests.worker.test_parameter_env import DUMP, decoded

SECRET = f"pw-{secrets.token_hex(6)}'; echo LEAKED; '$(id)"


@pytest.fixture
def canary() -> Iterator[Path]:
    base = Path("/tmp") / f"opsc-canary-{secrets.token_hex(4)}"
    yield base
    for leftover in Path("/tmp").glob(base.name + "*"):
        leftover.unlink()


def _values(canary: Path) -> dict[str, str]:
    c = str(canary)
    return {"QUOTE": f"'; touch {c}-quote; echo '", "SUBST": f"$(touch {c}-subst)", "TICKS": f"`touch {c}-ticks`",
            "NEWLINES": f"a\n\ntouch {c}-newline\n", "DQUOTE": f'"; touch {c}-dq; "', "UNICODE": "ünï ✓ 日本",
            "TOKEN": SECRET}


def _declare(values: dict[str, str]) -> list[dict]:
    return [{"name": name, "required": True, "secret": name == "TOKEN"} for name in values] + \
        [{"name": "CHANNEL", "default": "stable", "pattern": "stable|beta"}]


def _expected(values: dict[str, str]) -> dict[str, str]:
    return {f"OC_PARAM_{k}": v for k, v in {**values, "CHANNEL": "stable"}.items()}


def _nothing_ran(canary: Path) -> None:
    assert not list(Path("/tmp").glob(canary.name + "*")), "a parameter value was executed"


def test_ssh_branches_chosen_by_selector_see_parameters_verbatim(api, engine_db, ssh_targets, default_worker,
                                                                 events, canary):
    values = _values(canary)
    chosen = ssh_targets[1]
    job = api.call("POST", "/api/jobs", 201, {
        "name": unique("params"), "parameters": _declare(values),
        "target_selector": {"name": chosen["name"].upper()},  # a glob without wildcards, any case
        "actions": [command("dump", DUMP),
                    {"action_type": "script", "action_name": "script", "action_parameters": {
                        "script": f"{DUMP}\nprintf 'stdin:'; cat; echo"}}]})
    body = api.call("POST", f"/api/jobs/{job['id']}/execute", 201, {"parameters": values})
    serial = body["execution_serial"]
    assert [b["target_id"] for b in body["branches"]] == [chosen["id"]]
    assert body["target_selector"]["name"] == chosen["name"].upper()
    assert body["parameters"]["TOKEN"] == "****" and body["parameters"]["QUOTE"] == values["QUOTE"]

    execution = wait_execution_done(engine_db, serial, logs=default_worker.log_tail)

    assert execution.status == "completed", describe_execution(engine_db, serial)
    [branch] = branch_rows(engine_db, serial)
    dump, script = step_rows(engine_db, branch.id)
    assert decoded(dump.stdout) == _expected(values)
    assert decoded(script.stdout) == _expected(values)
    assert script.stdout.endswith("stdin:\n")  # the script consumed; nothing of the values left on stdin
    _nothing_ran(canary)
    # the secret: one Fernet token in the database, never in an event, a response or the worker's log
    row = execution_row(engine_db, serial)
    assert json.loads(SecretBox(FERNET_SECRET).decrypt(row.secret_parameters)) == {"TOKEN": SECRET}
    assert SECRET not in json.dumps(row.parameters)
    assert SECRET not in json.dumps(events.of_execution(serial))
    assert SECRET not in json.dumps(api.call("GET", f"/api/executions/serial/{serial}", 200))
    assert SECRET not in default_worker.log_text()


def test_a_local_target_gets_the_parameters_in_its_environment(api, engine_db, default_worker, canary):
    values = _values(canary)
    target = api.target(connection="local")
    job = api.job([command("dump", DUMP)], [target["id"]], parameters=_declare(values))
    body = api.call("POST", f"/api/jobs/{job['id']}/execute", 201, {"parameters": values})

    execution = wait_execution_done(engine_db, body["execution_serial"], logs=default_worker.log_tail)

    assert execution.status == "completed", describe_execution(engine_db, body["execution_serial"])
    [branch] = branch_rows(engine_db, body["execution_serial"])
    [step] = step_rows(engine_db, branch.id)
    assert decoded(step.stdout) == _expected(values)
    _nothing_ran(canary)
