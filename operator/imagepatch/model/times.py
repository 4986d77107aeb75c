"""Time as imagepatch reads and writes it: the clock, and RFC 3339 text.

Kubernetes writes times as RFC 3339 in UTC with a ``Z``, to the second
(``2026-03-08T07:00:00Z``); Leases use microseconds, Security Hub
milliseconds. Everything that formats or parses a time does it here, and
everything that needs the current time takes a :data:`Clock` so that tests
can inject one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The real clock: now, as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def utc(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC; a naive time can only mean UTC."""
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as Kubernetes writes times."""
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def format_micro_time(when: dt.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_milli_time(when: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as Security Hub writes its own times."""
    return utc(when).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time as the API writes it, or None when absent or unreadable.

    For what others wrote (status, annotations, findings): a naive time is
    taken as UTC, and anything that is not a readable time string is None.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_time_strict(value: str | None) -> dt.datetime | None:
    """The inverse of :func:`format_time` (any RFC 3339 time); None for empty.

    For times the operator wrote itself: an unreadable one is a bug, so it
    raises ``ValueError`` instead of passing unnoticed.
    """
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
