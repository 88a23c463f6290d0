"""Group commit of claims and finishes against the real PostgreSQL: many threads at once share
transactions, every branch is claimed once and finished once, the execution closes once, and a
row that cannot be written fails alone."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from common.db import Database
from common.models import Job, Target
from common.services.executions import claim_branch, start_execution
from common.services.jobs import create_job
from common.services.targets import create_target
from common.statuses import BranchStatus
from tests.integration.engine_helpers import admin_id, branch_rows, end_execution, execution_row, run_together, unique
from worker.group_commit import Claimer, Finisher, Pinner

BRANCHES = 24


@pytest.fixture
def queued(pg_url):
    """(database, execution serial, ids of BRANCHES queued branches), nothing dispatched."""
    db = Database(pg_url, pool_size=BRANCHES + 4, max_overflow=0)
    with db.session() as session:
        targets = [create_target(session, {"name": unique("fin"), "connection": "local"}, user_id=None,
                                 role="admin") for _ in range(BRANCHES)]
        job = create_job(session, {"name": unique("fin"), "target_ids": [t.id for t in targets],
                                   "actions": [{"action_type": "command", "action_name": "noop",
                                                "action_parameters": {"command": "true"}}]},
                         user_id=admin_id(session), role="admin")
        execution = start_execution(session, session.get(Job, job.id), role="admin")
        serial, ids = execution.execution_serial, [b.id for b in execution.branches]
    yield db, serial, ids
    end_execution(db, serial)
    db.dispose()


@pytest.fixture
def claimed(queued):
    db, serial, ids = queued
    for branch_id in ids:
        with db.session() as session:
            assert claim_branch(session, branch_id, "finisher-test")[0] is not None
    return queued


def _all_at_once(call, args: list[tuple]) -> list:
    """call(*a) for every a, from as many threads released together; results (or exceptions) in order."""
    def task(a: tuple):
        def run(go):
            go()
            return call(*a)
        return run
    return run_together([task(a) for a in args])


def test_concurrent_finishes_share_transactions_and_close_the_execution_once(claimed):
    db, serial, ids = claimed
    published: list = []
    finisher = Finisher(db, publish=published.extend)
    # each branch twice, as when the lost-worker sweep races the worker: the second finds nothing
    results = _all_at_once(finisher.finish, [(i, BranchStatus.COMPLETED) for i in ids] * 2)

    assert not [r for r in results if isinstance(r, Exception)]
    events = [event for r in results for event in r]
    finished = sorted(data["branch_serial"] for kind, data in events if kind == "branch_completed")
    assert finished == sorted(b.branch_serial for b in branch_rows(db, serial))  # each exactly once
    assert [kind for kind, _ in events].count("execution_completed") == 1
    assert sorted(map(repr, published)) == sorted(map(repr, events))  # published what was committed
    assert published[-1][0] == "execution_completed"  # after every branch_completed
    assert execution_row(db, serial).status == "completed"
    assert finisher.requests == 2 * BRANCHES
    assert finisher.batches < 2 * BRANCHES  # finishes were grouped


def test_a_row_that_cannot_be_written_fails_alone(claimed):
    db, serial, ids = claimed
    published: list = []
    finisher = Finisher(db, publish=published.extend)
    poison = ids[5]
    calls = [(i, "x" * 500 if i == poison else BranchStatus.COMPLETED) for i in ids]  # longer than the column

    results = _all_at_once(finisher.finish, calls)

    failures = {ids[i] for i, r in enumerate(results) if isinstance(r, Exception)}
    assert failures == {poison}
    statuses = {b.id: b.status for b in branch_rows(db, serial)}
    assert statuses.pop(poison) == "running"  # left for the lost-worker sweep, as any failed finish
    assert set(statuses.values()) == {"completed"}


def test_concurrent_claims_share_transactions_and_claim_each_branch_once(queued):
    db, serial, ids = queued
    published: list = []
    claimer = Claimer(db, "claimer-test", publish=published.extend)
    # every task delivered twice at the same moment: only one of each pair may run its branch
    results = _all_at_once(claimer.claim, [(i,) for i in ids] * 2)

    assert not [r for r in results if isinstance(r, Exception)]
    works = [work for work, _ in results if work is not None]
    assert sorted(w.branch_id for w in works) == sorted(ids)
    started = [event for _, events in results for event in events]
    assert len(started) == BRANCHES and {kind for kind, _ in started} == {"branch_started"}
    assert sorted(map(repr, published)) == sorted(map(repr, started))
    assert {b.status for b in branch_rows(db, serial)} == {"running"}
    assert claimer.requests == 2 * BRANCHES and claimer.batches < 2 * BRANCHES


def test_concurrent_pins_keep_the_first_key_of_each_target(queued):
    db, serial, ids = queued
    with db.session() as session:
        target_ids = [b.target_id for b in branch_rows(db, serial)]
    pinner = Pinner(db)
    # each target pinned twice at once with different keys, as by two executions' first branches
    calls = [(t, f"ssh-ed25519 KEY{t}-{n}", f"SHA256:fp{t}-{n}") for n in (1, 2) for t in target_ids]

    results = _all_at_once(pinner.pin, calls)

    assert results == [None] * len(calls)
    with db.session() as session:
        pinned = dict(session.execute(select(Target.id, Target.host_key).where(Target.id.in_(target_ids))).all())
    assert all(pinned[t] in (f"ssh-ed25519 KEY{t}-1", f"ssh-ed25519 KEY{t}-2") for t in target_ids)
    assert pinner.requests == len(calls) and pinner.batches < len(calls)

    pinner.pin(target_ids[0], "ssh-ed25519 LATER", "SHA256:later")  # trust on first use: never replaced
    with db.session() as session:
        assert session.get(Target, target_ids[0]).host_key == pinned[target_ids[0]]
