"""A workload owner's hold: "do not patch this workload until then" (issue 22).

``kubectl imagepatch hold KIND/NAME --until 3d --reason "release freeze"``
writes the annotation ``imagepatch.dev/hold`` on the workload, a small JSON
object::

    {"at": "2026-12-05T23:00:00Z", "until": "2026-12-08T23:00:00Z",
     "reason": "release freeze", "by": "alice@example.com"}

``until`` is required (an RFC 3339 time with its offset); ``at`` (when the
hold was set), ``reason`` and ``by`` (the kubeconfig user, as ``reject``
records it) are optional; other keys are ignored. ``kubectl imagepatch
release KIND/NAME`` removes it.

The annotation is the workload owner's *request*, never authority:

* it can only make imagepatch do less. While a hold is active detection
  proposes no patch for the workload (it reads ``Held``, with until, by and
  reason, when it would otherwise have been patched), and a rollout does not
  start on it (the target is skipped, reason ``Held``). A target already
  being patched goes on to its health gate, and a rollback is never blocked:
  nothing on those paths reads a hold.
* it ends by itself at ``until``, and lasts at most :data:`MAX_HOLD` (30
  days) from ``at``: a later ``until`` is cut to ``at`` + 30 days. A hold
  without ``at`` (written by hand) counts only while ``until`` is within 30
  days of now. Renewing a hold is a new, deliberate request.
* a hold that cannot be read (not JSON, no ``until``, ``at`` in the future,
  too long…) is ignored, and :func:`status` says why (``kubectl imagepatch
  why`` prints it): imagepatch then patches the workload as usual.
  Detection also posts a ``HoldIgnored`` Warning Event on the workload
  (:func:`ignored`), once per distinct annotation value: the operator's
  memory keeps the value's fingerprint (``model/memory.py``, ``holdWarned``).

Pure: the callers pass the workload body (or its annotations) and now.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.core import reasons
from imagepatch.core.gitops import Skip
from imagepatch.model.names import HOLD_ANNOTATION
from imagepatch.model.times import format_time, parse_time

__all__ = [
    "DEFAULT_HOLD",
    "MAX_HOLD",
    "Hold",
    "HoldError",
    "HoldStatus",
    "Standing",
    "annotation",
    "blocked",
    "fingerprint",
    "ignored",
    "parse_duration",
    "parse_until",
    "read",
    "skip",
    "status",
]

# The longest a hold lasts, from when it was set: a forgotten hold must not
# keep a vulnerable image running for a quarter.
MAX_HOLD = dt.timedelta(days=30)
# `hold` without --until.
DEFAULT_HOLD = dt.timedelta(hours=24)
# An ``at`` this far in the future is a clock's error; beyond it, a lie.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Longest annotation value read, and longest reason/by copied into a message.
MAX_LENGTH = 1024
MAX_TEXT = 200
# How much of an unreadable annotation value a HoldIgnored Event echoes: it is
# a tenant's text, so the Event stays small whatever they wrote.
MAX_ECHO = 80

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class HoldError(ValueError):
    """A ``--until`` the plugin refuses, saying what to write instead."""


class Standing(enum.StrEnum):
    """What a workload's hold annotation amounts to now."""

    NONE = "None"  # no annotation
    ACTIVE = "Active"
    EXPIRED = "Expired"
    IGNORED = "Ignored"  # unreadable: imagepatch patches the workload as usual


@dataclass(frozen=True, kw_only=True, slots=True)
class Hold:
    """A readable hold. ``until`` is the effective end (already cut to ``at`` + 30 days)."""

    until: dt.datetime
    at: dt.datetime | None = None
    reason: str = ""
    by: str = ""
    capped: bool = False  # the requested until was later than at + MAX_HOLD


