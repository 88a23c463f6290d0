"""No N+1: every read endpoint issues as many SQL statements for an answer of 50 as for an answer of 1.

Statements are counted with a `before_cursor_execute` listener on the engine around each HTTP request
(the count includes the token's user lookup, the same on every request).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from common.models import utcnow
from tests.history_data import Scaled, build_scaled


@contextmanager
def counting(engine):
    statements: list[str] = []

    def _count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", _count)


# each: (name, request maker, check that the answer really has size n)
Request = Callable[[object, dict, Scaled], object]
ENDPOINTS: list[tuple[str, Request, Callable[[object, int], bool]]] = [
    ("job executions", lambda c, h, s: c.get(f"/api/jobs/{s.job_serial}/executions", headers=h),
     lambda body, n: len(body) == n),
    ("execution by serial", lambda c, h, s: c.get(f"/api/executions/serial/{s.execution_serial}", headers=h),
     lambda body, n: len(body["branches"]) == n),
    ("branch by serial", lambda c, h, s: c.get(f"/api/executions/branch/{s.branch_serial}", headers=h),
     lambda body, n: len(body["steps"]) == n),
    ("search executions", lambda c, h, s: c.get(f"/api/executions/search?q={s.search_q}&type=execution", headers=h),
     lambda body, n: body["total"] == n and len(body["results"]) == n),
    ("search all", lambda c, h, s: c.get(f"/api/executions/search?q={s.search_q}&limit=500", headers=h),
     lambda body, n: len(body["results"]) == n + 2 * n - 1),
    ("bulk", lambda c, h, s: c.post("/api/executions/bulk", json={"serials": s.serials}, headers=h),
     lambda body, n: len(body["results"]) == n and body["not_found"] == []),
    ("bulk with unknown", lambda c, h, s: c.post("/api/executions/bulk", headers=h,
                                                 json={"serials": s.serials + ["bad", "J20259999.0001"]}),
     lambda body, n: len(body["results"]) == n + 2),
    ("target performance", lambda c, h, s: c.get(f"/api/targets/{s.target_serial}/performance?days=7", headers=h),
     lambda body, n: body["total_executions"] == n and len(body["recent_executions"]) == min(n, 10)),
    ("target history", lambda c, h, s: c.get(f"/api/targets/{s.target_serial}/executions?limit=100", headers=h),
     lambda body, n: body["total"] == n and len(body["executions"]) == n),
    ("job metrics", lambda c, h, s: c.get(f"/api/analytics/jobs/{s.job_serial}/metrics?period=7d", headers=h),
     lambda body, n: body["total_executions"] == n and len(body["target_performance"]) == n),
    ("analytics by hour", lambda c, h, s: c.get("/api/analytics/executions?period=7d&group_by=hour", headers=h),
     lambda body, n: body["total_executions"] >= n),
    ("analytics by week", lambda c, h, s: c.get("/api/analytics/executions?period=90d&group_by=week", headers=h),
     lambda body, n: body["total_executions"] >= n),
]


def measure(db, client, headers, scaled: Scaled, n: int) -> dict[str, int]:
    counts = {}
    for name, make_request, has_size in ENDPOINTS:
        with counting(db.engine) as statements:
            response = make_request(client, headers, scaled)
        assert response.status_code == 200, (name, response.json)
        assert has_size(response.json, n), (name, n, response.json)
        counts[name] = len(statements)
    return counts


def test_statement_counts_do_not_grow_with_the_answer(db, client, viewer):
    now = utcnow()
    with db.session() as session:
        small = build_scaled(session, 1, now, tag=1)
    one = measure(db, client, viewer, small, 1)
    with db.session() as session:
        large = build_scaled(session, 50, now, tag=2)
    fifty = measure(db, client, viewer, large, 50)
    assert fifty == one
    # and they are few: at most four of the endpoint's own besides what authentication costs
    baseline = authentication_cost(db, client, viewer)
    assert max(one.values()) - baseline <= own_budget(db), (baseline, one)


def authentication_cost(db, client, headers) -> int:
    """Statements of a request that only authenticates (the token's user lookup)."""
    with counting(db.engine) as statements:
        assert client.get("/api/auth/me", headers=headers).status_code == 200
    return len(statements)


def own_budget(db) -> int:
    return 4 + (1 if db.dialect == "sqlite" else 0)  # SQLite: the transaction's BEGIN IMMEDIATE is a statement


def test_bulk_of_1000_is_one_statement_more_than_the_user_lookup(db, client, viewer):
    now = utcnow()
    with db.session() as session:
        scaled = build_scaled(session, 50, now, tag=3)
    serials = (scaled.serials * 20)[:990] + [f"J20259999.{i:04d}" for i in range(1, 6)] + ["x"] * 5
    with counting(db.engine) as few:
        client.post("/api/executions/bulk", json={"serials": serials[:2]}, headers=viewer)
    with counting(db.engine) as many:
        response = client.post("/api/executions/bulk", json={"serials": serials}, headers=viewer)
    assert response.status_code == 200
    assert len(response.json["results"]) == 1000
    assert response.json["not_found"] == [f"J20259999.{i:04d}" for i in range(1, 6)] + ["x"]
    assert len(many) == len(few)


@pytest.mark.parametrize("page", [1, 50])
def test_job_executions_pages_are_flat(db, client, viewer, page):
    with db.session() as session:
        scaled = build_scaled(session, 50, utcnow(), tag=4)
    with counting(db.engine) as statements:
        response = client.get(f"/api/jobs/{scaled.job_serial}/executions?limit={page}", headers=viewer)
    assert len(response.json) == page
    assert len(statements) - authentication_cost(db, client, viewer) <= own_budget(db)
