"""The health gate: one seam that judges a workload, and what its verdict does to a target.

``assess`` is the seam: it takes the observed workload and returns the
verdict for one container at one image, by the gate of the workload's kind
(``core.kinds``: a Deployment's is ``core.health``; StatefulSets, DaemonSets
and CronJobs have their own). Gating a new image and checking a restored one
both go through it.

A CronJob whose policy asks for a trial run (``rollout.cronJobTrialRun``)
gets one when its gate starts: the Job's name is recorded in the entry
(``trialJob``) first, then the step asks for the Job, as ``kubectl create
job --from=cronjob/NAME`` would make it, until it is observed.

``gating`` is the ``Gating`` phase: a healthy target is done (a ``Patched``
event), an unhealthy one is still waited for, and a failed one either starts
its rollback (``RollingBack`` recorded first, the write follows) or, when the
policy disables rollback, fails the target. Either way the digest is recorded
as failed, and the targets not started yet that the failure stops are
skipped (``Context.stop_after``: with ``rollout.onTargetFailure: Continue``,
the default, those of its namespace and of every later wave; with
``StopAll``, all). The deadline runs from the recorded ``startedAt``, so a
restart during the gate does not extend it.

A CronJob's gate is awaited on the side (``context.on_the_side``): the
patch moves on to its other targets while it waits for the CronJob's run,
which ``core.kinds`` bounds (``rollout.cronJobRunWithin``), so every gate ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from imagepatch.core import flagger, health, kinds, kinds_rollout, reasons
from imagepatch.core.rollout.context import (
    GATE_POLL,
    Context,
    Step,
    Workload,
    WorkloadEvent,
    describe,
    is_pinned,
)
from imagepatch.core.rollout.drift import drift, external_change, gone
from imagepatch.model.imagepatch import Phase, RolloutEntry, TargetPhase
from imagepatch.model.policy import Rollout
from imagepatch.model.times import format_time, parse_time_strict

# How soon a CronJob's gate waiting for a scheduled run looks again, at most.
CRONJOB_POLL = 30.0
# The verdicts that pass a gate.
PASSED = (health.HealthState.HEALTHY, health.HealthState.SCALED_TO_ZERO)


def assess(
    workload: Workload,
    *,
    container: str,
    image: str,
    gate: Rollout,
    started_at: str,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
    rollback: bool = False,
) -> health.HealthVerdict:
    """The gate's verdict on ``container`` running ``image`` since ``started_at`` (recorded).

    ``rollback``: ``image`` is the restored one (a CronJob then waits for no run).
    """
    started = parse_time_strict(started_at)
    return kinds.assess(
        kind=workload.target.kind,
        workload=since(workload.deployment or {}, started),
        pods=workload.pods,
        jobs=workload.jobs,
        target_images={container: image},
        gate=gate,
        started_at=started or now,
        healthy_since=healthy_since,
        now=now,
        rollback=rollback,
    )


def since(deployment: Mapping[str, Any], started: dt.datetime | None) -> Mapping[str, Any]:
    """The Deployment without conditions last updated before ``started``.

    A ``ProgressDeadlineExceeded`` left over from the rollout being undone (or
    from an earlier one) says nothing about the rollout that started since;
    judging by it would fail a healthy rollback. Times have one-second
    resolution, so a condition from the very second we started counts as old.
    """
    if started is None:
        return deployment
    conditions = deployment.get("status", {}).get("conditions") or []
    fresh = [
        c
        for c in conditions
        if (
            parse_time_strict(c.get("lastUpdateTime") or c.get("lastTransitionTime") or "")
            or started
        )
        > started
    ]
    if len(fresh) == len(conditions):
        return deployment
    return {**deployment, "status": {**deployment["status"], "conditions": fresh}}


def gating(ctx: Context, *, index: int, workload: Workload) -> Step:
    """``Gating``: judge the new image; done when healthy, rollback when failed."""
    if gone(ctx, index=index, workload=workload, when=" mid-rollout"):
        return ctx.finish(again=True)
    entry = ctx.entries[index]
    why = drift(entry, workload.deployment or {}, expected_image=entry.target_image)
    if why:
        return external_change(ctx, index=index, why=why)
    now = ctx.now
    trial = _trial_run(ctx, index=index, workload=workload)
    if trial is not None:
        return trial
    verdict = assess(
        workload,
        container=entry.target.container,
        image=entry.target_image,
        gate=ctx.gate,
        started_at=entry.started_at,
        healthy_since=parse_time_strict(entry.healthy_since),
        now=now,
    )
    state = verdict.state
    if state in PASSED:
        ctx.entries[index] = replace(
            entry,
            phase=TargetPhase.HEALTHY,
            finished_at=format_time(now),
            healthy_since=entry.healthy_since or format_time(now),
            reason=verdict.reason or "Healthy",
            message=verdict.message,
        )
        ctx.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Normal",
                reason="Patched",
                message=f"{entry.target.container} now runs {entry.target_image}"
                " and passed the health gate",
            )
        )
        return ctx.finish(again=True)
    if state == health.HealthState.FAILED:
        return _failed(ctx, index=index, verdict=verdict)
    healthy_since = format_time(verdict.healthy_since) if verdict.healthy_since else ""
    ctx.entries[index] = replace(
        entry,
        healthy_since=healthy_since,
        reason=verdict.reason or str(state),
        message=verdict.message,
    )
    ctx.message = f"{describe(entry.target)}: {verdict.message or state}"
    if kinds_rollout.wants_promotion(verdict, ctx.gate):
        # The entry says why first; promoting twice is harmless (Argo's own promote).
        return ctx.finish(promote=entry.target, requeue_after=GATE_POLL)
    return ctx.finish(requeue_after=_poll(verdict))


def _poll(verdict: health.HealthVerdict) -> float:
    """How soon to look again: soon while a rollout moves, at most CRONJOB_POLL for a schedule."""
    if verdict.reason != health.HealthReason.AWAITING_RUN or verdict.recheck_after is None:
        return GATE_POLL
    return min(CRONJOB_POLL, max(GATE_POLL, verdict.recheck_after.total_seconds()))


def _trial_run(ctx: Context, *, index: int, workload: Workload) -> Step | None:
    """A CronJob's trial run: record its name, then ask for it until it is observed."""
    entry = ctx.entries[index]
    cronjob = workload.deployment or {}
    if not kinds.trial_run_wanted(entry.target.kind, cronjob, ctx.gate):
        return None
    if not entry.trial_job:
        name = kinds.trial_job_name(
            entry.target.name, patch=ctx.patch.name, started_at=entry.started_at
        )
        ctx.entries[index] = replace(
            entry, trial_job=name, message=f"starting trial run {name} of the patched template"
        )
        return ctx.finish(again=True)  # the name is recorded before the Job exists
    if any((j.get("metadata") or {}).get("name") == entry.trial_job for j in workload.jobs):
        return None
    return ctx.finish(trial_job=entry.trial_job, again=True)


