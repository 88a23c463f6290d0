"""The maintenance loop against the real database and Redis: it sees a broker that lost its
messages and re-sends every queued branch at once; after a database outage (or its own start) it
gives live workers WORKER_LOST_SECONDS to beat again before it fails their branches. The whole
fault story, with processes killed, is in tests/faults/."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select, update

from common.broker import WITNESS_KEY, LossWitness
from common.models import Branch, BranchStep, Execution, ExecutionEvent, Job, JobRollup, utcnow
from common.services.executions import claim_branch, set_dispatched, start_execution
from common.task_names import RUN_BRANCH
from tests.integration.engine_helpers import branch_row, end_execution, run_together
from tests.integration.test_recovery import BRANCHES, race_job  # noqa: F401  (a fixture)
from worker.maintenance import Maintenance


class Sent:
    """The broker side of `send`, recorded: what the loop decided to send is the subject here."""

    def __init__(self) -> None:
        self.items: list[tuple[str, list[tuple[list, str]]]] = []

    def __call__(self, name: str, items: list[tuple[list, str]]) -> None:
        self.items.append((name, items))

    def branch_ids(self) -> list[int]:
        return sorted(args[0] for name, items in self.items if name == RUN_BRANCH for args, _ in items)


@pytest.fixture
def witness(redis_url) -> LossWitness:
    redis.Redis.from_url(redis_url).delete(WITNESS_KEY)
    return LossWitness(redis_url)


def test_the_witness_sees_a_broker_that_lost_its_data(redis_url, witness):
    client = redis.Redis.from_url(redis_url)
    assert witness.messages_lost() is True  # first look: nothing to compare with, so re-send (harmless)
    assert witness.messages_lost() is False
    assert witness.messages_lost() is False
    client.flushdb()  # what a restart without persistence does to the queues and the witness alike
    assert witness.messages_lost() is True
    assert witness.messages_lost() is False
    assert LossWitness("memory://").messages_lost() is False


def test_a_lost_broker_gets_every_queued_branch_again_at_once(engine_settings, engine_db, race_job,  # noqa: F811
                                                             witness, redis_url):
    with engine_db.session() as session:
        execution = start_execution(session, session.get(Job, race_job), role="admin")
        serial, branch_ids = execution.execution_serial, sorted(b.id for b in execution.branches)
    with engine_db.session() as session:
        set_dispatched(session, branch_ids, utcnow())  # handed to the broker a moment ago
    try:
        sent = Sent()
        loop = Maintenance(engine_settings.with_overrides(redispatch_seconds=300), engine_db, None, sent, witness)
        witness.messages_lost()  # the broker as it was when they were sent
        loop.sweep()
        assert sent.branch_ids() == []  # sent a moment ago, broker intact: nothing to do for 5 minutes

        redis.Redis.from_url(redis_url).delete(WITNESS_KEY)  # the broker restarted empty
        loop.sweep()
        assert sent.branch_ids() == branch_ids
        assert all(branch_row(engine_db, b).dispatched_at is not None for b in branch_ids)
        loop.sweep()
        assert sent.branch_ids() == branch_ids  # once per loss, not once per round
    finally:
        end_execution(engine_db, serial)


def test_worker_lost_waits_until_heartbeats_had_time_to_resume(engine_settings, engine_db, race_job, witness):  # noqa: F811
    with engine_db.session() as session:
        execution = start_execution(session, session.get(Job, race_job), role="admin")
        serial, branch_id = execution.execution_serial, execution.branches[0].id
    try:
        with engine_db.session() as session:
            assert claim_branch(session, branch_id, "silent-worker")[0] is not None
            session.execute(update(Branch).where(Branch.id == branch_id)
                            .values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        settings = engine_settings.with_overrides(worker_lost_seconds=1.0)
        loop = Maintenance(settings, engine_db, None, Sent(), witness)
        assert loop.sweep()["worker_lost"] == 0  # just started: it could not see the beats it missed
        assert branch_row(engine_db, branch_id).status == "running"

        deadline = time.monotonic() + 10
        while loop.sweep()["worker_lost"] == 0:
            assert time.monotonic() < deadline, "the silent branch was never failed"
            time.sleep(0.1)  # a sweep round's pace, not a synchronisation
        branch = branch_row(engine_db, branch_id)
        assert (branch.status, branch.error_type) == ("failed", "worker_lost")
    finally:
        end_execution(engine_db, serial)


def test_two_beats_keep_history_together(engine_settings, engine_db, race_job, witness):  # noqa: F811
    """RETENTION_DAYS=30 with two maintenance loops pruning at once: executions that ended 40 days ago
    lose their outputs, steps and events exactly once between them; one that ended yesterday keeps its
    own; both were closed without roll-ups (as by older code) and both are rolled up."""
    old, recent = [], []
    for days_ago in (40, 40, 40, 40, 40, 40, 1):
        with engine_db.session() as session:
            execution = start_execution(session, session.get(Job, race_job), role="admin")
            serial, execution_id = execution.execution_serial, execution.id
            branch_ids = [b.id for b in execution.branches]
        end_execution(engine_db, serial)  # closed by hand: no roll-up yet
        ended = utcnow() - timedelta(days=days_ago)
        with engine_db.session() as session:
            session.execute(update(Execution).where(Execution.id == execution_id)
                            .values(started_at=ended - timedelta(minutes=1), completed_at=ended))
            session.execute(update(Branch).where(Branch.execution_id == execution_id)
                            .values(result_output="out", result_error="err"))
            session.add_all(BranchStep(branch_id=b, position=1, action_name="noop", action_type="command",
                                       status="failed", stdout="out") for b in branch_ids)
            session.add_all(ExecutionEvent(execution_id=execution_id, seq=s, type="branch_completed", data={})
                            for s in range(1, 4))
        (old if days_ago == 40 else recent).append(execution_id)

    settings = engine_settings.with_overrides(retention_days=30)
    beats = [Maintenance(settings, engine_db, None, Sent(), witness) for _ in range(2)]
    counts = run_together([lambda go, beat=beat: (go(), beat.keep_history())[1] for beat in beats])
    assert not [c for c in counts if isinstance(c, BaseException)], counts
    assert sum(c.executions for c in counts) >= len(old)  # (other tests' executions never end 30 days ago)

    with engine_db.session() as session:
        def history(execution_id: int) -> tuple:
            branches = select(Branch.id).where(Branch.execution_id == execution_id)
            return (session.scalar(select(func.count()).where(Branch.execution_id == execution_id,
                                                             Branch.result_output.is_not(None))),
                    session.scalar(select(func.count()).where(BranchStep.branch_id.in_(branches))),
                    session.scalar(select(func.count()).where(ExecutionEvent.execution_id == execution_id)),
                    session.get(Execution, execution_id).pruned_at is not None,
                    session.get(Execution, execution_id).rolled_up_at is not None)

        assert [history(e) for e in old] == [(0, 0, 0, True, True)] * len(old)
        assert history(recent[0]) == (BRANCHES, BRANCHES, 3, False, True)
        rolled = session.scalar(select(func.sum(JobRollup.executions)).where(JobRollup.job_id == race_job))
        closed = session.scalar(select(func.count()).where(Execution.job_id == race_job,
                                                          Execution.status != "running"))
        assert rolled == closed  # every closed execution of the job counted, none twice
