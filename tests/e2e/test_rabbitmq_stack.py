"""RabbitMQ as the broker: the Procfile stack (`honcho start`: web, worker, beat) with CELERY_BROKER_URL on
the machine's RabbitMQ (a virtual host and user of this run's own) and REDIS_URL on a private redis-server
for events and limits. A job on three sshd hosts runs end to end, its events reach a WebSocket, the branch
tasks pass through RabbitMQ and never through Redis, and a broker that drops every connection is
reconnected by the API and the worker without help."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.e2e.conftest import (
    Api,
    EventSocket,
    ManagedProcess,
    assert_execution_events,
    honcho_stack,
    ws_url,
)
from tests.rabbitmq import queue_depths, rabbitmqctl, scratch_vhost
from tests.sshd import TEST_HOSTS, wait_until

pytestmark = pytest.mark.slow

ADMIN = ("mq-admin", "mq-admin-" + secrets.token_urlsafe(12))


@dataclass
class Stack:
    base_url: str
    honcho: ManagedProcess
    api: Api
    broker_url: str
    vhost: str
    redis_url: str


@pytest.fixture(scope="module")
def stack(empty_pg_url, e2e_redis_url, tmp_path_factory) -> Iterator[Stack]:
    with scratch_vhost("opsc_e2e") as broker_url, honcho_stack(
            tmp_path_factory.mktemp("rabbitmq-stack"), ADMIN, DATABASE_URL=empty_pg_url, REDIS_URL=e2e_redis_url,
            CELERY_BROKER_URL=broker_url, WEB_WORKERS="1", WORKER_CONCURRENCY="8") as running:
        wait_until(lambda: "ready." in running.honcho.stdout(), timeout=30, message="the celery worker to be ready")
        running.api.login(*ADMIN)
        yield Stack(base_url=running.base_url, honcho=running.honcho, api=running.api, broker_url=broker_url,
                    vhost=broker_url.rsplit("/", 1)[1], redis_url=e2e_redis_url)


@pytest.fixture(scope="module")
def job(stack, e2e_sshd, client_key, ssh_user) -> dict:
    api = stack.api
    credential = api.post("/api/credentials", {"name": "mq-key", "username": ssh_user.name, "auth_type": "key",
                                               "private_key": client_key.private_key})
    targets = [api.post("/api/targets", {"name": f"mq-host-{i}", "ip_address": host, "port": e2e_sshd.port,
                                         "credential_id": credential["id"]})
               for i, host in enumerate(TEST_HOSTS, start=1)]
    return api.post("/api/jobs", {
        "name": "over RabbitMQ", "target_ids": [t["id"] for t in targets],
        "actions": [{"action_type": "command", "action_name": "where",
                     "action_parameters": {"command": 'echo "mq $SSH_CONNECTION"'}}]})


def run_and_watch(stack: Stack, job: dict) -> tuple[dict, list[dict]]:
    """Execute the job with a WebSocket watching it; (the execution, its events up to execution_completed)."""
    with EventSocket(ws_url(stack.base_url, f"job_serial={job['job_serial']}"),
                     headers={"Authorization": f"Bearer {stack.api.token}"}) as socket:
        assert socket.next_json(timeout=10)["type"] == "subscribed"
        execution = stack.api.post(f"/api/jobs/{job['job_serial']}/execute")
        events = socket.collect_until(lambda e: e["type"] == "execution_completed"
                                      and e["data"]["execution_serial"] == execution["execution_serial"],
                                      timeout=60)
    return execution, [e for e in events if e["data"]["execution_serial"] == execution["execution_serial"]]


def test_execute_runs_over_ssh_with_tasks_through_rabbitmq_and_events_through_redis(stack, job, e2e_sshd):
    # every Celery process of the stack is on RabbitMQ (the URL is logged with its password masked)
    user = stack.vhost
    wait_until(lambda: f"amqp://{user}:**@127.0.0.1:5672/{stack.vhost}" in stack.honcho.stdout(), timeout=10,
               message="the worker to log its broker")

    execution, events = run_and_watch(stack, job)
    branches = {b["branch_serial"]: b["target_serial_ref"] for b in execution["branches"]}
    assert_execution_events(events, execution_serial=execution["execution_serial"], job_serial=job["job_serial"],
                            branches=branches)
    detail = stack.api.get(f"/api/executions/serial/{execution['execution_serial']}")
    assert detail["status"] == "completed"
    for summary in detail["branches"]:
        branch = stack.api.get(f"/api/executions/branch/{summary['branch_serial']}")
        assert branch["exit_code"] == 0 and branch["result_output"].startswith("mq "), branch
        assert f" {e2e_sshd.port}" in branch["result_output"]  # really over SSH, to the test sshd

    # the tasks went through RabbitMQ's durable `default` queue, now drained; Redis never held a task queue
    assert queue_depths(stack.vhost).get("default") == (0, 0), queue_depths(stack.vhost)
    r = redis.Redis.from_url(stack.redis_url)
    try:
        assert not r.exists("default") and not r.exists("unacked"), sorted(r.keys("*"))[:20]
    finally:
        r.close()
    # the broker's password never reached a log
    assert stack.broker_url.split(":")[2].split("@")[0] not in stack.honcho.stdout() + stack.honcho.stderr()


def test_a_broker_that_drops_every_connection_is_reconnected_by_the_api_and_the_worker(stack, job):
    before = stack.honcho.stdout().count("Connection to broker lost")
    rabbitmqctl("close_all_connections", "-p", stack.vhost, "opsconductor e2e: broker restart")
    wait_until(lambda: stack.honcho.stdout().count("Connection to broker lost") > before, timeout=20,
               message="the worker to notice the lost broker connection")

    execution, events = run_and_watch(stack, job)
    assert events[-1]["data"]["status"] == "completed", events[-1]
    detail = stack.api.get(f"/api/executions/serial/{execution['execution_serial']}")
    assert [b["status"] for b in detail["branches"]] == ["completed"] * len(TEST_HOSTS)
    # sent by the API at once, not left for the sweep: none of the branches waited for a re-dispatch
    assert "left queued for the sweep" not in stack.honcho.stdout()
