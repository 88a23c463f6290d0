"""Gapless, resumable execution events (issue 12 item 3) against real processes.

A stack of its own: two gunicorn web processes (the Procfile's `web` line, each on its own port), two
Celery worker processes (4 threads each), a redis-server the module owns (it kills and restarts it)
and a fresh PostgreSQL database. Jobs run on local targets whose command waits at a gate the test
opens (tests/gate.py), so "the execution goes on while the client is away" is a fact the test makes,
not a race it hopes to win. Every stream is checked against the execution_events table: the events a
client gets are exactly its rows, in seq order, each once.

The too-slow client talks to a third web process started from the same Procfile line through a
launcher that shrinks, for sockets asking with `?test_small_queue=1` only, the subscription's queue
and the socket's send buffer (the production default is a 10,000-event queue)."""
from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import scratch_database
from tests.e2e.conftest import (
    REPO_ROOT,
    Api,
    EventSocket,
    ManagedProcess,
    Processes,
    assert_execution_events,
    clean_env,
    wait_http_ready,
    ws_url,
)
from tests.faults.harness import WORKER_READY, RedisServer, procfile_commands, wait_for
from tests.gate import Gate
from tests.sshd import free_port

pytestmark = pytest.mark.slow

ADMIN = ("stream-admin", "stream-admin-" + secrets.token_urlsafe(12))
WORKER_THREADS = 4
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    root: Path
    dsn: str
    redis: RedisServer
    web_urls: list[str]
    api: Api
    workers: list[ManagedProcess]
    env: dict[str, str]
    start: Callable[..., ManagedProcess]  # (Procfile entry, name, env, extra arguments) -> process
    _jobs: int = field(default=0)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api.token}"}

    def socket(self, web: int, query: str) -> EventSocket:
        """A socket on web process ``web`` (0 or 1), confirmed subscribed."""
        sock = EventSocket(ws_url(self.web_urls[web], query), headers=self.auth)
        subscribed = sock.next_json(timeout=15)
        assert subscribed["type"] == "subscribed", subscribed
        return sock

    def gated_job(self, branches: int) -> tuple[dict, Gate, list[dict]]:
        """A job on ``branches`` local targets whose single action waits at a new gate."""
        self._jobs += 1
        gate = Gate(self.root)
        targets = [self.api.post("/api/targets", {"name": f"stream-{self._jobs}-{i}", "connection": "local"})
                   for i in range(branches)]
        job = self.api.post("/api/jobs", {
            "name": f"stream job {self._jobs}", "job_type": "command", "target_ids": [t["id"] for t in targets],
            "actions": [{"action_type": "command", "action_name": "gate",
                         "action_parameters": {"command": gate.command}}]})
        return job, gate, targets

    def recorded(self, execution_serial: str) -> list[dict]:
        """The execution's rows in execution_events, as the relay sends them ({type, data with seq})."""
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT ev.seq, ev.type, ev.data FROM execution_events ev "
                        "JOIN executions e ON e.id = ev.execution_id WHERE e.execution_serial = %s ORDER BY ev.seq",
                        (execution_serial,))
            rows = cur.fetchall()
        conn.close()
        return [{"type": kind, "data": {**data, "seq": seq}} for seq, kind, data in rows]

    def last_recorded_seq(self, execution_serial: str) -> int:
        rows = self.recorded(execution_serial)
        return rows[-1]["data"]["seq"] if rows else 0

    def branch_workers(self, execution_serial: str) -> list[str]:
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT b.worker FROM branches b JOIN executions e ON e.id = b.execution_id "
                        "WHERE e.execution_serial = %s", (execution_serial,))
            rows = [r[0] for r in cur.fetchall()]
        conn.close()
        return rows

    def logs(self) -> str:
        return "\n".join(w.logs(3000) for w in self.workers)


