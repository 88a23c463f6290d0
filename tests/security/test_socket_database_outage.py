"""The WebSocket's token checks when PostgreSQL goes away: a socket already open keeps relaying
events through the outage (its revalidation is retried, never turned into a close), a new socket
is told "try again later" (1013) instead of getting a 500 written into it, and once the database is
back a revocation still closes the open socket.

The outage is real: the scratch database stops accepting connections (ALLOW_CONNECTIONS false) and
its backends are terminated, so every checkout fails inside psycopg2, as when the server is down."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from werkzeug.serving import make_server

from api import ws as ws_module
from api.app import create_app
from common.db import Database
from common.events import LocalEventBus
from common.migrate import upgrade
from common.services.users import create_user, update_user
from tests.conftest import PASSWORD, make_settings, pg_admin, scratch_database
from tests.e2e.conftest import EventSocket, ws_url
from tests.sshd import wait_until


def _outage(name: str, down: bool) -> None:
    pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if down else 'true'}")
    if down:
        pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", name)


@pytest.fixture
def served(monkeypatch) -> Iterator[tuple[str, Database, LocalEventBus, str]]:
    monkeypatch.setattr(ws_module, "REVALIDATE_SECONDS", 0.2)
    with scratch_database("opsc_wsdown") as url:
        upgrade(url)
        db = Database(url)
        events = LocalEventBus()
        app = create_app(make_settings(url, rate_limits_enabled=False), db=db, events=events)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", db, events, url.rsplit("/", 1)[1]
        finally:
            server.shutdown()
            _outage(url.rsplit("/", 1)[1], down=False)
            db.dispose()


def test_sockets_through_a_database_outage(served, caplog):
    base_url, db, events, name = served
    with db.session() as session:
        user_id = create_user(session, "watcher", PASSWORD, "viewer").id
    token = httpx.post(f"{base_url}/api/auth/login", json={"username": "watcher", "password": PASSWORD},
                       timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    caplog.set_level(logging.WARNING, logger=ws_module.__name__)
    with EventSocket(ws_url(base_url), headers=headers) as socket:
        assert socket.next_json()["type"] == "subscribed"
        _outage(name, down=True)
        wait_until(lambda: any("revalidation failed" in r.getMessage() for r in caplog.records), timeout=15,
                   message="a revalidation round during the outage")
        event = {"type": "branch_completed", "data": {"execution_serial": "J20260001.0001"}}
        events.publish_many([(event["type"], event["data"])])
        assert socket.next_json() == event  # still open, still relaying

        with EventSocket(ws_url(base_url), headers=headers) as refused:
            assert refused.close_code() == ws_module.TRY_AGAIN_LATER

        _outage(name, down=False)
        with db.session() as session:
            update_user(session, user_id, is_active=False)
        assert socket.close_code(timeout=10) == ws_module.POLICY_VIOLATION
