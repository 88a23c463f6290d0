"""Read paths by serial: one execution or branch, a job's executions, search and bulk lookup.

Every function issues a fixed number of SQL statements whatever the size of its answer (joins,
one `selectinload` per collection, unions): the read API must stay flat at a million branches.
Archived jobs and targets are never filtered out: their history stays addressable by serial.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, func, literal, null, select, union_all
from sqlalchemy.orm import Session, joinedload, selectinload

from common import serials
from common.errors import NotFound
from common.models import Branch, Execution, Job, Target
from common.services.executions import RETRY_LINKS
from common.services.pagination import escape_like
from common.services.refs import ref_condition

# a string that can begin a job/execution/branch serial, or a target serial
_SERIAL_PREFIX = re.compile(r"^[JT]\d*(\.\d*)*$")


# ---------------------------------------------------------------- single lookups


def execution_by_serial(session: Session, execution_serial: str) -> Execution:
    """The execution with its job (id, serial, name only) and its branches in branch order: 2 statements."""
    serials.require("execution_serial", execution_serial)
    stmt = (select(Execution).where(Execution.execution_serial == execution_serial)
            .options(joinedload(Execution.job).raiseload("*"), selectinload(Execution.branches), *RETRY_LINKS))
    execution = session.scalars(stmt).unique().first()
    if execution is None:
        raise NotFound("Execution not found", {"execution_serial": execution_serial})
    return execution


def branch_by_serial(session: Session, branch_serial: str) -> Branch:
    """The branch with its target and per-action steps: 2 statements."""
    serials.require("branch_serial", branch_serial)
    stmt = (select(Branch).where(Branch.branch_serial == branch_serial)
            .options(joinedload(Branch.target), selectinload(Branch.steps)))
    branch = session.scalar(stmt)
    if branch is None:
        raise NotFound("Branch not found", {"branch_serial": branch_serial})
    return branch


def job_id_by_ref(session: Session, ref: str) -> int:
    """A job's id from `{job_id}` (numeric id or serial) without loading its actions and targets."""
    job_id = session.scalar(select(Job.id).where(ref_condition(Job.id, Job.job_serial, "job_serial", ref)))
    if job_id is None:
        raise NotFound("Job not found", {"job_serial": ref})
    return job_id


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[Execution]
    total: int


def job_executions(session: Session, job_ref: str, *, limit: int, offset: int) -> ExecutionPage:
    """A job's executions newest first (by execution number, the unique index's order), each with its
    branches: 4 statements (job, count, page, branches of the whole page at once)."""
    job_id = job_id_by_ref(session, job_ref)
    total = session.scalar(select(func.count()).select_from(Execution).where(Execution.job_id == job_id)) or 0
    stmt = (select(Execution).where(Execution.job_id == job_id)
            .order_by(Execution.execution_number.desc()).limit(limit).offset(offset)
            .options(selectinload(Execution.branches), *RETRY_LINKS))
    return ExecutionPage(list(session.scalars(stmt).unique()), total)


# ---------------------------------------------------------------- bulk


@dataclass(frozen=True)
class BulkItem:
    serial: str
    found: bool
    data: dict | None = None


@dataclass(frozen=True)
class BulkResult:
    results: list[BulkItem]
    not_found: list[str]


def bulk_lookup(session: Session, values: list[str]) -> BulkResult:
    """Executions and branches by serial, in request order, in one statement (a UNION ALL of two
    unique-index lookups). Malformed or unknown serials are `found: false` rather than errors, so one
    bad entry never hides the rest of the answer."""
    execution_serials: set[str] = set()
    branch_serials: set[str] = set()
    for value in values:
        parsed = serials.parse(value) if isinstance(value, str) else None
        if parsed is not None and parsed.kind == "execution":
            execution_serials.add(value)
        elif parsed is not None and parsed.kind == "branch":
            branch_serials.add(value)
    stmt = union_all(
        select(Execution.execution_serial.label("serial"), Execution.status.label("status"),
               null().cast(String).label("target_serial_ref"))
        .where(Execution.execution_serial.in_(sorted(execution_serials))),
        select(Branch.branch_serial, Branch.status, Branch.target_serial_ref)
        .where(Branch.branch_serial.in_(sorted(branch_serials))),
    )
    found: dict[str, dict] = {}
    for serial, status, target_ref in session.execute(stmt):
        if target_ref is None:
            found[serial] = {"execution_serial": serial, "status": status, "job_serial": serial.split(".")[0]}
        else:
            found[serial] = {"branch_serial": serial, "status": status, "target_serial_ref": target_ref}
    results = [BulkItem(v, v in found, found.get(v)) for v in values]
    not_found = list(dict.fromkeys(v for v in values if v not in found))
    return BulkResult(results, not_found)