def _psycopg2_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("event-stream")
    processes = Processes(root / "logs")
    commands = procfile_commands()

    def start(kind: str, name: str, env: dict[str, str], extra: str = "", launcher: str = "") -> ManagedProcess:
        command = commands[kind] if not launcher else commands[kind].replace("gunicorn ", f"{launcher} ", 1)
        return processes.start(name, ["/bin/sh", "-c", f"exec {command}{extra}"], cwd=REPO_ROOT, env=env)

    with scratch_database("opsc_stream") as database_url:
        try:
            redis_server = RedisServer(root, processes)
            redis_server.start()
            env = clean_env(
                DATABASE_URL=database_url, REDIS_URL=redis_server.url, OPSCONDUCTOR_EMBEDDED="0",
                JWT_SECRET_KEY=secrets.token_urlsafe(48), OPSCONDUCTOR_SECRET_KEY=secrets.token_urlsafe(48),
                RATE_LIMIT_ADMIN="1000000 per minute", LOG_LEVEL="INFO", LOCAL_RUN_AS="self",
                HEARTBEAT_SECONDS="1", WEB_WORKERS="1", WEB_THREADS="16")
            web_urls = []
            for n in range(2):  # one after the other: the first migrates the empty database and makes the admin
                port = free_port()
                web_env = {**env, "PORT": str(port)}
                web_env.update({"OPSCONDUCTOR_ADMIN_USERNAME": ADMIN[0], "OPSCONDUCTOR_ADMIN_PASSWORD": ADMIN[1]}
                               if n == 0 else {"OPSCONDUCTOR_SKIP_MIGRATE": "1"})
                web = start("web", f"web-{n}", web_env)
                web_urls.append(f"http://127.0.0.1:{port}")
                wait_http_ready(web_urls[-1], web, timeout=90)
            worker_env = {**env, "WORKER_CONCURRENCY": str(WORKER_THREADS), "OPSCONDUCTOR_SKIP_MIGRATE": "1"}
            workers = [start("worker", f"worker-{n}", worker_env, f" -n stream{n}@%h") for n in range(2)]
            for proc in workers:
                wait_for(lambda proc=proc: WORKER_READY.search(proc.stdout() + proc.stderr()), 60, interval=0.05,
                         message=f"{proc.name} to be ready", describe=proc.logs)
            api = Api(web_urls[0])
            api.login(*ADMIN)
            try:
                yield Stack(root=root, dsn=_psycopg2_dsn(database_url), redis=redis_server, web_urls=web_urls,
                            api=api, workers=workers, env=env, start=start)
            finally:
                api.close()
        finally:
            processes.stop_all()


def _seqs(events: list[dict]) -> list[int]:
    return [e["data"]["seq"] for e in events]


def _is_done(event: dict) -> bool:
    return event["type"] == "execution_completed"


# --------------------------------------------------------------------------- (a) + (c)


def test_seq_is_gapless_in_commit_order_over_two_workers_and_the_same_through_either_web_process(stack):
    """Twelve branches, eight at once on two worker processes, all released together: each socket
    (one per web process, plus a replay from 0 on the second) gets seq 1..26 once each, in order,
    execution_completed last, and exactly the execution_events rows."""
    job, gate, targets = stack.gated_job(12)
    by_job = [stack.socket(web, f"job_serial={job['job_serial']}") for web in (0, 1)]
    try:
        execution = stack.api.post(f"/api/jobs/{job['job_serial']}/execute")
        serial = execution["execution_serial"]
        # 2 × WORKER_THREADS branches wait at once: both worker processes run this execution
        gate.wait_for_waiting(2 * WORKER_THREADS)
        replay = stack.socket(1, f"execution_serial={serial}&since=0")
        by_job.append(replay)
        gate.release_all()
        streams = [sock.collect_until(_is_done, timeout=60) for sock in by_job]
    finally:
        for sock in by_job:
            sock.close()

    rows = stack.recorded(serial)
    assert len(rows) == 2 + 2 * 12
    assert _seqs(rows) == list(range(1, len(rows) + 1))
    assert rows[-1]["type"] == "execution_completed"
    for events in streams:
        assert _seqs(events) == list(range(1, len(rows) + 1)), _seqs(events)
        assert events == rows  # every field as recorded, nothing added on the way
    branches = {b["branch_serial"]: b["target_serial_ref"] for b in execution["branches"]}
    assert_execution_events(streams[0], execution_serial=serial, job_serial=job["job_serial"], branches=branches)
    assert len(set(stack.branch_workers(serial))) == 2, stack.branch_workers(serial)


# --------------------------------------------------------------------------- (b) + (c)


def test_reconnecting_with_since_gets_every_event_once_even_on_the_other_web_process(stack):
    """Read part of the stream on web 0, disconnect, let two branches finish while away, resume on
    web 1 with since=<last seq received>: the log's events first, then live ones; the union is
    every row once. A socket opened meanwhile without since starts after the latest event."""
    job, gate, _ = stack.gated_job(6)
    execution = stack.api.post(f"/api/jobs/{job['job_serial']}/execute")
    serial = execution["execution_serial"]
    gate.wait_for_waiting(6)

    with stack.socket(0, f"execution_serial={serial}&since=0") as first:
        before = first.collect_until(_counting("branch_started", 6), timeout=30)
        gate.release(2)
        before += first.collect_until(_counting("branch_completed", 2), timeout=30)
    last = _seqs(before)[-1]
    assert _seqs(before) == list(range(1, last + 1))

    gate.release(2)  # these end while no socket watches
    wait_for(lambda: stack.last_recorded_seq(serial) >= last + 2, 30, interval=0.02,
             message="two branches to finish while disconnected")
    with stack.socket(1, f"execution_serial={serial}&since={last}") as resumed, \
            stack.socket(0, f"execution_serial={serial}") as fresh:
        replayed = resumed.collect_until(_counting("branch_completed", 2), timeout=30)
        assert _seqs(replayed) == [last + 1, last + 2]  # from the log, before anything live
        gate.release(2)
        after = replayed + resumed.collect_until(_is_done, timeout=30)
        from_now = fresh.collect_until(_is_done, timeout=30)

    rows = stack.recorded(serial)
    assert before + after == rows
    assert from_now == rows[last + 2:], "a socket on one execution without since starts after its latest event"