def _failed(ctx: Context, *, index: int, verdict: health.HealthVerdict) -> Step:
    """The gate failed: remember the digest, stop later targets, roll back (or stop)."""
    entry = ctx.entries[index]
    reason = str(verdict.reason or "Unhealthy")
    # The reason leads the message unless the message already says it.
    message = verdict.message if reason in verdict.message else f"{reason}: {verdict.message}"
    if ctx.digest not in ctx.failed_digests:
        ctx.failed_digests.append(ctx.digest)
    ctx.stop_after(index, reason=reasons.EARLIER_TARGET_FAILED, why=reason, gate_failed=True)
    if not ctx.gate.rollback:
        ctx.entries[index] = replace(
            entry,
            phase=TargetPhase.FAILED,
            reason=reason,
            message=message,
            finished_at=format_time(ctx.now),
        )
        ctx.phase = Phase.FAILED
        ctx.stalled = reasons.ROLLBACK_DISABLED
        ctx.message = f"{describe(entry.target)}: {message} (rollback disabled in policy)"
        ctx.warn(entry.target, reason=reasons.HEALTH_GATE_FAILED, message=ctx.message)
        return ctx.end_or_go_on()
    if entry.target.kind == kinds_rollout.ROLLOUT:
        message = kinds_rollout.with_rollback_note(message)
    elif verdict.reason == health.HealthReason.CANARY_FAILED:
        message = flagger.with_rollback_note(message)
    ctx.entries[index] = replace(
        entry,
        phase=TargetPhase.ROLLING_BACK,
        reason=reason,
        message=message + unpinned_note(entry),
        rollback_started_at=format_time(ctx.now),
    )
    ctx.message = f"rolling back {describe(entry.target)}: {message}"
    ctx.warn(
        entry.target,
        reason=reasons.ROLLING_BACK,
        message=f"{message}; restoring {entry.restore_image}",
    )
    return ctx.finish(again=True)


def unpinned_note(entry: RolloutEntry) -> str:
    """Said on the entry when rollback restores a bare tag (no digest was ever known)."""
    if is_pinned(entry.restore_image):
        return ""
    return (
        f"; no digest was ever known for {entry.restore_image}, so rollback restores the tag,"
        " which a rebuild may have moved"
    )
