"""The planner's entry point: which phase the patch is in, and whose step comes next.

``plan`` decides the patch-level questions (closed by detection, rejected,
suspended, no policy, awaiting approval) and hands every other step to the
module of its phase: ``rebuild`` (no target digest yet), ``targets``
(pinning, a pending target, patching), ``gate`` (gating) and ``rollback``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import replace

from imagepatch.core import reasons
from imagepatch.core import rebuild as rebuilds
from imagepatch.core.rollout.context import (
    POLICY_POLL,
    Candidate,
    Context,
    GitResult,
    Step,
    Window,
    Workload,
)
from imagepatch.core.rollout.gate import gating
from imagepatch.core.rollout.rebuild import rebuild_step
from imagepatch.core.rollout.rollback import rolling_back
from imagepatch.core.rollout.targets import patching, pin, start_pending
from imagepatch.model.imagepatch import ApprovalDecision, ImagePatch, Phase, TargetPhase
from imagepatch.model.policy import PolicySpec


def plan(
    *,
    patch: ImagePatch,
    policy: PolicySpec | None,
    candidates: Sequence[Candidate] | None,
    workload: Workload | None,
    window: Window,
    now: dt.datetime,
    build: rebuilds.BuildObservation | None = None,
    verification: rebuilds.Verification | None = None,
    held_by: Mapping[tuple[str, str, str, str], str] | None = None,
    git: GitResult | None = None,
) -> Step:
    """The next step for ``patch``; ``workload`` is the observed ``active_target``.

    The step concerns the target ``workload`` was observed for: the one in
    line (targets go one at a time, wave by wave), or a CronJob whose gate is
    awaited on the side (``context.on_the_side``).

    Without a target digest (pinned, or verified from a rebuild) the step is a
    rebuild step: ``build`` and ``verification`` are what the reconcile loop
    observed of the rebuild this pass.

    ``candidates`` are looked for only when this returns ``discover`` (a patch
    without ``spec.targets`` about to pin them): None means not looked for.
    ``held_by`` maps each container that another open patch is changing to
    that patch's name; it matters only when a target is about to start.
    ``git`` is what this pass's Git write-back did (``Step.git``), to record.
    """
    if patch.status.phase.terminal:
        return Step(status={})
    ctx = Context.begin(patch=patch, policy=policy, now=now)
    ctx.git_result = git
    early = _patch_level(ctx)
    if early is not None:
        return early
    if not ctx.digest:
        return rebuild_step(ctx, build=build, verification=verification)
    if not ctx.started:
        blocked = ctx.before_start(policy_poll=POLICY_POLL)
        if blocked is not None:
            return blocked
        if not ctx.entries:
            return pin(ctx, candidates=candidates)
    steppable = ctx.steppable()
    if not steppable:
        return ctx.conclude()
    index = next(
        (i for i in steppable if workload is not None and ctx.entries[i].target == workload.target),
        None,
    )
    if index is None or workload is None:
        # Observed for a target this step does not concern (the record moved on): observe again.
        return ctx.finish(again=True)
    entry = ctx.entries[index]
    if entry.phase == TargetPhase.PENDING:
        return start_pending(
            ctx, index=index, workload=workload, window=window, held_by=held_by or {}
        )
    ctx.phase = Phase.ROLLING_OUT
    if entry.phase == TargetPhase.PATCHING:
        return patching(ctx, index=index, workload=workload)
    if entry.phase == TargetPhase.GATING:
        return gating(ctx, index=index, workload=workload)
    if entry.phase == TargetPhase.ROLLING_BACK:
        return rolling_back(ctx, index=index, workload=workload)
    raise AssertionError(f"unhandled target phase {entry.phase}")  # pragma: no cover


def _patch_level(ctx: Context) -> Step | None:
    """A close request, a rejection, or a suspended policy before anything started."""
    patch = ctx.patch
    # Detection asks; the planner (the one writer of status) closes, and only
    # while nothing has been changed yet: a started rollout runs to its end.
    if patch.close_requested and not ctx.started:
        ctx.phase = Phase.CLOSED
        ctx.message = f"closed: {patch.close_requested}"
        for i, e in enumerate(ctx.entries):
            ctx.entries[i] = replace(e, phase=TargetPhase.SKIPPED, reason="Closed")
        return ctx.finish()
    # A rejection closes the patch, whatever the policy's approval mode.
    if patch.approval and patch.approval.decision == ApprovalDecision.REJECTED:
        if ctx.digest and ctx.digest not in ctx.failed_digests:
            ctx.failed_digests.append(ctx.digest)
        ctx.phase = Phase.FAILED
        ctx.by = patch.approval.by
        ctx.message = f"rejected by {patch.approval.by or 'a human'}" + (
            f": {patch.approval.reason}" if patch.approval.reason else ""
        )
        for i, e in enumerate(ctx.entries):
            if e.phase == TargetPhase.PENDING:
                ctx.entries[i] = replace(e, phase=TargetPhase.SKIPPED, reason=reasons.REJECTED)
        return ctx.finish()
    if not ctx.started and ctx.policy is not None and ctx.policy.suspend:
        # Checked before anything starts: no build, no pinning, no patch.
        ctx.message = "policy is suspended: nothing starts until it is resumed"
        ctx.waiting = reasons.SUSPENDED
        return ctx.finish(requeue_after=POLICY_POLL)
    return None