def _counting(kind: str, count: int):
    """A collect_until stop condition: the ``count``-th event of ``kind`` since the call."""
    seen = [0]

    def stop(event: dict) -> bool:
        seen[0] += event["type"] == kind
        return seen[0] >= count

    return stop


# --------------------------------------------------------------------------- (e)

SMALL_QUEUE = 4
SMALL_BUFFER = 4096  # bytes; both ends of a socket then hold ~6.6 KB, about 20 events

# Runs gunicorn as the Procfile does, after patching api.ws._relay in the master (workers inherit it by
# fork): a socket that asks with ?test_small_queue=1 gets a queue of OPSC_TEST_QUEUE events and a send
# buffer of OPSC_TEST_SNDBUF bytes, so the queue overflows within a few dozen events of a client that
# does not read. Every other socket is left as production makes it.
LAUNCHER = """
import os, socket, sys
from api import ws
relay = ws._relay
def _relay(sock, stream, *args):
    if ws.request.args.get("test_small_queue"):
        stream.subscription.maxsize = stream.max_pending = int(os.environ["OPSC_TEST_QUEUE"])
        sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(os.environ["OPSC_TEST_SNDBUF"]))
    return relay(sock, stream, *args)
ws._relay = _relay
from gunicorn.app.wsgiapp import run
sys.argv[0] = "gunicorn"
sys.exit(run())
"""


@pytest.fixture(scope="module")
def small_queue_web(stack) -> str:
    """A third web process: the Procfile's line, through LAUNCHER."""
    port = free_port()
    env = {**stack.env, "PORT": str(port), "OPSCONDUCTOR_SKIP_MIGRATE": "1", "OPSC_TEST_LAUNCHER": LAUNCHER,
           "OPSC_TEST_QUEUE": str(SMALL_QUEUE), "OPSC_TEST_SNDBUF": str(SMALL_BUFFER)}
    web = stack.start("web", "web-small-queue", env, launcher='python -c "$OPSC_TEST_LAUNCHER"')
    url = f"http://127.0.0.1:{port}"
    wait_http_ready(url, web, timeout=90)
    return url


def test_a_client_too_slow_for_its_queue_is_told_where_to_resume_and_closed_with_1013(stack, small_queue_web):
    """A client that does not read: once the socket buffers are full the server's writes stay pending,
    and past the socket's limit (4 bytes here) it is too slow. When the client reads again it gets every event
    up to seq N, then {"type": "resume", "data": {"since": {serial: N}}} and a 1013 close naming N;
    resuming with since=N gives the rest: exactly the rows, each once."""
    job, gate, _ = stack.gated_job(40)
    gate.release_all()  # no waiting: 82 events as fast as two workers make them
    query = f"job_serial={job['job_serial']}"
    with EventSocket(ws_url(small_queue_web, f"{query}&test_small_queue=1"), headers=stack.auth,
                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER),)) as slow, \
            EventSocket(ws_url(small_queue_web, query), headers=stack.auth) as witness:
        assert slow.next_json()["type"] == "subscribed"
        assert witness.next_json()["type"] == "subscribed"
        serial = stack.api.post(f"/api/jobs/{job['job_serial']}/execute")["execution_serial"]
        # the process's listener hands each event to every subscription in turn: once the witness has
        # the last one, the slow socket's queue has been offered them all
        witness.collect_until(_is_done, timeout=60)
        events = slow.collect_until(lambda e: e["type"] == "resume", timeout=30)
        code, reason = slow.close_frame()
    resume = events.pop()
    last = _seqs(events)[-1]
    assert _seqs(events) == list(range(1, last + 1))
    assert last < 2 + 2 * 40, "the queue never overflowed"
    assert resume == {"type": "resume", "data": {"since": {serial: last}}}
    assert (code, reason) == (TRY_AGAIN_LATER, f"too slow; resume with since={last}")

    with stack.socket(0, f"execution_serial={serial}&since={last}") as again:
        rest = again.collect_until(_is_done, timeout=30)
    rows = stack.recorded(serial)
    assert len(rows) == 2 + 2 * 40
    assert events + rest == rows


# --------------------------------------------------------------------------- (f)


