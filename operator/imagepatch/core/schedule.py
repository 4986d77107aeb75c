"""Maintenance-window schedules: parse AWS and classic cron, validate timezones.

Two schedule forms are accepted, as users of SSM maintenance windows and of
Kubernetes CronJobs would write them:

* AWS form, ``cron(Minutes Hours Day-of-month Month Day-of-week Year)``, with
  ``?``, ``L``, ``W``, ``#`` and a year field; day-of-week counts 1-7 from
  Sunday (``SUN``-``SAT`` also work);
* classic 5-field cron, ``m h dom mon dow``, day-of-week 0-6 from Sunday.

Both are translated into one croniter expression (``m h dom mon dow s year``),
so the window arithmetic has one code path. What CEL in the CRD cannot check
(field values, an unknown timezone) is checked here and reported with the
field's path; the caller turns it into a ``Stalled``/``InvalidSpec`` condition.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass

from croniter import croniter
from croniter.croniter import CroniterError

_AWS_FORM = re.compile(r"^\s*cron\((?P<body>[^()]*)\)\s*$")
_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


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



def parse_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown timezone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from exc


def _aws_dow(field: str) -> str:
    """AWS counts days of week 1-7 from Sunday; cron counts 0-6.

    ``6L`` (last Friday) becomes croniter's ``L5``; ``2#3`` becomes ``1#3``.
    """
    if field in ("?", "*"):
        return "*"
    out = []
    for part in field.split(","):
        m = re.fullmatch(r"(\d)L", part)
        if m:
            out.append(f"L{_aws_dow_number(m.group(1))}")
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


def to_croniter(source: str) -> str:
    """Translate an AWS or 5-field cron schedule into a croniter expression."""
    m = _AWS_FORM.match(source)
    if m:
        fields = m.group("body").split()
        if len(fields) != 6:
            raise ScheduleError(
                "AWS form needs 6 fields (minutes hours day-of-month month day-of-week year),"
                f" got {len(fields)}"
            )
        minute, hour, dom, month, dow, year = fields
        # AWS requires '?' in exactly one of day-of-month and day-of-week.
        if (dom == "?") == (dow == "?"):
            raise ScheduleError(
                "AWS form needs '?' in exactly one of day-of-month and day-of-week"
            )
        if "LW" in dom.upper():
            raise ScheduleError(
                "'LW' (last weekday of the month) is not supported; use 'L' or a day"
            )
        dom = "*" if dom == "?" else dom
        return " ".join([minute, hour, dom, month, _aws_dow(dow), "0", year])
    fields = source.split()
    if len(fields) != 5:
        raise ScheduleError(
            "expected 5-field cron (minute hour day-of-month month day-of-week)"
            f" or cron(...) with 6 fields, got {len(fields)} fields"
        )
    return " ".join([*fields, "0", "*"])


def parse_schedule(source: str, timezone: str) -> Schedule:
    """Parse and validate; raise ``ScheduleError`` naming what is wrong."""
    tz = parse_timezone(timezone)
    expression = to_croniter(source)
    if not croniter.is_valid(expression):
        raise ScheduleError(f"{source!r} is not a valid cron expression")
    try:
        # A valid expression can still never fire (e.g. 30 February, or a past year).
        croniter(expression, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"{source!r} never matches a date") from exc
    return Schedule(source=source, expression=expression, timezone=tz)