# ---------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchHit:
    type: str
    serial: str
    status: str
    job_serial: str
    job_name: str
    target_serial: str | None
    target_name: str | None
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class SearchResult:
    total: int
    results: list[SearchHit]


@dataclass(frozen=True)
class _Needle:
    contains: str  # LIKE pattern for names: '%q%', lower-cased, wildcards escaped
    serial_prefix: str | None  # LIKE pattern 'Q%' when q can begin a serial, else None

    @classmethod
    def of(cls, q: str) -> _Needle:
        upper = q.upper()
        prefix = escape_like(upper) + "%" if _SERIAL_PREFIX.match(upper) else None
        return cls(f"%{escape_like(q.lower())}%", prefix)

    def job_serial_prefix(self) -> str | None:
        return self.serial_prefix if self.serial_prefix and self.serial_prefix.startswith("J") else None

    def target_serial_prefix(self) -> str | None:
        return self.serial_prefix if self.serial_prefix and self.serial_prefix.startswith("T") else None


def _like(column, pattern: str) -> ColumnElement[bool]:
    return column.like(pattern, escape="\\")


def _matching_jobs(needle: _Needle) -> Select:
    return select(Job.id).where(_like(func.lower(Job.name), needle.contains))


def _matching_targets(needle: _Needle) -> Select:
    condition = _like(func.lower(Target.name), needle.contains)
    prefix = needle.target_serial_prefix()
    if prefix:
        condition = condition | _like(Target.target_serial, prefix)
    return select(Target.id).where(condition)


# Up to this many matches, a leg's ids go into the search statement as a literal list (see _Matches).
_LISTED = {"job": 1000, "target": 1000, "execution": 1000, "branch": 10000}


@dataclass(frozen=True)
class _Matches:
    """What q matches in each way, as id lists when there are at most _LISTED[kind] of them, else None
    (the search then uses the condition itself: a name subquery, a serial LIKE).

    Why lists: the planner cannot estimate "lower(name) LIKE '%...%'" (it guesses 1% of the jobs) nor a
    long serial prefix (1% of the branches, when it is the 80 branches of one job); believing there are
    thousands of matches, it walks the whole time index backwards for the newest 50 (up to seconds, and
    serial matches are bunched in time). Given the ids it fetches and sorts them. Only with plentiful
    matches, which a walk does meet early, does it get the plain condition. One bounded statement."""

    jobs: list[int] | None
    targets: list[int] | None
    executions: list[int] | None
    branches: list[int] | None

    @classmethod
    def resolve(cls, session: Session, needle: _Needle) -> _Matches:
        probes = {"job": _matching_jobs(needle), "target": _matching_targets(needle)}
        prefix = needle.job_serial_prefix()
        if prefix is not None:
            probes["execution"] = select(Execution.id).where(_like(Execution.execution_serial, prefix))
            probes["branch"] = select(Branch.id).where(_like(Branch.branch_serial, prefix))
        legs = {kind: probe.limit(_LISTED[kind] + 1).subquery() for kind, probe in probes.items()}
        stmt = union_all(*(select(literal(kind).label("kind"), leg.c.id) for kind, leg in legs.items()))
        found: dict[str, list[int]] = {kind: [] for kind in probes}
        for kind, id_ in session.execute(stmt):
            found[kind].append(id_)
        listed = {kind: ids if len(ids) <= _LISTED[kind] else None for kind, ids in found.items()}
        return cls(listed["job"], listed["target"], listed.get("execution"), listed.get("branch"))


def _execution_legs(needle: _Needle, matches: _Matches) -> list[ColumnElement[bool]]:
    """Disjoint conditions whose union is "the execution matches": each leg can use its own index
    (serial pattern index, job index) where one OR could only be answered by a scan, and being disjoint
    they are counted by adding counts, with no de-duplication of a possibly huge id set."""
    jobs = matches.jobs if matches.jobs is not None else _matching_jobs(needle)
    by_job = Execution.job_id.in_(jobs)
    prefix = needle.job_serial_prefix()
    if prefix is None:
        return [by_job]
    serial_like = _like(Execution.execution_serial, prefix)
    by_serial = Execution.id.in_(matches.executions) if matches.executions is not None else serial_like
    return [by_serial, by_job & ~serial_like]


