"""The rollout planner: from an ImagePatch's record and what is observed, the next step.

This is a pure function of (ImagePatch spec + recorded status, policy,
observed workload, window, clock). It returns one ``Step``: the status to
record, and at most one side effect (an image patch) to perform **after**
that status is written. The reconcile loop writes, acts, observes again and
asks for the next step. Because intent is always recorded first, a restart at
any point resumes correctly:

* killed after recording ``Patching`` but before patching: the next pass sees
  the old image and patches exactly once;
* killed after patching but before recording ``Gating``: the next pass sees
  the target image already live and records ``Gating`` without patching again;
* killed during the gate: the deadline runs from the recorded ``startedAt``;
* killed mid-rollback: ``RollingBack`` is recorded, so it finishes the
  rollback and never rolls forward again.

Targets go one at a time, wave by wave; a wave's ``soak`` must pass after its
last target turned healthy before the next wave starts. New targets start
only while the maintenance window allows it (before its cutoff); a target
already in its gate finishes the gate. A failure rolls that target back,
records the digest as failed, and stops every later target and wave.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.core import health, reasons, rebuild
from imagepatch.core.conditions import Condition, format_time, merge, parse_time
from imagepatch.core.images import parse_image
from imagepatch.model.imagepatch import (
    ImagePatch,
    Phase,
    RolloutEntry,
    Target,
    TargetPhase,
)
from imagepatch.model.policy import ApprovalMode, LabelSelector, PolicySpec, Rollout

HISTORY_LIMIT = 50
# How soon to look again while waiting on a gate, a soak or a window.
GATE_POLL = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """One observed target workload: the object and its pods, or absent."""

    target: Target
    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """A workload container found running the image, before it is pinned as a target."""

    namespace: str
    name: str
    container: str
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "Deployment"


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchImage:
    """Set one container's image, only if the workload is still at ``resource_version``."""

    target: Target
    image: str
    resource_version: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadEvent:
    target: Target
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    status: dict[str, Any]
    action: PatchImage | None = None
    events: tuple[WorkloadEvent, ...] = ()
    again: bool = False  # plan again at once (after writing status / acting)
    requeue_after: float | None = None  # look again later
    start_build: bool = False  # start (idempotently) the rebuild, then plan again


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """What the maintenance window allows now (from ``core.window``)."""

    can_start: bool = True
    next_start: dt.datetime | None = None


# --- small helpers ------------------------------------------------------------


def target_digest(patch: ImagePatch) -> str:
    """A human's pinned digest wins; otherwise the verified rebuild's digest."""
    return patch.target_digest or patch.status.verified_digest


def pinned_image(current_image: str, repository: str, digest: str) -> str:
    """``repo:tag@sha256:…`` when the current image has a tag (kept readable), else ``repo@…``.

    The kubelet pulls by the digest either way; the tag is for humans.
    """
    tag = ""
    try:
        ref = parse_image(current_image)
        tag = ref.tag or ""
    except ValueError:
        pass
    return f"{repository}:{tag}@{digest}" if tag else f"{repository}@{digest}"


def wave_for(namespace_labels: Mapping[str, str], waves: Sequence[Any]) -> int:
    """The first wave whose selector admits the namespace; after the last one if none does."""
    for index, wave in enumerate(waves):
        selector: LabelSelector = wave.namespace_selector
        if selector.matches(namespace_labels):
            return index
    return len(waves)


def pin_targets(
    patch: ImagePatch, candidates: Sequence[Candidate], policy: PolicySpec | None
) -> tuple[Target, ...]:
    """The ordered target list: spec.targets if a human gave them, else the candidates."""
    waves = policy.rollout.waves if policy else ()
    if patch.targets:
        targets = list(patch.targets)
    else:
        targets = [
            Target(
                namespace=c.namespace,
                name=c.name,
                container=c.container,
                kind=c.kind,
                wave=wave_for(c.namespace_labels, waves),
            )
            for c in candidates
        ]
    unique = {t.key: t for t in targets}
    return tuple(sorted(unique.values(), key=lambda t: (t.wave, t.namespace, t.name, t.container)))


def _container(deployment: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    containers = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    )
    return next((c for c in containers if c.get("name") == name), None)


