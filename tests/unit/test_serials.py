"""Pure serial formatting, parsing and validation (SPEC §4)."""
from __future__ import annotations

import pytest

from common import serials
from common.errors import ValidationFailed

# ---------------------------------------------------------------- formatting

def test_job_and_target_serials_are_year_plus_four_digit_sequence():
    assert serials.job_serial(2025, 1) == "J20250001"
    assert serials.target_serial(2025, 1) == "T20250001"
    assert serials.job_serial(2025, 42) == "J20250042"
    assert serials.job_serial(2026, 9999) == "J20269999"
    assert len(serials.job_serial(2025, 1)) == 9
    assert len(serials.target_serial(2025, 1)) == 9


def test_job_and_target_serials_grow_past_9999_without_wrapping():
    assert serials.job_serial(2026, 10000) == "J202610000"
    assert serials.target_serial(2026, 10000) == "T202610000"
    assert serials.job_serial(2026, 123456) == "J2026123456"


def test_execution_and_branch_serials():
    execution = serials.execution_serial("J20250001", 1)
    assert execution == "J20250001.0001"
    assert len(execution) == 14
    branch = serials.branch_serial(execution, 1)
    assert branch == "J20250001.0001.0001"
    assert len(branch) == 19
    assert serials.branch_serial("J20250001.0002", 37) == "J20250001.0002.0037"


def test_execution_and_branch_numbers_grow_past_9999():
    assert serials.execution_serial("J20250001", 9999) == "J20250001.9999"
    assert serials.execution_serial("J20250001", 10000) == "J20250001.10000"
    assert serials.branch_serial("J20250001.0001", 10000) == "J20250001.0001.10000"
    assert serials.branch_serial("J202510000.10000", 10001) == "J202510000.10000.10001"


@pytest.mark.parametrize("number, expected", [(1, "001"), (9, "009"), (42, "042"), (999, "999"), (1000, "1000")])
def test_branch_id_is_three_digits(number, expected):
    assert serials.branch_id(number) == expected


# ---------------------------------------------------------------- parsing

def test_parse_classifies_job_execution_and_branch():
    assert serials.parse("J20250001") == serials.ParsedSerial("job", "J20250001", None, None)
    assert serials.parse("J20250001.0001") == serials.ParsedSerial("execution", "J20250001", "J20250001.0001", None)
    assert serials.parse("J20250001.0001.0002") == serials.ParsedSerial(
        "branch", "J20250001", "J20250001.0001", "J20250001.0001.0002")


def test_parse_accepts_grown_numbers():
    assert serials.parse("J202610000").kind == "job"
    parsed = serials.parse("J202610000.10000.10001")
    assert parsed.kind == "branch"
    assert parsed.job == "J202610000"
    assert parsed.execution == "J202610000.10000"


@pytest.mark.parametrize("value", [
    "", "J", "J2025", "J2025001", "j20250001", "X20250001", "T20250001", " J20250001", "J20250001 ",
    "J20250001.", "J20250001.001", "J20250001.0001.", "J20250001.0001.001", "J20250001.0001.0001.0001",
    "J2025000A", "J20250001.000A", "invalid_serial", "J20250001..0001",
    "J20250001\n", "J20250001.0001\n", "J20250001.0001.0001\n", "J\uff12\uff10\uff12\uff15\uff10\uff10\uff10\uff11",
])
def test_parse_rejects_malformed(value):
    assert serials.parse(value) is None


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kind, value", [
    ("job_serial", "J20250001"), ("job_serial", "J202610000"),
    ("target_serial", "T20250001"), ("target_serial", "T202610000"),
    ("execution_serial", "J20250001.0001"), ("execution_serial", "J20250001.10000"),
    ("branch_serial", "J20250001.0001.0001"), ("branch_serial", "J202610000.10000.10000"),
])
def test_require_returns_well_formed_serials(kind, value):
    assert serials.require(kind, value) == value
    assert serials.is_valid(kind, value)


EXPECTED = {
    "job_serial": "J20250001",
    "target_serial": "T20250001",
    "execution_serial": "J20250001.0001",
    "branch_serial": "J20250001.0001.0001",
}


@pytest.mark.parametrize("kind, value", [
    ("job_serial", "invalid_serial"), ("job_serial", "J2025001"), ("job_serial", "T20250001"),
    ("job_serial", "J20250001.0001"), ("job_serial", ""),
    ("target_serial", "J20250001"), ("target_serial", "T2025"), ("target_serial", "t20250001"),
    ("execution_serial", "invalid_serial"), ("execution_serial", "J20250001"),
    ("execution_serial", "J20250001.001"), ("execution_serial", "J20250001.0001.0001"),
    ("branch_serial", "J20250001.0001"), ("branch_serial", "J20250001.0001.01"),
    ("branch_serial", "J20250001.0001.0001.0001"),
    # a trailing newline and non-ASCII digits are not serials either
    ("job_serial", "J20250001\n"), ("target_serial", "T20250001\n"), ("execution_serial", "J20250001.0001\n"),
    ("branch_serial", "J20250001.0001.0001\n"), ("target_serial", "T\u0662\u0660\u0662\u0665\u0660\u0660\u0660\u0661"),
])
def test_require_rejects_malformed_with_reference_details(kind, value):
    with pytest.raises(ValidationFailed) as info:
        serials.require(kind, value)
    assert info.value.details == {"field": kind, "expected_format": EXPECTED[kind], "received": value}
    assert info.value.code == "validation_error"
    assert not serials.is_valid(kind, value)


def test_require_rejects_non_string():
    with pytest.raises(ValidationFailed) as info:
        serials.require("job_serial", 20250001)
    assert info.value.details == {"field": "job_serial", "expected_format": "J20250001", "received": 20250001}


def test_execution_serial_error_message_matches_reference():
    with pytest.raises(ValidationFailed) as info:
        serials.require("execution_serial", "invalid_serial")
    assert info.value.message == "Invalid execution serial format"
