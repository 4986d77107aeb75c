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

Targets are exact: a container is a target only when it runs the patch's
image at its tag, and at its current digest when that is known (detection
writes them into ``spec.targets``; a human's patch without targets is matched
by the same rule). Only digest-pinned references are written: forward
``repo:tag@<new digest>``, back ``repo:tag@<the digest that ran>``. A
container that another open patch is changing is not started (``Conflict``,
naming the holder). A digest that failed on a workload is remembered on the
workload (``imagepatch.dev/failed-digests``), so history pruning cannot make
the same bad rebuild be rolled out there again.

Targets go one at a time, wave by wave; a wave's ``soak`` must pass after its
last target turned healthy before the next wave starts. New targets start
only while the maintenance window allows it (before its cutoff); a target
already in its gate finishes the gate. A failure rolls that target back,
records the digest as failed, and stops every later target and wave.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.core import health, reasons, rebuild
from imagepatch.core.conditions import Condition, merge
from imagepatch.core.images import parse_image
from imagepatch.model.imagepatch import (
    ApprovalDecision,
    ImagePatch,
    Phase,
    RolloutEntry,
    Target,
    TargetPhase,
)
from imagepatch.model.names import FAILED_DIGESTS_ANNOTATION
from imagepatch.model.policy import ApprovalMode, LabelSelector, PolicySpec, Rollout
from imagepatch.model.times import format_time, parse_time_strict

HISTORY_LIMIT = 50
# How soon to look again while waiting on a gate, a soak or a window.
GATE_POLL = 2.0
# How soon a patch waiting for another patch's hold on a container looks again.
CONFLICT_POLL = 10.0
# How soon a patch of a suspended or missing policy looks again (a policy
# change does not wake an ImagePatch, so this is the resync).
POLICY_POLL = 60.0
# On the workload: the digests that failed there (bounded), newest last.
FAILED_ANNOTATION = FAILED_DIGESTS_ANNOTATION
FAILED_MEMORY = 10


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
    image: str = ""  # as written in the pod template
    digest: str = ""  # the running digest when known (the reference's, or the pods' imageID)


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchImage:
    """Set one container's image, only if the workload is still at ``resource_version``."""

    target: Target
    image: str
    resource_version: str
    # Set together with the image, in the same write (the failed-digest memory).
    annotations: Mapping[str, str] = field(default_factory=dict)
    # False only for the documented rollback of a workload whose digest was never known.
    pinned: bool = True


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
    discover: bool = False  # find the candidate targets, then plan again


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


def runs_patch_image(patch: ImagePatch, image: str, digest: str = "") -> bool:
    """Whether a container running ``image`` (at ``digest``, if known) is this patch's to change.

    Same repository, the patch's ``spec.tag``, and its ``currentDigest`` when
    both digests are known. A container on ``app:1.5`` is never a target of a
    patch for ``app:1.4``: rewriting it to the 1.4 rebuild would be a silent
    downgrade under a misleading tag. Detection always sets the tag; a human's
    patch without one matches every tag of the repository (at the digest, if
    it gives one), which is what such a patch asks for.
    """
    try:
        ref = parse_image(image)
        wanted = parse_image(patch.image)
    except ValueError:
        return False
    if ref.name != wanted.name or (patch.tag and (ref.tag or "") != patch.tag):
        return False
    running = ref.digest or digest
    return not (patch.current_digest and running and running != patch.current_digest)


def pin_targets(
    patch: ImagePatch, candidates: Sequence[Candidate], policy: PolicySpec | None
) -> tuple[Target, ...]:
    """The ordered target list: spec.targets if given, else the candidates that match exactly."""
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
            if runs_patch_image(patch, c.image, c.digest)
        ]
    unique = {t.key: t for t in targets}
    return tuple(sorted(unique.values(), key=lambda t: (t.wave, t.namespace, t.name, t.container)))


