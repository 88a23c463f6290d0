"""/metrics on the real components: the Procfile stack (gunicorn with two web processes in prometheus-client's
multiprocess mode, a celery worker serving WORKER_METRICS_PORT, beat) running jobs over real sshd, and the
embedded default. Every scrape is parsed with prometheus-client's own parser; values are compared before
and after a job runs."""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    REPO_ROOT,
    Api,
    EventSocket,
    ManagedProcess,
    Processes,
    honcho_stack,
    wait_http_ready,
    ws_url,
)
from tests.e2e.test_embedded import local_job, printed_admin, start_standalone
from tests.faults.harness import WORKER_READY, procfile_commands
from tests.sshd import TEST_HOSTS, free_port, wait_until

pytestmark = pytest.mark.slow

ADMIN = ("metrics-admin", "metrics-admin-" + secrets.token_urlsafe(12))
SERIAL = re.compile(r"[JT]\d{8}")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """One scrape on a fresh connection (so the kernel may hand it to either web process)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert not [pairs for _, pairs in samples if any(SERIAL.search(v) for _, v in pairs)], "a serial in a label"
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@dataclass
class Stack:
    base_url: str
    worker_metrics: str
    multiproc_dir: Path
    honcho: ManagedProcess
    api: Api
    env: dict[str, str]
    processes: Processes


@pytest.fixture(scope="module")
def stack(empty_pg_url, e2e_redis_url, tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("metrics-stack")
    worker_port = free_port()
    tmpdir = tmp / "tmp"  # where the web process makes its multiprocess directory, so the test can look inside
    tmpdir.mkdir()
    with honcho_stack(tmp, ADMIN, DATABASE_URL=empty_pg_url, REDIS_URL=e2e_redis_url, WEB_WORKERS="2",
                      WORKER_METRICS_PORT=str(worker_port), WORKER_METRICS_HOST="127.0.0.1",
                      TMPDIR=str(tmpdir)) as running:
        wait_http_ready(f"http://127.0.0.1:{worker_port}", running.honcho, timeout=60, path="/metrics")
        made = list(tmpdir.glob("opsconductor-web-metrics-*"))
        assert len(made) == 1, made
        running.api.login(*ADMIN)
        yield Stack(running.base_url, f"http://127.0.0.1:{worker_port}/metrics", made[0], running.honcho,
                    running.api, running.env, running.processes)


def test_web_processes_share_one_count_whichever_answers_the_scrape(stack):
    url = stack.base_url + "/metrics"
    before = value(scrape(url), "opsconductor_http_requests_total", method="GET", route="/healthz", status="200")
    with ThreadPoolExecutor(8) as pool:  # fresh connections, several at once: both processes serve some
        codes = list(pool.map(lambda _: httpx.get(stack.base_url + "/healthz", timeout=10).status_code, range(40)))
    assert codes == [200] * 40
    seen = [value(scrape(url), "opsconductor_http_requests_total", method="GET", route="/healthz", status="200")
            for _ in range(8)]
    assert seen == [before + 40] * 8, seen
    # both gunicorn workers write into the one directory (each made its live gauge file when it loaded the app)
    pids = {m.group(1) for p in stack.multiproc_dir.glob("gauge_livesum_*.db")
            if (m := re.fullmatch(r"gauge_livesum_(\d+)\.db", p.name))}
    assert len(pids) >= 2, sorted(p.name for p in stack.multiproc_dir.iterdir())


def run_job(stack: Stack, job_serial: str) -> str:
    """Execute the job and wait for its end on a WebSocket; the socket shows on the API's gauge while open."""
    with EventSocket(ws_url(stack.base_url, f"job_serial={job_serial}"),
                     headers={"Authorization": f"Bearer {stack.api.token}"}) as socket:
        assert socket.next_json(timeout=10)["type"] == "subscribed"
        assert value(scrape(stack.base_url + "/metrics"), "opsconductor_websocket_clients") == 1
        execution = stack.api.post(f"/api/jobs/{job_serial}/execute")
        events = socket.collect_until(lambda e: e["type"] == "execution_completed", timeout=60)
    assert events[-1]["data"]["status"] == "completed", events[-1]
    return execution["execution_serial"]