def _since(deployment: Mapping[str, Any], started: dt.datetime | None) -> Mapping[str, Any]:
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
        if (parse_time(c.get("lastUpdateTime") or c.get("lastTransitionTime") or "") or started)
        > started
    ]
    if len(fresh) == len(conditions):
        return deployment
    return {**deployment, "status": {**deployment["status"], "conditions": fresh}}


def _describe(target: Target) -> str:
    return f"{target.namespace}/{target.name}/{target.container}"


# --- status assembly ----------------------------------------------------------


@dataclass
class _Draft:
    """The status being built for this step."""

    patch: ImagePatch
    now: dt.datetime
    phase: Phase
    entries: list[RolloutEntry]
    failed_digests: list[str]
    message: str = ""
    next_window: dt.datetime | None = None
    stalled: str = ""  # a reason when a human must act
    events: list[WorkloadEvent] = field(default_factory=list)
    by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # rebuild/verification fields

    def status(self, digest: str) -> dict[str, Any]:
        old = self.patch.status
        history = [dict(h) for h in old.history]
        if not history or history[-1].get("phase") != str(self.phase):
            entry = {"phase": str(self.phase), "at": format_time(self.now)}
            if self.message:
                entry["message"] = self.message
            if self.by:
                entry["by"] = self.by
            history.append(entry)
        history = history[-HISTORY_LIMIT:]
        done = sum(1 for e in self.entries if e.phase in (TargetPhase.HEALTHY, TargetPhase.SKIPPED))
        gen = self.patch.generation
        desired = [self._ready(gen)]
        drop = [reasons.STALLED, reasons.RECONCILING]
        if self.stalled:
            desired.append(
                Condition(
                    type=reasons.STALLED,
                    status="True",
                    reason=self.stalled,
                    message=self.message,
                    observed_generation=gen,
                )
            )
            drop.remove(reasons.STALLED)
        if not self.phase.terminal and self.phase != Phase.PENDING:
            desired.append(
                Condition(
                    type=reasons.RECONCILING,
                    status="True",
                    reason=str(self.phase),
                    message=self.message,
                    observed_generation=gen,
                )
            )
            drop.remove(reasons.RECONCILING)
        status: dict[str, Any] = {
            "phase": str(self.phase),
            "observedGeneration": gen,
            "targetDigest": digest,
            "progress": f"{done}/{len(self.entries)}",
            "rollouts": [e.as_dict() for e in self.entries],
            "failedDigests": self.failed_digests[-100:],
            "history": history,
            "conditions": merge(old.conditions, desired, now=self.now, drop=drop),
        }
        # None clears the field in the merge patch once the wait is over.
        status["nextWindowStart"] = format_time(self.next_window) if self.next_window else None
        return status

    def _ready(self, gen: int) -> Condition:
        if self.phase == Phase.SUCCEEDED:
            return Condition(
                type=reasons.READY,
                status="True",
                reason="Succeeded",
                message=self.message or "all targets patched and healthy",
                observed_generation=gen,
            )
        return Condition(
            type=reasons.READY,
            status="False",
            reason=str(self.phase),
            message=self.message,
            observed_generation=gen,
        )


# --- the planner --------------------------------------------------------------


def active_target(patch: ImagePatch) -> Target | None:
    """The target the next step concerns: the first one not done, or None."""
    for entry in patch.status.rollouts:
        if not entry.phase.done:
            return entry.target
    return None


