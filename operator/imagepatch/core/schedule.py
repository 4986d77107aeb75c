"""Maintenance-window schedules: parse AWS and classic cron, validate timezones.

The schedule forms accepted are those the SSM maintenance-window and
EventBridge documentation accepts, so what users paste from AWS works
(``tests/unit/test_schedule.py`` tables the docs' own examples, each citing
its page), plus the classic cron users of Kubernetes CronJobs write:

* ``cron(Minutes Hours Day-of-month Month Day-of-week Year)``, or the 7-field
  form with a leading ``Seconds`` field that Systems Manager maintenance
  windows accept (``cron(24 30 09 ? * * *)`` is 09:30:24 every day), with ``?``
  in exactly one day field, ``L`` in either day field (``L`` alone in
  day-of-week is Saturday, ``6L`` the last Friday), ``W`` in day-of-month
  (``15W``), ``#`` in day-of-week (``TUE#3``) and a year field; day-of-week
  counts 1-7 from Sunday (``SUN``-``SAT`` also work);
* ``rate(value unit)``: value a positive integer, unit ``minute``, ``hour``
  or ``day``, singular for 1 and plural otherwise (``rate(1 hours)`` is
  invalid, as in EventBridge). A day is 24 elapsed hours, never a calendar
  day, as EventBridge Scheduler documents for daylight saving. With no start
  date in the policy, occurrences are anchored at the Unix epoch (UTC);
* ``at(yyyy-mm-ddThh:mm:ss)``: one window, at that wall-clock time in the
  schedule's timezone;
* classic 5-field cron, ``m h dom mon dow``, day-of-week 0-6 from Sunday.

Systems Manager refuses cron expressions "that lead to rates faster than five
(5) minute[s]" (the SSM cron reference); the AWS forms here do too
(:func:`_check_ssm_rate`). Classic 5-field cron is not an AWS form and keeps
cron's one-minute resolution (a CronJob's schedule is parsed here as well).

A maintenance window's ``scheduleOffset``, ``startDate`` and ``endDate``
(the SSM ``ScheduleOffset``, ``StartDate``, ``EndDate``) travel on the
:class:`Schedule`; ``core.window`` applies them.

Cron forms are translated into one croniter expression (``m h dom mon dow s
year``), so the window arithmetic has one code path for them. What CEL in the CRD cannot check
(field values, an unknown timezone) is checked here and reported with the
field's path; the caller turns it into a ``Stalled``/``InvalidSpec`` condition.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from croniter import croniter
from croniter.croniter import CroniterError

_AWS_FORM = re.compile(r"^\s*cron\((?P<body>[^()]*)\)\s*$")
_RATE_FORM = re.compile(r"^\s*rate\((?P<body>[^()]*)\)\s*$")
_AT_FORM = re.compile(r"^\s*at\((?P<body>[^()]*)\)\s*$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_RATE_MAX_SECONDS = 36_500 * 86400
# The EPOCH anchors rate() schedules (no start date in a policy).
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# SSM: "Cron expressions that lead to rates faster than five (5) minute aren't
# supported" (reference-cron-and-rate-expressions.html).
_SSM_MIN_GAP_SECONDS = 300
_DAY_SECONDS = 86_400
# SSM ScheduleOffset: 1-6 days (CreateMaintenanceWindow, ScheduleOffset).
MAX_SCHEDULE_OFFSET = 6


class ScheduleError(ValueError):
    """A schedule or timezone that cannot be used; the message says why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """A parsed schedule: the source text and its croniter expression.

    Fire times are computed by ``core.window`` (``next_opening``), which walks
    local wall-clock times itself: croniter on aware datetimes fires twice on
    a DST fall-back day.
    """

    source: str
    expression: str
    timezone: zoneinfo.ZoneInfo
    kind: str = "cron"  # "cron" | "rate" | "at"
    every: dt.timedelta | None = None  # rate(): elapsed time between openings
    at: dt.datetime | None = None  # at(): the naive local wall-clock time
    # SSM ScheduleOffset: whole days after each cron fire time (cron forms only).
    offset_days: int = 0
    # SSM StartDate/EndDate: openings only within [start, end] (aware datetimes).
    start: dt.datetime | None = None
    end: dt.datetime | None = None



def parse_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown timezone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from exc


