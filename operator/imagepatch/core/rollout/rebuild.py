"""The planner's rebuild phase: a patch without a target digest builds and verifies one.

Approval comes first when the policy wants it (a build costs), then the
stages ``core.rebuild`` decides: start the build once per idempotency key,
follow it, verify the result. This module only carries that decision into
the step: its phase, message and status fields, a stall reason, and a
refused digest added to ``failedDigests``.

The key (``core.rebuild.idempotency_key``: repository, tag, source digest,
target base digest, builder) is computed once, with the intent, and read back from
status after that. A patch recorded by v0.2 carries an older key,
``<image>|<base digest>``, that two tags of one repository share:

* still starting (no build id recorded): the key is replaced by the current
  one before any build is started or looked for, so the patch can only find
  or start a build of its own tag. A build v0.2 may have started under the
  old key just before it stopped is left to finish on its own; this patch
  starts its own (at worst one build too many, never another tag's);
* a build id already recorded: the key is kept (it names that build). The
  CodeBuild and Job builders check, when they poll, that the build was made
  for this key and pushes where this patch's rebuild goes (``TARGET_IMAGE``,
  the Job's recorded target), so a build of another tag that v0.2 adopted
  ends the patch ``Failed`` (``BuildMismatch``) instead of being rolled out;
  a v0.2 Job, which records only its key, is followed, and its result is read
  from this patch's own push tag (another tag's push is never found there:
  the poll ends ``NothingPushed``). The external and rebase builders adopt
  nothing: they read or compute only this patch's own target.
* a build already finished (``Verifying`` or later): its digest is recorded
  and is not looked at again here. A v0.2 CodeBuild patch that took another
  tag's exported digest before the upgrade would still roll it out: the
  v0.3 release notes say to let open CodeBuild patches of repositories with
  several tags finish (or delete them) before upgrading.
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
    choice = rebuilds.choice_for(patch, ctx.policy)
    current_key = rebuilds.idempotency_key(
        image=patch.image,
        tag=patch.tag,
        current_digest=patch.current_digest,
        new_base_digest=patch.new_base_digest,
        builder=choice.builder,
    )
    stage = recorded.rebuild.stage
    key = current_key if stage == RebuildStage.NOT_STARTED else recorded.idempotency_key
    if stage == RebuildStage.STARTING and not rebuilds.is_current_key(key):
        # A v0.2 key names no tag: re-key before the builder looks for a build of it.
        ctx.phase = Phase.BUILDING
        ctx.message = f"re-keying the rebuild as {current_key} before it starts"
        ctx.extra["idempotencyKey"] = current_key
        return ctx.finish(again=True)
    step = rebuilds.decide_rebuild(
        rebuild=recorded.rebuild,
        key=key,
        strategy=choice.strategy,
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
