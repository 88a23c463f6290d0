"""Execution analytics and job metrics against the hand-made history (tests/history_data.py).

Every expected figure below was worked out by hand from that file's table; none is recomputed here.
The services are called with now pinned to NOW (Wednesday 2025-01-08T10:30:00Z); the HTTP tests
place the same rows relative to the real clock and check what does not depend on the calendar.
"""
from __future__ import annotations

import pytest

from common.errors import BadRequest, NotFound, ValidationFailed
from common.models import utcnow
from common.services import analytics
from tests.history_data import NOW, build_history


@pytest.fixture
def history(db):
    with db.session() as session:
        return build_history(session)


def run(db, period, group_by):
    with db.session() as session:
        return analytics.execution_analytics(session, period=period, group_by=group_by, now=NOW)


def rows(result):
    return [(b.date, b.executions, b.successful, b.failed, b.success_rate) for b in result.data]


def zeros(*dates):
    return [(d, 0, 0, 0, None) for d in dates]


# ---------------------------------------------------------------- execution analytics


def test_24h_by_hour_is_25_dense_buckets_with_the_hour_edge(db, history):
    result = run(db, "24h", "hour")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate) == (3, 1, 1, 50.0)
    hours_7th = [f"2025-01-07T{h:02d}:00:00Z" for h in range(10, 24)]
    hours_8th = [f"2025-01-08T{h:02d}:00:00Z" for h in range(0, 9)]
    assert rows(result) == zeros(*hours_7th, *hours_8th) + [
        ("2025-01-08T09:00:00Z", 1, 0, 1, 0.0),  # J20250001.0003 at 09:59:59, failed
        ("2025-01-08T10:00:00Z", 2, 1, 0, 100.0),  # .0004 at 10:00:00 completed, .0005 running
    ]


def test_7d_by_day_midnight_edges_and_period_start(db, history):
    result = run(db, "7d", "day")
    # J20240043.0006 exactly at NOW - 7d is in, .0005 one second before is out; running .0005 of
    # J20250001 counts in the total only: rate 4 / 7
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate) == (8, 4, 3, 57.14)
    assert rows(result) == [
        ("2025-01-01", 1, 1, 0, 100.0),
        ("2025-01-02", 0, 0, 0, None),
        ("2025-01-03", 0, 0, 0, None),
        ("2025-01-04", 0, 0, 0, None),
        ("2025-01-05", 1, 0, 1, 0.0),  # 23:59:59 stays on the 5th
        ("2025-01-06", 2, 1, 1, 50.0),  # 00:00:00 completed, 23:59:59 cancelled
        ("2025-01-07", 1, 1, 0, 100.0),  # 00:00:00
        ("2025-01-08", 3, 1, 1, 50.0),
    ]


def test_7d_by_week_buckets_start_on_monday(db, history):
    result = run(db, "7d", "week")
    assert rows(result) == [
        ("2024-12-30", 2, 1, 1, 50.0),  # Wed 1st and Sunday 5th 23:59:59
        ("2025-01-06", 6, 3, 2, 60.0),  # from Monday 6th 00:00:00
    ]


def test_7d_by_month_is_one_bucket(db, history):
    assert rows(run(db, "7d", "month")) == [("2025-01", 8, 4, 3, 57.14)]


def test_30d_by_week_across_the_year_end(db, history):
    result = run(db, "30d", "week")
    # NOW - 30d is Monday 2024-12-09 10:30:00: J20240042.0002 (archived job) starts exactly then
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate) == (12, 7, 4, 63.64)
    assert rows(result) == [
        ("2024-12-09", 1, 1, 0, 100.0),
        ("2024-12-16", 0, 0, 0, None),
        ("2024-12-23", 0, 0, 0, None),
        ("2024-12-30", 5, 3, 2, 60.0),
        ("2025-01-06", 6, 3, 2, 60.0),
    ]


def test_30d_by_month_splits_at_new_year(db, history):
    assert rows(run(db, "30d", "month")) == [
        ("2024-12", 2, 1, 1, 50.0),  # 12-09 completed, 12-31 23:59:59 failed
        ("2025-01", 10, 6, 3, 66.67),  # from 01-01 00:00:00
    ]