def test_a_job_over_ssh_moves_the_api_and_worker_metrics(stack, e2e_sshd, client_key, ssh_user):
    api = stack.api
    credential = api.post("/api/credentials", {"name": "metrics-key", "username": ssh_user.name, "auth_type": "key",
                                               "private_key": client_key.private_key})
    targets = [api.post("/api/targets", {"name": f"metrics-host-{i}", "ip_address": host, "port": e2e_sshd.port,
                                         "credential_id": credential["id"]})
               for i, host in enumerate(TEST_HOSTS, start=1)]
    job = api.post("/api/jobs", {"name": "metrics job", "job_type": "command", "target_ids": [t["id"] for t in targets],
                                 "actions": [{"action_type": "command", "action_name": "hello",
                                              "action_parameters": {"command": "echo metrics"}}]})
    api_url = stack.base_url + "/metrics"
    api_before, worker_before = scrape(api_url), scrape(stack.worker_metrics)

    run_job(stack, job["job_serial"])

    api_after, worker_after = scrape(api_url), scrape(stack.worker_metrics)
    execute = {"method": "POST", "route": "/api/jobs/<job_id>/execute"}
    assert moved(api_before, api_after, "opsconductor_http_requests_total", **execute, status="201") == 1
    assert moved(api_before, api_after, "opsconductor_http_request_duration_seconds_count", **execute) == 1
    wait_until(lambda: value(scrape(api_url), "opsconductor_websocket_clients") == 0, timeout=10,
               message="the server to notice the closed socket")
    relayed = "opsconductor_websocket_events_relayed_total"
    assert moved(api_before, api_after, relayed, type="execution_started") == 1
    assert moved(api_before, api_after, relayed, type="branch_completed") == 3
    assert moved(api_before, api_after, relayed, type="execution_completed") == 1

    assert moved(worker_before, worker_after, "opsconductor_branches_started_total", connection="ssh") == 3
    finished = {"status": "completed", "error_type": "none"}
    assert moved(worker_before, worker_after, "opsconductor_branches_finished_total", **finished) == 3
    assert moved(worker_before, worker_after, "opsconductor_branch_duration_seconds_count", status="completed") == 3
    assert moved(worker_before, worker_after, "opsconductor_branch_duration_seconds_sum", status="completed") > 0
    # three new targets: three connections opened (and timed), three host keys pinned
    assert moved(worker_before, worker_after, "opsconductor_ssh_connections_opened_total") == 3
    assert moved(worker_before, worker_after, "opsconductor_ssh_connect_duration_seconds_count", outcome="ok") == 3
    assert value(worker_after, "opsconductor_ssh_pool_idle_connections") == 3
    for kind in ("claim", "finish", "pin"):  # every write went through a batch: batch sizes add up to 3
        assert moved(worker_before, worker_after, "opsconductor_group_commit_batch_size_sum", kind=kind) == 3, kind
        assert moved(worker_before, worker_after, "opsconductor_group_commit_batch_size_count", kind=kind) >= 1, kind
    assert value(worker_after, "opsconductor_queue_messages", queue="default") == 0  # the worker took them all

    run_job(stack, job["job_serial"])  # the same targets again: the pool's connections are reused

    again = scrape(stack.worker_metrics)
    assert moved(worker_after, again, "opsconductor_ssh_connections_reused_total") == 3
    assert moved(worker_after, again, "opsconductor_ssh_connections_opened_total") == 0
    assert value(again, "opsconductor_ssh_pool_reuse_ratio") == pytest.approx(0.5)
    assert moved(worker_after, again, "opsconductor_branches_finished_total", **finished) == 3
    # the standard process metrics are there too (a worker is one process)
    assert value(again, "process_resident_memory_bytes") > 0