@dataclass(frozen=True, kw_only=True, slots=True)
class HoldStatus:
    standing: Standing
    hold: Hold | None = None
    problem: str = ""  # why an Ignored hold is ignored

    def describe(self) -> str:
        """One line for ``kubectl imagepatch why`` ("" when there is no hold)."""
        if self.standing is Standing.IGNORED:
            return (f"Hold ignored ({HOLD_ANNOTATION}): {self.problem}; imagepatch patches "
                    "this workload as usual.")
        if self.hold is None:
            return ""
        if self.standing is Standing.EXPIRED:
            return f"Hold expired at {format_time(self.hold.until)}{_who(self.hold)}."
        return f"Held until {format_time(self.hold.until)}{_who(self.hold)}" + (
            f" (cut to {MAX_HOLD.days} days from when it was set)" if self.hold.capped else ""
        ) + ": no patch is proposed or rolled out for it until then."


def _who(hold: Hold) -> str:
    return (f" by {hold.by}" if hold.by else "") + (f": {hold.reason}" if hold.reason else "")


def _text(value: str) -> str:
    text = _CONTROL.sub(" ", value).strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def read(raw: object) -> Hold | str:
    """The hold an annotation value asks for, or why it cannot be read (before any time check)."""
    if not isinstance(raw, str) or len(raw) > MAX_LENGTH:
        return f"longer than {MAX_LENGTH} characters" if isinstance(raw, str) else "not text"
    try:
        doc = json.loads(raw)
    except ValueError:
        return 'not JSON (want {"until": "<RFC 3339 time>", "reason": "..."})'
    if not isinstance(doc, dict):
        return 'not a JSON object (want {"until": "<RFC 3339 time>", "reason": "..."})'
    until = _time(doc.get("until"))
    if until is None:
        return "until: want an RFC 3339 time with its offset, e.g. 2026-12-24T00:00:00Z"
    at = None
    if "at" in doc:
        at = _time(doc["at"])
        if at is None:
            return "at: want an RFC 3339 time with its offset, e.g. 2026-12-05T09:00:00Z"
    for field in ("reason", "by"):
        if not isinstance(doc.get(field, ""), str):
            return f"{field}: want a string"
    capped = at is not None and until > at + MAX_HOLD
    return Hold(until=at + MAX_HOLD if capped and at is not None else until, at=at,
                reason=_text(doc.get("reason", "")), by=_text(doc.get("by", "")), capped=capped)


def _time(value: object) -> dt.datetime | None:
    # An offset is required: a naive time means whatever the writer's clock meant.
    if not isinstance(value, str) or not re.search(r"(Z|[+-]\d{2}:?\d{2})$", value):
        return None
    return parse_time(value)


def status(annotations: Mapping[str, Any] | None, now: dt.datetime) -> HoldStatus:
    """What the hold in ``annotations`` amounts to at ``now``."""
    raw = (annotations or {}).get(HOLD_ANNOTATION)
    if raw is None:
        return HoldStatus(standing=Standing.NONE)
    hold = read(raw)
    if isinstance(hold, str):
        return HoldStatus(standing=Standing.IGNORED, problem=hold)
    if hold.at is not None and hold.at > now + CLOCK_SKEW:
        return HoldStatus(standing=Standing.IGNORED, hold=hold,
                          problem=f"at {format_time(hold.at)} is in the future")
    if hold.at is None and hold.until > now + MAX_HOLD:
        return HoldStatus(
            standing=Standing.IGNORED, hold=hold,
            problem=f"until {format_time(hold.until)} is more than {MAX_HOLD.days} days away "
            "(a hold lasts at most 30 days; `kubectl imagepatch hold` records when it was set)",
        )
    if now >= hold.until:
        return HoldStatus(standing=Standing.EXPIRED, hold=hold)
    return HoldStatus(standing=Standing.ACTIVE, hold=hold)


