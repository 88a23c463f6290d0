"""Per-user rate limits (SPEC §7): headers on every /api response, 429 with Retry-After in the envelope,
admin vs standard budgets, separate budgets per user, login limited per IP, and one budget shared by
several real API processes through Redis."""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from api.app import create_app
from tests.api.conftest import assert_error
from tests.conftest import FERNET_SECRET, JWT_SECRET, PASSWORD, make_settings
from tests.processes import ManagedProcess, Processes
from tests.sshd import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
LIMITS = {"rate_limit_standard": "5 per minute", "rate_limit_admin": "8 per minute",
          "rate_limit_login": "3 per minute"}
HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def limited(db, users):
    """A fresh app with small limits (create_app re-binds the global limiter to new in-memory storage)."""
    for name, role in (("admin", "admin"), ("operator", "operator"), ("viewer", "viewer")):
        users.create(name, role)
    app = create_app(make_settings(db.url, **LIMITS), db=db)
    return app.test_client()


def _login(client, username: str, ip: str = "127.0.0.1"):
    return client.post("/api/auth/login", json={"username": username, "password": PASSWORD},
                       environ_base={"REMOTE_ADDR": ip})


def _headers(client, username: str, ip: str = "127.0.0.1") -> dict[str, str]:
    response = _login(client, username, ip)
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def _assert_rate_headers(response, limit: int, remaining: int) -> None:
    for name in HEADERS:
        assert name in response.headers, f"{name} missing on {response.status_code}"
    assert int(response.headers["X-RateLimit-Limit"]) == limit
    assert int(response.headers["X-RateLimit-Remaining"]) == remaining
    reset = int(response.headers["X-RateLimit-Reset"])
    assert time.time() - 1 <= reset <= time.time() + 61


def _assert_429(response) -> None:
    body = assert_error(response, 429, "rate_limited")
    assert body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= 60
    assert int(response.headers["X-RateLimit-Remaining"]) == 0