def test_30d_by_day_has_31_buckets(db, history):
    result = run(db, "30d", "day")
    assert len(result.data) == 31
    assert rows(result)[0] == ("2024-12-09", 1, 1, 0, 100.0)
    assert rows(result)[22] == ("2024-12-31", 1, 0, 1, 0.0)
    assert rows(result)[23] == ("2025-01-01", 3, 3, 0, 100.0)  # 00:00:00, 10:29:59, 10:30:00
    assert rows(result)[-1] == ("2025-01-08", 3, 1, 1, 50.0)


def test_90d_by_month(db, history):
    result = run(db, "90d", "month")
    # J20240043.0002 exactly at NOW - 90d is in, .0001 one second before is out
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate) == (14, 7, 6, 53.85)
    assert rows(result) == [
        ("2024-10", 1, 0, 1, 0.0),
        ("2024-11", 1, 0, 1, 0.0),
        ("2024-12", 2, 1, 1, 50.0),
        ("2025-01", 10, 6, 3, 66.67),
    ]


def test_90d_by_day_has_91_buckets(db, history):
    result = run(db, "90d", "day")
    assert len(result.data) == 91
    assert (result.data[0].date, result.data[0].executions) == ("2024-10-10", 1)
    assert result.data[-1].date == "2025-01-08"


def test_empty_database_gives_zeros_and_null_rates(db):
    result = run(db, "24h", "hour")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate) == (0, 0, 0, None)
    assert len(result.data) == 25
    assert all(b.executions == 0 and b.success_rate is None for b in result.data)


def test_invalid_period_and_group_by_in_the_service(db):
    with db.session() as session:
        with pytest.raises(BadRequest):
            analytics.execution_analytics(session, period="1y", group_by="day", now=NOW)
        with pytest.raises(BadRequest):
            analytics.execution_analytics(session, period="7d", group_by="year", now=NOW)


# ---------------------------------------------------------------- job metrics


def metrics(db, serial, period):
    with db.session() as session:
        return analytics.job_metrics(session, serial, period=period, now=NOW)


def targets_of(result):
    return [(t.target_serial, t.target_name, t.executions, t.success_rate, t.average_duration)
            for t in result.target_performance]


def test_job_metrics_30d(db, history):
    result = metrics(db, "J20250001", "30d")
    # executions .0001 cancelled 60 s, .0002 ok 600 s, .0003 failed 100 s, .0004 ok 300 s, .0005 running
    assert (result.job_serial, result.job_name, result.period) == ("J20250001", "System Update", "30d")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate, result.average_duration) == (5, 2, 2, 50.0, 265.0)
    assert targets_of(result) == [
        ("T20240008", "prod-db-01", 5, 50.0, 256.67),  # 180, 90, 500 (+ never started, + queued)
        ("T20250001", "prod-web-01", 5, 75.0, 127.5),  # 120, 60, 300, 30 cancelled (+ running)
    ]


def test_job_metrics_24h(db, history):
    result = metrics(db, "J20250001", "24h")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate, result.average_duration) == (3, 1, 1, 50.0, 200.0)
    assert targets_of(result) == [
        ("T20240008", "prod-db-01", 3, 50.0, 135.0),
        ("T20250001", "prod-web-01", 3, 100.0, 90.0),
    ]


def test_job_metrics_7d_and_90d_edges(db, history):
    result = metrics(db, "J20240043", "7d")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate, result.average_duration) == (3, 2, 1, 66.67, 820.0)
    assert targets_of(result) == [("T20240008", "prod-db-01", 3, 66.67, 816.83)]
    result = metrics(db, "J20240043", "90d")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate, result.average_duration) == (7, 4, 3, 57.14, 390.0)
    assert targets_of(result) == [("T20240008", "prod-db-01", 7, 57.14, 385.43)]


