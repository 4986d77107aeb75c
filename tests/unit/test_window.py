"""Maintenance windows: open, cutoff and next start, against hand-checked dates.

Every expected value below was worked out by hand (the comment beside it says
how), not by running the code. Calendar facts used throughout, for 2026:
1 January is a Thursday, so the Sundays include 1 and 29 March, 7 June,
25 October and 1 November; the last Fridays are 31 July, 28 August and
25 December; the second Tuesdays include 10 February and 10 March.
DST in 2026: the US springs forward on Sunday 8 March (02:00 EST → 03:00 EDT,
07:00Z) and falls back on Sunday 1 November (02:00 EDT → 01:00 EST, 06:00Z);
the EU springs forward on Sunday 29 March (02:00 CET → 03:00 CEST, 01:00Z)
and falls back on Sunday 25 October (03:00 CEST → 02:00 CET, 01:00Z).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagepatch.core.schedule import ScheduleError, parse_schedule
from imagepatch.core.window import (
    WindowState,
    latest_opening,
    next_opening,
    opening_instant,
    window_state,
)
from imagepatch.model.policy import MaintenanceWindow

H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)


def z(text: str) -> dt.datetime:
    """A UTC instant written as ``2026-06-07T02:00`` (seconds optional)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def window(schedule: str, tz: str, duration: dt.timedelta, cutoff=dt.timedelta(0)):
    return MaintenanceWindow(schedule=schedule, timezone=tz, duration=duration, cutoff=cutoff)


def inside(opened: str, cutoff: str, closes: str) -> dict:
    """Expected: inside a window, before its cutoff."""
    return dict(
        open=True, can_start=True, opened_at=z(opened), cutoff_at=z(cutoff), closes_at=z(closes)
    )


def past_cutoff(opened: str, cutoff: str, closes: str, nxt: str | None) -> dict:
    """Expected: inside a window, at or after its cutoff."""
    return dict(
        open=True,
        can_start=False,
        opened_at=z(opened),
        cutoff_at=z(cutoff),
        closes_at=z(closes),
        next_start=z(nxt) if nxt else None,
        exhausted=nxt is None,
    )


def closed(nxt: str | None) -> dict:
    """Expected: outside every window."""
    return dict(open=False, can_start=False, next_start=z(nxt) if nxt else None, exhausted=not nxt)


SUNDAY_UTC = window("cron(0 2 ? * SUN *)", "UTC", 4 * H, 1 * H)  # Sun 02:00-06:00Z, cutoff 05:00Z
LONG_WEEKLY = window("cron(0 2 ? * SUN *)", "UTC", 120 * H, 24 * H)  # Sun 02:00 → Fri 02:00
DAILY_168H = window("0 2 * * *", "UTC", 168 * H, 167 * H)  # 7 overlapping windows at any time
LAST_FRIDAY = window("cron(0 22 ? * 6L *)", "UTC", 3 * H, 30 * M)
PATCH_TUESDAY_NY = window("cron(0 20 ? * 3#2 *)", "America/New_York", 6 * H, 2 * H)
NEAREST_WEEKDAY = window("cron(0 2 15W * ? *)", "UTC", 2 * H)
ONLY_2025 = window("cron(0 2 ? * SUN 2025)", "UTC", 4 * H, 1 * H)
FROM_2027 = window("cron(0 2 ? * SUN 2027-2028)", "UTC", 4 * H)
BERLIN_0230 = window("30 2 * * *", "Europe/Berlin", 2 * H, 30 * M)
BERLIN_HOURLY = window("0 * * * *", "Europe/Berlin", 30 * M)
BERLIN_GAP_EVERY_20M = window("*/20 2 * * *", "Europe/Berlin", 30 * M)
NY_SUNDAY_0200 = window("cron(0 2 ? * SUN *)", "America/New_York", 3 * H, 1 * H)
NY_DAILY_0130 = window("cron(30 1 * * ? *)", "America/New_York", 2 * H)
NY_DAILY_0230 = window("30 2 * * *", "America/New_York", 1 * H)


