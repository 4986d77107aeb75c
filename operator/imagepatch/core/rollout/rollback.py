"""Rolling a target back, and the failed-digest memory it leaves on the workload.

``RollingBack`` is recorded (by the gate) before anything is written, so a
restart mid-rollback finishes the rollback and never rolls forward again.
The rollback writes the image that ran, pinned to its digest, together with
the failed digest added to the workload's ``imagepatch.dev/failed-digests``
annotation: that memory outlives the ImagePatch (history retention may delete
it), so the same bad rebuild is never rolled out there again. The restored
image only needs to be available again (no soak); if it is unhealthy too,
the patch fails with ``RollbackFailed`` for a human to look at.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from imagepatch.core import health, reasons
from imagepatch.core.images import parse_image
from imagepatch.core.rollout.context import (
    FAILED_ANNOTATION,
    FAILED_MEMORY,
    GATE_POLL,
    Context,
    PatchImage,
    Step,
    Workload,
    container_of,
    describe,
    is_pinned,
)
from imagepatch.core.rollout.drift import drift, external_change, gone
from imagepatch.core.rollout.gate import PASSED, assess
from imagepatch.model.imagepatch import ImagePatch, Phase, TargetPhase
from imagepatch.model.times import format_time


def failed_memory(deployment: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The failed-digest memory recorded on a workload: ``[{digest, key, patch, at}]``."""
    raw = ((deployment or {}).get("metadata") or {}).get("annotations", {}).get(FAILED_ANNOTATION)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, dict) and isinstance(e.get("digest"), str)]


def remember_failed(
    deployment: Mapping[str, Any], *, digest: str, patch: ImagePatch, now: dt.datetime
) -> str:
    """The memory with ``digest`` added (newest last, at most FAILED_MEMORY entries)."""
    memory = [e for e in failed_memory(deployment) if e.get("digest") != digest]
    entry = {"digest": digest, "patch": patch.name, "at": format_time(now)}
    if patch.key:
        entry["key"] = patch.key
    memory.append(entry)
    return json.dumps(memory[-FAILED_MEMORY:], sort_keys=True, separators=(",", ":"))


def rolling_back(ctx: Context, *, index: int, workload: Workload) -> Step:
    """``RollingBack``: write the image that ran, then wait until it is available again."""
    if gone(ctx, index=index, workload=workload, when=" mid-rollback"):
        return ctx.go_on()
    entry = ctx.entries[index]
    dep = workload.deployment or {}
    image = (container_of(dep, entry.target.container) or {}).get("image", "")
    if image == entry.target_image:
        why = drift(entry, dep, expected_image=entry.target_image)
        if why:
            return external_change(ctx, index=index, why=why)
        return ctx.finish(action=_restore(ctx, index=index, deployment=dep), again=True)
    if image != entry.restore_image:
        return external_change(
            ctx,
            index=index,
            why=f"container {entry.target.container} image changed to {image} by someone else",
        )
    # The previous image is back: it only needs to be available again, no soak.
    gate = ctx.gate
    verdict = assess(
        workload,
        container=entry.target.container,
        image=entry.restore_image,
        gate=replace(gate, healthy_for=dt.timedelta(0), max_restarts=max(gate.max_restarts, 0)),
        started_at=entry.rollback_started_at,
        healthy_since=None,
        now=ctx.now,
        rollback=True,
    )
    if verdict.state in PASSED:
        ctx.entries[index] = replace(
            entry, phase=TargetPhase.ROLLED_BACK, finished_at=format_time(ctx.now)
        )
        ctx.warn(
            entry.target,
            reason=reasons.ROLLED_BACK,
            message=f"rolled back to {entry.restore_image}: {entry.message}",
        )
        return ctx.go_on()
    if verdict.state == health.HealthState.FAILED:
        ctx.entries[index] = replace(
            entry,
            phase=TargetPhase.FAILED,
            reason=reasons.ROLLBACK_FAILED,
            message=f"the previous image is unhealthy too: {verdict.message}",
            finished_at=format_time(ctx.now),
        )
        ctx.warn(
            entry.target,
            reason=reasons.ROLLBACK_FAILED,
            message=f"{entry.restore_image} is unhealthy too ({verdict.message});"
            " imagepatch stopped",
        )
        ctx.phase = Phase.FAILED
        ctx.stalled = reasons.ROLLBACK_FAILED
        ctx.message = f"{describe(entry.target)}: rollback failed: {verdict.message}"
        return ctx.end_or_go_on()
    ctx.message = f"rolling back {describe(entry.target)}: waiting for {entry.restore_image}"
    return ctx.finish(requeue_after=GATE_POLL)


def _restore(ctx: Context, *, index: int, deployment: Mapping[str, Any]) -> PatchImage:
    """The rollback write: the image to restore, with the failed digest remembered."""
    entry = ctx.entries[index]
    # The failed digest is remembered on the workload in the same write:
    # it outlives this ImagePatch (history retention may delete it).
    failed = parse_image(entry.target_image).digest or ""
    memory = (
        {
            FAILED_ANNOTATION: remember_failed(
                deployment, digest=failed, patch=ctx.patch, now=ctx.now
            )
        }
        if failed
        else {}
    )
    return PatchImage(
        target=entry.target,
        image=entry.restore_image,
        resource_version=deployment["metadata"]["resourceVersion"],
        annotations=memory,
        pinned=is_pinned(entry.restore_image),
    )
