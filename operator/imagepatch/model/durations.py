"""Go-style duration strings (``90s``, ``1h30m``, ``1.5h``) to and from ``timedelta``.

The CRDs declare every duration field with :data:`DURATION_PATTERN` and check
bounds with CEL's ``duration()``, which parses Go syntax. This module accepts
exactly what that pattern accepts (units ``h``, ``m``, ``s`` and ``ms``,
fractions allowed, no sign), so a string the API server let through always
parses here, and one rejected here would have been rejected there.
"""

from __future__ import annotations

import datetime as dt
import re
from fractions import Fraction

__all__ = ["DURATION_PATTERN", "MAX_DURATION", "format_duration", "parse_duration"]

# Kept byte-for-byte equal to the ``pattern`` of every duration field in crds/.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

# Go's time.Duration is int64 nanoseconds, and CEL's duration() fails beyond it
# (about 2562047h), so the API server rejects anything longer; so do we.
MAX_DURATION = dt.timedelta(microseconds=(2**63 - 1) // 1000)

_WHOLE = re.compile(DURATION_PATTERN)
# "ms" must be tried before "m" and "s", or "5ms" would read as 5m + "s".
_TERM = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_NANOS_PER_UNIT = {
    "h": 3600 * 10**9,
    "m": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
}


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``text`` (e.g. ``"1h30m"``, ``"1.5s"``, ``"250ms"``) into a timedelta.

    Raises ``ValueError`` with a message meant to follow a field name
    (``spec.x: <message>``). Sub-microsecond parts are truncated, because
    ``timedelta`` cannot hold them.
    """
    if not isinstance(text, str):
        raise ValueError(f"must be a duration string such as 1h30m, not {type(text).__name__}")
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a duration: use numbers with units h, m, s or ms, "
            "such as 90s, 1h30m or 1.5h"
        )
    # Exact rational arithmetic: "0.1h" must be 6 minutes, not 5m59.999999s.
    nanos = sum(Fraction(number) * _NANOS_PER_UNIT[unit] for number, unit in _TERM.findall(text))
    micros = int(nanos // 1000)
    if micros > MAX_DURATION // dt.timedelta(microseconds=1):
        raise ValueError(f"{text!r} is too long: durations are limited to about 2562047h")
    return dt.timedelta(microseconds=micros)


def format_duration(value: dt.timedelta) -> str:
    """Format a non-negative timedelta compactly in the same syntax (``1h30m``, ``0s``).

    ``parse_duration(format_duration(d)) == d`` for whole milliseconds.
    """
    if value < dt.timedelta(0):
        raise ValueError("durations are never negative")
    millis = value // dt.timedelta(milliseconds=1)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    seconds, millis = divmod(millis, 1000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds:
        parts.append(f"{seconds}s")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts) or "0s"