def plan(
    *,
    patch: ImagePatch,
    policy: PolicySpec | None,
    candidates: Sequence[Candidate],
    workload: Workload | None,
    window: Window,
    now: dt.datetime,
    build: rebuild.BuildObservation | None = None,
    verification: rebuild.Verification | None = None,
) -> Step:
    """The next step for ``patch``; ``workload`` is the observed ``active_target``.

    Without a target digest (pinned, or verified from a rebuild) the step is a
    rebuild step: ``build`` and ``verification`` are what the reconcile loop
    observed of the rebuild this pass.
    """
    recorded = patch.status
    digest = target_digest(patch)
    draft = _Draft(
        patch=patch,
        now=now,
        phase=recorded.phase,
        entries=list(recorded.rollouts),
        failed_digests=list(recorded.failed_digests),
    )

    def finish(
        *,
        again: bool = False,
        requeue_after: float | None = None,
        action: PatchImage | None = None,
        start_build: bool = False,
    ) -> Step:
        status = {**draft.status(digest), **draft.extra}
        changed = any(recorded.raw.get(k) != v for k, v in status.items())
        return Step(
            status=status if changed else {},
            action=action,
            events=tuple(draft.events),
            again=again or (changed and action is None and not draft.phase.terminal),
            requeue_after=requeue_after,
            start_build=start_build,
        )

    if recorded.phase.terminal:
        return Step(status={})

    # A rejection closes the patch, whatever the policy's approval mode.
    if patch.approval and patch.approval.decision == "Rejected":
        if digest and digest not in draft.failed_digests:
            draft.failed_digests.append(digest)
        draft.phase = Phase.FAILED
        draft.by = patch.approval.by
        draft.message = f"rejected by {patch.approval.by or 'a human'}" + (
            f": {patch.approval.reason}" if patch.approval.reason else ""
        )
        for i, e in enumerate(draft.entries):
            if e.phase == TargetPhase.PENDING:
                draft.entries[i] = replace(e, phase=TargetPhase.SKIPPED, reason="Rejected")
        return finish()

    if not digest:
        return _rebuild(draft, patch, policy, build, verification, finish)

    gate = policy.rollout if policy else Rollout()

    started = any(e.phase != TargetPhase.PENDING for e in draft.entries)
    if not started:
        if policy is None:
            draft.phase = Phase.PENDING
            draft.message = f"ImagePatchPolicy {patch.policy!r} not found"
            draft.stalled = "PolicyNotFound"
            return finish(requeue_after=30.0)
        if _approval_wanted(patch, policy):
            draft.phase = Phase.AWAITING_APPROVAL
            draft.message = _approval_hint(patch)
            return finish(requeue_after=None)
        if not draft.entries:
            draft.entries = [RolloutEntry(target=t) for t in pin_targets(patch, candidates, policy)]
            if not draft.entries:
                draft.phase = Phase.SUCCEEDED
                draft.message = "no workload runs this image"
                return finish()
            # Pin the targets first; the next step observes the first one.
            draft.phase = Phase.ROLLING_OUT
            draft.message = f"rolling out {digest} to {len(draft.entries)} targets"
            if patch.approval and patch.approval.decision == "Approved":
                draft.by = patch.approval.by
                draft.message += f", approved by {patch.approval.by or 'a human'}"
            return finish(again=True)

    by = patch.approval.by if patch.approval and patch.approval.decision == "Approved" else ""
    index = next((i for i, e in enumerate(draft.entries) if not e.phase.done), None)
    if index is None:
        return _conclude(draft, finish)
    entry = draft.entries[index]
    if workload is None or workload.target != entry.target:
        # Observed for another target (the record moved on): observe again.
        return finish(again=True)

    if entry.phase == TargetPhase.PENDING:
        # Wave boundary: the previous wave's soak must have passed.
        if index > 0:
            wait = _soak_remaining(draft.entries, index, policy, now)
            if wait is not None:
                draft.phase = Phase.ROLLING_OUT
                draft.message = (
                    f"soaking wave {draft.entries[index - 1].target.wave} before the next"
                )
                return finish(requeue_after=max(wait, GATE_POLL))
        if policy is not None and policy.suspend:
            draft.message = "policy is suspended: no new target starts"
            return finish(requeue_after=None)
        if not window.can_start:
            draft.phase = Phase.AWAITING_WINDOW if not started else Phase.ROLLING_OUT
            draft.next_window = window.next_start
            draft.message = (
                f"waiting for the maintenance window opening at {format_time(window.next_start)}"
                if window.next_start
                else "no maintenance window is left in the schedule"
            )
            if window.next_start is None:
                draft.stalled = "NoMaintenanceWindow"
            wait = (window.next_start - now).total_seconds() if window.next_start else None
            return finish(requeue_after=min(wait, 300.0) if wait else None)
        return _start_target(draft, index, entry, workload, digest, patch, by, finish)

    draft.phase = Phase.ROLLING_OUT
    if entry.phase == TargetPhase.PATCHING:
        return _patching(draft, index, entry, workload, finish)
    if entry.phase == TargetPhase.GATING:
        return _gating(draft, index, entry, workload, gate, digest, now, finish)
    if entry.phase == TargetPhase.ROLLING_BACK:
        return _rolling_back(draft, index, entry, workload, gate, now, finish)
    raise AssertionError(f"unhandled target phase {entry.phase}")  # pragma: no cover


def _approval_wanted(patch: ImagePatch, policy: PolicySpec | None) -> bool:
    return bool(
        policy
        and policy.approval == ApprovalMode.MANUAL
        and not (patch.approval and patch.approval.decision == "Approved")
    )


