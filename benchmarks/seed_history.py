"""Fill a PostgreSQL database with a realistic execution history for the read-API benchmark.

Default scale: 1,000 targets, 20,000 jobs, 200,000 executions and 1,000,000 branches over the
last 90 days (every job runs 10 times on 1, 3, 5, 7 or 9 targets: 40,000 jobs-worth of executions
at each width, 25 branches per 5 executions). Rows go in with COPY (psycopg2 copy_expert) in
chunks, ids chosen here so no round trip is needed for foreign keys; afterwards the id sequences,
serial_counters and jobs.execution_count are set consistently, and the tables are ANALYZEd.

    DATABASE_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/opsc_bench \\
        .venv/bin/python -m benchmarks.seed_history [--reset] [--scale 1.0]

Migrations run first (the same `common.migrate.upgrade` the app uses). The database must be empty
unless --reset is given (which truncates every table). Deterministic for a given --seed and now.
Closed executions are then rolled up (common/services/rollups.py) as closing them would have.

--details adds what retention prunes (benchmarks/prune.py): an --output-bytes output on every finished
branch, one step per branch with the same output, and each execution's events (execution_started, a
branch_started and a branch_completed per branch, execution_completed) with their counter.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from common.db import Database, make_engine
from common.migrate import upgrade
from common.models import Base
from common.services import rollups

log = logging.getLogger("seed_history")

WIDTHS = (1, 3, 5, 7, 9)  # targets per job; mean 5
RUNS_PER_JOB = 10
VERBS = ("Deploy", "Backup", "Rotate logs on", "Patch", "Restart", "Health check", "Sync", "Clean up", "Audit",
         "Update")
NOUNS = ("web tier", "database", "cache", "api", "batch nodes", "frontend", "queue", "storage", "monitoring",
         "billing")
ROLES = ("web", "db", "cache", "app", "batch", "queue", "edge", "mon")
ENVS = ("prod", "stage", "dev")


def ts(value: datetime) -> str:
    """COPY text for a naive-UTC timestamp column."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def copy_rows(cursor, table: str, columns: tuple[str, ...], rows: Iterable[tuple], chunk: int = 100_000) -> int:
    """COPY rows into `table` in chunks of `chunk` lines; None becomes NULL. Returns the row count."""
    count = 0
    buffer = io.StringIO()
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"

    def flush() -> None:
        buffer.seek(0)
        cursor.copy_expert(sql, buffer)
        buffer.seek(0)
        buffer.truncate()

    for row in rows:
        buffer.write("\t".join("\\N" if v is None else str(v) for v in row))
        buffer.write("\n")
        count += 1
        if count % chunk == 0:
            flush()
    if buffer.tell():
        flush()
    return count


