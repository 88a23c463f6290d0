"""What `opsconductor run` prints: for people, a block per branch as it finishes (the target's stdout on
stdout, its stderr on stderr) and a progress line on stderr when stderr is a terminal; for scripts
(`--json`), one JSON object per line: the execution, each branch, a summary."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import TextIO

from opsconductor.adhoc import BranchResult, Progress, Summary

CLEAR_LINE = "\r\x1b[K"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


class HumanReporter:
    def __init__(self, out: TextIO, err: TextIO, *, progress: bool) -> None:
        self.out = out
        self.err = err
        self.show_progress = progress
        self._line = ""
        self._serial = ""

    def _clear(self) -> None:
        if self._line:
            self.err.write(CLEAR_LINE)
            self.err.flush()
            self._line = ""

    def started(self, execution_serial: str, job_serial: str, total: int) -> None:
        self._serial = execution_serial
        self.err.write(f"{execution_serial}: {total} target{'s' if total != 1 else ''}\n")
        self.err.flush()

    def progress(self, progress: Progress) -> None:
        if not self.show_progress:
            return
        queued = progress.total - progress.done - progress.running
        line = (f"{self._serial}  {progress.done}/{progress.total} done, {progress.failed} failed, "
                f"{progress.running} running, {queued} queued  {progress.elapsed:.1f} s")
        self.err.write(CLEAR_LINE + line)
        self.err.flush()
        self._line = line

    def branch(self, result: BranchResult) -> None:
        self._clear()
        name = result.target_name or result.target_serial
        parts = [f"{name} ({result.target_serial})", result.status.upper(),
                 f"rc={'-' if result.exit_code is None else result.exit_code}"]
        if result.error_type:
            parts.append(result.error_type)
        parts.append(_seconds(result.duration))
        self.out.write(" | ".join(parts) + "\n")
        if result.stdout:
            self.out.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")
        self.out.flush()
        if result.stderr:
            self.err.write(result.stderr if result.stderr.endswith("\n") else result.stderr + "\n")
            self.err.flush()

    def note(self, message: str) -> None:
        self._clear()
        self.err.write(message + "\n")
        self.err.flush()

    def finished(self, summary: Summary) -> None:
        self._clear()
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.statuses.items()))
        self.out.write(f"{summary.execution_serial} {summary.status}: {summary.total} branches ({counts}) "
                       f"in {summary.duration:.1f} s\n")
        self.out.flush()


class JsonReporter:
    """One line per object, flushed as it is written, so a script can read the results as they come."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _write(self, kind: str, body: dict) -> None:
        self.out.write(json.dumps({"type": kind, **body}, ensure_ascii=False) + "\n")
        self.out.flush()

    def started(self, execution_serial: str, job_serial: str, total: int) -> None:
        self._write("execution", {"execution_serial": execution_serial, "job_serial": job_serial, "branches": total})

    def progress(self, progress: Progress) -> None:
        pass

    def branch(self, result: BranchResult) -> None:
        self._write("branch", asdict(result))

    def note(self, message: str) -> None:
        self._write("note", {"message": message})

    def finished(self, summary: Summary) -> None:
        self._write("summary", {**asdict(summary), "exit_code": summary.exit_code})