def running_digest(pods: Sequence[Mapping[str, Any]], container: str, image: str) -> str:
    """The digest every pod of the current template reports for ``container``, if they agree.

    Only pods whose spec names exactly ``image`` count (older ReplicaSets'
    pods run something else); the digest is the one in ``imageID``.
    """
    digests = set()
    for pod in pods:
        spec_images = {
            c.get("name"): c.get("image") for c in (pod.get("spec") or {}).get("containers") or []
        }
        if spec_images.get(container) != image:
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            image_id = status.get("imageID") or ""
            if status.get("name") == container and "sha256:" in image_id:
                digests.add("sha256:" + image_id.rsplit("sha256:", 1)[1])
    return digests.pop() if len(digests) == 1 else ""


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
        if (
            parse_time_strict(c.get("lastUpdateTime") or c.get("lastTransitionTime") or "")
            or started
        )
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
    waiting: str = ""  # a reason for Ready/Reconciling while waiting (e.g. Conflict)
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
                    reason=self.waiting or str(self.phase),
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
        if self.phase == Phase.CLOSED:
            return Condition(
                type=reasons.READY,
                status="True",
                reason=reasons.NO_LONGER_NEEDED,
                message=self.message,
                observed_generation=gen,
            )
        return Condition(
            type=reasons.READY,
            status="False",
            reason=self.waiting or str(self.phase),
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
    candidates: Sequence[Candidate] | None,
    workload: Workload | None,
    window: Window,
    now: dt.datetime,
    build: rebuild.BuildObservation | None = None,
    verification: rebuild.Verification | None = None,
    held_by: Mapping[tuple[str, str, str, str], str] | None = None,
) -> Step:
    """The next step for ``patch``; ``workload`` is the observed ``active_target``.

    Without a target digest (pinned, or verified from a rebuild) the step is a
    rebuild step: ``build`` and ``verification`` are what the reconcile loop
    observed of the rebuild this pass.

    ``candidates`` are looked for only when this returns ``discover`` (a patch
    without ``spec.targets`` about to pin them): None means not looked for.
    ``held_by`` maps each container that another open patch is changing to
    that patch's name; it matters only when a target is about to start.
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
        discover: bool = False,
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
            discover=discover,
        )

    if recorded.phase.terminal:
        return Step(status={})

    started = any(e.phase != TargetPhase.PENDING for e in draft.entries)
    # Detection asks; the planner (the one writer of status) closes, and only
    # while nothing has been changed yet: a started rollout runs to its end.
    if patch.close_requested and not started:
        draft.phase = Phase.CLOSED
        draft.message = f"closed: {patch.close_requested}"
        for i, e in enumerate(draft.entries):
            draft.entries[i] = replace(e, phase=TargetPhase.SKIPPED, reason="Closed")
        return finish()

    # A rejection closes the patch, whatever the policy's approval mode.
    if patch.approval and patch.approval.decision == ApprovalDecision.REJECTED:
        if digest and digest not in draft.failed_digests:
            draft.failed_digests.append(digest)
        draft.phase = Phase.FAILED
        draft.by = patch.approval.by
        draft.message = f"rejected by {patch.approval.by or 'a human'}" + (
            f": {patch.approval.reason}" if patch.approval.reason else ""
        )
        for i, e in enumerate(draft.entries):
            if e.phase == TargetPhase.PENDING:
                draft.entries[i] = replace(e, phase=TargetPhase.SKIPPED, reason=reasons.REJECTED)
        return finish()

    if not started and policy is not None and policy.suspend:
        # Checked before anything starts: no build, no pinning, no patch.
        draft.message = "policy is suspended: nothing starts until it is resumed"
        draft.waiting = "Suspended"
        return finish(requeue_after=POLICY_POLL)

    if not digest:
        return _rebuild(draft, patch, policy, build, verification, finish)

    gate = policy.rollout if policy else Rollout()

    if not started:
        if policy is None:
            draft.phase = Phase.PENDING
            draft.message = f"ImagePatchPolicy {patch.policy!r} not found"
            draft.stalled = reasons.POLICY_NOT_FOUND
            return finish(requeue_after=POLICY_POLL)
        if _approval_wanted(patch, policy):
            draft.phase = Phase.AWAITING_APPROVAL
            draft.message = _approval_hint(patch)
            return finish(requeue_after=None)
        if not draft.entries:
            if not patch.targets and candidates is None:
                return finish(discover=True)
            draft.entries = [
                RolloutEntry(target=t) for t in pin_targets(patch, candidates or (), policy)
            ]
            if not draft.entries:
                draft.phase = Phase.SUCCEEDED
                draft.message = "no workload runs this image"
                return finish()
            # Pin the targets first; the next step observes the first one.
            draft.phase = Phase.ROLLING_OUT
            draft.message = f"rolling out {digest} to {len(draft.entries)} targets"
            if patch.approval and patch.approval.decision == ApprovalDecision.APPROVED:
                draft.by = patch.approval.by
                draft.message += f", approved by {patch.approval.by or 'a human'}"
            return finish(again=True)

    by = (
        patch.approval.by
        if patch.approval and patch.approval.decision == ApprovalDecision.APPROVED
        else ""
    )
    index = next((i for i, e in enumerate(draft.entries) if not e.phase.done), None)
    if index is None:
        return _conclude(draft, finish)
    entry = draft.entries[index]
    if workload is None or workload.target != entry.target:
        # Observed for another target (the record moved on): observe again.
        return finish(again=True)

    if entry.phase == TargetPhase.PENDING:
        if policy is None:
            # The policy was deleted mid-rollout: what was in flight has finished
            # (gated, rolled back if it failed); nothing new starts.
            for i in range(index, len(draft.entries)):
                e = draft.entries[i]
                if e.phase == TargetPhase.PENDING:
                    draft.entries[i] = replace(
                        e,
                        phase=TargetPhase.SKIPPED,
                        reason=reasons.POLICY_DELETED,
                        message=f"ImagePatchPolicy {patch.policy!r} was deleted; not started",
                        finished_at=format_time(now),
                    )
            return _conclude(draft, finish)
        # Wave boundary: the previous wave's soak must have passed.
        if index > 0:
            wait = _soak_remaining(draft.entries, index, policy, now)
            if wait is not None:
                draft.phase = Phase.ROLLING_OUT
                draft.message = (
                    f"soaking wave {draft.entries[index - 1].target.wave} before the next"
                )
                return finish(requeue_after=max(wait, GATE_POLL))
        if policy.suspend:
            draft.message = "policy is suspended: no new target starts"
            draft.waiting = "Suspended"
            return finish(requeue_after=POLICY_POLL)
        if not window.can_start:
            draft.phase = Phase.AWAITING_WINDOW if not started else Phase.ROLLING_OUT
            draft.next_window = window.next_start
            draft.message = (
                f"waiting for the maintenance window opening at {format_time(window.next_start)}"
                if window.next_start
                else "no maintenance window is left in the schedule"
            )
            if window.next_start is None:
                draft.stalled = reasons.NO_MAINTENANCE_WINDOW
            wait = (window.next_start - now).total_seconds() if window.next_start else None
            return finish(requeue_after=min(wait, 300.0) if wait else None)
        holder = (held_by or {}).get(entry.target.key)
        if holder and holder != patch.name:
            # One actor per container: wait for the holder to finish with it.
            draft.phase = Phase.ROLLING_OUT
            draft.waiting = "Conflict"
            draft.message = (
                f"{_describe(entry.target)} is being changed by ImagePatch {holder}; waiting"
            )
            draft.entries[index] = replace(entry, reason="Conflict", message=draft.message)
            return finish(requeue_after=CONFLICT_POLL)
        return _start_target(draft, index, entry, workload, digest, patch, by, finish)

    draft.phase = Phase.ROLLING_OUT
    if entry.phase == TargetPhase.PATCHING:
        return _patching(draft, index, entry, workload, finish)
    if entry.phase == TargetPhase.GATING:
        return _gating(draft, index, entry, workload, gate, digest, now, finish)
    if entry.phase == TargetPhase.ROLLING_BACK:
        return _rolling_back(draft, index, entry, workload, gate, now, patch, finish)
    raise AssertionError(f"unhandled target phase {entry.phase}")  # pragma: no cover


def _approval_wanted(patch: ImagePatch, policy: PolicySpec | None) -> bool:
    return bool(
        policy
        and policy.approval == ApprovalMode.MANUAL
        and not (patch.approval and patch.approval.decision == ApprovalDecision.APPROVED)
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
        draft.stalled = reasons.POLICY_NOT_FOUND
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
    finished = [
        parse_time_strict(e.finished_at) for e in entries[:index] if e.target.wave == prev_wave
    ]
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
    draft.entries[index] = replace(
        entry,
        phase=TargetPhase.SKIPPED,
        reason=reason,
        message=message,
        finished_at=format_time(draft.now),
    )


def _gone(draft: _Draft, index: int, entry: RolloutEntry, workload: Workload | None, when: str):
    """Why the target can no longer be acted on (deleted, or its container removed), or None.

    When gone, the entry is skipped with the reason: nothing is left to patch,
    gate or roll back there, and the patch moves on to its next target.
    """
    dep = workload.deployment if workload else None
    target = entry.target
    if dep is None:
        _skip(
            draft, index, entry, reasons.WORKLOAD_DELETED, f"{_describe(target)} was deleted{when}"
        )
        return True
    if _container(dep, target.container) is None:
        _skip(
            draft,
            index,
            entry,
            reasons.CONTAINER_NOT_FOUND,
            f"{_describe(target)}: the container was removed or renamed{when}",
        )
        return True
    return False


def _rollback_image(current: str, patch: ImagePatch, workload: Workload, container: str) -> str:
    """What rollback will write: the previous image pinned to the digest that ran.

    The digest that ran: the reference's own, else the one every current pod
    reports (``imageID``), else the patch's ``currentDigest`` when the
    container runs exactly the patch's image. Restoring a bare tag would hand
    the rebuild (pushed under that very tag) to any pod that pulls again.
    """
    # ``current`` parses: only a container that runs the patch's image gets here.
    if parse_image(current).digest:
        return current
    digest = running_digest(workload.pods, container, current)
    if not digest and runs_patch_image(patch, current):
        digest = patch.current_digest
    return f"{current}@{digest}" if digest else current


def _unpinned_note(entry: RolloutEntry) -> str:
    """Said on the entry when rollback restores a bare tag (no digest was ever known)."""
    if is_pinned(entry.restore_image):
        return ""
    return (
        f"; no digest was ever known for {entry.restore_image}, so rollback restores the tag,"
        " which a rebuild may have moved"
    )


def is_pinned(image: str) -> bool:
    """Whether ``image`` is a valid reference with a digest."""
    try:
        return bool(parse_image(image).digest)
    except ValueError:
        return False


def _start_target(draft, index, entry, workload, digest, patch, by, finish) -> Step:
    target = entry.target
    now = draft.now
    draft.phase = Phase.ROLLING_OUT
    draft.by = by
    if _gone(draft, index, entry, workload, ""):
        return finish(again=True)
    dep = workload.deployment or {}
    container = _container(dep, target.container) or {}
    current = container.get("image", "")
    if current.endswith("@" + digest):
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.SKIPPED,
            reason=reasons.ALREADY_UP_TO_DATE,
            previous_image=current,
            target_image=current,
            message="the target digest is already live",
            finished_at=format_time(now),
        )
        return finish(again=True)
    if not runs_patch_image(
        patch, current, running_digest(workload.pods, target.container, current)
    ):
        # It was a target when pinned; since then it moved to another tag or digest.
        _skip(
            draft,
            index,
            entry,
            reasons.IMAGE_CHANGED,
            f"{_describe(target)} now runs {current}, not {patch.image}"
            + (f":{patch.tag}" if patch.tag else "")
            + (f"@{patch.current_digest}" if patch.current_digest else ""),
        )
        return finish(again=True)
    if any(m["digest"] == digest for m in failed_memory(dep)):
        _skip(
            draft,
            index,
            entry,
            reasons.DIGEST_FAILED_BEFORE,
            f"{digest} already failed on {_describe(target)}; it is not rolled out there again",
        )
        return finish(again=True)
    target_image = pinned_image(current, patch.image, digest)
    rollback_image = _rollback_image(current, patch, workload, target.container)
    draft.entries[index] = replace(
        entry,
        phase=TargetPhase.PATCHING,
        previous_image=current,
        rollback_image=rollback_image,
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
        reason=reasons.EXTERNAL_CHANGE,
        message=why + "; imagepatch stopped and did not overwrite it",
        finished_at=format_time(draft.now),
    )
    _stop_later(draft, index, reasons.EXTERNAL_CHANGE)
    draft.phase = Phase.FAILED
    draft.stalled = reasons.EXTERNAL_CHANGE
    draft.message = f"{_describe(entry.target)}: {why}"
    draft.events.append(
        WorkloadEvent(
            target=entry.target,
            type="Warning",
            reason=reasons.EXTERNAL_CHANGE,
            message=draft.message + "; rollout stopped",
        )
    )
    return finish()


def _patching(draft, index, entry, workload, finish) -> Step:
    if _gone(draft, index, entry, workload, " before it was patched"):
        return finish(again=True)
    dep = workload.deployment
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
    if _gone(draft, index, entry, workload, " mid-rollout"):
        return finish(again=True)
    dep = workload.deployment
    why = _drift(entry, dep, entry.target_image)
    if why:
        return _external_change(draft, index, entry, why, finish)
    verdict = health.assess(
        deployment=_since(dep, parse_time_strict(entry.started_at)),
        pods=workload.pods,
        target_images={entry.target.container: entry.target_image},
        gate=gate,
        started_at=parse_time_strict(entry.started_at) or now,
        healthy_since=parse_time_strict(entry.healthy_since),
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
        return _fail_target(draft, index, entry, verdict, gate, digest, dep, finish)
    healthy_since = format_time(verdict.healthy_since) if verdict.healthy_since else ""
    draft.entries[index] = replace(
        entry,
        healthy_since=healthy_since,
        reason=verdict.reason or str(state),
        message=verdict.message,
    )
    draft.message = f"{_describe(entry.target)}: {verdict.message or state}"
    return finish(requeue_after=GATE_POLL)


def _fail_target(draft, index, entry, verdict, gate: Rollout, digest, dep, finish) -> Step:
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
        _stop_later(draft, index, reasons.EARLIER_TARGET_FAILED)
        draft.phase = Phase.FAILED
        draft.stalled = reasons.ROLLBACK_DISABLED
        draft.message = (
            f"{_describe(entry.target)}: {verdict.message} (rollback disabled in policy)"
        )
        draft.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Warning",
                reason=reasons.HEALTH_GATE_FAILED,
                message=draft.message,
            )
        )
        return finish()
    draft.entries[index] = replace(
        entry,
        phase=TargetPhase.ROLLING_BACK,
        reason=reason,
        message=verdict.message + _unpinned_note(entry),
        rollback_started_at=format_time(draft.now),
    )
    _stop_later(draft, index, reasons.EARLIER_TARGET_FAILED)
    draft.message = f"rolling back {_describe(entry.target)}: {verdict.message}"
    draft.events.append(
        WorkloadEvent(
            target=entry.target,
            type="Warning",
            reason=reasons.ROLLING_BACK,
            message=f"{verdict.message}; restoring {entry.restore_image}",
        )
    )
    return finish(again=True)


def _rolling_back(draft, index, entry, workload, gate: Rollout, now, patch, finish) -> Step:
    if _gone(draft, index, entry, workload, " mid-rollback"):
        return _conclude(draft, finish)
    dep = workload.deployment
    container = _container(dep, entry.target.container) or {}
    image = container.get("image", "")
    if image == entry.target_image:
        why = _drift(entry, dep, entry.target_image)
        if why:
            return _external_change(draft, index, entry, why, finish)
        # The failed digest is remembered on the workload in the same write:
        # it outlives this ImagePatch (history retention may delete it).
        failed = parse_image(entry.target_image).digest or ""
        memory = (
            {FAILED_ANNOTATION: remember_failed(dep, digest=failed, patch=patch, now=now)}
            if failed
            else {}
        )
        return finish(
            action=PatchImage(
                target=entry.target,
                image=entry.restore_image,
                resource_version=dep["metadata"]["resourceVersion"],
                annotations=memory,
                pinned=is_pinned(entry.restore_image),
            ),
            again=True,
        )
    if image != entry.restore_image:
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
        deployment=_since(dep, parse_time_strict(entry.rollback_started_at)),
        pods=workload.pods,
        target_images={entry.target.container: entry.restore_image},
        gate=rollback_gate,
        started_at=parse_time_strict(entry.rollback_started_at) or now,
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
                reason=reasons.ROLLED_BACK,
                message=f"rolled back to {entry.restore_image}: {entry.message}",
            )
        )
        return _conclude(draft, finish)
    if verdict.state == health.HealthState.FAILED:
        draft.entries[index] = replace(
            entry,
            phase=TargetPhase.FAILED,
            reason=reasons.ROLLBACK_FAILED,
            message=f"the previous image is unhealthy too: {verdict.message}",
            finished_at=format_time(now),
        )
        draft.events.append(
            WorkloadEvent(
                target=entry.target,
                type="Warning",
                reason=reasons.ROLLBACK_FAILED,
                message=f"{entry.restore_image} is unhealthy too ({verdict.message});"
                " imagepatch stopped",
            )
        )
        draft.phase = Phase.FAILED
        draft.stalled = reasons.ROLLBACK_FAILED
        draft.message = f"{_describe(entry.target)}: rollback failed: {verdict.message}"
        return finish()
    draft.message = f"rolling back {_describe(entry.target)}: waiting for {entry.restore_image}"
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
            f"{_describe(rolled.target)} rolled back to {rolled.restore_image}: {rolled.message}"
        )
    else:
        draft.phase = Phase.SUCCEEDED
        healthy = sum(1 for e in entries if e.phase == TargetPhase.HEALTHY)
        draft.message = f"{healthy} of {len(entries)} targets patched and healthy"
    return finish()
