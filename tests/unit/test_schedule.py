"""Maintenance-window schedules: AWS and 5-field cron, timezones, bad input."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from imagepatch.core.schedule import ScheduleError, parse_schedule
from imagepatch.core.window import latest_opening, next_opening

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


# -- Systems Manager maintenance windows: seconds, offsets, start and end dates -------------
#
# SSM_REF's section "Cron and rate expressions for maintenance windows" and
# SSM_OPTIONS ("Maintenance window scheduling and active period options"),
# each example quoted beside its row. Expected values are worked out by hand
# from the page's own words; NOW is Friday 27 November 2026, 12:00Z
# (Tuesdays in December 2026: 1, 8, 15; Thursdays: 3, 10, 17).

SSM_WINDOW_EXAMPLES = [
    # "the following 6-field cron expression runs a maintenance window at 9:30 AM every day"
    (SSM_REF, "cron(30 09 ? * * *)", "2026-11-28T09:30:00"),
    # "the following 7-field cron expression runs a maintenance window at 9:30:24 AM every day"
    (SSM_REF, "cron(24 30 09 ? * * *)", "2026-11-28T09:30:24"),
    # "cron(0 2 ? * THU#3 *) | 02:00 AM the third Thursday of every month"
    (SSM_REF, "cron(0 2 ? * THU#3 *)", "2026-12-17T02:00:00"),
    # "cron(15 10 ? * * *) | 10:15 AM every day"
    (SSM_REF, "cron(15 10 ? * * *)", "2026-11-28T10:15:00"),
    # "cron(15 10 ? * MON-FRI *) | 10:15 AM every Monday, ... and Friday" (today's has passed)
    (SSM_REF, "cron(15 10 ? * MON-FRI *)", "2026-11-30T10:15:00"),
    # "cron(0 2 L * ? *) | 02:00 AM on the last day of every month"
    (SSM_REF, "cron(0 2 L * ? *)", "2026-11-30T02:00:00"),
    # "cron(15 10 ? * 6L *) | 10:15 AM on the last Friday of every month" (27 Nov 10:15 has passed)
    (SSM_REF, "cron(15 10 ? * 6L *)", "2026-12-25T10:15:00"),
    # Association section: "If you specify the optional Seconds field, its value can be 0
    # (zero). For example: cron(0 */30 * * * ? *)" (every 30 minutes)
    (SSM_REF, "cron(0 */30 * * * ? *)", "2026-11-27T12:00:00"),
    # "rate(30 minutes) | Every 30 minutes", "rate(5 hours)", "rate(25 days)": counted from the
    # epoch without a start date; 12:00Z on day 20784 is hour 498828 (≡ 3 mod 5), day ≡ 9 mod 25.
    (SSM_REF, "rate(30 minutes)", "2026-11-27T12:00:00"),
    (SSM_REF, "rate(5 hours)", "2026-11-27T14:00:00"),
    (SSM_REF, "rate(25 days)", "2026-12-13T00:00:00"),
]


@pytest.mark.parametrize(("page", "source", "expected"), SSM_WINDOW_EXAMPLES,
                         ids=[r[1] for r in SSM_WINDOW_EXAMPLES])
def test_ssm_maintenance_window_examples_open_when_the_docs_say(page, source, expected):
    assert next_opening(parse_schedule(source, "UTC"), NOW) == _z(expected), page


def _z(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("page", "source", "offset", "now", "expected"),
    [
        # SSM_REF, "Schedule offsets": "cron(30 23 ? * TUE#3 *) ... the third Tuesday of every
        # month at 11:30 PM. If the schedule offset is 2, the maintenance window won't run until
        # 11:30 PM two days later": 15 Dec + 2 = Thursday 17 December.
        (SSM_REF, "cron(30 23 ? * TUE#3 *)", 2, NOW, "2026-12-17T23:30"),
        # SSM_OPTIONS, Example 4, the 7-field form: --schedule "cron(0 30 23 ? * TUE#3 *)"
        # --schedule-offset 2: "11:30 PM two days after the third Tuesday of each month".
        (SSM_OPTIONS, "cron(0 30 23 ? * TUE#3 *)", 2, NOW, "2026-12-17T23:30"),
        # ... and in November: 17 Nov + 2 = 19 Nov, still ahead on 18 November.
        (SSM_OPTIONS, "cron(0 30 23 ? * TUE#3 *)", 2, _z("2026-11-18T00:00"), "2026-11-19T23:30"),
        # SSM_REF, association example: "cron(0 0 ? * THU#2 *) ... because the schedule offset
        # is 3, the association won't run until the next Sunday": 10 Dec + 3 = Sunday 13 Dec.
        (SSM_REF, "cron(0 0 ? * THU#2 *)", 3, NOW, "2026-12-13T00:00"),
    ],
)
def test_schedule_offsets_as_documented(page, source, offset, now, expected):
    schedule = parse_schedule(source, "UTC", offset_days=offset)
    assert next_opening(schedule, now) == _z(expected), page
    # The opening is the cron date plus whole days, never the cron date itself.
    assert latest_opening(schedule, _z(expected)) == _z(expected)
    assert latest_opening(schedule, _z(expected) - dt.timedelta(seconds=1)) != _z(expected)


def test_a_cron_date_before_the_start_date_opens_nothing_even_if_its_offset_date_is_after():
    # SSM_REF: "if you specify a cron expression that would have run a maintenance window
    # yesterday and add a schedule offset of two days, the maintenance window won't run
    # tomorrow." Created (startDate) on Friday 27 Nov; the Thursday 26 Nov fire time plus two
    # days would be Saturday 28 Nov; the next one counts: Thursday 3 Dec + 2 = Saturday 5 Dec.
    schedule = parse_schedule("cron(30 23 ? * THU *)", "UTC", offset_days=2, start=NOW)
    assert next_opening(schedule, NOW) == _z("2026-12-05T23:30")
    assert latest_opening(schedule, _z("2026-12-01T00:00")) is None
    without_start = parse_schedule("cron(30 23 ? * THU *)", "UTC", offset_days=2)
    assert next_opening(without_start, NOW) == _z("2026-11-28T23:30")


LA = "America/Los_Angeles"


@pytest.mark.parametrize(
    ("page", "source", "tz", "start", "end", "now", "nxt", "latest"),
    [
        # SSM_OPTIONS, Example 1: --start-date 2021-01-01T00:00:00-08:00, America/Los_Angeles,
        # cron(0 09 ? * WED *): "the first run of the maintenance window won't occur until after
        # its specified start date ... The first execution in the allowed period will be on
        # Wednesday" (the page prints "January 4", a Monday; the Wednesday is 6 January 2021),
        # 09:00 PST = 17:00Z.
        (SSM_OPTIONS, "cron(0 09 ? * WED *)", LA, "2021-01-01T00:00:00-08:00", None,
         "2020-12-01T00:00", "2021-01-06T17:00", None),
        # SSM_OPTIONS, Example 2: --start-date 2019-01-01T00:03:15+09:00 --end-date
        # 2019-06-30T00:06:15+09:00, Asia/Tokyo, rate(7 days): "it becomes active ... on Tuesday,
        # January 1" and runs every seven days from then; "The last execution is ... on Tuesday,
        # June 25, 2019" (1 Jan + 175 days). After it, nothing opens.
        (SSM_OPTIONS, "rate(7 days)", "Asia/Tokyo", "2019-01-01T00:03:15+09:00",
         "2019-06-30T00:06:15+09:00", "2018-12-01T00:00", "2018-12-31T15:03:15", None),
        (SSM_OPTIONS, "rate(7 days)", "Asia/Tokyo", "2019-01-01T00:03:15+09:00",
         "2019-06-30T00:06:15+09:00", "2019-06-26T00:00", None, "2019-06-24T15:03:15"),
        # SSM_REF's CLI example: cron(0 16 ? * TUE *), America/Los_Angeles, --start-date
        # 2021-01-01T00:00:00-08:00 --end-date 2021-06-30T00:00:00-08:00: the last Tuesday in the
        # period is 29 June 2021, 16:00 PDT = 23:00Z; on 1 July nothing is left.
        (SSM_REF, "cron(0 16 ? * TUE *)", LA, "2021-01-01T00:00:00-08:00",
         "2021-06-30T00:00:00-08:00", "2021-07-01T00:00", None, "2021-06-29T23:00"),
        (SSM_REF, "cron(0 16 ? * TUE *)", LA, "2021-01-01T00:00:00-08:00",
         "2021-06-30T00:00:00-08:00", "2020-06-01T00:00", "2021-01-06T00:00", None),
        # at(...) counts only inside the period too.
        (SSM_REF, "at(2020-07-07T15:55:00)", "UTC", "2020-08-01T00:00:00Z", None,
         "2020-07-01T00:00", None, None),
        (SSM_REF, "at(2020-07-07T15:55:00)", "UTC", None, "2020-07-01T00:00:00Z",
         "2020-07-08T00:00", None, None),
        (SSM_REF, "at(2020-07-07T15:55:00)", "UTC", "2020-07-01T00:00:00Z", "2020-08-01T00:00:00Z",
         "2020-07-08T00:00", None, "2020-07-07T15:55"),
    ],
)
def test_start_and_end_dates_as_documented(page, source, tz, start, end, now, nxt, latest):
    schedule = parse_schedule(
        source, tz,
        start=dt.datetime.fromisoformat(start) if start else None,
        end=dt.datetime.fromisoformat(end) if end else None,
    )
    assert next_opening(schedule, _z(now)) == (_z(nxt) if nxt else None), page
    assert latest_opening(schedule, _z(now)) == (_z(latest) if latest else None), page


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        # SSM_REF: "Cron expressions that lead to rates faster than five (5) minute aren't
        # supported" (the documented "0/5 8-17 ? * MON-FRI *" is exactly five minutes: allowed).
        ("cron(0/1 * * * ? *)", {}, "less than 5 minutes apart"),
        ("cron(* * * * ? *)", {}, "less than 5 minutes apart"),
        ("cron(0/30 0 2 * * ? *)", {}, "less than 5 minutes apart"),  # 02:00:00 and 02:00:30
        ("cron(58,1 * * * ? *)", {}, "less than 5 minutes apart"),  # 10:58 then 11:01
        ("cron(58 23 * * ? *)", {}, None),  # once a day is fine
        ("cron(0/5 8-17 ? * MON-FRI *)", {}, None),
        # SSM_REF: offsets "for cron expressions only"; CreateMaintenanceWindow: 1-6 days.
        ("rate(7 days)", {"offset_days": 2}, "only allowed with a cron expression"),
        ("at(2020-07-07T15:55:00)", {"offset_days": 1}, "only allowed with a cron expression"),
        ("cron(0 2 ? * SUN *)", {"offset_days": 7}, "1-6 days"),
        ("cron(0 2 ? * SUN *)", {"start": dt.datetime(2026, 1, 1)}, "UTC offset"),
        ("cron(0 2 ? * SUN *)", {"start": NOW, "end": NOW}, "after the start date"),
        # A 7-field form needs '?' in a day field like the 6-field one, and nowhere else.
        ("cron(0 0 2 * * * *)", {}, "'?' in exactly one"),
        ("cron(? 0 2 ? * * *)", {}, "only allowed in day-of-month or day-of-week"),
        ("cron(0 0 2 ? * * * *)", {}, "6 fields"),
    ],
)
def test_ssm_window_limits_are_enforced(source, kwargs, message):
    if message is None:
        parse_schedule(source, "UTC", **kwargs)
        return
    with pytest.raises(ScheduleError, match=re.escape(message)):
        parse_schedule(source, "UTC", **kwargs)


def test_five_field_cron_keeps_its_one_minute_resolution():
    # Classic cron is not an AWS form (a CronJob's "*/1 * * * *" is parsed here too).
    assert next_opening(parse_schedule("* * * * *", "UTC"), NOW) == NOW