def _annotations(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = workload.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def fingerprint(raw: object) -> str:
    """A short, stable name for an annotation value (what the operator remembers of it)."""
    text = raw if isinstance(raw, str) else repr(raw)
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def ignored(workload: Mapping[str, Any], now: dt.datetime) -> tuple[str, str, str] | None:
    """(HoldIgnored, message, fingerprint) when ``workload``'s hold cannot be honoured, else None.

    The message says what is wrong and how to fix it, and echoes at most
    :data:`MAX_ECHO` characters of the value (control characters blanked).
    The caller posts it once per fingerprint.
    """
    annotations = _annotations(workload)
    current = status(annotations, now)
    if current.standing is not Standing.IGNORED:
        return None
    raw = annotations.get(HOLD_ANNOTATION)
    shown = _CONTROL.sub(" ", raw if isinstance(raw, str) else repr(raw))
    if len(shown) > MAX_ECHO:
        shown = shown[: MAX_ECHO - 3] + "..."
    return reasons.HOLD_IGNORED, (
        f"{HOLD_ANNOTATION} {shown!r} is ignored: {current.problem}. imagepatch patches this "
        "workload as usual; to hold it, write the annotation with `kubectl imagepatch hold "
        "KIND/NAME --until 3d --reason ...` (at most 30 days), or remove it with "
        "`kubectl imagepatch release KIND/NAME`"
    ), fingerprint(raw)


def blocked(workload: Mapping[str, Any], now: dt.datetime) -> tuple[str, str] | None:
    """(Held, message) while ``workload`` is held, else None.

    Detection asks before proposing a patch for the workload, the rollout
    before starting a target on it (a hold set after the patch was proposed).
    """
    current = status(_annotations(workload), now)
    if current.standing is not Standing.ACTIVE or current.hold is None:
        return None
    hold = current.hold
    return reasons.HELD, (
        f"held until {format_time(hold.until)}{_who(hold)} ({HOLD_ANNOTATION}); "
        "`kubectl imagepatch release` ends it sooner"
    )


def skip(workload: Mapping[str, Any], now: dt.datetime) -> Skip | None:
    """Detection's form of :func:`blocked`: the workload gets no patch intent while held."""
    held = blocked(workload, now)
    return None if held is None else Skip(reason=held[0], message=held[1])


def parse_duration(text: str) -> dt.timedelta | None:
    """``90m``, ``12h``, ``3d``, ``1w``, ``1d12h`` as a duration; None when it is not one."""
    if not _DURATION.fullmatch(text):
        return None
    return dt.timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(text)))


def parse_until(text: str | None, now: dt.datetime) -> dt.datetime:
    """``--until``: a duration from now, an RFC 3339 time, or a date (its 00:00 UTC).

    Refused: a time without an offset, one not in the future, one more than
    30 days away.
    """
    if not text:
        return now + DEFAULT_HOLD
    value = text.strip()
    duration = parse_duration(value)
    if duration is not None:
        until: dt.datetime | None = now + duration
    else:
        until = _time(value + "T00:00:00Z" if _DATE.fullmatch(value) else value)
    if until is None:
        raise HoldError(
            f"--until {text!r}: want a duration (90m, 12h, 3d, 1w), a date (2026-12-24) "
            "or an RFC 3339 time with its offset (2026-12-24T08:00:00Z)"
        )
    if until <= now:
        raise HoldError(f"--until {text!r}: {format_time(until)} is not in the future")
    if until > now + MAX_HOLD:
        raise HoldError(f"--until {text!r}: a hold lasts at most {MAX_HOLD.days} days "
                        f"(until {format_time(now + MAX_HOLD)})")
    return until


def annotation(*, until: dt.datetime, now: dt.datetime, reason: str = "", by: str = "") -> str:
    """The annotation value ``hold`` writes."""
    doc = {"at": format_time(now), "until": format_time(until)}
    if reason:
        doc["reason"] = _text(reason)
    if by:
        doc["by"] = _text(by)
    return json.dumps(doc, separators=(",", ":"))