def _aws_dow(field: str) -> str:
    """AWS counts days of week 1-7 from Sunday; cron counts 0-6.

    ``6L`` (last Friday) becomes croniter's ``L5``; ``2#3`` becomes ``1#3``;
    ``L`` alone is the last day of the week, Saturday.
    """
    if field in ("?", "*"):
        return "*"
    out = []
    for part in field.split(","):
        if part.upper() == "L":
            out.append("6")
            continue
        m = re.fullmatch(r"(\d|[A-Za-z]{3})L", part)
        if m:
            out.append(f"L{_dow_number(_aws_dow_token(m.group(1)))}")
            continue
        m = re.fullmatch(r"([0-9A-Za-z]+)#([1-5])", part)
        if m:
            out.append(f"{_aws_dow_token(m.group(1))}#{m.group(2)}")
            continue
        step = ""
        if "/" in part:
            part, step = part.split("/", 1)
            step = "/" + step
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.append(f"{_aws_dow_token(lo)}-{_aws_dow_token(hi)}{step}")
        elif part == "*":
            out.append(f"*{step}")
        else:
            out.append(f"{_aws_dow_token(part)}{step}")
    return ",".join(out)


def _aws_dow_number(token: str) -> str:
    n = int(token)
    if not 1 <= n <= 7:
        raise ScheduleError(f"day-of-week {token} is out of range 1-7 (AWS form counts from SUN=1)")
    return str(n - 1)


def _aws_dow_token(token: str) -> str:
    if token.upper() in _DOW_NAMES:
        return token.upper()
    if token.isdigit():
        return _aws_dow_number(token)
    raise ScheduleError(f"day-of-week {token!r} is not 1-7 or SUN-SAT")


def _dow_number(token: str) -> str:
    return str(_DOW_NAMES.index(token)) if token in _DOW_NAMES else token


def parse_rate(body: str) -> dt.timedelta:
    """``value unit`` of ``rate(...)``, as EventBridge defines it."""
    parts = body.split()
    if len(parts) != 2 or not parts[0].isdigit() or parts[0] != str(int(parts[0])):
        raise ScheduleError(
            f"rate({body}) must be rate(value unit), value a positive integer"
        )
    value, unit = int(parts[0]), parts[1]
    if value < 1:
        raise ScheduleError(f"rate({body}): the value must be a positive integer")
    singular = unit in _RATE_UNITS
    if not singular and not (unit.endswith("s") and unit[:-1] in _RATE_UNITS):
        raise ScheduleError(f"rate({body}): the unit must be minute(s), hour(s) or day(s)")
    if (value == 1) != singular:
        raise ScheduleError(
            f"rate({body}): the unit must be singular for 1 and plural otherwise"
        )
    seconds = value * _RATE_UNITS[unit.removesuffix("s")]
    if seconds > _RATE_MAX_SECONDS:
        # Nothing useful opens less often, and datetimes end in year 9999.
        raise ScheduleError(f"rate({body}) is longer than 100 years")
    return dt.timedelta(seconds=seconds)