CASES = [
    # --- boundaries: start inclusive, cutoff and end exclusive --------------------------
    ("one second before it opens", SUNDAY_UTC, "2026-06-07T01:59:59", closed("2026-06-07T02:00")),
    ("at the opening", SUNDAY_UTC, "2026-06-07T02:00", inside("2026-06-07T02:00", "2026-06-07T05:00", "2026-06-07T06:00")),
    ("last second before the cutoff", SUNDAY_UTC, "2026-06-07T04:59:59", inside("2026-06-07T02:00", "2026-06-07T05:00", "2026-06-07T06:00")),
    # At the cutoff no new rollout starts; the next window is the next Sunday, 14 June.
    ("at the cutoff", SUNDAY_UTC, "2026-06-07T05:00", past_cutoff("2026-06-07T02:00", "2026-06-07T05:00", "2026-06-07T06:00", "2026-06-14T02:00")),
    ("last second of the window", SUNDAY_UTC, "2026-06-07T05:59:59", past_cutoff("2026-06-07T02:00", "2026-06-07T05:00", "2026-06-07T06:00", "2026-06-14T02:00")),
    ("at the close", SUNDAY_UTC, "2026-06-07T06:00", closed("2026-06-14T02:00")),
    ("midweek", SUNDAY_UTC, "2026-06-10T12:00", closed("2026-06-14T02:00")),
    # --- windows that opened long before now ---------------------------------------
    # Opened Sun 7 June 02:00, closes 120h later (Fri 12 June 02:00), cutoff 24h before.
    ("day 5 of a 5-day window, before its cutoff", LONG_WEEKLY, "2026-06-11T01:59", inside("2026-06-07T02:00", "2026-06-11T02:00", "2026-06-12T02:00")),
    ("day 5 of a 5-day window, at its cutoff", LONG_WEEKLY, "2026-06-11T02:00", past_cutoff("2026-06-07T02:00", "2026-06-11T02:00", "2026-06-12T02:00", "2026-06-14T02:00")),
    ("after a 5-day window", LONG_WEEKLY, "2026-06-13T00:00", closed("2026-06-14T02:00")),
    # Daily fire times, 168h each: seven windows overlap; the latest one rules.
    # 02:30 on 10 June: the window opened 02:00 that day, start allowed until 03:00.
    ("overlapping windows, in the newest one's first hour", DAILY_168H, "2026-06-10T02:30", inside("2026-06-10T02:00", "2026-06-10T03:00", "2026-06-17T02:00")),
    ("overlapping windows, all past their cutoff", DAILY_168H, "2026-06-10T03:00", past_cutoff("2026-06-10T02:00", "2026-06-10T03:00", "2026-06-17T02:00", "2026-06-11T02:00")),
    # 01:59 on 10 June: today's has not opened; the 9 June one (to 16 June) is past its cutoff.
    ("overlapping windows, just before the next opening", DAILY_168H, "2026-06-10T01:59", past_cutoff("2026-06-09T02:00", "2026-06-09T03:00", "2026-06-16T02:00", "2026-06-10T02:00")),
    # --- L, #, W ------------------------------------------------------------------------
    # 24 July is a Friday but not the last one: 31 July is.
    ("a Friday that is not the last", LAST_FRIDAY, "2026-07-24T22:00", closed("2026-07-31T22:00")),
    ("last Friday, at 22:00", LAST_FRIDAY, "2026-07-31T22:00", inside("2026-07-31T22:00", "2026-08-01T00:30", "2026-08-01T01:00")),
    # The window opened the previous day, in the previous month.
    ("last Friday's window after midnight", LAST_FRIDAY, "2026-08-01T00:15", inside("2026-07-31T22:00", "2026-08-01T00:30", "2026-08-01T01:00")),
    ("last Friday's window past its cutoff", LAST_FRIDAY, "2026-08-01T00:30", past_cutoff("2026-07-31T22:00", "2026-08-01T00:30", "2026-08-01T01:00", "2026-08-28T22:00")),
    ("after last Friday's window", LAST_FRIDAY, "2026-08-01T01:00", closed("2026-08-28T22:00")),
    ("December's last Friday is Christmas", LAST_FRIDAY, "2026-12-01T00:00", closed("2026-12-25T22:00")),
    # Second Tuesday, 20:00 New York. 10 March is after the US switch (EDT, -4): 11 March 00:00Z.
    ("second Tuesday in New York, after DST starts", PATCH_TUESDAY_NY, "2026-03-01T00:00", closed("2026-03-11T00:00")),
    # 10 February is EST (-5): 20:00 EST = 11 Feb 01:00Z; 6h to 07:00Z, cutoff 05:00Z.
    ("second Tuesday in New York, in winter", PATCH_TUESDAY_NY, "2026-02-11T03:00", inside("2026-02-11T01:00", "2026-02-11T05:00", "2026-02-11T07:00")),
    # 15 August 2026 is a Saturday: the nearest weekday is Friday 14 August.
    ("15W on a Saturday moves to Friday", NEAREST_WEEKDAY, "2026-08-01T00:00", closed("2026-08-14T02:00")),
    ("inside the 15W window", NEAREST_WEEKDAY, "2026-08-14T03:00", inside("2026-08-14T02:00", "2026-08-14T04:00", "2026-08-14T04:00")),
    # 15 September 2026 is a Tuesday, so no move.
    ("15W on a weekday", NEAREST_WEEKDAY, "2026-08-15T00:00", closed("2026-09-15T02:00")),
    # --- year fields ----------------------------------------------------------------------
    # The last Sunday of 2025 is 28 December (4 January 2026 is a Sunday).
    ("inside the last window a year field allows", ONLY_2025, "2025-12-28T03:00", inside("2025-12-28T02:00", "2025-12-28T05:00", "2025-12-28T06:00")),
    ("past the cutoff of the very last window", ONLY_2025, "2025-12-28T05:30", past_cutoff("2025-12-28T02:00", "2025-12-28T05:00", "2025-12-28T06:00", None)),
    ("after the last year: never again", ONLY_2025, "2026-06-07T03:00", closed(None)),
    # 1 January 2027 is a Friday, so the first Sunday of 2027 is 3 January.
    ("before the first year", FROM_2027, "2026-06-07T03:00", closed("2027-01-03T02:00")),
    # --- Europe/Berlin DST ------------------------------------------------------------------
    ("Berlin, the day before spring forward (CET)", BERLIN_0230, "2026-03-28T01:30", inside("2026-03-28T01:30", "2026-03-28T03:00", "2026-03-28T03:30")),
    # 29 March: 02:30 does not exist, and AWS skips an occurrence on a non-existent time
    # (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html, daylight
    # saving time). Next: 30 March 02:30 CEST (+2) = 00:30Z.
    ("Berlin spring forward, just before the jump", BERLIN_0230, "2026-03-29T00:59:59", closed("2026-03-30T00:30")),
    ("Berlin spring forward, at the jump: skipped", BERLIN_0230, "2026-03-29T01:00", closed("2026-03-30T00:30")),
    ("Berlin spring forward, later that day", BERLIN_0230, "2026-03-29T02:30", closed("2026-03-30T00:30")),
    # Three fire times in the skipped hour (02:00, 02:20, 02:40) open nothing;
    # the next is 30 March 02:00 CEST = 00:00Z.
    ("Berlin spring forward, fire times in the gap open one window", BERLIN_GAP_EVERY_20M, "2026-03-29T01:30", closed("2026-03-30T00:00")),
    ("Berlin, the day before fall back (CEST)", BERLIN_0230, "2026-10-24T00:30", inside("2026-10-24T00:30", "2026-10-24T02:00", "2026-10-24T02:30")),
    # 25 October: 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET). It opens at the first.
    ("Berlin fall back, before the first 02:30", BERLIN_0230, "2026-10-25T00:29:59", closed("2026-10-25T00:30")),
    ("Berlin fall back, at the first 02:30", BERLIN_0230, "2026-10-25T00:30", inside("2026-10-25T00:30", "2026-10-25T02:00", "2026-10-25T02:30")),
    # 01:15Z reads 02:15 CET, earlier on the wall than 02:30, yet the window opened at 00:30Z.
    ("Berlin fall back, repeated hour, wall clock before 02:30", BERLIN_0230, "2026-10-25T01:15", inside("2026-10-25T00:30", "2026-10-25T02:00", "2026-10-25T02:30")),
    ("Berlin fall back, at the second 02:30: no second window", BERLIN_0230, "2026-10-25T01:30", inside("2026-10-25T00:30", "2026-10-25T02:00", "2026-10-25T02:30")),
    # Next: 26 October 02:30 CET (+1) = 01:30Z, not 25 October 01:30Z.
    ("Berlin fall back, past the cutoff", BERLIN_0230, "2026-10-25T02:00", past_cutoff("2026-10-25T00:30", "2026-10-25T02:00", "2026-10-25T02:30", "2026-10-26T01:30")),
    ("Berlin fall back, after the window", BERLIN_0230, "2026-10-25T02:30", closed("2026-10-26T01:30")),
    # Hourly: 02:00 CEST opens at 00:00Z; 02:00 CET (01:00Z) opens nothing; 03:00 CET is 02:00Z.
    ("Berlin fall back, hourly: the repeated 02:00 opens nothing", BERLIN_HOURLY, "2026-10-25T01:10", closed("2026-10-25T02:00")),
    # --- America/New_York DST -----------------------------------------------------------------
    # 8 March is a Sunday and 02:00 does not exist: skipped, as AWS does. Next Sunday,
    # 15 March 02:00 EDT (-4) = 06:00Z.
    ("New York spring forward, just before the jump", NY_SUNDAY_0200, "2026-03-08T06:59", closed("2026-03-15T06:00")),
    ("New York spring forward, at the jump: skipped", NY_SUNDAY_0200, "2026-03-08T07:00", closed("2026-03-15T06:00")),
    ("New York spring forward, later that day", NY_SUNDAY_0200, "2026-03-08T09:00", closed("2026-03-15T06:00")),
    # Daily 02:30: 8 March's is skipped; 9 March 02:30 EDT (-4) = 06:30Z.
    ("New York spring forward, daily 02:30 is skipped that day", NY_DAILY_0230, "2026-03-08T00:00", closed("2026-03-09T06:30")),
    # 1 November is a Sunday; 02:00 local happens once, as 02:00 EST = 07:00Z.
    # 06:30Z is the second 01:30 (EST); the 25 October window (06:00Z-09:00Z) is long gone.
    ("New York fall back, Sunday 02:00 exists once", NY_SUNDAY_0200, "2026-11-01T06:30", closed("2026-11-01T07:00")),
    # 01:30 happens at 05:30Z (EDT) and 06:30Z (EST): opened at the first, closes 07:30Z.
    ("New York fall back, second 01:30 is inside the first's window", NY_DAILY_0130, "2026-11-01T06:30", inside("2026-11-01T05:30", "2026-11-01T07:30", "2026-11-01T07:30")),
    # Next: 2 November 01:30 EST (-5) = 06:30Z.
    ("New York fall back, after the window", NY_DAILY_0130, "2026-11-01T07:30", closed("2026-11-02T06:30")),
]


