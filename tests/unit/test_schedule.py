"""Maintenance-window schedules: AWS and 5-field cron, timezones, bad input."""

from __future__ import annotations

import datetime as dt
import re

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


# -- the AWS documentation's own examples ------------------------------------------------
#
# Each row is an expression printed in an AWS page (cited by URL), with its next
# opening after NOW (Friday 27 November 2026, 12:00Z) worked out by hand from
# the page's own description of it.

SSM_REF = "https://docs.aws.amazon.com/systems-manager/latest/userguide/reference-cron-and-rate-expressions.html"
SSM_OLD = "https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-maintenance-cron.html"
SSM_OPTIONS = "https://docs.aws.amazon.com/systems-manager/latest/userguide/maintenance-windows-schedule-options.html"
EB_CRON = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html"
EB_RULES = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-scheduled-rule-pattern.html"
SCHEDULER = "https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html"

AWS_EXAMPLES = [
    # (source page, expression, timezone, next opening after NOW; the page's words)
    (SSM_REF, "cron(0 16 ? * TUE *)", "America/Los_Angeles", "2026-12-02T00:00"),  # Tue 1 Dec 16:00 PST
    (SSM_REF, "cron(30 23 ? * TUE#3 *)", "UTC", "2026-12-15T23:30"),  # third Tuesday of the month
    (SSM_REF, "cron(0 0 ? * THU#2 *)", "UTC", "2026-12-10T00:00"),  # second Thursday of the month
    (SSM_REF, "rate(7 days)", "America/Los_Angeles", "2026-12-03T00:00"),  # every 7×24h from the epoch (a Thursday)
    (SSM_OPTIONS, "cron(0 09 ? * WED *)", "America/Los_Angeles", "2026-12-02T17:00"),  # Wed 2 Dec 09:00 PST
    (SSM_OLD, "cron(0 10 * * ? *)", "UTC", "2026-11-28T10:00"),  # 10:00 every day
    (SSM_OLD, "cron(15 12 * * ? *)", "UTC", "2026-11-27T12:15"),  # 12:15 every day
    (SSM_OLD, "cron(0 18 ? * MON-FRI *)", "UTC", "2026-11-27T18:00"),  # 18:00 Monday to Friday
    (SSM_OLD, "cron(0 8 1 * ? *)", "UTC", "2026-12-01T08:00"),  # 08:00 on the 1st
    (SSM_OLD, "cron(0/15 * * * ? *)", "UTC", "2026-11-27T12:00"),  # every 15 minutes
    (SSM_OLD, "cron(0/10 * ? * MON-FRI *)", "UTC", "2026-11-27T12:00"),  # every 10 minutes on weekdays
    (SSM_OLD, "cron(0/5 8-17 ? * MON-FRI *)", "UTC", "2026-11-27T12:00"),  # every 5 minutes, 08:00-17:55 weekdays
    (SSM_OLD, "rate(2 days)", "UTC", "2026-11-29T00:00"),  # every other day (48h steps from the epoch)
    (EB_CRON, "cron(0 9 ? * 2#1 *)", "UTC", "2026-12-07T09:00"),  # first Monday of the month (1 Dec is a Tuesday)
    (EB_CRON, "cron(0 2 3W * ? *)", "UTC", "2026-12-03T02:00"),  # weekday closest to the 3rd (3 Dec: Thursday)
    (EB_CRON, "cron(0 2 L * ? *)", "UTC", "2026-11-30T02:00"),  # L in day-of-month: last day
    (EB_CRON, "cron(0 2 ? * L *)", "UTC", "2026-11-28T02:00"),  # L in day-of-week: last day of the week, Saturday
    (EB_CRON, "cron(0 2 ? * 3#2 *)", "UTC", "2026-12-08T02:00"),  # 3#2: the second Tuesday
    (EB_RULES, "rate(5 minutes)", "UTC", "2026-11-27T12:00"),
    (EB_RULES, "rate(1 hour)", "UTC", "2026-11-27T12:00"),
    (EB_RULES, "rate(1 day)", "UTC", "2026-11-28T00:00"),
]