@pytest.mark.parametrize(("query", "named"), [
    ("execution_serial=J20260001.0001&since=abc", "since"),
    ("execution_serial=J20260001.0001&since=-1", "since"),
    ("execution_serial=J20260001.0001&since=1.5", "since"),
    ("execution_serial=J20260001.0001&since=", "since"),
    ("execution_serial=J20260001.0001&since=%D9%A1", "since"),  # an Arabic-Indic 1: a digit, not ASCII
    ("execution_serial=J20260001.0001&since=99999999999", "since"),
    ("since=3", "execution_serial"),
    ("job_serial=J20260001&since=3", "execution_serial"),
    ("include=stdout", "include"),
    ("include=output,steps", "include"),
    ("execution_serial=J20260001.0001&include=OUTPUT", "include"),
])
def test_a_bad_since_or_include_is_closed_with_1008_saying_why(stack, query, named):
    with EventSocket(ws_url(stack.web_urls[0], query), headers=stack.auth) as sock:
        code, reason = sock.close_frame()
    assert code == POLICY_VIOLATION
    assert named in reason, reason


@pytest.mark.parametrize("query", [
    "execution_serial=J20260001.0001&since=0", "execution_serial=J20260001.0001&since=12",
    "include=output", "include=", "job_serial=J20260001&include=output",
])
def test_a_good_since_or_include_is_subscribed(stack, query):
    stack.socket(1, query).close()


# ------------------------------------------------ (d): last, as it restarts Redis under the stack


def test_a_redis_restart_mid_execution_loses_no_event_and_repeats_none(stack):
    """Redis (events and broker) is killed with six branches running and comes back empty; three
    branches finish while it is down (their publishes fail). A socket that stays connected gets them
    from the log once its web process resubscribes; one that left reconnects with since. Both end
    with exactly the execution's rows."""
    job, gate, _ = stack.gated_job(6)
    execution = stack.api.post(f"/api/jobs/{job['job_serial']}/execute")
    serial = execution["execution_serial"]
    gate.wait_for_waiting(6)
    staying = stack.socket(0, f"execution_serial={serial}&since=0")
    leaving = stack.socket(1, f"execution_serial={serial}&since=0")
    try:
        kept = staying.collect_until(_counting("branch_started", 6), timeout=30)
        left = leaving.collect_until(_counting("branch_started", 6), timeout=30)
        stack.redis.kill()
        try:
            leaving.close()
            gate.release(3)
            wait_for(lambda: stack.last_recorded_seq(serial) >= 7 + 3, 30, interval=0.02,
                     message="three branches to finish while Redis is down", describe=stack.logs)
        finally:
            stack.redis.start()
        with stack.socket(1, f"execution_serial={serial}&since={_seqs(left)[-1]}") as back:
            kept += staying.collect_until(_counting("branch_completed", 3), timeout=30)
            gate.release(3)
            kept += staying.collect_until(_is_done, timeout=30)
            left += back.collect_until(_is_done, timeout=30)
    finally:
        staying.close()
        leaving.close()
    rows = stack.recorded(serial)
    assert _seqs(rows) == list(range(1, 2 + 2 * 6 + 1))
    assert kept == rows, _seqs(kept)
    assert left == rows, _seqs(left)


@pytest.fixture(scope="module")
def beat(stack) -> ManagedProcess:
    """celery beat (the sweep re-sends branches whose dispatch failed), started for the case that needs it."""
    env = {**stack.env, "BEAT_SCHEDULE_FILE": str(stack.root / "beat-schedule"), "OPSCONDUCTOR_SKIP_MIGRATE": "1",
           "DISPATCH_GRACE_SECONDS": "1", "SWEEP_INTERVAL_SECONDS": "0.5"}
    proc = stack.start("beat", "beat", env)
    wait_for(lambda: "beat: Starting" in proc.stdout() + proc.stderr(), 60, interval=0.05,
             message="celery beat to start", describe=proc.logs)
    return proc


def test_a_socket_on_an_execution_not_made_yet_gets_its_first_event_even_when_that_publish_is_lost(stack, beat):
    """Watching a serial before its execution exists (the next one of a job): the execute happens while
    Redis is down, so execution_started is committed and recorded but never published (and the branches
    wait for the sweep). The socket must still get it, from the log, before the branches' events."""
    job, gate, _ = stack.gated_job(2)
    gate.release_all()
    serial = f"{job['job_serial']}.0001"
    with stack.socket(0, f"execution_serial={serial}") as sock:
        stack.redis.kill()
        try:
            response = stack.api.http.post(f"/api/jobs/{job['job_serial']}/execute", headers=stack.auth)
        finally:
            stack.redis.start()
        assert response.status_code == 201, response.text
        assert response.json()["execution_serial"] == serial
        events = sock.collect_until(_is_done, timeout=60)
    rows = stack.recorded(serial)
    assert _seqs(events) == _seqs(rows)
    assert events == rows