def _approval_hint(patch: ImagePatch) -> str:
    return (
        f"approve with: kubectl patch imagepatch {patch.name} --type merge "
        '-p \'{"spec":{"approval":{"decision":"Approved","by":"<you>"}}}\''
    )


def _rebuild(
    draft: _Draft,
    patch: ImagePatch,
    policy: PolicySpec | None,
    build: rebuild.BuildObservation | None,
    verification: rebuild.Verification | None,
    finish,
) -> Step:
    """No target digest yet: approval first (a build costs), then build and verify."""
    raw = dict(patch.status.raw)
    if not raw.get("rebuild") and _approval_wanted(patch, policy):
        draft.phase = Phase.AWAITING_APPROVAL
        draft.message = _approval_hint(patch)
        return finish(requeue_after=None)
    if policy is None and not raw.get("rebuild"):
        draft.phase = Phase.PENDING
        draft.message = f"ImagePatchPolicy {patch.policy!r} not found"
        draft.stalled = "PolicyNotFound"
        return finish(requeue_after=30.0)
    strategy = patch.rebuild_strategy or (str(policy.rebuild.strategy) if policy else "")
    key = rebuild.idempotency_key(patch.image, patch.new_base_digest, patch.current_digest)
    step = rebuild.plan_rebuild(
        recorded=raw,
        key=key,
        strategy=strategy,
        build=build,
        verification=verification,
        now=draft.now,
    )
    draft.phase = Phase(step.phase)
    draft.message = step.message
    draft.extra.update(step.fields)
    if step.stalled:
        draft.stalled = step.stalled
    if step.failed_digest and step.failed_digest not in draft.failed_digests:
        draft.failed_digests.append(step.failed_digest)
    return finish(again=step.again, requeue_after=step.requeue_after, start_build=step.start_build)


def _soak_remaining(
    entries: Sequence[RolloutEntry], index: int, policy: PolicySpec | None, now: dt.datetime
) -> float | None:
    prev_wave = entries[index - 1].target.wave
    if entries[index].target.wave == prev_wave or policy is None:
        return None
    waves = policy.rollout.waves
    if prev_wave >= len(waves):
        return None
    soak = waves[prev_wave].soak
    finished = [parse_time(e.finished_at) for e in entries[:index] if e.target.wave == prev_wave]
    last = max((f for f in finished if f), default=None)
    if last is None or not soak:
        return None
    remaining = (last + soak - now).total_seconds()
    return remaining if remaining > 0 else None


def _stop_later(draft: _Draft, index: int, reason: str) -> None:
    for i in range(index + 1, len(draft.entries)):
        e = draft.entries[i]
        if e.phase == TargetPhase.PENDING:
            draft.entries[i] = replace(
                e,
                phase=TargetPhase.SKIPPED,
                reason=reason,
                message="stopped: an earlier target failed",
            )


def _skip(draft: _Draft, index: int, entry: RolloutEntry, reason: str, message: str) -> None:
    """This target needs nothing (more): record why, and move on."""
    _skip(draft, index, entry, reason, message)


def _start_target(draft, index, entry, workload, digest, patch, by, finish) -> Step:
    target = entry.target
    now = draft.now
    draft.phase = Phase.ROLLING_OUT
    draft.by = by
    dep = workload.deployment if workload else None
    if dep is None:
        _skip(draft, index, entry, "WorkloadDeleted", f"{_describe(target)} no longer exists")
        return finish(again=True)
    container = _container(dep, target.container)
    if container is None:
        _skip(draft, index, entry, "ContainerNotFound", f"{_describe(target)}: no such container")
        return finish(again=True)
    current = container.get("image", "")
    if current.endswith("@" + digest):
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.SKIPPED,
            reason="AlreadyUpToDate",
            previous_image=current,
            target_image=current,
            message="the target digest is already live",
            finished_at=format_time(now),
        )
        return finish(again=True)
    target_image = pinned_image(current, patch.image, digest)
    draft.entries[index] = replace(
        entry,
        phase=TargetPhase.PATCHING,
        previous_image=current,
        target_image=target_image,
        started_at=format_time(now),
        fingerprint=health.pod_template_fingerprint(dep, managed_containers=[target.container]),
        reason="",
        message=f"setting {target.container} to {target_image}",
    )
    draft.message = f"rolling out to {_describe(target)}"
    return finish(again=True)


