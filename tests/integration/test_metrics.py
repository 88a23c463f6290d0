"""The worker's scrape-time readings and its metrics port, against the real broker and a real HTTP socket:
queue depth asked of Redis (and a broker that does not answer leaving the samples out, quickly), and the
port's token, methods and paths."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api.dispatch import Dispatcher
from common.services.dispatch import send_batch
from tests.conftest import make_settings
from tests.sshd import free_port
from worker.metrics import MetricsServer, QueueDepth, collector

TOKEN = "worker-scrape-" + "k" * 32


def test_queue_depth_reads_the_messages_waiting_in_a_redis_queue(redis_url):
    celery = Dispatcher.from_settings(make_settings("sqlite://", redis_url=redis_url)).celery
    queue = f"metrics-probe-{uuid.uuid4().hex[:8]}"  # no worker consumes it: what is sent stays
    depth = QueueDepth(celery, lambda: [queue])
    try:
        assert depth.read() == {queue: 0}
        send_batch(celery, "opsconductor.test.metrics_probe", [([n], queue) for n in range(3)])
        assert depth.read() == {queue: 3}
    finally:
        depth.close()
        redis.Redis.from_url(redis_url).delete(queue)


def test_queue_depth_of_a_broker_that_does_not_answer_is_left_out_quickly():
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    depth = QueueDepth(Dispatcher.from_settings(make_settings("sqlite://", redis_url=dead)).celery,
                       lambda: ["default"])
    began = time.monotonic()
    assert depth.read() == {}
    assert time.monotonic() - began < 5


@pytest.fixture
def server() -> Iterator[str]:
    collector()  # what a worker registers when it is ready (worker.metrics.serve)
    running = MetricsServer("127.0.0.1", 0, TOKEN).start()
    try:
        yield f"http://127.0.0.1:{running.port}"
    finally:
        running.stop()


def test_worker_metrics_port_wants_the_token_and_serves_only_get_metrics(server):
    refused = httpx.get(f"{server}/metrics", timeout=5)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", refused.text
    wrong = httpx.get(f"{server}/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = httpx.get(f"{server}/metrics", headers=auth, timeout=5)
    assert answer.status_code == 200
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"opsconductor_branches_finished", "opsconductor_ssh_pool_idle_connections"} <= names, names
    head = httpx.head(f"{server}/metrics", headers=auth, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert httpx.post(f"{server}/metrics", headers=auth, timeout=5).status_code == 405
    assert httpx.get(f"{server}/", headers=auth, timeout=5).status_code == 404
