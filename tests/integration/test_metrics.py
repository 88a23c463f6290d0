"""The worker's scrape-time readings and its metrics port, against the real broker and a real HTTP socket:
queue depth asked of Redis (and a broker that does not answer leaving the samples out, quickly), and the
port's token, methods and paths."""
from __future__ import annotations

import socket
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
from tests.rabbitmq import queue_depths, scratch_vhost
from tests.sshd import free_port, wait_until
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


def test_queue_depth_on_rabbitmq_asks_without_declaring_anything(redis_url):
    """A declare with other flags than Celery's durable queue is refused by RabbitMQ (and would create a queue
    that is missing): the depth is asked passively, and a queue nobody declared yet counts 0."""
    with scratch_vhost("opsc_metrics") as broker_url:
        celery = Dispatcher.from_settings(make_settings("sqlite://", redis_url=redis_url,
                                                        celery_broker_url=broker_url)).celery
        send_batch(celery, "opsconductor.test.metrics_probe", [([n], "probe") for n in range(3)])
        depth = QueueDepth(celery, lambda: ["probe", "undeclared"])
        try:
            # no publisher confirms: the three may still be on their way into the queue
            wait_until(lambda: depth.read() == {"probe": 3, "undeclared": 0}, timeout=10, interval=0.05,
                       message="the three messages to be counted")
            assert depth.read() == {"probe": 3, "undeclared": 0}  # the channel the 404 closed is replaced
        finally:
            depth.close()
        assert queue_depths(broker_url.rsplit("/", 1)[1]) == {"probe": (3, 0)}  # nothing declared by a scrape


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


def _scrapes(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    except httpx.TransportError:  # closed unanswered while every slot is taken
        return False


def test_idle_connections_are_closed_so_they_hold_no_thread_for_long():
    collector()
    running = MetricsServer("127.0.0.1", 0, None, idle_timeout=0.5, max_clients=1).start()
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as idle:
            assert idle.recv(1) == b""  # closed by the server, well before this socket's own 5 s
        wait_until(lambda: _scrapes(running.port), timeout=5, message="a scrape after the idle client")
    finally:
        running.stop()


def test_connections_past_the_cap_are_closed_unanswered_and_scrapes_resume():
    collector()
    running = MetricsServer("127.0.0.1", 0, None, idle_timeout=30, max_clients=2).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as extra:
            assert extra.recv(1) == b""  # at once: the two idle ones hold both slots for 30 s
        for conn in idle:
            conn.close()
        wait_until(lambda: _scrapes(running.port), timeout=5, message="a scrape once the idle clients left")
    finally:
        running.stop()