def test_a_failed_branch_is_counted_by_its_error_type(stack, e2e_sshd, client_key, ssh_user):
    api = stack.api
    credential = api.post("/api/credentials", {"name": "metrics-key-2", "username": ssh_user.name,
                                               "auth_type": "key", "private_key": client_key.private_key})
    closed = free_port(("127.0.0.5",))  # nothing listens there: the connection is refused at once
    target = api.post("/api/targets", {"name": "metrics-nowhere", "ip_address": "127.0.0.5", "port": closed,
                                       "credential_id": credential["id"]})
    job = api.post("/api/jobs", {"name": "metrics unreachable", "job_type": "command", "target_ids": [target["id"]],
                                 "actions": [{"action_type": "command", "action_name": "never",
                                              "action_parameters": {"command": "true"}}]})
    before = scrape(stack.worker_metrics)
    execution = api.post(f"/api/jobs/{job['job_serial']}/execute")
    assert api.wait_execution_done(execution["execution_serial"])["status"] == "failed"
    after = scrape(stack.worker_metrics)
    assert moved(before, after, "opsconductor_branches_finished_total", status="failed", error_type="unreachable") == 1
    assert moved(before, after, "opsconductor_branch_duration_seconds_count", status="failed") == 1
    assert moved(before, after, "opsconductor_ssh_connect_duration_seconds_count", outcome="unreachable") == 1
    assert moved(before, after, "opsconductor_ssh_connections_opened_total") == 0


def test_worker_metrics_port_answers_only_metrics(stack):
    response = httpx.get(stack.worker_metrics.removesuffix("/metrics") + "/other", timeout=5)
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_a_second_worker_on_the_taken_metrics_port_runs_its_branches_without_metrics(stack):
    """Two workers on one host given one WORKER_METRICS_PORT (e.g. `honcho start -c worker=2`): the second says
    why it serves no metrics and runs its branches all the same; the port stays the first one's."""
    queue = "metrics-second"
    second = stack.processes.start(
        "worker-2", ["sh", "-c", procfile_commands()["worker"] + " -n metrics-second@%h"], cwd=REPO_ROOT,
        env={**stack.env, "WORKER_QUEUES": queue, "OPSCONDUCTOR_SKIP_MIGRATE": "1"})
    try:
        wait_until(lambda: WORKER_READY.search(second.stdout() + second.stderr()), timeout=60,
                   message="the second worker to be ready")
        assert "metrics server not started" in second.stdout() + second.stderr(), second.logs()
        target = stack.api.post("/api/targets", {"name": "metrics-second-local", "connection": "local",
                                                 "queue": queue})
        job = stack.api.post("/api/jobs", {"name": "metrics second worker", "target_ids": [target["id"]],
                                           "actions": [{"action_type": "command", "action_name": "hello",
                                                        "action_parameters": {"command": "echo second"}}]})
        before = scrape(stack.worker_metrics)
        execution = stack.api.post(f"/api/jobs/{job['job_serial']}/execute")
        assert stack.api.wait_execution_done(execution["execution_serial"], timeout=60)["status"] == "completed"
        after = scrape(stack.worker_metrics)
        assert moved(before, after, "opsconductor_branches_started_total", connection="local") == 0
    finally:
        second.stop()


def test_embedded_default_serves_the_api_and_worker_metrics_on_one_port(processes, tmp_path):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    proc, base_url = start_standalone(processes, workdir, "standalone-metrics")
    api = Api(base_url)
    try:
        api.login(*printed_admin(proc))
        _target, job = local_job(api, "embedded metrics job")
        before = scrape(base_url + "/metrics")
        execution = api.post(f"/api/jobs/{job['job_serial']}/execute")
        assert api.wait_execution_done(execution["execution_serial"])["status"] == "completed"
        after = scrape(base_url + "/metrics")
    finally:
        api.close()
    assert moved(before, after, "opsconductor_branches_started_total", connection="local") == 1
    assert moved(before, after, "opsconductor_branches_finished_total", status="completed", error_type="none") == 1
    assert moved(before, after, "opsconductor_http_requests_total", method="POST", route="/api/jobs/<job_id>/execute",
                 status="201") == 1
    assert moved(before, after, "opsconductor_group_commit_batch_size_sum", kind="finish") == 1
    # the in-memory broker's queue, read in-process: present, and empty once the worker took the message
    assert after[("opsconductor_queue_messages", (("queue", "default"),))] == 0
