"""Maintenance-window math: may a rollout start now, and if not, when?

Modelled on SSM maintenance windows. A window opens at each fire time of the
policy's ``maintenanceWindow.schedule`` (read in its ``timezone``), stays open
for ``duration``, and accepts new work only until ``cutoff`` before it closes::

    opened_at                    cutoff_at            closes_at
        |-- new rollouts may start --|-- running ones finish --|
        [ can_start                  )                         )

Both ends are half-open: a rollout may start at exactly ``opened_at`` but not
at exactly ``cutoff_at``, and the window is closed at exactly ``closes_at``.
The planner (``core/``) asks :func:`window_state` before each roll-forward,
and the reconciler shows ``next_start`` as the ImagePatch's
``nextWindowStart`` while it waits in ``AwaitingWindow``. A rollout that has
started keeps its gate after the cutoff and after the window closes: only
*starting* is limited, as in SSM.

Schedules are parsed by :mod:`imagepatch.core.schedule` (AWS ``cron(...)``
with ``?``, ``L``, ``W``, ``#`` and years, ``rate(...)``, ``at(...)``, or
5-field cron). The wall-clock fire times of cron forms come from croniter on
*naive* local times, and this module turns each one into an instant itself,
so daylight saving time follows the rule AWS documents for EventBridge
Scheduler ("Schedule types on EventBridge Scheduler", daylight saving time),
instead of croniter's (which, for an aware datetime, fires twice on the
fall-back day):

* **Spring forward** (the local time does not exist, e.g. 02:30 on
  29 March 2026 in Europe/Berlin, when clocks jump from 02:00 to 03:00): that
  occurrence is **skipped**, as AWS skips an invocation that falls on a
  non-existent time. The next fire time opens the next window.
* **Fall back** (the local time happens twice, e.g. 02:30 on 25 October 2026
  in Europe/Berlin): the window opens once, at the first occurrence (02:30
  CEST, 00:30 UTC; PEP 495 ``fold=0``), and the repeated hour opens nothing,
  as AWS runs such a schedule only once.
* ``rate(...)`` counts elapsed time (a day is 24 hours, as AWS documents),
  so clock changes do not move it; ``at(...)`` is one wall-clock time, under
  the same two rules as a cron fire time.

Systems Manager's active-period options are applied here too
("Maintenance window scheduling and active period options" in the SSM user
guide):

* ``scheduleOffset`` (SSM ``ScheduleOffset``, cron forms only): each window
  opens that many calendar days after its cron fire time, at the same local
  wall-clock time ("the third Tuesday of every month at 11:30 PM" with offset
  2 opens on the Thursday at 11:30 PM), under the two DST rules above.
* ``startDate`` (SSM ``StartDate``): only cron fire times at or after it
  count, so a fire time before it opens nothing even when its offset date
  falls after it (the SSM note: a cron date already passed plus an offset in
  the future "won't run in the period"). ``rate(...)`` counts from the start
  date instead of the epoch (SSM example 2: ``rate(7 days)`` from Tuesday
  1 January opens every Tuesday).
* ``endDate`` (SSM ``EndDate``, when the window "becomes inactive"): no
  window opens after it, and an open window stops accepting new rollouts at
  it (its cutoff and close are clipped to the end date).

Each existing local fire time therefore opens exactly one window, and opening
instants never decrease as local fire times increase. Every window has the same
duration and cutoff, so the most recent opening at or before ``now`` has the
latest close and the latest cutoff of all windows opened so far: whether
``now`` is inside *any* window, however many overlap (a daily schedule with a
168h duration), is decided by that one window alone.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from imagepatch.core.schedule import Schedule, parse_schedule
from imagepatch.model.policy import MaintenanceWindow
from imagepatch.model.times import format_time

__all__ = [
    "WindowState",
    "latest_opening",
    "next_opening",
    "opening_instant",
    "window_state",
]

_UTC = dt.UTC
_SECOND = dt.timedelta(seconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)  # rate() anchor (core.schedule.EPOCH)
# Fire times skipped in a row before giving up: only spring-forward gaps are
# skipped, so a real schedule never comes near this.
_MAX_STEPS = 10_000


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowState:
    """Where ``now`` falls relative to the maintenance windows. Times are UTC.

    ``opened_at``, ``cutoff_at`` and ``closes_at`` describe the window ``now``
    is in (the most recent one, if windows overlap) and are ``None`` when
    ``now`` is outside every window. ``next_start`` is the next opening at or
    after ``now`` whenever a rollout cannot start now, and ``None`` when it can.
    ``exhausted`` is true when no window will ever open again (every year in
    the schedule's year field has passed): the caller reports that instead of
    waiting for a ``next_start`` that will never come.

    Without a configured window, rollouts may always start: ``open`` and
    ``can_start`` are true, ``configured`` is false, and the times are ``None``.
    """

    configured: bool
    open: bool
    can_start: bool
    opened_at: dt.datetime | None = None
    cutoff_at: dt.datetime | None = None
    closes_at: dt.datetime | None = None
    next_start: dt.datetime | None = None
    exhausted: bool = False

    @property
    def summary(self) -> str:
        """One sentence for a status message or an Event."""
        if not self.configured:
            return "no maintenance window is configured; rollouts may start at any time"
        if self.can_start:
            return (
                f"inside the maintenance window until {_fmt(self.closes_at)};"
                f" rollouts may start until {_fmt(self.cutoff_at)}"
            )
        if self.exhausted:
            return (
                "no maintenance window opens again: the schedule's last date"
                " or the window's endDate has passed"
            )
        if self.open:
            return (
                f"past the maintenance window's cutoff ({_fmt(self.cutoff_at)});"
                f" the next window opens {_fmt(self.next_start)}"
            )
        return f"outside the maintenance window; the next window opens {_fmt(self.next_start)}"


_ALWAYS = WindowState(configured=False, open=True, can_start=True)


def window_state(window: MaintenanceWindow | None, now: dt.datetime) -> WindowState:
    """Where ``now`` (an aware datetime) falls for ``window``; ``None`` is always open.

    Raises :class:`~imagepatch.core.schedule.ScheduleError` for a schedule or
    timezone that cannot be used (the caller reports ``InvalidSpec``).
    """
    _require_aware(now)
    if window is None:
        return _ALWAYS
    schedule = parse_schedule(
        window.schedule,
        window.timezone,
        offset_days=window.schedule_offset,
        start=window.start_date,
        end=window.end_date,
    )
    now = now.astimezone(_UTC)

    opened_at = latest_opening(schedule, now)
    if opened_at is not None:
        closes_at = opened_at + window.duration
        cutoff_at = closes_at - window.cutoff
        if schedule.end is not None:
            # The window becomes inactive at its end date (SSM EndDate).
            closes_at = min(closes_at, schedule.end)
            cutoff_at = min(cutoff_at, schedule.end)
    if opened_at is not None and now < closes_at:
        if now < cutoff_at:
            return WindowState(
                configured=True,
                open=True,
                can_start=True,
                opened_at=opened_at,
                cutoff_at=cutoff_at,
                closes_at=closes_at,
            )
        nxt = next_opening(schedule, now)
        return WindowState(
            configured=True,
            open=True,
            can_start=False,
            opened_at=opened_at,
            cutoff_at=cutoff_at,
            closes_at=closes_at,
            next_start=nxt,
            exhausted=nxt is None,
        )
    nxt = next_opening(schedule, now)
    return WindowState(
        configured=True, open=False, can_start=False, next_start=nxt, exhausted=nxt is None
    )


def opening_instant(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime | None:
    """The UTC instant a window scheduled at naive wall-clock time ``local`` opens.

    An existing or repeated local time opens at its first occurrence; a local
    time inside a spring-forward gap opens nothing: ``None`` (module docstring).
    """
    first = local.replace(tzinfo=tz, fold=0).astimezone(_UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        # It exists. In a fall-back fold, fold=0 is the earlier occurrence.
        return first
    return None


def latest_opening(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The most recent window opening at or before ``now`` (UTC), or ``None``.

    Honours the schedule's offset and its start and end dates (module docstring).
    """
    _require_aware(now)
    limit = now if schedule.end is None else min(now, schedule.end)
    if schedule.kind == "rate":
        assert schedule.every is not None
        anchor = _rate_anchor(schedule)
        if limit < anchor:
            return None
        return anchor + ((limit - anchor) // schedule.every) * schedule.every
    if schedule.kind == "at":
        assert schedule.at is not None
        opened = opening_instant(schedule.at, schedule.timezone)
        if opened is None or opened > limit or not _after_start(schedule, opened):
            return None
        return opened
    tz = schedule.timezone
    offset = dt.timedelta(days=schedule.offset_days)
    # Walk local fire times backwards, starting a little after the limit's wall
    # clock (less the offset): in the repeated hour of a fall-back, a fire time
    # that reads later than now's wall clock may already have opened (02:30
    # CEST opened at 00:30Z; at 01:15Z the clock reads 02:15 CET). Openings
    # never decrease as local times increase, so the first one at or before
    # the limit is the answer.
    start = _local_naive(limit, tz) - offset + _offset_swing(tz, limit) + _SECOND
    it = croniter(schedule.expression, start)
    for _ in range(_MAX_STEPS):
        try:
            local = it.get_prev(dt.datetime)
        except CroniterBadDateError:
            return None  # no earlier fire time (a year field in the future)
        if not _after_start(schedule, _fire_instant(local, tz)):
            return None  # every earlier fire time is before the start date too
        opened = opening_instant(local + offset, tz)
        if opened is not None and opened <= limit:
            return opened
    return None


def next_opening(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The first window opening at or after ``now`` (UTC), or ``None`` if none is left.

    Honours the schedule's offset and its start and end dates (module docstring).
    """
    _require_aware(now)
    opened = _next_opening(schedule, now)
    if opened is not None and schedule.end is not None and opened > schedule.end:
        return None  # the window's end date has passed by then
    return opened


def _next_opening(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    if schedule.kind == "rate":
        assert schedule.every is not None
        anchor = _rate_anchor(schedule)
        if now <= anchor:
            return anchor
        steps = -((anchor - now) // schedule.every)  # ceiling division
        return anchor + steps * schedule.every
    if schedule.kind == "at":
        assert schedule.at is not None
        opened = opening_instant(schedule.at, schedule.timezone)
        if opened is None or opened < now or not _after_start(schedule, opened):
            return None
        return opened
    tz = schedule.timezone
    offset = dt.timedelta(days=schedule.offset_days)
    # Start a little before the wall clock of now less the offset (or of the
    # start date, if later): a fire time inside a gap that ended at or after
    # now reads earlier than now's wall clock but opens at the end of the gap.
    begin = now - offset
    if schedule.start is not None and schedule.start > begin:
        begin = schedule.start
    start = _local_naive(begin, tz) - _offset_swing(tz, begin) - _SECOND
    it = croniter(schedule.expression, start)
    for _ in range(_MAX_STEPS):
        try:
            local = it.get_next(dt.datetime)
        except CroniterBadDateError:
            return None  # every year in the year field has passed
        if not _after_start(schedule, _fire_instant(local, tz)):
            continue
        opened = opening_instant(local + offset, tz)
        if opened is not None and opened >= now:
            return opened
    return None


def _rate_anchor(schedule: Schedule) -> dt.datetime:
    # SSM example 2: rate(7 days) with a start date runs from that date.
    return _EPOCH if schedule.start is None else schedule.start.astimezone(_UTC)


def _fire_instant(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """A cron fire time as an instant, only to compare with the start date."""
    return local.replace(tzinfo=tz, fold=0).astimezone(_UTC)


def _after_start(schedule: Schedule, when: dt.datetime) -> bool:
    return schedule.start is None or when >= schedule.start


def _local_naive(when: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    # Whole seconds: schedules have minute resolution, and croniter's
    # get_prev/get_next are exclusive of their start.
    return when.astimezone(tz).replace(tzinfo=None, microsecond=0)


def _offset_swing(tz: zoneinfo.ZoneInfo, now: dt.datetime) -> dt.timedelta:
    """How far wall clocks near ``now`` move relative to UTC (0 without DST changes).

    Sampling the offset hourly over two days either side finds any transition
    that can matter here (they are hours apart, at most one a day).
    """
    offsets = [
        (now + dt.timedelta(hours=h)).astimezone(tz).utcoffset() or dt.timedelta(0)
        for h in range(-48, 49)
    ]
    return max(offsets) - min(offsets)


def _require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (use datetime.now(datetime.UTC))")


def _fmt(when: dt.datetime | None) -> str:
    if when is None:
        return "never"
    return format_time(when)
