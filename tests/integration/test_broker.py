"""The Redis transport with a shared client, against the real Redis: one client per channel, the
URL's database honoured, a batch of task messages sent in one publish batch and each consumed."""
from __future__ import annotations

import redis
from celery import Celery

from common.broker import TRANSPORT, transport_for
from common.services.dispatch import send_batch


def test_transport_is_ours_only_for_redis_urls():
    assert transport_for("redis://127.0.0.1:6379/3") == TRANSPORT
    assert transport_for("rediss://cache.example:6380/0") == TRANSPORT
    assert transport_for("memory://") is None


def test_batch_reaches_the_urls_database_and_every_message_is_consumed(redis_url):
    app = Celery("broker-test", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_transport=transport_for(redis_url))
    queue = "broker-test"

    send_batch(app, "opsconductor.test.noop", [([i], queue) for i in range(50)])

    assert redis.Redis.from_url(redis_url).llen(queue) == 50  # in our database, not DB 0
    received: list[int] = []
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        assert channel._create_client() is channel._create_client()
        with conn.SimpleQueue(queue, no_ack=False) as simple:
            for _ in range(50):
                message = simple.get(timeout=5)
                received.append(message.payload[0][0])  # protocol 2 body: (args, kwargs, embed)
                message.ack()
    assert sorted(received) == list(range(50))
    client = redis.Redis.from_url(redis_url)
    assert client.llen(queue) == 0
    assert client.hlen("unacked") == 0  # every ack went through the shared client