class Serials:
    """Per-year sequences, as the app allocates them: J2026 0001, T2025 0042, ..."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = defaultdict(int)

    def next(self, prefix: str, created: datetime) -> str:
        scope = f"{prefix}{created.year}"
        self.counters[scope] += 1
        return f"{scope}{self.counters[scope]:04d}"


def seed(database_url: str, *, scale: float, seed_value: int, reset: bool, now: datetime, details: bool = False,
         output_bytes: int = 200) -> dict[str, int]:
    rng = random.Random(seed_value)
    n_targets = max(1, int(1000 * scale))
    n_jobs = max(len(WIDTHS), int(20_000 * scale))
    start = now - timedelta(days=90)
    serials = Serials()

    upgrade(database_url)
    engine = make_engine(database_url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '256MB'")
        cur.execute("SELECT count(*) FROM executions")
        if cur.fetchone()[0] and not reset:
            raise SystemExit("the database already has executions; use --reset to truncate it first")
        if reset:
            tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
            cur.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")

        # targets: created before the history starts, 2% archived since
        targets = []
        for i in range(1, n_targets + 1):
            created = start - timedelta(days=30) + timedelta(minutes=i)
            archived = ts(now - timedelta(days=rng.randint(1, 30))) if rng.random() < 0.02 else None
            name = f"{ENVS[i % 3]}-{ROLES[i % len(ROLES)]}-{i:04d}"
            targets.append((i, str(uuid.UUID(int=rng.getrandbits(128), version=4)), serials.next("T", created), name,
                            f"10.{i // 250}.{(i // 25) % 10}.{i % 250 + 1}", 22, "ssh", '["bench"]', "default",
                            "f" if archived else "t", ts(created), ts(created), archived))
        log.info("writing %d targets and %d jobs", n_targets, n_jobs)
        copy_rows(cur, "targets", ("id", "target_uuid", "target_serial", "name", "ip_address", "port", "connection",
                                   "tags", "queue", "enabled", "created_at", "updated_at", "archived_at"), targets)
        target_serial = {t[0]: t[2] for t in targets}

        # jobs: created over the history, serials in creation order; each with its fixed target set
        created_at = sorted(start - timedelta(days=5) + timedelta(seconds=rng.uniform(0, 88 * 86400))
                            for _ in range(n_jobs))
        jobs = []  # (id, serial, created, width, target ids)
        for j, created in enumerate(created_at, start=1):
            width = WIDTHS[j % len(WIDTHS)]
            jobs.append((j, serials.next("J", created), created, width, rng.sample(range(1, n_targets + 1), width)))

        def job_rows() -> Iterator[tuple]:
            for j, serial, created, _width, _targets in jobs:
                archived = ts(now - timedelta(hours=rng.randint(1, 500))) if rng.random() < 0.02 else None
                name = f"{VERBS[j % len(VERBS)]} {NOUNS[(j // len(VERBS)) % len(NOUNS)]} {j:05d}"
                yield (j, str(uuid.UUID(int=rng.getrandbits(128), version=4)), serial, name, None, "command",
                       "completed", RUNS_PER_JOB, ts(created), ts(created), archived)

        copy_rows(cur, "jobs", ("id", "job_uuid", "job_serial", "name", "description", "job_type", "status",
                                "execution_count", "created_at", "updated_at", "archived_at"), job_rows())
        copy_rows(cur, "job_actions", ("id", "job_id", "position", "action_type", "action_name", "action_parameters",
                                       "continue_on_error"),
                  ((j[0], j[0], 1, "command", "run", '{"command": "true"}', "f") for j in jobs))
        copy_rows(cur, "job_targets", ("job_id", "target_id", "position"),
                  ((j[0], t, p) for j in jobs for p, t in enumerate(j[4], start=1)))

        # executions and their branches, job by job; numbers follow start times
        execution_rows: list[tuple] = []
        branch_rows: list[tuple] = []
        step_rows: list[tuple] = []
        event_rows: list[tuple] = []
        counter_rows: list[tuple] = []
        counts = {"executions": 0, "branches": 0, "steps": 0, "events": 0}
        filler = ("ok " * (output_bytes // 3 + 1))[:output_bytes]
        exec_id = branch_id = 0
        running_since = now - timedelta(minutes=10)
        exec_cols = ("id", "execution_uuid", "execution_serial", "job_id", "execution_number", "status", "trigger",
                     "started_at", "completed_at")
        branch_cols = ("id", "branch_uuid", "branch_serial", "execution_id", "branch_number", "target_id",
                       "target_serial_ref", "queue", "status", "error_type", "exit_code", "result_output",
                       "result_error", "queued_at", "dispatched_at", "started_at", "completed_at", "duration")
        job_status: dict[int, str] = {}

        step_cols = ("id", "branch_id", "position", "action_name", "action_type", "status", "exit_code", "stdout",
                     "stderr", "started_at", "completed_at", "duration")

        def flush_batch() -> None:
            counts["executions"] += copy_rows(cur, "executions", exec_cols, execution_rows)
            counts["branches"] += copy_rows(cur, "branches", branch_cols, branch_rows)
            counts["steps"] += copy_rows(cur, "branch_steps", step_cols, step_rows)
            counts["events"] += copy_rows(cur, "execution_events", ("execution_id", "seq", "type", "data",
                                                                   "created_at"), event_rows)
            copy_rows(cur, "execution_event_counters", ("execution_id", "last_seq"), counter_rows)
            for rows in (execution_rows, branch_rows, step_rows, event_rows, counter_rows):
                rows.clear()

        log.info("writing %d executions and their branches", n_jobs * RUNS_PER_JOB)
        for j, job_serial_, created, _width, target_ids in jobs:
            first = max(created, start)
            span = (now - timedelta(seconds=30) - first).total_seconds()
            starts = sorted(first + timedelta(seconds=rng.uniform(0, span)) for _ in range(RUNS_PER_JOB))
            for number, started in enumerate(starts, start=1):
                exec_id += 1
                serial = f"{job_serial_}.{number:04d}"
                roll = rng.random()
                status = ("running" if started >= running_since else
                          "completed" if roll < 0.90 else "failed" if roll < 0.98 else "cancelled")
                longest = 0.0
                for b, target in enumerate(target_ids, start=1):
                    branch_id += 1
                    b_started = started + timedelta(seconds=rng.uniform(0.05, 2.0))
                    duration = round(rng.lognormvariate(3.0, 1.0), 3)
                    b_status, error, code, output, err = "completed", None, 0, "ok", None
                    if status == "failed" and (b == 1 or rng.random() < 0.3):
                        if rng.random() < 0.2:
                            b_status, error, code, err = "timed_out", "timeout", None, "timed out"
                        else:
                            b_status, error, code, err = "failed", "command_failed", 1, "exit status 1"
                    elif status == "cancelled":
                        b_status, error, code, output = "cancelled", "cancelled", None, None
                    elif status == "running":
                        b_status = "running" if b % 2 else "queued"
                        code = output = None
                    if b_status == "queued":
                        b_started_s = completed_s = dur = None
                    elif b_status == "running":
                        b_started_s, completed_s, dur = ts(b_started), None, None
                    else:
                        longest = max(longest, duration + 2.0)
                        b_started_s, completed_s, dur = (ts(b_started), ts(b_started + timedelta(seconds=duration)),
                                                         duration)
                    if details and output is not None:
                        output = filler
                    branch_rows.append((branch_id, str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                                        f"{serial}.{b:04d}", exec_id, b, target, target_serial[target], "default",
                                        b_status, error, code, output, err, ts(started), ts(started), b_started_s,
                                        completed_s, dur))
                    if details:
                        step_rows.append((branch_id, branch_id, 1, "run", "command", b_status, code, output, err,
                                          b_started_s, completed_s, dur))
                completed = None if status == "running" else ts(started + timedelta(seconds=longest))
                execution_rows.append((exec_id, str(uuid.UUID(int=rng.getrandbits(128), version=4)), serial, j,
                                       number, status, "manual", ts(started), completed))
                if details:
                    kinds = ["execution_started", *(["branch_started", "branch_completed"] * len(target_ids))]
                    if completed is not None:
                        kinds.append("execution_completed")
                    data = f'{{"execution_serial": "{serial}"}}'
                    event_rows.extend((exec_id, seq, kind, data, ts(started)) for seq, kind in enumerate(kinds, 1))
                    counter_rows.append((exec_id, len(kinds)))
                job_status[j] = status
            if len(branch_rows) >= 200_000:
                flush_batch()
        flush_batch()

        log.info("wrote %d executions, %d branches; setting counters, VACUUM ANALYZE", counts["executions"],
                 counts["branches"])
        # consistency: sequences, serial counters, job status from its latest execution
        for table in ("targets", "jobs", "job_actions", "executions", "branches", "branch_steps"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        copy_rows(cur, "serial_counters", ("scope", "value"), sorted(serials.counters.items()))
        cur.execute("CREATE TEMP TABLE seed_job_status (job_id int, status text)")
        copy_rows(cur, "seed_job_status", ("job_id", "status"), job_status.items())
        cur.execute("UPDATE jobs SET status = s.status FROM seed_job_status s WHERE jobs.id = s.job_id "
                    "AND jobs.status <> s.status")
        cur.execute("UPDATE jobs SET execution_count = c.n FROM (SELECT job_id, max(execution_number) n "
                    "FROM executions GROUP BY job_id) c WHERE jobs.id = c.job_id")
        raw.commit()
        log.info("rolling up closed executions")
        counts["rolled_up"] = roll_up_all(database_url)
        raw.set_isolation_level(0)  # VACUUM cannot run in a transaction
        # rows enter this partial index as they are written and leave it as they are rolled up; a real
        # history passes through it a few at a time, the seed all at once: rebuild it at its real size
        cur.execute("REINDEX INDEX ix_executions_unrolled")
        cur.execute("VACUUM ANALYZE")
        counts.update(targets=len(targets), jobs=len(jobs))
        return counts
    finally:
        raw.close()
        engine.dispose()


def roll_up_all(database_url: str, batch: int = 5000) -> int:
    """Every closed execution into the hourly roll-ups, through the service closing uses."""
    database = Database(database_url)
    total = 0
    try:
        while True:
            with database.session() as session:
                done = rollups.roll_up_stragglers(session, limit=batch)
            total += done
            if done < batch:
                return total
    finally:
        database.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="SQLAlchemy URL of a PostgreSQL database (default: $DATABASE_URL)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the default size (1.0 = 1M branches)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reset", action="store_true", help="truncate every table first")
    parser.add_argument("--details", action="store_true",
                        help="also outputs, one step per branch and the events of every execution (for prune.py)")
    parser.add_argument("--output-bytes", type=int, default=200, help="with --details: bytes of output per branch")
    args = parser.parse_args(argv)
    if not args.database_url or not args.database_url.startswith("postgresql"):
        parser.error("a PostgreSQL --database-url (or DATABASE_URL) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    began = time.perf_counter()
    counts = seed(args.database_url, scale=args.scale, seed_value=args.seed, reset=args.reset,
                  now=datetime.now(UTC), details=args.details, output_bytes=args.output_bytes)
    elapsed = time.perf_counter() - began
    extra = f", {counts['steps']:,} steps, {counts['events']:,} events" if args.details else ""
    print(f"seeded {counts['targets']:,} targets, {counts['jobs']:,} jobs, {counts['executions']:,} executions, "
          f"{counts['branches']:,} branches{extra} in {elapsed:.1f} s ({counts['rolled_up']:,} rolled up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
