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

A StatefulSet needs Kubernetes' "forced rollback" as well: with
``podManagementPolicy: OrderedReady`` (the default) its controller waits for
a broken pod of the bad revision to get Ready before it replaces anything, so
the reverted template alone never reaches it (``Parallel``: see
``core.kinds.forced_rollback``). The revision that ran the bad
image is recorded in the entry (``badRevision``) with the rollback write;
once the controller has observed the restored template, the pods of that
revision that block it are named in the entry (``deletedPods``, and its
message) and then deleted, each only if still the pod observed
(``core.kinds.forced_rollback`` decides which).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from imagepatch.core import health, kinds, reasons
from imagepatch.core.images import parse_image
from imagepatch.core.rollout import writeback
from imagepatch.core.rollout.context import (
    GATE_POLL,
    Context,
    DeletePods,
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
        return ctx.go_on()
    entry = ctx.entries[index]
    dep = workload.deployment or {}
    image = (container_of(dep, entry.target.container) or {}).get("image", "")
    # A write-back target's rollback is a revert commit; the GitOps tool applies
    # the image that was in Git (previousImage), and that is what must be back.
    restore = entry.previous_image if entry.git_branch else entry.restore_image
    if entry.git_branch and (step := writeback.rolling_back(ctx, index=index,
                                                            workload=workload)) is not None:
        return step
    if image == entry.target_image:
        why = drift(entry, dep, expected_image=entry.target_image)
        if why:
            return external_change(ctx, index=index, why=why)
        # The revision that runs the bad image, recorded with the rollback write
        # (after it, the controller's updateRevision is the restored one).
        _learn_bad_revision(ctx, index=index, workload=workload)
        return ctx.finish(action=_restore(ctx, index=index, deployment=dep), again=True)
    if image != restore:
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
        image=restore,
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
            message=f"rolled back to {restore}: {entry.message}",
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
            message=f"{restore} is unhealthy too ({verdict.message});"
            " imagepatch stopped",
        )
        ctx.phase = Phase.FAILED
        ctx.stalled = reasons.ROLLBACK_FAILED
        ctx.message = f"{describe(entry.target)}: rollback failed: {verdict.message}"
        return ctx.end_or_go_on()
    forced = _forced_rollback(ctx, index=index, workload=workload)
    if forced is not None:
        return forced
    ctx.message = f"rolling back {describe(entry.target)}: waiting for {restore}"
    return ctx.finish(requeue_after=GATE_POLL)


# Where the forced rollback's note starts in the entry's message (it is
# rewritten, not appended, when more pods are deleted).
_FORCED_NOTE = "; forced rollback: "


def _learn_bad_revision(ctx: Context, *, index: int, workload: Workload) -> None:
    """Record the StatefulSet revision that runs the target image, if not yet known."""
    entry = ctx.entries[index]
    if entry.target.kind != kinds.STATEFULSET or entry.bad_revision:
        return
    revision = kinds.bad_revision(workload.deployment or {}, workload.pods,
                                  container=entry.target.container, image=entry.target_image)
    if revision:
        ctx.entries[index] = replace(entry, bad_revision=revision)


def _forced_rollback(ctx: Context, *, index: int, workload: Workload) -> Step | None:
    """A StatefulSet's forced rollback: name the blocking pods of the bad revision, then delete.

    The names are recorded (intent) in the same step whose action deletes
    them; a pod named before and still there (its delete failed, or it
    changed since read) is deleted again, each time only if still the pod
    observed. None when there is nothing to delete.
    """
    _learn_bad_revision(ctx, index=index, workload=workload)
    entry = ctx.entries[index]
    if not entry.bad_revision:
        return None
    stuck = kinds.forced_rollback(workload.deployment or {}, workload.pods,
                                  bad_revision=entry.bad_revision)
    recorded = entry.deleted_pods
    fresh = [p.name for p in stuck if p.name not in recorded]
    room = max(kinds.FORCED_ROLLBACK_LIMIT - len(recorded), 0)
    named = (*recorded, *fresh[:room])
    doomed = tuple(p for p in stuck if p.name in named)
    if not doomed:
        return None
    left = len(fresh) - len(fresh[:room])
    one = len(named) == 1
    it = "it" if one else "them"
    note = (
        f"{_FORCED_NOTE}deleted pod{'' if one else 's'} {', '.join(named)} of the bad revision"
        f" {entry.bad_revision} (not Running and Ready: the StatefulSet controller waits on"
        f" {it} and would never replace {it}); the controller recreates {it} from the restored"
        " template"
    )
    if left:
        note += (
            f"; {left} more such pod{'' if left == 1 else 's'} left for a human"
            f" (at most {kinds.FORCED_ROLLBACK_LIMIT} are deleted)"
        )
    ctx.entries[index] = replace(
        entry, deleted_pods=named, message=entry.message.split(_FORCED_NOTE)[0] + note
    )
    if fresh[:room]:
        ctx.warn(
            entry.target,
            reason=reasons.FORCED_ROLLBACK,
            message=f"deleting {', '.join(fresh[:room])} of the bad revision"
            f" {entry.bad_revision}: the StatefulSet controller recreates"
            f" {'it' if len(fresh[:room]) == 1 else 'them'} from the restored template"
            f" ({entry.restore_image})",
        )
    ctx.message = (
        f"rolling back {describe(entry.target)}: deleting {', '.join(p.name for p in doomed)}"
        f" of the bad revision {entry.bad_revision}"
    )
    return ctx.finish(delete_pods=DeletePods(target=entry.target, pods=doomed), again=True)


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