@pytest.mark.parametrize(("page", "source", "tz", "expected"), AWS_EXAMPLES, ids=[r[1] for r in AWS_EXAMPLES])
def test_aws_documented_schedules_open_when_the_docs_say(page, source, tz, expected):
    schedule = parse_schedule(source, tz)
    assert next_opening(schedule, NOW) == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC), page


@pytest.mark.parametrize(
    ("page", "source", "tz", "now", "expected"),
    [
        # SSM_REF: "at(2019-07-07T13:15:30)" with --schedule-timezone America/Los_Angeles (PDT, -7).
        (SSM_REF, "at(2019-07-07T13:15:30)", "America/Los_Angeles", "2019-07-01T00:00", "2019-07-07T20:15:30"),
        (SSM_REF, "at(2020-07-07T15:55:00)", "UTC", "2020-07-07T15:00", "2020-07-07T15:55"),
        # Once it has passed, no window opens again.
        (SSM_REF, "at(2020-07-07T15:55:00)", "UTC", "2020-07-07T15:56", None),
        # SCHEDULER (daylight saving): an occurrence on a non-existent time is skipped:
        # 8 March 2026 02:30 does not exist in New York, so the one-time window never opens.
        (SCHEDULER, "at(2026-03-08T02:30:00)", "America/New_York", "2026-03-01T00:00", None),
        # ... and a repeated time runs once, at its first occurrence (1 Nov 01:30 EDT = 05:30Z).
        (SCHEDULER, "at(2026-11-01T01:30:00)", "America/New_York", "2026-10-31T00:00", "2026-11-01T05:30"),
        # rate() days are 24 elapsed hours whatever the clocks do (SCHEDULER): across the
        # US spring forward the openings stay 00:00Z.
        (SCHEDULER, "rate(1 day)", "America/New_York", "2026-03-08T01:00", "2026-03-09T00:00"),
    ],
)
def test_one_time_and_clock_change_rules_as_documented(page, source, tz, now, expected):
    schedule = parse_schedule(source, tz)
    got = next_opening(schedule, dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC))
    assert got == (dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC) if expected else None), page


@pytest.mark.parametrize(
    ("page", "source", "message"),
    [
        # EB_RULES: "If the value is equal to 1, then the unit must be singular ... greater
        # than 1, the unit must be plural": rate(1 hours) and rate(5 hour) are not valid.
        (EB_RULES, "rate(1 hours)", "singular for 1"),
        (EB_RULES, "rate(5 hour)", "singular for 1"),
        (EB_RULES, "rate(0 minutes)", "positive integer"),
        (EB_RULES, "rate(-5 minutes)", "positive integer"),
        (EB_RULES, "rate(5 weeks)", "minute(s), hour(s) or day(s)"),
        (EB_RULES, "rate(5)", "rate(value unit)"),
        # EB_CRON: "If you use a '#' character, you can define only one expression in the
        # day-of-week field. For example, "3#1,6#3" is not valid".
        (EB_CRON, "cron(0 9 ? * 3#1,6#3 *)", "only one expression"),
        # EB_CRON: "You can't use * in both the Day-of-month and Day-of-week fields".
        (EB_CRON, "cron(0 9 * * * *)", "'?' in exactly one"),
        # EB_CRON: the year field is 1970-2199.
        (EB_CRON, "cron(0 9 1 1 ? 2200)", "outside 1970-2199"),
        # EB_CRON: six required fields.
        (EB_CRON, "cron(0 9 1 1 ?)", "6 fields"),
        # SCHEDULER: at(yyyy-mm-ddThh:mm:ss).
        (SCHEDULER, "at(2026-02-30T00:00:00)", "not a real date"),
        (SCHEDULER, "at(2026-02-03 00:00)", "at(yyyy-mm-ddThh:mm:ss)"),
    ],
)
def test_what_the_aws_docs_call_invalid_is_refused(page, source, message):
    with pytest.raises(ScheduleError, match=re.escape(message)):
        parse_schedule(source, "UTC")


def test_a_rate_longer_than_a_century_is_refused_not_overflowed():
    with pytest.raises(ScheduleError, match="longer than 100 years"):
        parse_schedule("rate(99999999999 days)", "UTC")
