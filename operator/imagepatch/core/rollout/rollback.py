"""Rolling a target back, and the failed-digest memory it leaves.

``RollingBack`` is recorded (by the gate) before anything is written, so a
restart mid-rollback finishes the rollback and never rolls forward again.
The rollback action names the failed digest (``PatchImage.failed``): the
reconciler records it in the operator's memory (``adapters.memory``, in the
operator's namespace) *before* it writes the image that ran, pinned to its
digest. That memory outlives the ImagePatch (history retention may delete
it), so the same bad rebuild is never rolled out there again; a tenant cannot
erase or forge it. The write also carries the workload's
``imagepatch.dev/failed-digests`` annotation, a mirror for people that is
never read back for a decision. The restored
image only needs to be available again (no soak); if it is unhealthy too,
the patch fails with ``RollbackFailed`` for a human to look at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from imagepatch.core import health, reasons
from imagepatch.core.images import parse_image
from imagepatch.core.rollout.context import (
    GATE_POLL,
    Context,
    FailedDigest,
    PatchImage,
    Step,
    Workload,
    container_of,
    describe,
    is_pinned,
)
from imagepatch.core.rollout.drift import drift, external_change, gone
from imagepatch.core.rollout.gate import PASSED, assess
from imagepatch.model.imagepatch import Phase, TargetPhase
from imagepatch.model.times import format_time


def rolling_back(ctx: Context, *, index: int, workload: Workload) -> Step:
    """``RollingBack``: write the image that ran, then wait until it is available again."""
    if gone(ctx, index=index, workload=workload, when=" mid-rollback"):
        return ctx.conclude()
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
        return ctx.conclude()
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
        return ctx.finish()
    ctx.message = f"rolling back {describe(entry.target)}: waiting for {entry.restore_image}"
    return ctx.finish(requeue_after=GATE_POLL)


def _restore(ctx: Context, *, index: int, deployment: Mapping[str, Any]) -> PatchImage:
    """The rollback write: the image to restore, naming the failed digest to remember.

    The reconciler records ``failed`` in the operator's memory before it
    writes, and sets the workload's annotation mirror from that record: the
    annotation a tenant may have edited is never read here.
    """
    entry = ctx.entries[index]
    failed = parse_image(entry.target_image).digest or ""
    return PatchImage(
        target=entry.target,
        image=entry.restore_image,
        resource_version=deployment["metadata"]["resourceVersion"],
        pinned=is_pinned(entry.restore_image),
        failed=FailedDigest(digest=failed, key=ctx.patch.key, patch=ctx.patch.name, at=ctx.now)
        if failed
        else None,
    )
