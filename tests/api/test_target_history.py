"""Target performance and history against the hand-made history (tests/history_data.py).

Branch-level: a branch belongs to a period by its queued_at (its execution's start in the dataset).
Every expected figure is written out by hand.
"""
from __future__ import annotations

import pytest

from common.errors import BadRequest, NotFound, ValidationFailed
from common.models import utcnow
from common.services import target_history
from tests.history_data import NOW, build_history


@pytest.fixture
def history(db):
    with db.session() as session:
        return build_history(session)


def performance(db, serial, days):
    with db.session() as session:
        return target_history.target_performance(session, serial, days=days, now=NOW)


def figures(result):
    return (result.total_executions, result.successful_executions, result.failed_executions, result.success_rate,
            result.average_duration)


def recent(result):
    return [(r.branch_serial, r.status, r.duration) for r in result.recent_executions]


def test_performance_of_prod_web_over_30_days(db, history):
    result = performance(db, "T20250001", 30)
    assert (result.target_serial, result.target_name, result.period_days) == ("T20250001", "prod-web-01", 30)
    # completed 300, 60, 120; cancelled 30; running: 3 / 4 finished, (300 + 60 + 120 + 30) / 4
    assert figures(result) == (5, 3, 1, 75.0, 127.5)
    assert recent(result) == [
        ("J20250001.0005.0001", "running", None),
        ("J20250001.0004.0001", "completed", 120.0),
        ("J20250001.0003.0001", "completed", 60.0),
        ("J20250001.0002.0001", "completed", 300.0),
        ("J20250001.0001.0001", "cancelled", 30.0),
    ]
    first = result.recent_executions[1]
    assert (first.execution_serial, first.job_serial, first.started_at) == (
        "J20250001.0004", "J20250001", NOW.replace(minute=0))


def test_performance_over_one_day(db, history):
    assert figures(performance(db, "T20250001", 1)) == (3, 2, 0, 100.0, 90.0)


def test_performance_of_prod_db_over_7_days(db, history):
    result = performance(db, "T20240008", 7)
    # in: queued (not started) and never-started cancelled branches; J20240043.0006 exactly at NOW - 7d;
    # out: .0005 one second before. finished 7 (4 completed, failed, cancelled, timed_out);
    # durations 180, 90, 500, 1790.5, 600, 60 -> 3220.5 / 6
    assert figures(result) == (8, 4, 3, 57.14, 536.75)
    assert recent(result) == [
        ("J20250001.0005.0002", "queued", None),
        ("J20250001.0004.0002", "completed", 180.0),
        ("J20250001.0003.0002", "failed", 90.0),
        ("J20250001.0002.0002", "completed", 500.0),
        ("J20250001.0001.0002", "cancelled", None),
        ("J20240043.0008.0001", "completed", 1790.5),
        ("J20240043.0007.0001", "timed_out", 600.0),
        ("J20240043.0006.0001", "completed", 60.0),
    ]
    assert result.recent_executions[0].started_at is None


def test_performance_over_90_days_keeps_the_newest_10(db, history):
    result = performance(db, "T20240008", 90)
    assert figures(result) == (12, 6, 5, 54.55, 346.8)
    assert [r.branch_serial for r in result.recent_executions] == [
        "J20250001.0005.0002", "J20250001.0004.0002", "J20250001.0003.0002", "J20250001.0002.0002",
        "J20250001.0001.0002", "J20240043.0008.0001", "J20240043.0007.0001", "J20240043.0006.0001",
        "J20240043.0005.0001", "J20240043.0004.0001",
    ]


def test_performance_of_an_archived_target(db, history):
    assert figures(performance(db, "T20240007", 90)) == (2, 1, 1, 50.0, 149.0)
    assert figures(performance(db, "T20240007", 30)) == (1, 1, 0, 100.0, 199.0)  # exactly NOW - 30d


def test_performance_with_nothing_in_the_period(db, history):
    result = performance(db, "T20240007", 7)
    assert figures(result) == (0, 0, 0, None, None)
    assert result.recent_executions == []


def test_performance_errors_in_the_service(db, history):
    with pytest.raises(NotFound):
        performance(db, "T20259999", 30)
    with pytest.raises(ValidationFailed):
        performance(db, "20250001", 30)
    with pytest.raises(BadRequest):
        performance(db, "T20250001", 0)


def history_page(db, serial, limit=20, offset=0):
    with db.session() as session:
        return target_history.target_history(session, serial, limit=limit, offset=offset)


def test_history_newest_first(db, history):
    result = history_page(db, "T20240008")
    assert (result.target_serial, result.total, result.limit, result.offset) == ("T20240008", 13, 20, 0)
    assert [(h.branch_serial, h.job_name, h.status, h.exit_code) for h in result.executions] == [
        ("J20250001.0005.0002", "System Update", "queued", None),
        ("J20250001.0004.0002", "System Update", "completed", 0),
        ("J20250001.0003.0002", "System Update", "failed", 1),
        ("J20250001.0002.0002", "System Update", "completed", 0),
        ("J20250001.0001.0002", "System Update", "cancelled", None),
        ("J20240043.0008.0001", "Nightly Backup", "completed", 0),
        ("J20240043.0007.0001", "Nightly Backup", "timed_out", None),
        ("J20240043.0006.0001", "Nightly Backup", "completed", 0),
        ("J20240043.0005.0001", "Nightly Backup", "completed", 0),
        ("J20240043.0004.0001", "Nightly Backup", "completed", 0),
        ("J20240043.0003.0001", "Nightly Backup", "failed", 2),
        ("J20240043.0002.0001", "Nightly Backup", "failed", 1),
        ("J20240043.0001.0001", "Nightly Backup", "completed", 0),
    ]


