"""Roll-ups and retention against the hand-made history (tests/history_data.py), on SQLite and PostgreSQL.

Roll-ups: every analytics and target-performance figure is the same whether closed executions are
counted from the roll-ups or from their raw rows, at any `now` (period edges inside an hour, on the
hour, a second either side). Retention: pruning removes exactly the outputs, steps and events of the
executions that ended before the cutoff, keeps every row and every figure, and the dry run's counts
are what the real run removes.
"""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update

from common.models import (
    Branch,
    BranchRollup,
    BranchStep,
    Execution,
    ExecutionEvent,
    ExecutionRollup,
    JobRollup,
)
from common.services import retention, rollups
from common.services.executions import close_if_done
from tests.history_data import JOBS, NOW, add_details, all_figures, build_history

# the period edges fall inside an hour (NOW is 10:30:00), on the hour, and a second either side
NOWS = [NOW, NOW - timedelta(minutes=30), NOW - timedelta(minutes=30, seconds=1), NOW + timedelta(seconds=1),
        NOW - timedelta(hours=10, minutes=30), NOW + timedelta(days=2, minutes=17)]


@pytest.fixture
def history(db):
    with db.session() as session:
        build_history(session)
        return add_details(session)


def forget_rollups(db) -> None:
    """Back to raw rows only: what analytics counted before roll-ups existed."""
    with db.session() as session:
        for table in (ExecutionRollup, JobRollup, BranchRollup):
            session.execute(delete(table))
        session.execute(update(Execution).values(rolled_up_at=None))


def test_rollups_give_the_figures_of_the_raw_rows_at_every_edge(db, history):
    rolled = {now: all_figures(db, now) for now in NOWS}
    forget_rollups(db)
    raw = {now: all_figures(db, now) for now in NOWS}
    for now in NOWS:
        assert rolled[now] == raw[now], now


def test_an_execution_is_counted_once_however_often_it_is_rolled_up(db, history):
    with db.session() as session:
        ids = list(session.scalars(select(Execution.id)))
        assert rollups.roll_up(session, ids) == 0  # build_history rolled up every closed one already
        closed = session.scalar(select(Execution.id).where(Execution.execution_serial == "J20250001.0004"))
        rollups.record_closed(session, closed)
        assert close_if_done(session, closed) == []  # closing again: not running, nothing happens
        running = session.scalar(select(Execution.id).where(Execution.status == "running"))
        rollups.record_closed(session, running)  # never counted while it runs
        assert session.scalar(select(Execution.rolled_up_at).where(Execution.id == running)) is None
        assert session.scalar(select(func.sum(ExecutionRollup.executions))) == 14
        assert session.scalar(select(func.sum(JobRollup.executions))) == 14
        assert session.scalar(select(func.sum(BranchRollup.branches))) == 18


def test_executions_closed_without_rollups_are_counted_from_raw_rows_then_rolled_up(db):
    """What a process running older code leaves behind: the figures are right before and after the
    maintenance loop's straggler pass."""
    with db.session() as session:
        build_history(session, rolled_up=False)
    before = all_figures(db, NOW)
    with db.session() as session:
        assert rollups.roll_up_stragglers(session, limit=5) == 5
        assert rollups.roll_up_stragglers(session) == 9
        assert rollups.roll_up_stragglers(session) == 0
    assert all_figures(db, NOW) == before


# ---------------------------------------------------------------- retention


def snapshot(db) -> dict[str, tuple]:
    """Every execution's rows and history, by serial: (branches, outputs, steps, events, pruned)."""
    with db.session() as session:
        state = {}
        for execution_id, serial, pruned_at in session.execute(
                select(Execution.id, Execution.execution_serial, Execution.pruned_at)):
            branch_ids = select(Branch.id).where(Branch.execution_id == execution_id)
            outputs = session.execute(select(Branch.result_output, Branch.result_error)
                                      .where(Branch.execution_id == execution_id).order_by(Branch.id)).all()
            steps = session.scalar(select(func.count()).where(BranchStep.branch_id.in_(branch_ids)))
            events = session.scalar(select(func.count()).where(ExecutionEvent.execution_id == execution_id))
            state[serial] = (len(outputs), tuple(outputs), steps, events, pruned_at is not None)
        return state


