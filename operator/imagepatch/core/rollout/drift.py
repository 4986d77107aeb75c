"""What changed under the planner's feet: a target gone, or changed by someone else.

The planner never overwrites a human's change. Before each write and while
gating it compares the workload with what it left there: the container's
image, and the pod template's fingerprint (recorded when the target started).
A difference fails the target with ``ExternalChange`` and stops the targets
not started yet of its namespace (``rollout.onTargetFailure: Continue``, the
default: other teams' targets go on) or all of them (``StopAll``); the patch
ends ``Failed``, stalled, once every other target has its verdict. A
workload deleted, or its container removed, is not a failure: the target is
skipped with the reason and the patch moves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from imagepatch.core import health, reasons
from imagepatch.core.rollout.context import Context, Step, Workload, container_of, describe
from imagepatch.model.imagepatch import Phase, RolloutEntry, TargetPhase
from imagepatch.model.policy import OnTargetFailure
from imagepatch.model.times import format_time


def gone(ctx: Context, *, index: int, workload: Workload | None, when: str) -> bool:
    """Whether the target can no longer be acted on (deleted, or its container removed).

    When gone, the entry is skipped with the reason: nothing is left to patch,
    gate or roll back there, and the patch moves on to its next target.
    """
    dep = workload.deployment if workload else None
    target = ctx.entries[index].target
    if dep is None:
        ctx.skip(
            index, reason=reasons.WORKLOAD_DELETED, message=f"{describe(target)} was deleted{when}"
        )
        return True
    if container_of(dep, target.container) is None:
        ctx.skip(
            index,
            reason=reasons.CONTAINER_NOT_FOUND,
            message=f"{describe(target)}: the container was removed or renamed{when}",
        )
        return True
    return False


def drift(entry: RolloutEntry, dep: Mapping[str, Any], *, expected_image: str) -> str:
    """Why the workload no longer looks like what the operator left, or ''."""
    container = container_of(dep, entry.target.container)
    if container is None:
        return f"container {entry.target.container} was removed"
    image = container.get("image", "")
    if image != expected_image:
        return f"container {entry.target.container} image changed to {image} by someone else"
    if (
        entry.fingerprint
        and health.pod_template_fingerprint(dep, managed_containers=[entry.target.container])
        != entry.fingerprint
    ):
        return "the pod template was changed by someone else"
    return ""


def external_change(ctx: Context, *, index: int, why: str) -> Step:
    """Someone else changed the target: fail it, stop the rest, and say so on the workload."""
    entry = ctx.entries[index]
    ctx.entries[index] = replace(
        entry,
        phase=TargetPhase.FAILED,
        reason=reasons.EXTERNAL_CHANGE,
        message=why + "; imagepatch stopped and did not overwrite it",
        finished_at=format_time(ctx.now),
    )
    ctx.stop_after(index, reason=reasons.EXTERNAL_CHANGE, why=why, gate_failed=False)
    ctx.phase = Phase.FAILED
    ctx.stalled = reasons.EXTERNAL_CHANGE
    ctx.message = f"{describe(entry.target)}: {why}"
    stopped = (
        "; rollout stopped"
        if ctx.on_failure == OnTargetFailure.STOP_ALL
        else f"; no other target in namespace {entry.target.namespace} is started"
    )
    ctx.warn(entry.target, reason=reasons.EXTERNAL_CHANGE, message=ctx.message + stopped)
    return ctx.end_or_go_on()
