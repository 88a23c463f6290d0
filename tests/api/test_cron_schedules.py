"""Cron schedules on jobs: `schedule: {cron, timezone}` on create and PATCH, validated with the cron
library's and zoneinfo's reasons, exclusive with scheduled_at, shown with next_run_at."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from common.broker import LossWitness
from common.cron import next_tick
from common.models import Job, utcnow
from tests.api.conftest import assert_error, row_counts
from worker.maintenance import Maintenance

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
EVERY_5 = {"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}


def _body(target_ids: list[int], **extra) -> dict:
    return {"name": "cron-job", "actions": [{"action_type": "command", "action_name": "a",
                                             "action_parameters": {"command": "true"}}],
            "target_ids": target_ids, **extra}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def target_ids(make) -> list[int]:
    return [make.target()["id"]]


def _create(client, headers, body) -> dict:
    response = client.post("/api/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_with_a_schedule_shows_it_and_its_next_tick(client, operator, target_ids):
    before = datetime.now(UTC)
    job = _create(client, operator, _body(target_ids, schedule=EVERY_5))

    assert job["schedule"] == EVERY_5
    assert job["status"] == "scheduled" and job["scheduled_at"] is None and job["execution_count"] == 0
    assert RFC3339_Z.match(job["next_run_at"]), job["next_run_at"]
    tick = _time(job["next_run_at"])
    assert before < tick <= before + timedelta(minutes=5)
    assert tick.minute % 5 == 0 and tick.second == 0 and tick.microsecond == 0
    fetched = client.get(f"/api/jobs/{job['job_serial']}", headers=operator).get_json()
    assert (fetched["schedule"], fetched["next_run_at"]) == (EVERY_5, job["next_run_at"])
    listed = client.get("/api/jobs?status=scheduled", headers=operator).get_json()["data"]
    assert [(j["id"], j["schedule"]) for j in listed] == [(job["id"], EVERY_5)]


def test_timezone_defaults_to_utc_and_the_tick_is_read_on_the_zones_wall_clock(client, operator, target_ids):
    utc_job = _create(client, operator, _body(target_ids, schedule={"cron": "0 9 * * *"}))
    berlin = _create(client, operator, _body(target_ids, schedule={"cron": "0 9 * * *", "timezone": "Europe/Berlin"}))

    assert utc_job["schedule"] == {"cron": "0 9 * * *", "timezone": "UTC"}
    assert _time(utc_job["next_run_at"]).hour == 9
    assert _time(berlin["next_run_at"]).hour in (7, 8)  # 09:00 CEST or CET


def test_a_job_without_a_schedule_shows_none(client, operator, target_ids):
    job = _create(client, operator, _body(target_ids))
    assert job["schedule"] is None and job["next_run_at"] is None and job["status"] == "ready"


@pytest.mark.parametrize(("schedule", "field", "reason"), [
    ({"cron": "61 * * * *"}, "schedule.cron", "Bad minute"),
    ({"cron": "* * * *"}, "schedule.cron", "Wrong number of fields"),
    ({"cron": "0 0 31 2 *"}, "schedule.cron", "Bad day-of-month"),
    ({"cron": "*/5 * * * *", "timezone": "Mars/Olympus"}, "schedule.timezone", "No time zone found"),
    ({"cron": "*/5 * * * *", "timezone": "../../etc/passwd"}, "schedule.timezone", "Invalid time zone key"),
    ({"cron": "*/5 * * * *", "timezone": "Europe"}, "schedule.timezone", "No time zone found"),
    ({"cron": "*/5 * * * *", "tz": "UTC"}, "schedule.tz", "Extra inputs"),
    ({"timezone": "UTC"}, "schedule.cron", "Field required"),
])
def test_an_invalid_schedule_is_a_422_naming_the_field_with_the_reason(client, operator, target_ids, db, schedule,
                                                                       field, reason):
    before = row_counts(db)
    error = assert_error(client.post("/api/jobs", json=_body(target_ids, schedule=schedule), headers=operator),
                         422, "validation_error", field)
    assert reason in error["details"]["errors"][0]["message"], error
    assert row_counts(db) == before


def test_scheduled_at_and_schedule_together_is_a_422_saying_to_pick_one(client, operator, target_ids, db):
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = row_counts(db)
    error = assert_error(client.post("/api/jobs", json=_body(target_ids, schedule=EVERY_5, scheduled_at=future),
                                     headers=operator), 422, "validation_error", "schedule")
    assert "pick one" in error["message"]
    assert row_counts(db) == before


def test_a_schedule_needs_targets(client, operator, db):
    assert_error(client.post("/api/jobs", json=_body([], schedule=EVERY_5), headers=operator), 422,
                 "validation_error", "target_ids")


def test_patch_sets_changes_and_removes_a_schedule(client, operator, target_ids):
    job = _create(client, operator, _body(target_ids))
    url = f"/api/jobs/{job['id']}"

    scheduled = client.patch(url, json={"schedule": EVERY_5}, headers=operator).get_json()
    assert (scheduled["status"], scheduled["schedule"]) == ("scheduled", EVERY_5)
    assert _time(scheduled["next_run_at"]) > datetime.now(UTC)

    hourly = client.patch(url, json={"schedule": {"cron": "0 * * * *"}}, headers=operator).get_json()
    assert hourly["schedule"] == {"cron": "0 * * * *", "timezone": "UTC"}
    assert _time(hourly["next_run_at"]).minute == 0

    untouched = client.patch(url, json={"description": "still cron", "scheduled_at": None}, headers=operator)
    assert untouched.status_code == 200, untouched.get_json()
    assert (untouched.get_json()["status"], untouched.get_json()["next_run_at"]) == ("scheduled", hourly["next_run_at"])

    removed = client.patch(url, json={"schedule": None}, headers=operator).get_json()
    assert (removed["status"], removed["schedule"], removed["next_run_at"]) == ("ready", None, None)


def test_patch_refuses_a_second_kind_of_schedule_unless_the_other_is_cleared(client, operator, target_ids):
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    once = _create(client, operator, _body(target_ids, scheduled_at=future))
    url = f"/api/jobs/{once['id']}"

    error = assert_error(client.patch(url, json={"schedule": EVERY_5}, headers=operator), 422, "validation_error",
                         "schedule")
    assert "pick one" in error["message"]
    assert client.get(url, headers=operator).get_json()["schedule"] is None

    switched = client.patch(url, json={"scheduled_at": None, "schedule": EVERY_5}, headers=operator).get_json()
    assert (switched["status"], switched["scheduled_at"], switched["schedule"]) == ("scheduled", None, EVERY_5)
    assert_error(client.patch(url, json={"scheduled_at": future}, headers=operator), 422, "validation_error",
                 "schedule")
    back = client.patch(url, json={"scheduled_at": future, "schedule": None}, headers=operator).get_json()
    assert (back["status"], back["scheduled_at"], back["schedule"], back["next_run_at"]) == (
        "scheduled", future, None, None)


def test_invalid_schedule_on_patch_changes_nothing(client, operator, target_ids):
    job = _create(client, operator, _body(target_ids, schedule=EVERY_5))
    url = f"/api/jobs/{job['id']}"
    assert_error(client.patch(url, json={"schedule": {"cron": "*/5 * * * *", "timezone": "Nowhere/Land"}},
                              headers=operator), 422, "validation_error", "schedule.timezone")
    assert client.get(url, headers=operator).get_json()["schedule"] == EVERY_5


def test_a_due_tick_fires_once_on_either_database(client, operator, target_ids, db, settings):
    """The firing's conditional update on both databases (the embedded default runs SQLite): a tick hours
    overdue fires once, and the next is the first tick after now."""
    job = _create(client, operator, _body(target_ids, schedule={"cron": "* * * * *"}))
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(next_run_at=utcnow() - timedelta(hours=3)))
    sent: list = []
    loop = Maintenance(settings, db, None, lambda name, items: sent.append(items), LossWitness("memory://"))

    start = utcnow()
    assert [loop.fire_due_jobs(), loop.fire_due_jobs()] == [1, 0]

    fetched = client.get(f"/api/jobs/{job['id']}", headers=operator).get_json()
    assert (fetched["execution_count"], fetched["status"]) == (1, "running")
    assert _time(fetched["next_run_at"]) in {next_tick("* * * * *", "UTC", moment) for moment in (start, utcnow())}
    [execution] = client.get(f"/api/jobs/{job['id']}/executions", headers=operator).get_json()
    assert execution["trigger"] == "schedule" and len(sent) == 1
