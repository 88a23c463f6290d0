"""Whether a target's queue has a live worker: `queue_has_worker` on targets and GET /api/queues,
with Redis (workers announce themselves there), without it (the embedded default's one worker takes
every queue), and with Redis not answering (null, never an error)."""
from __future__ import annotations

import uuid

import pytest

from api.app import create_app
from common.queue_presence import RedisQueuePresence
from tests.api.conftest import Factory
from tests.conftest import Users, make_settings
from tests.sshd import free_port


def _client_with(db, redis_url: str):
    app = create_app(make_settings(db.url, redis_url=redis_url), db=db)
    client = app.test_client()
    return client, Users(db, client).headers("admin")


@pytest.fixture
def queue() -> str:
    return f"dc-east-{uuid.uuid4().hex[:8]}"


def test_queue_has_worker_follows_the_workers_announcements(db, redis_url, queue):
    client, admin = _client_with(db, redis_url)
    make = Factory(client, admin)
    target = make.target(queue=queue)
    assert target["queue_has_worker"] is False  # create answers with it too
    other = make.target(queue=f"{queue}-b")
    presence = RedisQueuePresence(redis_url, ttl=30)
    try:
        presence.announce(f"{queue}@agent-1", [queue])
        assert client.get(f"/api/targets/{target['target_serial']}", headers=admin).get_json()["queue_has_worker"]
        page = client.get(f"/api/targets?name={target['name']}", headers=admin).get_json()
        assert [t["queue_has_worker"] for t in page["data"]] == [True]
        patched = client.patch(f"/api/targets/{target['id']}", json={"queue": other["queue"]}, headers=admin)
        assert patched.status_code == 200 and patched.get_json()["queue_has_worker"] is False

        body = client.get("/api/queues", headers=admin).get_json()
        rows = {q["name"]: q for q in body["data"]}
        assert rows[queue] == {"name": queue, "targets": 0, "queued_branches": 0, "workers": [f"{queue}@agent-1"],
                               "has_worker": True}  # announced, though no target uses it any more
        assert rows[other["queue"]] == {"name": other["queue"], "targets": 2, "queued_branches": 0, "workers": [],
                                        "has_worker": False}
        presence.leave(f"{queue}@agent-1", [queue])
        assert client.get(f"/api/targets/{other['id']}", headers=admin).get_json()["queue_has_worker"] is False
    finally:
        presence.close()


def test_embedded_default_serves_every_queue(client, admin, make, queue):
    target = make.target(queue=queue)
    assert target["queue_has_worker"] is True
    rows = {q["name"]: q for q in client.get("/api/queues", headers=admin).get_json()["data"]}
    assert rows[queue] == {"name": queue, "targets": 1, "queued_branches": 0, "workers": ["embedded"],
                           "has_worker": True}


def test_redis_not_answering_shows_unknown(db, queue):
    client, admin = _client_with(db, f"redis://127.0.0.1:{free_port()}/0")
    target = Factory(client, admin).target(queue=queue)
    assert target["queue_has_worker"] is None
    response = client.get("/api/queues", headers=admin)
    assert response.status_code == 200
    assert {q["name"]: q for q in response.get_json()["data"]}[queue] == {
        "name": queue, "targets": 1, "queued_branches": 0, "workers": None, "has_worker": None}


def test_queues_needs_a_token(client):
    response = client.get("/api/queues")
    assert response.status_code == 401 and set(response.get_json()) == {"error", "message", "details"}
