"""The next-tick function of cron schedules: ticks on the job's wall clock, given in UTC, across
Europe/Berlin's 2026 DST changes (2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST → 02:00 CET)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.cron import check_expression, next_tick, zone

BERLIN = "Europe/Berlin"


def ticks(expr: str, timezone: str, start: datetime, count: int) -> list[datetime]:
    out, moment = [], start
    for _ in range(count):
        moment = next_tick(expr, timezone, moment)
        out.append(moment)
    return out


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_tick_is_strictly_after_the_given_moment_and_in_utc():
    assert next_tick("*/5 * * * *", "UTC", utc(2026, 5, 1, 12, 0)) == utc(2026, 5, 1, 12, 5)
    assert next_tick("*/5 * * * *", "UTC", utc(2026, 5, 1, 12, 4, 59, 999999)) == utc(2026, 5, 1, 12, 5)
    tick = next_tick("0 9 * * *", BERLIN, utc(2026, 5, 1, 12, 0))
    assert tick == utc(2026, 5, 2, 7, 0) and tick.tzinfo == UTC  # 09:00 CEST


def test_a_daily_time_follows_the_wall_clock_across_both_changes():
    assert ticks("0 9 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]
    assert ticks("0 9 * * *", BERLIN, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]


def test_spring_forward_a_skipped_time_fires_once_at_the_first_minute_after_the_gap():
    # 02:30 does not exist on 2026-03-29: it fires at 03:00 CEST (01:00 UTC), then at 02:30 CEST the next day
    assert ticks("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_spring_forward_an_interval_keeps_its_pace_in_real_time():
    # 01:30 CET, then 03:00 CEST: half an hour apart, the wall-clock hour 02:00-03:00 never happens
    assert ticks("*/30 * * * *", BERLIN, utc(2026, 3, 29, 0, 0), 3) == [
        utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)]


def test_fall_back_a_repeated_time_fires_once():
    # 02:30 happens twice on 2026-10-25 (CEST, then CET): it fires at the first one only
    assert ticks("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_fall_back_an_interval_runs_through_the_repeated_hour():
    # 02:00 CEST, 02:30 CEST, 02:00 CET, 02:30 CET: every half hour in real time, none lost, none doubled
    assert ticks("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 30), 5) == [
        utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2, 0)]


@pytest.mark.parametrize(("expr", "reason"), [
    ("* * * *", "Wrong number of fields"),
    ("0 * * * * *", "Wrong number of fields"),
    ("61 * * * *", "Bad minute"),
    ("0 24 * * *", "Bad hour"),
    ("0 0 31 2 *", "Bad day-of-month"),
    ("0 0 * 13 *", "Bad month"),
    ("0 0 * * 9", "Bad day-of-week"),
])
def test_invalid_expressions_say_why(expr, reason):
    with pytest.raises(ValueError, match=reason):
        check_expression(expr)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "", "Europe", "x" * 300])
def test_unknown_zones_are_refused_without_naming_server_paths(name):
    with pytest.raises(ValueError) as caught:
        zone(name)
    assert "site-packages" not in str(caught.value) and "/usr/share" not in str(caught.value)


def test_known_zones_and_aliases():
    assert str(zone("UTC")) == "UTC"
    assert str(zone(BERLIN)) == BERLIN
    check_expression("*/5 * * * *")
    check_expression("0 9 * * MON-FRI")
