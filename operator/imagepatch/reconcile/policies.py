"""Reconcile an ImagePatchPolicy into its status (conditions, observedGeneration)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from imagepatch.core.policy import policy_status
from imagepatch.model.times import Clock, utcnow


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


