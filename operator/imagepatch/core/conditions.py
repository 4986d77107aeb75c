"""kstatus-style conditions: build them, and merge them into recorded ones.

A condition keeps its ``lastTransitionTime`` while its status is unchanged,
so users can tell how long something has been true. Each carries the
``observedGeneration`` it was computed for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.model.times import format_time


@dataclass(frozen=True, kw_only=True, slots=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_generation: int

    def as_dict(self, *, last_transition_time: dt.datetime) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": format_time(last_transition_time),
        }


def merge(
    recorded: Iterable[Mapping[str, Any]] | None,
    desired: Iterable[Condition],
    *,
    now: dt.datetime,
    drop: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Return the new condition list.

    ``desired`` conditions replace recorded ones of the same type (keeping the
    old transition time when the status did not change); types in ``drop`` are
    removed, because kstatus reads an absent Stalled/Reconciling as False.
    Other recorded types are kept as they were.
    """
    old = {c.get("type"): dict(c) for c in (recorded or []) if c.get("type")}
    dropped = set(drop)
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cond in desired:
        prev = old.get(cond.type)
        entry = cond.as_dict(last_transition_time=now)
        if (
            prev is not None
            and prev.get("status") == cond.status
            and prev.get("lastTransitionTime")
        ):
            entry["lastTransitionTime"] = prev["lastTransitionTime"]
        result.append(entry)
        seen.add(cond.type)
    for ctype, prev in old.items():
        if ctype not in seen and ctype not in dropped:
            result.append(prev)
    return result