def test_job_metrics_of_an_archived_job(db, history):
    result = metrics(db, "J20240042", "90d")
    assert (result.job_name, result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate, result.average_duration) == ("Old Cleanup", 2, 1, 1, 50.0, 150.0)
    assert targets_of(result) == [("T20240007", "Legacy-Box", 2, 50.0, 149.0)]
    result = metrics(db, "J20240042", "30d")
    assert (result.total_executions, result.success_rate, result.average_duration) == (1, 100.0, 200.0)


def test_job_metrics_with_nothing_in_the_period(db, history):
    result = metrics(db, "J20240042", "24h")
    assert (result.total_executions, result.successful_executions, result.failed_executions,
            result.success_rate, result.average_duration, result.target_performance) == (0, 0, 0, None, None, [])


def test_job_metrics_unknown_and_malformed(db, history):
    with pytest.raises(NotFound):
        metrics(db, "J20259999", "30d")
    with pytest.raises(ValidationFailed):
        metrics(db, "J2025", "30d")


# ---------------------------------------------------------------- over HTTP, on the real clock


@pytest.fixture
def live_history(db, viewer):
    """The same rows placed relative to the real clock (after logging in, so the requests follow at once)."""
    with db.session() as session:
        return build_history(session, now=utcnow())


def test_http_execution_analytics(client, viewer, live_history):
    response = client.get("/api/analytics/executions?period=24h&group_by=hour", headers=viewer)
    assert response.status_code == 200, response.json
    body = response.json
    assert list(body) == ["period", "group_by", "total_executions", "successful_executions", "failed_executions",
                          "success_rate", "data"]
    assert (body["period"], body["group_by"], body["total_executions"], body["successful_executions"],
            body["failed_executions"], body["success_rate"]) == ("24h", "hour", 3, 1, 1, 50.0)
    assert len(body["data"]) == 25
    assert list(body["data"][0]) == ["date", "executions", "successful", "failed", "success_rate"]
    assert body["data"][-1]["date"].endswith(":00:00Z")
    assert sum(b["executions"] for b in body["data"]) == 3


def test_http_execution_analytics_defaults_to_7d_by_day(client, viewer, live_history):
    body = client.get("/api/analytics/executions", headers=viewer).json
    assert (body["period"], body["group_by"], len(body["data"])) == ("7d", "day", 8)


@pytest.mark.parametrize("query", ["period=1y", "group_by=year", "period=", "period=7d&group_by=Day",
                                   "period=7d&bogus=1"])
def test_http_invalid_analytics_parameters_are_400(client, viewer, query):
    response = client.get(f"/api/analytics/executions?{query}", headers=viewer)
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert set(response.json) == {"error", "message", "details"}
    assert "field" in response.json["details"]


def test_http_job_metrics(client, viewer, live_history):
    response = client.get("/api/analytics/jobs/J20250001/metrics?period=24h", headers=viewer)
    assert response.status_code == 200, response.json
    assert response.json == {
        "job_serial": "J20250001", "job_name": "System Update", "period": "24h",
        "total_executions": 3, "successful_executions": 1, "failed_executions": 1, "success_rate": 50.0,
        "average_duration": 200.0,
        "target_performance": [
            {"target_serial": "T20240008", "target_name": "prod-db-01", "executions": 3, "success_rate": 50.0,
             "average_duration": 135.0},
            {"target_serial": "T20250001", "target_name": "prod-web-01", "executions": 3, "success_rate": 100.0,
             "average_duration": 90.0},
        ],
    }


def test_http_job_metrics_errors(client, viewer, live_history):
    response = client.get("/api/analytics/jobs/bad-serial/metrics", headers=viewer)
    assert response.status_code == 422
    assert response.json == {"error": "validation_error", "message": "Invalid job serial format",
                             "details": {"field": "job_serial", "expected_format": "J20250001",
                                         "received": "bad-serial"}}
    response = client.get("/api/analytics/jobs/J20259999/metrics", headers=viewer)
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    response = client.get("/api/analytics/jobs/J20250001/metrics?period=2d", headers=viewer)
    assert response.status_code == 400


def test_http_analytics_needs_a_token(client):
    response = client.get("/api/analytics/executions")
    assert response.status_code == 401