@pytest.mark.parametrize(("window", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_window_state_on_hand_checked_dates(window, now, expected):
    defaults = dict(
        configured=True,
        opened_at=None,
        cutoff_at=None,
        closes_at=None,
        next_start=None,
        exhausted=False,
    )
    assert window_state(window, z(now)) == WindowState(**{**defaults, **expected})


def test_no_window_always_allows_a_start():
    state = window_state(None, z("2026-06-07T12:00"))
    assert state == WindowState(configured=False, open=True, can_start=True)
    assert "at any time" in state.summary


def test_now_in_another_offset_is_the_same_instant():
    # 04:00+02:00 is 02:00Z: the opening of the 7 June window.
    now = dt.datetime(2026, 6, 7, 4, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert window_state(SUNDAY_UTC, now) == window_state(SUNDAY_UTC, z("2026-06-07T02:00"))


def test_sub_second_now_respects_boundaries():
    at_open = z("2026-06-07T02:00") + dt.timedelta(microseconds=1)
    assert window_state(SUNDAY_UTC, at_open).can_start
    before = z("2026-06-07T02:00") - dt.timedelta(microseconds=1)
    assert window_state(SUNDAY_UTC, before).next_start == z("2026-06-07T02:00")


@pytest.mark.parametrize(
    ("tz", "local", "expected"),
    [
        # Times in a gap do not exist: nothing opens (AWS skips them).
        ("Europe/Berlin", "2026-03-29T02:30", None),
        ("America/New_York", "2026-03-08T02:00", None),
        # Lord Howe moves by 30 minutes: 02:00 +10:30 → 02:30 +11 on Sunday 4 October;
        # 02:15 does not exist.
        ("Australia/Lord_Howe", "2026-10-04T02:15", None),
        # Folds open at the first occurrence (summer time, the earlier instant).
        ("Europe/Berlin", "2026-10-25T02:30", "2026-10-25T00:30"),
        ("America/New_York", "2026-11-01T01:30", "2026-11-01T05:30"),
        # Ordinary times convert as usual.
        ("Europe/Berlin", "2026-07-01T02:30", "2026-07-01T00:30"),
        ("UTC", "2026-07-01T02:30", "2026-07-01T02:30"),
    ],
)
def test_opening_instant_dst_rule(tz, local, expected):
    naive = dt.datetime.fromisoformat(local)
    assert opening_instant(naive, zoneinfo.ZoneInfo(tz)) == (z(expected) if expected else None)


def test_a_window_never_opens_twice_across_a_fall_back():
    # Hourly in Berlin over 25 October: 24 wall-clock hours in a 25-hour day,
    # so 24 openings, all distinct, the 02:00 one at its CEST occurrence.
    schedule = parse_schedule("0 * * * *", "Europe/Berlin")
    openings, t = [], z("2026-10-24T22:00")  # 00:00 CEST on 25 October
    while t < z("2026-10-25T23:00"):  # 00:00 CET on 26 October
        openings.append(t)
        t = next_opening(schedule, t + dt.timedelta(seconds=1))
    assert len(openings) == len(set(openings)) == 24
    assert z("2026-10-25T00:00") in openings and z("2026-10-25T01:00") not in openings


def test_latest_and_next_opening_agree_at_an_opening():
    schedule = parse_schedule("cron(0 22 ? * 6L *)", "UTC")
    assert latest_opening(schedule, z("2026-07-31T22:00")) == z("2026-07-31T22:00")
    assert next_opening(schedule, z("2026-07-31T22:00")) == z("2026-07-31T22:00")
    assert latest_opening(schedule, z("2026-07-31T21:59:59")) == z("2026-06-26T22:00")


def test_summaries_say_what_to_do():
    assert "rollouts may start until 2026-06-07T05:00:00Z" in window_state(SUNDAY_UTC, z("2026-06-07T03:00")).summary
    assert "next window opens 2026-06-14T02:00:00Z" in window_state(SUNDAY_UTC, z("2026-06-07T05:30")).summary
    assert "past the maintenance window's cutoff" in window_state(SUNDAY_UTC, z("2026-06-07T05:30")).summary
    assert "last date or the window's endDate has passed" in window_state(ONLY_2025, z("2026-06-07T03:00")).summary


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware"):
        window_state(SUNDAY_UTC, dt.datetime(2026, 6, 7, 2, 0))


def test_bad_schedule_raises_schedule_error():
    with pytest.raises(ScheduleError, match="unknown timezone"):
        window_state(window("0 2 * * *", "Mars/Olympus_Mons", H), z("2026-06-07T02:00"))


# -- Systems Manager's scheduleOffset, startDate and endDate ---------------------------------
#
# SSM_OPTIONS Example 4 (https://docs.aws.amazon.com/systems-manager/latest/userguide/
# maintenance-windows-schedule-options.html): --schedule "cron(0 30 23 ? * TUE#3 *)"
# --duration 4 --cutoff 1 --schedule-offset 2: "11:30 PM two days after the third Tuesday of
# each month". December 2026: the third Tuesday is the 15th, so the window is Thursday 17 Dec
# 23:30Z to Friday 18 Dec 03:30Z, new work until 02:30Z.

def ssm_window(offset=2, start=None, end=None, tz="UTC", schedule="cron(0 30 23 ? * TUE#3 *)"):
    return MaintenanceWindow(schedule=schedule, timezone=tz, duration=4 * H, cutoff=1 * H,
                             schedule_offset=offset, start_date=start, end_date=end)


@pytest.mark.parametrize(
    ("name", "win", "now", "expected"),
    [
        ("the cron date itself opens nothing", ssm_window(), "2026-12-15T23:45",
         closed("2026-12-17T23:30")),
        ("two days later the window is open", ssm_window(), "2026-12-17T23:45",
         inside("2026-12-17T23:30", "2026-12-18T02:30", "2026-12-18T03:30")),
        ("an end date inside the window ends it early", ssm_window(end=z("2026-12-18T01:00")),
         "2026-12-17T23:45", inside("2026-12-17T23:30", "2026-12-18T01:00", "2026-12-18T01:00")),
        ("at the end date the window stops and none is left", ssm_window(end=z("2026-12-18T01:00")),
         "2026-12-18T01:00", closed(None)),
        ("an offset date past the end date never opens", ssm_window(end=z("2026-12-17T00:00")),
         "2026-12-16T00:00", closed(None)),
        ("before the start date, the first cron date after it counts",
         ssm_window(start=z("2026-12-16T00:00")), "2026-12-16T00:00", closed("2027-01-21T23:30")),
        # January 2027: Tuesdays 5, 12, 19 → 19 + 2 = Thursday 21 January.
    ],
)
def test_offset_start_and_end_dates(name, win, now, expected):
    state = window_state(win, z(now))
    assert state == WindowState(configured=True, **expected), name


@pytest.mark.parametrize(
    ("source", "now", "expected"),
    [
        # Saturday 31 Oct 01:30 EDT + 1 day = Sunday 1 Nov 01:30, which happens twice in New
        # York: the window opens once, at the first (EDT, 05:30Z).
        ("cron(30 1 ? * SAT *)", "2026-10-31T12:00", "2026-11-01T05:30"),
        # Saturday 7 Mar 02:30 + 1 day = Sunday 8 Mar 02:30, which does not exist: skipped, as
        # AWS skips a non-existent time; the next is Sunday 15 Mar 02:30 EDT = 06:30Z.
        ("cron(30 2 ? * SAT *)", "2026-03-07T12:00", "2026-03-15T06:30"),
    ],
)
def test_an_offset_lands_on_local_days_under_the_dst_rules(source, now, expected):
    schedule = parse_schedule(source, "America/New_York", offset_days=1)
    assert next_opening(schedule, z(now)) == z(expected)


_CRONS = ["cron(0 2 ? * SUN *)", "cron(30 23 ? * TUE#3 *)", "cron(15 10 ? * 6L *)",
          "cron(0 2 L * ? *)", "cron(24 30 09 ? * * *)", "0 */6 * * *"]
_INSTANTS = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2030, 1, 1),
                         timezones=st.just(dt.UTC))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_CRONS), st.integers(0, 6), _INSTANTS)
def test_an_offset_moves_every_opening_by_whole_days(source, days, now):
    plain = parse_schedule(source, "UTC")
    shifted = parse_schedule(source, "UTC", offset_days=days)
    offset = dt.timedelta(days=days)
    assert next_opening(shifted, now) == next_opening(plain, now - offset) + offset
    assert latest_opening(shifted, now) == latest_opening(plain, now - offset) + offset


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*_CRONS, "rate(3 days)", "rate(90 minutes)"]), _INSTANTS, _INSTANTS,
       st.integers(1, 24 * 60))
def test_openings_stay_between_the_start_and_end_dates(source, now, start, span_minutes):
    end = start + dt.timedelta(minutes=span_minutes * 30)
    schedule = parse_schedule(source, "Europe/Berlin", start=start, end=end)
    nxt = next_opening(schedule, now)
    if nxt is not None:
        assert start <= nxt <= end and nxt >= now
    latest = latest_opening(schedule, now)
    if latest is not None:
        assert start <= latest <= min(now, end)