def _drift(entry: RolloutEntry, dep: Mapping[str, Any], expected_image: str) -> str:
    """Why the workload no longer looks like what the operator left, or ''."""
    container = _container(dep, entry.target.container)
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


def _external_change(draft: _Draft, index: int, entry: RolloutEntry, why: str, finish) -> Step:
    draft.entries[index] = replace(
        entry,
        phase=TargetPhase.FAILED,
        reason="ExternalChange",
        message=why + "; imagepatch stopped and did not overwrite it",
        finished_at=format_time(draft.now),
    )
    _stop_later(draft, index, "ExternalChange")
    draft.phase = Phase.FAILED
    draft.stalled = "ExternalChange"
    draft.message = f"{_describe(entry.target)}: {why}"
    draft.events.append(
        WorkloadEvent(
            target=entry.target,
            type="Warning",
            reason="ExternalChange",
            message=draft.message + "; rollout stopped",
        )
    )
    return finish()


def _patching(draft, index, entry, workload, finish) -> Step:
    dep = workload.deployment if workload else None
    if dep is None:
        _skip(draft, index, entry, "WorkloadDeleted", f"{_describe(entry.target)} was deleted")
        return finish(again=True)
    container = _container(dep, entry.target.container) or {}
    if container.get("image") == entry.target_image:
        # Our patch landed (perhaps before a restart): gate from here on.
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.GATING,
            patched_generation=int(dep["metadata"].get("generation", 0)),
            message="waiting for the health gate",
        )
        return finish(again=True)
    why = _drift(entry, dep, entry.previous_image)
    if why:
        return _external_change(draft, index, entry, why, finish)
    action = PatchImage(
        target=entry.target,
        image=entry.target_image,
        resource_version=dep["metadata"]["resourceVersion"],
    )
    return finish(action=action, again=True)


def _gating(draft, index, entry, workload, gate: Rollout, digest, now, finish) -> Step:
    dep = workload.deployment if workload else None
    if dep is None:
        _skip(
            draft,
            index,
            entry,
            "WorkloadDeleted",
            f"{_describe(entry.target)} was deleted mid-rollout",
        )
        return finish(again=True)
    why = _drift(entry, dep, entry.target_image)
    if why:
        return _external_change(draft, index, entry, why, finish)
    verdict = health.assess(
        deployment=_since(dep, parse_time(entry.started_at)),
        pods=workload.pods,
        target_images={entry.target.container: entry.target_image},
        gate=gate,
        started_at=parse_time(entry.started_at) or now,
        healthy_since=parse_time(entry.healthy_since),
        baseline_restarts=None,
        now=now,
    )
    state = verdict.state
    if state in (health.HealthState.HEALTHY, health.HealthState.SCALED_TO_ZERO):
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.HEALTHY,
            finished_at=format_time(now),
            healthy_since=entry.healthy_since or format_time(now),
            reason=verdict.reason or "Healthy",
            message=verdict.message,
        )
        draft.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Normal",
                reason="Patched",
                message=f"{entry.target.container} now runs {entry.target_image}"
                " and passed the health gate",
            )
        )
        return finish(again=True)
    if state == health.HealthState.FAILED:
        return _fail_target(draft, index, entry, verdict, gate, digest, finish)
    healthy_since = format_time(verdict.healthy_since) if verdict.healthy_since else ""
    draft.entries[index] = replace(
        entry,
        healthy_since=healthy_since,
        reason=verdict.reason or str(state),
        message=verdict.message,
    )
    draft.message = f"{_describe(entry.target)}: {verdict.message or state}"
    return finish(requeue_after=GATE_POLL)


