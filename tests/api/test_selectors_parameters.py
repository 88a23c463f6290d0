"""Target selectors and job parameters through the API, on SQLite and PostgreSQL: what is accepted, what
is a 422 naming its field, what an execution stores and shows (secret values never)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from common.crypto import SecretBox
from common.models import Execution
from tests.api.conftest import assert_error, table_snapshot
from tests.conftest import FERNET_SECRET

ACTIONS = [{"action_type": "command", "action_name": "a", "action_parameters": {"command": "true"}}]


def _job(client, headers, **extra) -> dict:
    response = client.post("/api/jobs", json={"name": "job", "actions": ACTIONS, **extra}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _execute(client, headers, job: dict, body: dict | None = None, status: int = 201) -> dict:
    response = client.post(f"/api/jobs/{job['id']}/execute", json=body or {}, headers=headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


@pytest.fixture
def fleet(make) -> dict[str, dict]:
    """Targets with tags and names to select among: one disabled, one archived."""
    cred = make.credential(allowed_hosts=["192.168.1.0/24"])
    specs = {"web-01": ["web", "prod"], "WEB-02": ["web", "staging"], "web_x3": ["web", "prod", "eu"],
             "db-01": ["db", "prod"], "web-off": ["web", "prod"], "web-gone": ["web", "prod"]}
    made = {name: make.target(credential_id=cred["id"], name=name, tags=tags) for name, tags in specs.items()}
    response = make.client.patch(f"/api/targets/{made['web-off']['id']}", json={"enabled": False},
                                 headers=make.admin)
    assert response.status_code == 200, response.get_json()
    response = make.client.delete(f"/api/targets/{made['web-gone']['id']}", headers=make.admin)
    assert response.status_code == 204
    return made


def _selected(execution: dict) -> list[int]:
    return [b["target_id"] for b in execution["branches"]]


# ---------------------------------------------------------------- selectors

@pytest.mark.parametrize(("selector", "names"), [
    ({"tags_all": ["web", "prod"]}, ["web-01", "web_x3"]),
    ({"tags_any": ["staging", "db"]}, ["WEB-02", "db-01"]),
    ({"name": "web-*"}, ["web-01", "WEB-02"]),  # case-insensitive; `_` in a name is no wildcard
    ({"name": "WEB?0?"}, ["web-01", "WEB-02"]),
    ({"name": "web*", "tags_all": ["prod"], "tags_any": ["eu", "staging"]}, ["web_x3"]),
    ({"name": "*", "tags_any": ["web"], "tags_all": []}, ["web-01", "WEB-02", "web_x3"]),
])
def test_a_job_selector_resolves_at_execute_to_live_enabled_matches(client, operator, fleet, selector, names):
    job = _job(client, operator, target_selector=selector)
    assert job["target_ids"] == []
    shown = {k: v for k, v in selector.items() if v}
    assert job["target_selector"] == {"tags_all": None, "tags_any": None, "name": None, **shown}
    assert client.get(f"/api/jobs/{job['job_serial']}", headers=operator).get_json()["target_selector"] == \
        job["target_selector"]
    execution = _execute(client, operator, job)
    assert _selected(execution) == sorted(fleet[n]["id"] for n in names)
    assert execution["target_selector"] == job["target_selector"]
    again = client.get(f"/api/executions/serial/{execution['execution_serial']}", headers=operator).get_json()
    assert again["target_selector"] == job["target_selector"]


def test_like_wildcards_in_a_glob_are_literal(client, operator, make):
    cred = make.credential(allowed_hosts=["192.168.1.0/24"])
    literal = make.target(credential_id=cred["id"], name="a%b_c")
    make.target(credential_id=cred["id"], name="aXbYc")
    job = _job(client, operator, target_selector={"name": "a%b_c"})
    assert _selected(_execute(client, operator, job)) == [literal["id"]]


def test_an_empty_resolution_is_a_422_with_the_selector(client, operator, fleet, db):
    job = _job(client, operator, target_selector={"name": "web-off"})  # disabled: never selected
    before = table_snapshot(db)
    body = assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={}, headers=operator), 422,
                        "validation_error", "target_selector")
    assert "matched no enabled target" in body["message"]
    assert body["details"]["selector"] == {"name": "web-off"}
    body = assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={"target_selector": {"tags_all": ["nope"]}},
                                    headers=operator), 422, "validation_error", "target_selector")
    assert body["details"]["selector"] == {"tags_all": ["nope"]}
    assert table_snapshot(db) == before


def test_ids_and_a_selector_together_are_a_422(client, operator, fleet, db):
    ids = [fleet["web-01"]["id"]]
    before = table_snapshot(db)
    assert_error(client.post("/api/jobs", json={"name": "j", "actions": ACTIONS, "target_ids": ids,
                                                "target_selector": {"name": "web-*"}}, headers=operator),
                 422, "validation_error", "target_selector")
    assert table_snapshot(db) == before
    job = _job(client, operator, target_ids=ids)
    assert_error(client.patch(f"/api/jobs/{job['id']}", json={"target_ids": ids, "target_selector": {"name": "x"}},
                              headers=operator), 422, "validation_error", "target_selector")
    assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={"target_ids": ids,
                                                                     "target_selector": {"name": "x"}},
                             headers=operator), 422, "validation_error", "target_selector")


@pytest.mark.parametrize("selector", [{}, {"tags_all": [], "tags_any": []}, {"name": ""}, {"tag": ["web"]},
                                      {"tags_all": ["bad tag"]}, {"name": None}])
def test_malformed_selectors_are_422(client, operator, selector):
    assert_error(client.post("/api/jobs", json={"name": "j", "actions": ACTIONS, "target_selector": selector},
                             headers=operator), 422, "validation_error")


def test_execute_overrides_the_jobs_targets_either_way(client, operator, fleet):
    by_ids = _job(client, operator, target_ids=[fleet["db-01"]["id"]])
    execution = _execute(client, operator, by_ids, {"target_selector": {"tags_any": ["staging"]}})
    assert _selected(execution) == [fleet["WEB-02"]["id"]]
    assert execution["target_selector"]["tags_any"] == ["staging"]
    by_selector = _job(client, operator, target_selector={"tags_any": ["web"]})
    execution = _execute(client, operator, by_selector, {"target_ids": [fleet["db-01"]["id"]]})
    assert _selected(execution) == [fleet["db-01"]["id"]]
    assert execution["target_selector"] is None


def test_patch_switches_between_ids_and_a_selector(client, operator, fleet):
    job = _job(client, operator, target_ids=[fleet["db-01"]["id"]])
    patched = client.patch(f"/api/jobs/{job['id']}", json={"target_selector": {"name": "db-*"}},
                           headers=operator).get_json()
    assert patched["target_ids"] == [] and patched["target_selector"]["name"] == "db-*"
    patched = client.patch(f"/api/jobs/{job['id']}", json={"target_ids": [fleet["web-01"]["id"]]},
                           headers=operator).get_json()
    assert patched["target_ids"] == [fleet["web-01"]["id"]] and patched["target_selector"] is None
    patched = client.patch(f"/api/jobs/{job['id']}", json={"target_selector": {"name": "db-*"}},
                           headers=operator).get_json()
    patched = client.patch(f"/api/jobs/{job['id']}", json={"target_selector": None}, headers=operator).get_json()
    assert patched["target_ids"] == [] and patched["target_selector"] is None


def test_a_scheduled_job_may_name_its_targets_by_selector(client, operator, fleet):
    job = _job(client, operator, target_selector={"tags_all": ["db"]}, scheduled_at="2099-01-01T00:00:00Z")
    assert job["status"] == "scheduled"


def test_a_selector_reaching_a_local_target_needs_an_admin(client, admin, operator, make, db):
    make.target(connection="local", name="local-box", tags=["box"])
    job = _job(client, operator, target_selector={"tags_any": ["box"]})
    before = table_snapshot(db)
    body = assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={}, headers=operator), 403, "forbidden")
    assert table_snapshot(db) == before
    # an admin still may not run a job an operator last wrote on the platform's own host
    body = assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={}, headers=admin), 403, "forbidden")
    assert body["details"]["job_serial"] == job["job_serial"]
    own = _job(client, admin, target_selector={"name": "local-*"})
    assert len(_execute(client, admin, own)["branches"]) == 1


# ---------------------------------------------------------------- parameters: declarations

DECLARED = [
    {"name": "VERSION", "required": True, "pattern": r"^[0-9.]+$"},
    {"name": "CHANNEL", "default": "stable", "pattern": "stable|beta", "description": "release channel"},
    {"name": "TOKEN", "secret": True, "required": True},
    {"name": "NOTE"},
]


def test_declarations_are_stored_and_shown(client, operator):
    job = _job(client, operator, parameters=DECLARED)
    assert [p["name"] for p in job["parameters"]] == ["VERSION", "CHANNEL", "TOKEN", "NOTE"]
    assert job["parameters"][0] == {"name": "VERSION", "required": True, "default": None, "secret": False,
                                    "pattern": r"^[0-9.]+$", "description": None}
    assert job["parameters"][1]["default"] == "stable"
    assert job["parameters"][2]["secret"] is True
    patched = client.patch(f"/api/jobs/{job['id']}", json={"parameters": [{"name": "ONLY"}]},
                           headers=operator).get_json()
    assert [p["name"] for p in patched["parameters"]] == ["ONLY"]
    patched = client.patch(f"/api/jobs/{job['id']}", json={"parameters": None}, headers=operator).get_json()
    assert patched["parameters"] == []


@pytest.mark.parametrize(("parameters", "field"), [
    ([{"name": "version"}], "parameters.0.name"),
    ([{"name": "1ABC"}], "parameters.0.name"),
    ([{"name": "A" * 65}], "parameters.0.name"),
    ([{"name": "A-B"}], "parameters.0.name"),
    ([{"name": "A"}, {"name": "A"}], "parameters.1.name"),
    ([{"name": "A", "pattern": "("}], "parameters.0.pattern"),
    ([{"name": "A", "pattern": "[0-9]+", "default": "1a"}], "parameters.0.default"),
    ([{"name": "A", "secret": True, "default": "hunter2"}], "parameters.0.default"),
    ([{"name": "A", "default": 5}], "parameters.0.default"),
    ([{"name": "A", "default": "x" * 4097}], "parameters.0.default"),
    ([{"name": "A", "kind": "str"}], "parameters.0.kind"),
])
def test_bad_declarations_are_422_naming_the_field(client, operator, db, parameters, field):
    before = table_snapshot(db)
    body = assert_error(client.post("/api/jobs", json={"name": "j", "actions": ACTIONS, "parameters": parameters},
                                    headers=operator), 422, "validation_error", field)
    assert "hunter2" not in json.dumps(body)
    assert table_snapshot(db) == before


# ---------------------------------------------------------------- parameters: values at execute

@pytest.fixture
def declared_job(client, operator, fleet) -> dict:
    return _job(client, operator, target_ids=[fleet["web-01"]["id"]], parameters=DECLARED)


SECRET = "s3cr3t-'$(id)`id`\n\"ü"


def test_values_are_bound_defaults_applied_secrets_sealed(client, operator, declared_job, db):
    execution = _execute(client, operator, declared_job,
                         {"parameters": {"VERSION": "1.2", "TOKEN": SECRET, "NOTE": "  spaced\nline  "}})
    assert execution["parameters"] == {"VERSION": "1.2", "CHANNEL": "stable", "TOKEN": "****",
                                       "NOTE": "  spaced\nline  "}
    shown = client.get(f"/api/executions/serial/{execution['execution_serial']}", headers=operator).get_json()
    assert shown["parameters"] == execution["parameters"]
    listed = client.get(f"/api/jobs/{declared_job['id']}/executions", headers=operator).get_data(as_text=True)
    assert "s3cr3t" not in listed
    with db.session() as session:
        row = session.scalar(select(Execution).where(Execution.execution_serial == execution["execution_serial"]))
        assert row.parameters["TOKEN"] == "****"
        assert json.loads(SecretBox(FERNET_SECRET).decrypt(row.secret_parameters)) == {"TOKEN": SECRET}
    with db.engine.connect() as conn:  # the value is nowhere in the database in the clear
        for table in ("executions", "branches", "jobs"):
            assert "s3cr3t" not in repr(conn.execute(text(f"SELECT * FROM {table}")).all())


def test_a_job_without_secrets_stores_no_token(client, operator, fleet, db):
    job = _job(client, operator, target_ids=[fleet["web-01"]["id"]], parameters=[{"name": "A", "default": "x"}])
    execution = _execute(client, operator, job)
    assert execution["parameters"] == {"A": "x"}
    with db.session() as session:
        assert session.scalar(select(Execution.secret_parameters)
                              .where(Execution.execution_serial == execution["execution_serial"])) is None


@pytest.mark.parametrize(("values", "field"), [
    ({"VERSION": "1.2", "TOKEN": "t", "OTHER": "x"}, "parameters.OTHER"),
    ({"TOKEN": "t"}, "parameters.VERSION"),
    ({"VERSION": "1.2"}, "parameters.TOKEN"),
    ({"VERSION": 1.2, "TOKEN": "t"}, "parameters.VERSION"),
    ({"VERSION": None, "TOKEN": "t"}, "parameters.VERSION"),
    ({"VERSION": ["1"], "TOKEN": "t"}, "parameters.VERSION"),
    ({"VERSION": "1.2a", "TOKEN": "t"}, "parameters.VERSION"),
    ({"VERSION": "1.2\n", "TOKEN": "t"}, "parameters.VERSION"),  # fullmatch: no `$` before a final newline
    ({"VERSION": "1.2", "TOKEN": "t", "CHANNEL": "nightly"}, "parameters.CHANNEL"),
    ({"VERSION": "1.2", "TOKEN": "x" * 4097}, "parameters.TOKEN"),
    ({"VERSION": "1.2", "TOKEN": "a\x00b"}, "parameters.TOKEN"),
    ({"VERSION": "1.2", "TOKEN": "t", "lower": "x"}, "parameters.lower"),
])
def test_bad_values_are_422_naming_the_parameter(client, operator, declared_job, db, values, field):
    before = table_snapshot(db)
    body = assert_error(client.post(f"/api/jobs/{declared_job['id']}/execute", json={"parameters": values},
                                    headers=operator), 422, "validation_error")
    assert body["details"]["field"] == field or body["details"]["field"].startswith(field + "."), body
    assert "received" not in body["details"]  # a value may be a secret: never echoed
    assert table_snapshot(db) == before


def test_a_secret_failing_its_pattern_is_not_echoed(client, operator, fleet):
    job = _job(client, operator, target_ids=[fleet["web-01"]["id"]],
               parameters=[{"name": "PIN", "secret": True, "pattern": "[0-9]{4}"}])
    body = assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={"parameters": {"PIN": "hunter2"}},
                                    headers=operator), 422, "validation_error", "parameters.PIN")
    assert "hunter2" not in json.dumps(body)


def test_a_job_without_declarations_refuses_values(client, operator, fleet):
    job = _job(client, operator, target_ids=[fleet["web-01"]["id"]])
    assert_error(client.post(f"/api/jobs/{job['id']}/execute", json={"parameters": {"A": "1"}}, headers=operator),
                 422, "validation_error", "parameters.A")
    assert _execute(client, operator, job, {"parameters": {}})["parameters"] == {}


def test_a_retry_runs_with_its_parents_values(client, operator, declared_job, db):
    from common.models import Job
    from common.services import executions as svc
    from common.services.parameters import copy_parameters

    first = _execute(client, operator, declared_job, {"parameters": {"VERSION": "1.2", "TOKEN": SECRET}})
    with db.session() as session:
        parent = session.scalar(select(Execution).where(Execution.execution_serial == first["execution_serial"]))
        job = session.get_one(Job, parent.job_id)
        retry = svc.start_execution(session, job, role="operator", target_ids=[declared_job["target_ids"][0]],
                                    trigger="retry", retry_of=parent)
        assert retry.parameters == parent.parameters and retry.secret_parameters == parent.secret_parameters
        copied = Execution()
        copy_parameters(parent, copied)
        assert (copied.parameters, copied.secret_parameters) == (parent.parameters, parent.secret_parameters)
        # values given anew are bound afresh, as an execute does
        again = svc.start_execution(session, job, role="operator", target_ids=[declared_job["target_ids"][0]],
                                    trigger="retry", retry_of=parent, parameters={"VERSION": "2", "TOKEN": "t"},
                                    box=SecretBox(FERNET_SECRET))
        assert again.parameters["VERSION"] == "2"
