"""The planner's rebuild phase: a patch without a target digest builds and verifies one.

Approval comes first when the policy wants it (a build costs), then the
stages ``core.rebuild`` decides: start the build once per idempotency key,
follow it, verify the result. This module only carries that decision into
the step: its phase, message and status fields, a stall reason, and a
refused digest added to ``failedDigests``.
"""

from __future__ import annotations

from imagepatch.core import rebuild as rebuilds
from imagepatch.core.rollout.context import Context, Step
from imagepatch.model.imagepatch import Phase
from imagepatch.model.rebuild_status import RebuildStage

# How soon a patch whose policy is missing looks again before its build starts.
MISSING_POLICY_POLL = 30.0


def rebuild_step(
    ctx: Context,
    *,
    build: rebuilds.BuildObservation | None,
    verification: rebuilds.Verification | None,
) -> Step:
    """No target digest yet: approval first (a build costs), then build and verify."""
    patch, recorded = ctx.patch, ctx.patch.status
    if recorded.rebuild.stage == RebuildStage.NOT_STARTED:
        blocked = ctx.before_start(policy_poll=MISSING_POLICY_POLL)
        if blocked is not None:
            return blocked
    # The key is computed here, once, for the intent; later steps read it from status.
    key = (
        rebuilds.idempotency_key(patch.image, patch.new_base_digest, patch.current_digest)
        if recorded.rebuild.stage == RebuildStage.NOT_STARTED
        else recorded.idempotency_key
    )
    step = rebuilds.decide_rebuild(
        rebuild=recorded.rebuild,
        key=key,
        strategy=rebuilds.choice_for(patch, ctx.policy).strategy,
        build=build,
        verification=verification,
        now=ctx.now,
    )
    ctx.phase = Phase(step.phase)
    ctx.message = step.message
    ctx.extra.update(step.fields)
    if step.stalled:
        ctx.stalled = step.stalled
    if step.failed_digest and step.failed_digest not in ctx.failed_digests:
        ctx.failed_digests.append(step.failed_digest)
    return ctx.finish(
        again=step.again, requeue_after=step.requeue_after, start_build=step.start_build
    )