def test_history_pages(db, history):
    result = history_page(db, "T20240008", limit=5, offset=10)
    assert (result.total, result.limit, result.offset) == (13, 5, 10)
    assert [h.branch_serial for h in result.executions] == [
        "J20240043.0003.0001", "J20240043.0002.0001", "J20240043.0001.0001"]
    assert history_page(db, "T20240008", limit=5, offset=13).executions == []


def test_history_of_an_archived_target(db, history):
    result = history_page(db, "T20240007")
    assert [(h.branch_serial, h.execution_serial, h.job_serial, h.job_name) for h in result.executions] == [
        ("J20240042.0002.0001", "J20240042.0002", "J20240042", "Old Cleanup"),
        ("J20240042.0001.0001", "J20240042.0001", "J20240042", "Old Cleanup"),
    ]


# ---------------------------------------------------------------- over HTTP, on the real clock


@pytest.fixture
def live_history(db, viewer):
    with db.session() as session:
        return build_history(session, now=utcnow())


def test_http_performance(client, viewer, live_history):
    response = client.get("/api/targets/T20250001/performance?days=1", headers=viewer)
    assert response.status_code == 200, response.json
    body = response.json
    assert list(body) == ["target_serial", "target_name", "period_days", "total_executions",
                          "successful_executions", "failed_executions", "success_rate", "average_duration",
                          "recent_executions"]
    assert {k: v for k, v in body.items() if k != "recent_executions"} == {
        "target_serial": "T20250001", "target_name": "prod-web-01", "period_days": 1, "total_executions": 3,
        "successful_executions": 2, "failed_executions": 0, "success_rate": 100.0, "average_duration": 90.0}
    first, second = body["recent_executions"][:2]
    assert list(first) == ["branch_serial", "execution_serial", "job_serial", "status", "duration", "started_at"]
    assert (first["branch_serial"], first["status"], first["duration"]) == ("J20250001.0005.0001", "running", None)
    assert (second["branch_serial"], second["execution_serial"], second["job_serial"], second["duration"]) == (
        "J20250001.0004.0001", "J20250001.0004", "J20250001", 120.0)
    assert second["started_at"].endswith("Z")


def test_http_performance_defaults_to_30_days(client, viewer, live_history):
    body = client.get("/api/targets/T20250001/performance", headers=viewer).json
    assert (body["period_days"], body["total_executions"], body["success_rate"]) == (30, 5, 75.0)


def test_http_history(client, viewer, live_history):
    response = client.get("/api/targets/T20240008/executions?limit=2&offset=1", headers=viewer)
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["target_serial"], body["total"], body["limit"], body["offset"]) == ("T20240008", 13, 2, 1)
    assert list(body["executions"][0]) == ["branch_serial", "execution_serial", "job_serial", "job_name", "status",
                                           "started_at", "completed_at", "exit_code"]
    assert [(e["branch_serial"], e["status"], e["exit_code"]) for e in body["executions"]] == [
        ("J20250001.0004.0002", "completed", 0), ("J20250001.0003.0002", "failed", 1)]
    assert body["executions"][0]["completed_at"].endswith("Z")


def test_http_history_defaults(client, viewer, live_history):
    body = client.get("/api/targets/T20240007/executions", headers=viewer).json
    assert (body["total"], body["limit"], body["offset"], len(body["executions"])) == (2, 20, 0, 2)


@pytest.mark.parametrize("path", [
    "/api/targets/T20250001/performance?days=0",
    "/api/targets/T20250001/performance?days=366",
    "/api/targets/T20250001/performance?days=abc",
    "/api/targets/T20250001/executions?limit=0",
    "/api/targets/T20250001/executions?limit=101",
    "/api/targets/T20250001/executions?offset=-1",
    "/api/targets/T20250001/executions?limit=ten",
])
def test_http_bad_parameters_are_400(client, viewer, live_history, path):
    response = client.get(path, headers=viewer)
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert set(response.json) == {"error", "message", "details"}


@pytest.mark.parametrize("suffix", ["performance", "executions"])
def test_http_malformed_and_unknown_targets(client, viewer, live_history, suffix):
    response = client.get(f"/api/targets/prod-web-01/{suffix}", headers=viewer)
    assert response.status_code == 422
    assert response.json == {"error": "validation_error", "message": "Invalid target serial format",
                             "details": {"field": "target_serial", "expected_format": "T20250001",
                                         "received": "prod-web-01"}}
    response = client.get(f"/api/targets/T20259999/{suffix}", headers=viewer)
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
