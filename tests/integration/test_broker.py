"""The Redis transport with a shared client, against the real Redis: one client per channel, the
URL's database honoured, a batch of task messages sent in one publish batch and each consumed; the same
batch on the machine's RabbitMQ through kombu's own amqp transport."""
from __future__ import annotations

import redis
from celery import Celery

from common.broker import TRANSPORT, LossWitness, transport_for, transport_options
from common.services.dispatch import send_batch
from tests.rabbitmq import queue_depths, scratch_vhost


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


def test_amqp_urls_get_kombus_own_transport_and_no_redis_options():
    url = "amqp://ops:pw@127.0.0.1:5672/opsconductor"
    assert transport_for(url) is None  # an explicit transport would win over the URL and speak Redis to RabbitMQ
    assert "visibility_timeout" not in transport_options(url)
    assert transport_options("redis://127.0.0.1:6379/3") == {"visibility_timeout": 3600}
    assert not LossWitness(url).messages_lost()  # RabbitMQ keeps durable queues; no Redis key to witness


def test_batch_on_rabbitmq_lands_in_durable_queues_and_every_message_is_consumed():
    with scratch_vhost() as url:
        vhost = url.rsplit("/", 1)[1]
        app = Celery("broker-test", broker=url, set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"], broker_transport=transport_for(url),
                        broker_transport_options=transport_options(url))
        send_batch(app, "opsconductor.test.noop", [([i], "broker-test") for i in range(50)])
        assert queue_depths(vhost) == {"broker-test": (50, 0)}
        received: list[int] = []
        with app.connection_for_read() as conn, conn.SimpleQueue("broker-test", no_ack=False) as simple:
            assert conn.transport.driver_type == "amqp"
            assert simple.queue.durable
            for _ in range(50):
                message = simple.get(timeout=5)
                assert message.properties["delivery_mode"] == 2  # persistent: a broker restart keeps it
                received.append(message.payload[0][0])
                message.ack()
        assert sorted(received) == list(range(50))
        assert queue_depths(vhost) == {"broker-test": (0, 0)}
