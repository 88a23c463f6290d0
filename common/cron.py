"""Cron schedules: a five-field expression read in an IANA timezone, its ticks given in UTC.
Parsing and iteration are cronsim's (Debian cron's rules, DST included); this module only checks
the input and converts between the job's zone and UTC."""
from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

DEFAULT_TIMEZONE = "UTC"
FIELDS = 5  # minute hour day-of-month month day-of-week; cronsim's six-field form (seconds first) is not offered


def zone(name: str) -> ZoneInfo:
    """The IANA zone of that name; ValueError with zoneinfo's reason if there is none."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as exc:  # a KeyError: its str() is the repr of the message
        raise ValueError(exc.args[0] if exc.args else f"No time zone found with key {name}") from None
    except ValueError as exc:  # a path-like or malformed key, or a file of the zone database that is no zone
        raise ValueError(f"Invalid time zone key: {exc}") from None
    except OSError:  # a directory of the database ("Europe"), a name too long for a file: the reason names our paths
        raise ValueError(f"No time zone found with key {name}") from None


def check_expression(expr: str) -> None:
    """ValueError with cronsim's reason if the expression is not a five-field cron expression that ever fires."""
    if len(expr.split()) != FIELDS:
        raise ValueError(f"Wrong number of fields: a cron expression has {FIELDS} "
                         "(minute hour day-of-month month day-of-week)")
    next_tick(expr, DEFAULT_TIMEZONE, datetime.now(UTC))


def next_tick(expr: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (an aware datetime), in UTC. Ticks are computed on the
    wall clock of ``timezone``: a time skipped by a DST change fires at the first minute after the gap,
    a time that happens twice fires once (Debian cron's rules, as cronsim implements them)."""
    try:
        ticks = CronSim(expr, after.astimezone(zone(timezone)))
        return next(ticks).astimezone(UTC)
    except CronSimError as exc:
        raise ValueError(str(exc)) from None
    except StopIteration:  # cronsim gives up after 50 years without a match
        raise ValueError("The expression never matches a date") from None
