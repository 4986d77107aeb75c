"""Argo Rollouts' ``Rollout`` as a registered kind (issue 23).

The Rollout's logic (its verdict, promotion and abort patches) lives in
``core.kinds_rollout``; this module is its entry in ``core.kinds.REGISTRY``:
the gate is Argo's own verdict over imagepatch's pod checks, and a Rollout is
always patchable (Argo moves its pods itself, whatever the strategy).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.core import kinds_rollout
from imagepatch.core.health import HealthVerdict
from imagepatch.core.kinds.shared import Kind
from imagepatch.model.policy import Rollout

ROLLOUT = kinds_rollout.ROLLOUT


def _gate(
    *,
    workload: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
    rollback: bool,
) -> HealthVerdict:
    del jobs  # a Rollout runs no Jobs
    return kinds_rollout.assess(
        rollout=workload, pods=pods, target_images=target_images, gate=gate,
        started_at=started_at, healthy_since=healthy_since, now=now, rollback=rollback,
    )  # fmt: skip


KIND = Kind(name=ROLLOUT, api_version=kinds_rollout.API_VERSION, gate=_gate)