def ended_before(cutoff) -> set[str]:
    """Executions of the dataset whose completion (start + seconds) is before the cutoff."""
    return {f"{job_serial}.{e.number:04d}" for job_serial, *_, executions in JOBS for e in executions
            if e.seconds is not None and e.started_at + timedelta(seconds=e.seconds) < cutoff}


def expected_counts(before: dict[str, tuple], serials: set[str]) -> retention.PruneCounts:
    return retention.PruneCounts(
        executions=len(serials),
        outputs=sum(1 for s in serials for output, error in before[s][1] if output is not None or error is not None),
        steps=sum(before[s][2] for s in serials), events=sum(before[s][3] for s in serials))


@pytest.mark.parametrize("batch", [retention.BATCH, 3])  # 3: every execution is larger than a batch
def test_prune_removes_exactly_the_history_of_executions_that_ended_before_the_cutoff(db, history, batch):
    cutoff = NOW - timedelta(days=7)  # J20240043.0005 ends 59 s after it: kept; .0004 before it: pruned
    old = ended_before(cutoff)
    assert "J20240043.0004" in old and "J20240043.0005" not in old and len(old) == 6
    before = snapshot(db)
    figures = all_figures(db, NOW)

    planned = retention.prunable(db, cutoff)
    assert snapshot(db) == before  # the dry run changes nothing
    assert planned == expected_counts(before, old)

    assert retention.prune(db, cutoff, batch=batch, rest=0) == planned
    after = snapshot(db)
    for serial, (branches, *_history) in before.items():
        if serial in old:
            assert after[serial] == (branches, ((None, None),) * branches, 0, 0, True), serial
        else:
            assert after[serial] == before[serial], serial
    assert all_figures(db, NOW) == figures
    assert retention.prune(db, cutoff, batch=batch, rest=0) == retention.PruneCounts()  # nothing left
    assert retention.prunable(db, cutoff) == retention.PruneCounts()


def test_pruning_everything_leaves_analytics_and_target_performance_unchanged(db, history):
    figures = {now: all_figures(db, now) for now in NOWS}
    counts = retention.prune(db, NOW + timedelta(days=3), rest=0)
    # every closed execution (14 of 15); 17 of their 18 branches had output (one never started)
    assert (counts.executions, counts.outputs, counts.steps) == (14, 17, 18)
    assert {now: all_figures(db, now) for now in NOWS} == figures
    with db.session() as session:  # the running execution keeps everything; rows are never deleted
        assert session.scalar(select(func.count()).select_from(Execution)) == 15
        assert session.scalar(select(func.count()).select_from(Branch)) == 20
        assert session.scalar(select(func.count()).select_from(BranchStep)) == 2


def test_a_stopped_prune_leaves_a_consistent_state_and_resumes(db, history):
    stop = threading.Event()
    stop.set()
    assert retention.prune(db, NOW, stop=stop) == retention.PruneCounts()
    partial = retention.prune(db, NOW, batch=3, rest=0, stop=_stop_after(2))
    rest = retention.prune(db, NOW, batch=3, rest=0)
    assert partial.executions + rest.executions == 14
    assert retention.prunable(db, NOW) == retention.PruneCounts()


def _stop_after(waits: int) -> threading.Event:
    """An event that reports itself set from its `waits`-th wait on: a prune interrupted mid-way."""

    class Countdown(threading.Event):
        calls = 0

        def is_set(self) -> bool:
            return self.calls >= waits

        def wait(self, timeout: float | None = None) -> bool:
            self.calls += 1
            return self.is_set()

    return Countdown()


@pytest.mark.parametrize("text, expected", [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)),
                                            ("2w", timedelta(weeks=2)), ("90", timedelta(days=90)),
                                            (" 1d ", timedelta(days=1))])
def test_ages(text, expected):
    assert retention.parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "d", "30m", "-1d", "1.5d", "30 days"])
def test_bad_ages(text):
    with pytest.raises(ValueError, match="expected an age like 30d"):
        retention.parse_age(text)


@pytest.mark.parametrize("text", ["0", "0h", "0d"])
def test_an_age_under_an_hour_is_refused(text):
    with pytest.raises(ValueError, match="at least 1h"):
        retention.parse_age(text)
