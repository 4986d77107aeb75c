"""The one reconcile path: observe → plan → act → record.

Every kopf handler, timer and (later) queue event calls into here. Each call
recomputes the outcome from the object as it is now and from what was
recorded in its status, never from a diff alone, so a missed or merged event
does no harm and a restarted operator resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from imagepatch.core.policy import policy_status

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def reconcile_policy(
    *, body: Mapping[str, Any], patch: MutableMapping[str, Any], clock: Clock = utcnow
) -> dict[str, Any]:
    """Record the policy's status; write only what changed, so events settle."""
    recorded = dict(body.get("status") or {})
    desired = policy_status(body, now=clock())
    changed = {k: v for k, v in desired.items() if recorded.get(k) != v}
    if changed:
        patch.setdefault("status", {}).update(changed)
    return desired
