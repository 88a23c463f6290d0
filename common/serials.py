"""Hierarchical serials: J2025 0001 . 0001 . 0001: formats, parsing and validation, all pure.
Allocation lives beside its counter table (common/models/counter.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import ValidationFailed

JOB_RE = re.compile(r"^J(\d{4})(\d{4,})\Z", re.ASCII)
TARGET_RE = re.compile(r"^T(\d{4})(\d{4,})\Z", re.ASCII)
EXECUTION_RE = re.compile(r"^J\d{4}\d{4,}\.\d{4,}\Z", re.ASCII)
BRANCH_RE = re.compile(r"^J\d{4}\d{4,}\.\d{4,}\.\d{4,}\Z", re.ASCII)

FORMATS = {
    "job_serial": ("J20250001", re.compile(r"^J\d{8,}\Z", re.ASCII)),
    "target_serial": ("T20250001", re.compile(r"^T\d{8,}\Z", re.ASCII)),
    "execution_serial": ("J20250001.0001", EXECUTION_RE),
    "branch_serial": ("J20250001.0001.0001", BRANCH_RE),
}


def _number(n: int) -> str:
    return f"{n:04d}"


def job_serial(year: int, seq: int) -> str:
    return f"J{year:04d}{_number(seq)}"


def target_serial(year: int, seq: int) -> str:
    return f"T{year:04d}{_number(seq)}"


def execution_serial(job_serial_: str, number: int) -> str:
    return f"{job_serial_}.{_number(number)}"


def branch_serial(execution_serial_: str, number: int) -> str:
    return f"{execution_serial_}.{_number(number)}"


def branch_id(number: int) -> str:
    return f"{number:03d}"


def is_valid(kind: str, value: str) -> bool:
    return bool(FORMATS[kind][1].match(value))


def require(kind: str, value: str) -> str:
    """Raise the reference's 422 details when `value` is not a well-formed serial of `kind`."""
    expected, pattern = FORMATS[kind]
    if not isinstance(value, str) or not pattern.match(value):
        label = kind.replace("_", " ")
        raise ValidationFailed(
            f"Invalid {label} format",
            {"field": kind, "expected_format": expected, "received": value},
        )
    return value


@dataclass(frozen=True)
class ParsedSerial:
    kind: str  # job | execution | branch
    job: str
    execution: str | None
    branch: str | None


def parse(value: str) -> ParsedSerial | None:
    """Classify a job/execution/branch serial, or None when malformed."""
    if BRANCH_RE.match(value):
        j, e, _ = value.split(".")
        return ParsedSerial("branch", j, f"{j}.{e}", value)
    if EXECUTION_RE.match(value):
        return ParsedSerial("execution", value.split(".")[0], value, None)
    if FORMATS["job_serial"][1].match(value):
        return ParsedSerial("job", value, None, None)
    return None