def _fail_target(draft, index, entry, verdict, gate: Rollout, digest, finish) -> Step:
    reason = str(verdict.reason or "Unhealthy")
    # The reason leads the message unless the message already says it.
    if reason not in verdict.message:
        verdict = replace(verdict, message=f"{reason}: {verdict.message}")
    if digest not in draft.failed_digests:
        draft.failed_digests.append(digest)
    if not gate.rollback:
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.FAILED,
            reason=reason,
            message=verdict.message,
            finished_at=format_time(draft.now),
        )
        _stop_later(draft, index, "EarlierTargetFailed")
        draft.phase = Phase.FAILED
        draft.stalled = "RollbackDisabled"
        draft.message = (
            f"{_describe(entry.target)}: {verdict.message} (rollback disabled in policy)"
        )
        draft.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Warning",
                reason="HealthGateFailed",
                message=draft.message,
            )
        )
        return finish()
    draft.entries[index] = replace(
        entry,
        phase=TargetPhase.ROLLING_BACK,
        reason=reason,
        message=verdict.message,
        rollback_started_at=format_time(draft.now),
    )
    _stop_later(draft, index, "EarlierTargetFailed")
    draft.message = f"rolling back {_describe(entry.target)}: {verdict.message}"
    draft.events.append(
        WorkloadEvent(
            target=entry.target,
            type="Warning",
            reason="RollingBack",
            message=f"{verdict.message}; restoring {entry.previous_image}",
        )
    )
    return finish(again=True)


def _rolling_back(draft, index, entry, workload, gate: Rollout, now, finish) -> Step:
    dep = workload.deployment if workload else None
    if dep is None:
        _skip(
            draft,
            index,
            entry,
            "WorkloadDeleted",
            f"{_describe(entry.target)} was deleted mid-rollback",
        )
        return _conclude(draft, finish)
    container = _container(dep, entry.target.container) or {}
    image = container.get("image", "")
    if image == entry.target_image:
        why = _drift(entry, dep, entry.target_image)
        if why:
            return _external_change(draft, index, entry, why, finish)
        return finish(
            action=PatchImage(
                target=entry.target,
                image=entry.previous_image,
                resource_version=dep["metadata"]["resourceVersion"],
            ),
            again=True,
        )
    if image != entry.previous_image:
        return _external_change(
            draft,
            index,
            entry,
            f"container {entry.target.container} image changed to {image} by someone else",
            finish,
        )
    # The previous image is back: it only needs to be available again, no soak.
    rollback_gate = replace(
        gate, healthy_for=dt.timedelta(0), max_restarts=max(gate.max_restarts, 0)
    )
    verdict = health.assess(
        deployment=_since(dep, parse_time(entry.rollback_started_at)),
        pods=workload.pods,
        target_images={entry.target.container: entry.previous_image},
        gate=rollback_gate,
        started_at=parse_time(entry.rollback_started_at) or now,
        healthy_since=None,
        baseline_restarts=None,
        now=now,
    )
    if verdict.state in (health.HealthState.HEALTHY, health.HealthState.SCALED_TO_ZERO):
        draft.entries[index] = replace(
            entry, phase=TargetPhase.ROLLED_BACK, finished_at=format_time(now)
        )
        draft.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Warning",
                reason="RolledBack",
                message=f"rolled back to {entry.previous_image}: {entry.message}",
            )
        )
        return _conclude(draft, finish)
    if verdict.state == health.HealthState.FAILED:
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.FAILED,
            reason="RollbackFailed",
            message=f"the previous image is unhealthy too: {verdict.message}",
            finished_at=format_time(now),
        )
        draft.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Warning",
                reason="RollbackFailed",
                message=f"{entry.previous_image} is unhealthy too ({verdict.message});"
                " imagepatch stopped",
            )
        )
        draft.phase = Phase.FAILED
        draft.stalled = "RollbackFailed"
        draft.message = f"{_describe(entry.target)}: rollback failed: {verdict.message}"
        return finish()
    draft.message = f"rolling back {_describe(entry.target)}: waiting for {entry.previous_image}"
    return finish(requeue_after=GATE_POLL)


def _conclude(draft: _Draft, finish) -> Step:
    entries = draft.entries
    if any(e.phase == TargetPhase.FAILED for e in entries):
        failed = next(e for e in entries if e.phase == TargetPhase.FAILED)
        draft.phase = Phase.FAILED
        draft.stalled = draft.stalled or failed.reason
        draft.message = draft.message or f"{_describe(failed.target)}: {failed.message}"
    elif any(e.phase == TargetPhase.ROLLED_BACK for e in entries):
        rolled = next(e for e in entries if e.phase == TargetPhase.ROLLED_BACK)
        draft.phase = Phase.ROLLED_BACK
        draft.message = (
            f"{_describe(rolled.target)} rolled back to {rolled.previous_image}: {rolled.message}"
        )
    else:
        draft.phase = Phase.SUCCEEDED
        healthy = sum(1 for e in entries if e.phase == TargetPhase.HEALTHY)
        draft.message = f"{healthy} of {len(entries)} targets patched and healthy"
    return finish()
