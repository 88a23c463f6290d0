"""GET /metrics on the API port: Prometheus text that prometheus-client's own parser reads, requests counted
by route template (never by serial), bounded label values, the optional bearer token and the off switch."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from tests.api.conftest import assert_error
from tests.conftest import make_settings


def scrape(client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def requests(samples, method: str, route: str, status: str) -> float:
    key = ("opsconductor_http_requests_total", (("method", method), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


def latency_count(samples, method: str, route: str) -> float:
    key = ("opsconductor_http_request_duration_seconds_count", (("method", method), ("route", route)))
    return samples.get(key, 0.0)


def test_requests_are_counted_and_timed_by_route_template_with_bounded_labels(client, admin):
    before = scrape(client)
    serial_route = "/api/executions/serial/<execution_serial>"
    assert client.get("/api/executions/serial/J20260001.0001", headers=admin).status_code == 404
    assert client.get("/api/executions/serial/J20260002.0007", headers=admin).status_code == 404
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/path/J20260001").status_code == 404
    assert client.open("/healthz", method="BREW").status_code == 405  # a method the client made up
    after = scrape(client)

    assert requests(after, "GET", serial_route, "404") - requests(before, "GET", serial_route, "404") == 2
    assert latency_count(after, "GET", serial_route) - latency_count(before, "GET", serial_route) == 2
    assert requests(after, "GET", "/healthz", "200") - requests(before, "GET", "/healthz", "200") == 1
    assert requests(after, "GET", "unmatched", "404") - requests(before, "GET", "unmatched", "404") == 1
    assert requests(after, "other", "unmatched", "405") - requests(before, "other", "unmatched", "405") == 1
    labels = {value for (_name, pairs) in after for _key, value in pairs}
    assert not [value for value in labels if "J2026" in value or "BREW" in value], labels
    names = {name for name, _ in after}
    assert {"opsconductor_http_requests_total", "opsconductor_websocket_clients",
            "opsconductor_http_request_duration_seconds_bucket"} <= names, names


@pytest.fixture
def token_client(db):
    app = create_app(make_settings(db.url, metrics_token="scrape-" + "t" * 40), db=db)
    return app.test_client()


def test_metrics_token_is_required_when_set(token_client):
    assert_error(token_client.get("/metrics"), 401, "unauthorized")
    assert_error(token_client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    assert_error(token_client.get("/metrics", headers={"Authorization": "Basic " + "t" * 40}), 401, "unauthorized")
    samples = scrape(token_client, Authorization="Bearer scrape-" + "t" * 40)
    assert any(name == "opsconductor_http_requests_total" for name, _ in samples)


def test_metrics_can_be_turned_off(db):
    client = create_app(make_settings(db.url, metrics_enabled=False), db=db).test_client()
    assert_error(client.get("/metrics"), 404, "not_found")
    assert client.get("/healthz").status_code == 200