def test_headers_on_every_api_response(limited):
    operator = _headers(limited, "operator")
    responses = [
        limited.get("/api/jobs", headers=operator),                          # 200
        limited.get("/api/jobs/J20990001", headers=operator),                # 404 from the view
        limited.post("/api/jobs", json={"name": "x"}, headers=operator),     # 422
        limited.get("/api/no-such-route", headers=operator),                 # 404 without a route
    ]
    assert [r.status_code for r in responses] == [200, 404, 422, 404]
    for n, response in enumerate(responses):
        _assert_rate_headers(response, limit=5, remaining=4 - n)
    # an anonymous request is limited (and labelled) per IP
    anonymous = limited.get("/api/jobs", environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert anonymous.status_code == 401
    _assert_rate_headers(anonymous, limit=5, remaining=4)
    # probes are not part of the API budget
    assert "X-RateLimit-Limit" not in limited.get("/healthz").headers


def test_standard_user_gets_429_on_the_sixth_request(limited):
    operator = _headers(limited, "operator")
    for n in range(5):
        response = limited.get("/api/jobs", headers=operator)
        assert response.status_code == 200, n
        _assert_rate_headers(response, limit=5, remaining=4 - n)
    _assert_429(limited.get("/api/jobs", headers=operator))
    # the budget is per user, not per route
    _assert_429(limited.get("/api/targets", headers=operator))
    _assert_429(limited.post("/api/jobs", json={"name": "x"}, headers=operator))


def test_viewer_is_a_standard_user(limited):
    viewer = _headers(limited, "viewer")
    assert [limited.get("/api/targets", headers=viewer).status_code for _ in range(5)] == [200] * 5
    _assert_429(limited.get("/api/targets", headers=viewer))


def test_admin_gets_eight(limited):
    admin = _headers(limited, "admin")
    for n in range(8):
        response = limited.get("/api/users", headers=admin)
        assert response.status_code == 200, n
        _assert_rate_headers(response, limit=8, remaining=7 - n)
    _assert_429(limited.get("/api/users", headers=admin))


def test_users_have_separate_budgets(limited):
    operator = _headers(limited, "operator")
    viewer = _headers(limited, "viewer")
    for _ in range(5):
        assert limited.get("/api/jobs", headers=operator).status_code == 200
    _assert_429(limited.get("/api/jobs", headers=operator))
    response = limited.get("/api/jobs", headers=viewer)
    assert response.status_code == 200
    _assert_rate_headers(response, limit=5, remaining=4)
    # nor does an exhausted user use up the budget of the IP it comes from
    anonymous = limited.get("/api/jobs")
    assert anonymous.status_code == 401


def test_login_is_limited_per_ip(limited):
    attempts = [_login(limited, "operator").status_code,
                limited.post("/api/auth/login", json={"username": "operator", "password": "wrong-password"})
                .status_code,
                _login(limited, "viewer").status_code]
    assert attempts == [200, 401, 200]
    fourth = _login(limited, "operator")
    _assert_429(fourth)
    assert "access_token" not in fourth.get_data(as_text=True)
    # another address has its own login budget
    other = _login(limited, "operator", ip="10.1.2.3")
    assert other.status_code == 200
    _assert_rate_headers(other, limit=3, remaining=2)


def test_limits_can_be_disabled(db, users):
    users.create("operator", "operator")
    app = create_app(make_settings(db.url, rate_limits_enabled=False, **LIMITS), db=db)
    client = app.test_client()
    operator = _headers(client, "operator")
    assert all(client.get("/api/jobs", headers=operator).status_code == 200 for _ in range(10))


# ---------------------------------------------------------------- two real API processes, one budget

def _healthy(base: str, proc: ManagedProcess) -> bool:
    assert proc.running(), f"API process exited early:\n{proc.logs()}"
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_budget_is_shared_across_processes_through_redis(pg_db, pg_url, redis_url, tmp_path):
    from common.services.users import create_user

    with pg_db.session() as session:
        user_id = create_user(session, "shared-op", PASSWORD, "operator").id
    store = redis.Redis.from_url(redis_url)
    for key in store.scan_iter(match=f"*user:{user_id}*"):  # stale counters of an earlier run
        store.delete(key)

    env = {**os.environ, "DATABASE_URL": pg_url, "REDIS_URL": redis_url, "JWT_SECRET_KEY": JWT_SECRET,
           "OPSCONDUCTOR_SECRET_KEY": FERNET_SECRET, "RATE_LIMIT_STANDARD": "6 per minute",
           "RATE_LIMIT_LOGIN": "20 per minute", "OPSCONDUCTOR_EMBEDDED": "0", "PYTHONUNBUFFERED": "1"}
    for name in ("OPSCONDUCTOR_ADMIN_USERNAME", "OPSCONDUCTOR_ADMIN_PASSWORD", "RATE_LIMIT_ADMIN"):
        env.pop(name, None)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    processes = Processes(tmp_path)
    bases: list[str] = []
    try:
        for n in range(2):
            port = free_port()
            proc = processes.start(f"api{n}", [gunicorn, "api.wsgi:app", "--bind", f"127.0.0.1:{port}",
                                               "--workers", "1", "--graceful-timeout", "2"], cwd=REPO, env=env)
            bases.append(f"http://127.0.0.1:{port}")
            wait_until(functools.partial(_healthy, bases[-1], proc), timeout=60, interval=0.05,
                       message=f"API process {n}")

        login = httpx.post(f"{bases[0]}/api/auth/login", json={"username": "shared-op", "password": PASSWORD},
                           timeout=10)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        responses = [httpx.get(f"{bases[n % 2]}/api/jobs", headers=headers, timeout=10) for n in range(7)]
        assert [r.status_code for r in responses] == [200] * 6 + [429], [r.text for r in responses]
        # one counter, whichever process answered: 5, 4, 3, 2, 1, 0
        assert [int(r.headers["X-RateLimit-Remaining"]) for r in responses[:6]] == [5, 4, 3, 2, 1, 0]
        assert all(int(r.headers["X-RateLimit-Limit"]) == 6 for r in responses)
        last = responses[6]
        assert last.json()["error"] == "rate_limited"
        assert set(last.json()) == {"error", "message", "details"}
        assert 0 < int(last.headers["Retry-After"]) <= 60
        # and the first process, which served only 3 of the 6, refuses too
        again = httpx.get(f"{bases[0]}/api/jobs", headers=headers, timeout=10)
        assert again.status_code == 429
        assert any(store.scan_iter(match=f"*user:{user_id}*")), "no counter in Redis"
    finally:
        processes.stop_all()
        for key in store.scan_iter(match=f"*user:{user_id}*"):
            store.delete(key)
        store.close()