def parse_at(body: str) -> dt.datetime:
    """``yyyy-mm-ddThh:mm:ss`` of ``at(...)``: a naive wall-clock time."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", body):
        raise ScheduleError(f"at({body}) must be at(yyyy-mm-ddThh:mm:ss)")
    try:
        return dt.datetime.strptime(body, "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:
        raise ScheduleError(f"at({body}) is not a real date and time") from exc


def to_croniter(source: str) -> str:
    """Translate an AWS or 5-field cron schedule into a croniter expression."""
    m = _AWS_FORM.match(source)
    if m:
        fields = m.group("body").split()
        if len(fields) not in (6, 7):
            raise ScheduleError(
                "AWS form needs 6 fields (minutes hours day-of-month month day-of-week year),"
                f" or 7 with a leading seconds field, got {len(fields)}"
            )
        # SSM maintenance windows: "A seventh field, the Seconds field (the
        # first in a cron expression), is optional".
        second = fields.pop(0) if len(fields) == 7 else "0"
        minute, hour, dom, month, dow, year = fields
        # AWS requires '?' in exactly one of day-of-month and day-of-week.
        if (dom == "?") == (dow == "?"):
            raise ScheduleError(
                "AWS form needs '?' in exactly one of day-of-month and day-of-week"
            )
        if "#" in dow and "," in dow:
            # EventBridge: with '#', day-of-week holds only one expression.
            raise ScheduleError(
                "with '#', day-of-week may hold only one expression (e.g. not '3#1,6#3')"
            )
        for number in re.findall(r"\d+", year):
            if not 1970 <= int(number) <= 2199:
                raise ScheduleError(f"year {number} is outside 1970-2199")
        if "LW" in dom.upper():
            raise ScheduleError(
                "'LW' (last weekday of the month) is not supported; use 'L' or a day"
            )
        if "?" in (second, minute, hour, month, year):
            raise ScheduleError("'?' is only allowed in day-of-month or day-of-week")
        dom = "*" if dom == "?" else dom
        return " ".join([minute, hour, dom, month, _aws_dow(dow), second, year])
    fields = source.split()
    if len(fields) != 5:
        raise ScheduleError(
            "expected 5-field cron (minute hour day-of-month month day-of-week)"
            f" or cron(...) with 6 fields, got {len(fields)} fields"
        )
    return " ".join([*fields, "0", "*"])


def parse_schedule(
    source: str,
    timezone: str,
    *,
    offset_days: int = 0,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> Schedule:
    """Parse and validate; raise ``ScheduleError`` naming what is wrong.

    ``offset_days``, ``start`` and ``end`` are a maintenance window's SSM
    ``ScheduleOffset``, ``StartDate`` and ``EndDate``.
    """
    if not isinstance(source, str):
        raise ScheduleError("the schedule must be a string")
    tz = parse_timezone(timezone)
    _check_period(offset_days, start, end)
    rate = _RATE_FORM.match(source)
    at = _AT_FORM.match(source)
    if offset_days and (rate or at):
        # SSM: "schedule offsets for cron expressions only".
        raise ScheduleError("a schedule offset is only allowed with a cron expression")
    if rate:
        every = parse_rate(rate.group("body").strip())
        return Schedule(source=source, expression="", timezone=tz, kind="rate", every=every,
                        offset_days=offset_days, start=start, end=end)
    if at:
        when = parse_at(at.group("body").strip())
        return Schedule(source=source, expression="", timezone=tz, kind="at", at=when,
                        offset_days=offset_days, start=start, end=end)
    expression = to_croniter(source)
    if not croniter.is_valid(expression):
        raise ScheduleError(f"{source!r} is not a valid cron expression")
    try:
        # A valid expression can still never fire (e.g. 30 February, or a past year).
        croniter(expression, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"{source!r} never matches a date") from exc
    if _AWS_FORM.match(source):
        _check_ssm_rate(source, expression)
    return Schedule(source=source, expression=expression, timezone=tz,
                    offset_days=offset_days, start=start, end=end)


def _check_period(offset_days: int, start: dt.datetime | None, end: dt.datetime | None) -> None:
    if not 0 <= offset_days <= MAX_SCHEDULE_OFFSET:
        raise ScheduleError(f"the schedule offset must be 1-{MAX_SCHEDULE_OFFSET} days")
    for when in (start, end):
        if when is not None and when.utcoffset() is None:
            raise ScheduleError("start and end dates must carry a UTC offset")
    if start is not None and end is not None and end <= start:
        raise ScheduleError("the end date must be after the start date")


def _check_ssm_rate(source: str, expression: str) -> None:
    """Refuse an AWS cron form that fires less than five minutes apart (SSM's rule).

    Two fire times are closest within one day's times of day (every second,
    minute and hour combination), or across midnight, from the day's last
    time to the next day's first: both are checked. The day fields only pick
    which days fire, so they cannot bring two times closer (the across-midnight
    check assumes two consecutive days may both fire, which errs on refusing).
    """
    expanded, _ = croniter.expand(expression)

    def values(field: Sequence[int | str], every: range) -> list[int]:
        return list(every) if field == ["*"] else [int(v) for v in field]

    minutes = values(expanded[0], range(60))
    hours = values(expanded[1], range(24))
    seconds = values(expanded[5], range(60))
    times = sorted(h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    gaps.append(_DAY_SECONDS - times[-1] + times[0])
    if min(gaps) < _SSM_MIN_GAP_SECONDS:
        raise ScheduleError(
            f"{source!r} fires less than 5 minutes apart; Systems Manager does not"
            " support cron expressions faster than every 5 minutes"
        )