def _branch_legs(needle: _Needle, matches: _Matches) -> list[ColumnElement[bool]]:
    jobs = matches.jobs if matches.jobs is not None else _matching_jobs(needle)
    targets = matches.targets if matches.targets is not None else _matching_targets(needle)
    by_job = Branch.execution_id.in_(select(Execution.id).where(Execution.job_id.in_(jobs)))
    by_target = Branch.target_id.in_(targets) & ~by_job
    prefix = needle.job_serial_prefix()
    if prefix is None:
        return [by_job, by_target]
    serial_like = _like(Branch.branch_serial, prefix)
    by_serial = Branch.id.in_(matches.branches) if matches.branches is not None else serial_like
    return [by_serial, by_job & ~serial_like, by_target & ~serial_like]


_KINDS: dict[str, tuple[int, type[Execution | Branch], Any]] = {
    # kind: (sort rank on ties, table, time column)
    "execution": (0, Execution, Execution.started_at),
    "branch": (1, Branch, Branch.queued_at),
}


def _newest(kind: str, legs: list[ColumnElement[bool]], limit: int):
    """The `limit` newest (id, sort_at) of one kind: the newest `limit` of each leg, merged. Each leg
    alone can walk a time index backwards (broad q) or sort its few matches (selective q)."""
    _, model, at = _KINDS[kind]
    tops = [select(model.id.label("id"), at.label("sort_at")).where(leg).order_by(at.desc(), model.id)
            .limit(limit).subquery() for leg in legs]
    merged = union_all(*(select(t.c.id, t.c.sort_at) for t in tops)).subquery() if len(tops) > 1 else tops[0]
    return select(merged.c.id, merged.c.sort_at).order_by(merged.c.sort_at.desc(), merged.c.id).limit(limit).subquery()


def _execution_page(legs: list[ColumnElement[bool]], limit: int) -> Select:
    best = _newest("execution", legs, limit)
    return (select(literal("execution").label("type"), Execution.execution_serial.label("serial"),
                   Execution.status.label("status"), Job.job_serial.label("job_serial"), Job.name.label("job_name"),
                   null().cast(String).label("target_serial"), null().cast(String).label("target_name"),
                   Execution.started_at.label("started_at"), Execution.completed_at.label("completed_at"),
                   best.c.sort_at, literal(0).label("rank"), Execution.id.label("id"))
            .join(best, best.c.id == Execution.id)
            .join(Job, Job.id == Execution.job_id))


def _branch_page(legs: list[ColumnElement[bool]], limit: int) -> Select:
    best = _newest("branch", legs, limit)
    return (select(literal("branch").label("type"), Branch.branch_serial.label("serial"),
                   Branch.status.label("status"), Job.job_serial.label("job_serial"), Job.name.label("job_name"),
                   Target.target_serial.label("target_serial"), Target.name.label("target_name"),
                   Branch.started_at.label("started_at"), Branch.completed_at.label("completed_at"),
                   best.c.sort_at, literal(1).label("rank"), Branch.id.label("id"))
            .join(best, best.c.id == Branch.id)
            .join(Execution, Execution.id == Branch.execution_id)
            .join(Job, Job.id == Execution.job_id)
            .join(Target, Target.id == Branch.target_id))


def search(session: Session, q: str, kind: str, limit: int) -> SearchResult:
    """Executions and/or branches whose serial starts with `q`, or whose job's (or, for branches,
    target's) name contains `q`, case-insensitively. Newest first: by execution start and branch queue
    time, an execution before its own branches, then in creation order. `total` counts every match.

    Two statements whatever the type and the answer: the jobs and targets matched by name (see _Matches),
    then the page rows, each carrying the total (a sum of per-leg counts). Executions are matched by
    serial and job name only: they have no single target (their branches do)."""
    needle = _Needle.of(q)
    matches = _Matches.resolve(session, needle)
    pages: list[Select] = []
    counts: list[ColumnElement[int]] = []
    if kind in ("execution", "all"):
        legs = _execution_legs(needle, matches)
        pages.append(_execution_page(legs, limit))
        counts += [select(func.count()).select_from(Execution).where(leg).scalar_subquery() for leg in legs]
    if kind in ("branch", "all"):
        legs = _branch_legs(needle, matches)
        pages.append(_branch_page(legs, limit))
        counts += [select(func.count()).select_from(Branch).where(leg).scalar_subquery() for leg in legs]
    merged = (union_all(*(select(*p.subquery().c) for p in pages)) if len(pages) > 1 else pages[0]).subquery()
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    shown = [c for c in merged.c if c.name not in ("sort_at", "rank", "id")]
    stmt = (select(*shown, total.label("total"))
            .order_by(merged.c.sort_at.desc(), merged.c.rank, merged.c.id).limit(limit))
    rows = session.execute(stmt).all()
    hits = [SearchHit(**{k: v for k, v in row._mapping.items() if k != "total"}) for row in rows]
    return SearchResult(rows[0].total if rows else 0, hits)
