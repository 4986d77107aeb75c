"""Maintenance-window schedules: AWS and 5-field cron, timezones, bad input."""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.core.schedule import ScheduleError, parse_schedule
from imagepatch.core.window import next_opening

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)  # a Friday


@pytest.mark.parametrize(
    ("source", "tz", "expected_next"),
    [
        # Sundays 02:00 UTC, AWS form with '?' in day-of-month.
        ("cron(0 2 ? * SUN *)", "UTC", "2026-11-29T02:00:00+00:00"),
        # AWS counts days of week from SUN=1, so 1 is Sunday too.
        ("cron(0 2 ? * 1 *)", "UTC", "2026-11-29T02:00:00+00:00"),
        # Last Friday of the month (AWS 6L): today 02:00 has passed, so December.
        ("cron(0 2 ? * 6L *)", "UTC", "2026-12-25T02:00:00+00:00"),
        # First Monday (AWS 2#1), in Berlin: 02:00 CET is 01:00 UTC.
        ("cron(0 2 ? * 2#1 *)", "Europe/Berlin", "2026-12-07T01:00:00+00:00"),
        # Last day of the month.
        ("cron(0 2 L * ? *)", "UTC", "2026-11-30T02:00:00+00:00"),
        # Nearest weekday to the 15th, only in 2027.
        ("cron(0 2 15W * ? 2027)", "UTC", "2027-01-15T02:00:00+00:00"),
        # Classic 5-field cron, Sunday = 0, in New York (EST, UTC-5).
        ("0 2 * * 0", "America/New_York", "2026-11-29T07:00:00+00:00"),
        ("30 22 * * 1-5", "UTC", "2026-11-27T22:30:00+00:00"),
    ],
)
def test_valid_schedules_next_start(source: str, tz: str, expected_next: str) -> None:
    schedule = parse_schedule(source, tz)
    assert next_opening(schedule, NOW) == dt.datetime.fromisoformat(expected_next)


@pytest.mark.parametrize(
    ("source", "tz", "message"),
    [
        ("cron(0 25 ? * SUN *)", "UTC", "is not a valid cron expression"),
        ("0 2 * *", "UTC", "expected 5-field cron"),
        ("cron(0 2 ? * SUN)", "UTC", "AWS form needs 6 fields"),
        ("cron(0 2 * * SUN *)", "UTC", "'?' in exactly one"),
        ("cron(0 2 ? * ? *)", "UTC", "'?' in exactly one"),
        ("cron(0 2 ? * 8 *)", "UTC", "out of range 1-7"),
        ("cron(0 2 LW * ? *)", "UTC", "'LW'"),
        ("0 2 30 2 *", "UTC", "never matches"),
        ("0 2 * * 0", "Mars/Olympus_Mons", "unknown timezone 'Mars/Olympus_Mons'"),
        ("0 2 * * 0", "", "unknown timezone"),
    ],
)
def test_invalid_schedules_say_why(source: str, tz: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_schedule(source, tz)
