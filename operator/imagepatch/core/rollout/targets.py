"""Which containers are targets, and when and how a target starts.

Targets are exact: a container is a target only when it runs the patch's
image at its tag, and at its current digest when that is known (detection
writes them into ``spec.targets``; a human's patch without targets is matched
by the same rule). They are pinned once, ordered by wave, and go one at a
time.

A pending target starts only after the previous wave's ``soak``, while the
policy is not suspended, while the maintenance window allows it, and when no
other open patch holds the container (``Conflict``, naming the holder; a
held target first lets the free targets of its wave go ahead). It
starts by recording ``Patching`` with the digest-pinned image to write and the
image to restore; the write itself (``patching``) follows on the next step,
after that intent is recorded. A target that has gone, moved to another
image, already runs the digest, or failed with this digest before, is skipped
with the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from imagepatch.core import gitops, health, hold, kinds, reasons
from imagepatch.core.images import parse_image
from imagepatch.core.rollout import writeback
from imagepatch.core.rollout.context import (
    CONFLICT_POLL,
    GATE_POLL,
    POLICY_POLL,
    Candidate,
    Context,
    PatchImage,
    Step,
    Window,
    Workload,
    approved_by,
    container_of,
    describe,
    next_in_line,
    on_the_side,
)
from imagepatch.core.rollout.drift import drift, external_change, gone
from imagepatch.model.imagepatch import ImagePatch, Phase, RolloutEntry, Target, TargetPhase
from imagepatch.model.policy import LabelSelector, PolicySpec
from imagepatch.model.times import format_time, parse_time_strict


def pinned_image(current_image: str, repository: str, digest: str, pushed_tag: str = "") -> str:
    """``repo:tag@sha256:…`` when there is a tag (kept readable), else ``repo@…``.

    The tag is the one the rebuild was pushed under (``pushed_tag``: a new
    tag with the policy's ``tagPolicy: New``), else the current image's. The
    kubelet pulls by the digest either way; the tag is for humans.
    """
    tag = pushed_tag
    if not tag:
        try:
            tag = parse_image(current_image).tag or ""
        except ValueError:
            pass
    return f"{repository}:{tag}@{digest}" if tag else f"{repository}@{digest}"


def pushed_tag(patch: ImagePatch, digest: str) -> str:
    """The tag the verified rebuild was pushed under, when ``digest`` is that rebuild's."""
    if patch.target_digest or digest != patch.status.verified_digest:
        return ""  # a human's pinned digest: the current tag stays
    return patch.status.rebuild.tag


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
    pods run something else); the digest is the one in ``imageID``. Init
    containers (native sidecars among them) count like containers.
    """
    digests = set()
    for pod in pods:
        spec = pod.get("spec") or {}
        spec_images = {
            c.get("name"): c.get("image")
            for key in kinds.CONTAINER_LISTS
            for c in spec.get(key) or []
        }
        if spec_images.get(container) != image:
            continue
        pod_status = pod.get("status") or {}
        statuses = [
            *(pod_status.get("containerStatuses") or []),
            *(pod_status.get("initContainerStatuses") or []),
        ]
        for status in statuses:
            image_id = status.get("imageID") or ""
            if status.get("name") == container and "sha256:" in image_id:
                digests.add("sha256:" + image_id.rsplit("sha256:", 1)[1])
    return digests.pop() if len(digests) == 1 else ""


def rollback_image_for(
    current: str, *, patch: ImagePatch, workload: Workload, container: str
) -> str:
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


def active_target(
    patch: ImagePatch, *, skip: Collection[tuple[str, str, str, str]] = ()
) -> Target | None:
    """The target the next step concerns, or None.

    The one in line (the first not done), then each CronJob awaited on the
    side; ``skip`` holds the keys of those that already waited this pass, so
    one pass looks at each of them once.
    """
    entries = patch.status.rollouts
    first = next_in_line(entries)
    order = ([] if first is None else [entries[first]]) + [e for e in entries if on_the_side(e)]
    return next((e.target for e in order if e.target.key not in skip), None)


def pin(ctx: Context, *, candidates: Sequence[Candidate] | None) -> Step:
    """The first step of a rollout: pin the targets (after discovering them if need be)."""
    patch = ctx.patch
    if not patch.targets and candidates is None:
        return ctx.finish(discover=True)
    ctx.entries = [RolloutEntry(target=t) for t in pin_targets(patch, candidates or (), ctx.policy)]
    if not ctx.entries:
        ctx.phase = Phase.SUCCEEDED
        ctx.message = "no workload runs this image"
        return ctx.finish()
    # Pin the targets first; the next step observes the first one.
    ctx.phase = Phase.ROLLING_OUT
    ctx.message = f"rolling out {ctx.digest} to {len(ctx.entries)} targets"
    approver = approved_by(patch)
    if approver is not None:
        ctx.by = approver
        ctx.message += f", approved by {approver or 'a human'}"
    return ctx.finish(again=True)


def start_pending(
    ctx: Context,
    *,
    index: int,
    workload: Workload,
    window: Window,
    held_by: Mapping[tuple[str, str, str, str], str],
) -> Step:
    """A pending target: start it if the policy, the waves, the window and other patches allow."""
    policy = ctx.policy
    entry = ctx.entries[index]
    if policy is None:
        # The policy was deleted mid-rollout: what was in flight has finished
        # (gated, rolled back if it failed); nothing new starts.
        for i in range(index, len(ctx.entries)):
            e = ctx.entries[i]
            if e.phase == TargetPhase.PENDING:
                ctx.entries[i] = replace(
                    e,
                    phase=TargetPhase.SKIPPED,
                    reason=reasons.POLICY_DELETED,
                    message=f"ImagePatchPolicy {ctx.patch.policy!r} was deleted; not started",
                    finished_at=format_time(ctx.now),
                )
        # A CronJob awaited on the side still gets its verdict.
        return ctx.finish(again=True) if ctx.steppable() else ctx.conclude()
    # Wave boundary: the previous wave's soak must have passed.
    if index > 0:
        wait = soak_remaining(ctx.entries, index, policy, ctx.now)
        if wait is not None:
            ctx.phase = Phase.ROLLING_OUT
            ctx.message = f"soaking wave {ctx.entries[index - 1].target.wave} before the next"
            return ctx.finish(requeue_after=max(wait, GATE_POLL))
    if policy.suspend:
        ctx.message = "policy is suspended: no new target starts"
        ctx.waiting = reasons.SUSPENDED
        return ctx.finish(requeue_after=POLICY_POLL)
    if not window.can_start:
        return _await_window(ctx, window=window)
    holder = held_by.get(entry.target.key)
    if holder and holder != ctx.patch.name:
        # One actor per container: wait for the holder to finish with it.
        ctx.phase = Phase.ROLLING_OUT
        ctx.waiting = "Conflict"
        ctx.message = f"{describe(entry.target)} is being changed by ImagePatch {holder}; waiting"
        ctx.entries[index] = replace(entry, reason="Conflict", message=ctx.message)
        if _let_others_pass(ctx, index=index, held_by=held_by):
            return ctx.finish(again=True)
        return ctx.finish(requeue_after=CONFLICT_POLL)
    return start_target(ctx, index=index, workload=workload)


def _let_others_pass(
    ctx: Context, *, index: int, held_by: Mapping[tuple[str, str, str, str], str]
) -> bool:
    """Move a held target behind the free ones of its wave; whether there were any.

    Another patch may hold a container for long (a CronJob's gate waits for
    its run): the other targets of the wave, often other teams', must not wait
    for it (DESIGN.md, "Blast radius is one team"). The held target comes back
    in line after them, and only then waits.
    """
    wave = ctx.entries[index].target.wave
    later = [
        j
        for j in range(index + 1, len(ctx.entries))
        if ctx.entries[j].phase == TargetPhase.PENDING and ctx.entries[j].target.wave == wave
    ]
    free = [j for j in later if held_by.get(ctx.entries[j].target.key) in (None, ctx.patch.name)]
    if not free:
        return False
    held = ctx.entries.pop(index)
    ctx.entries.insert(later[-1], held)  # after the last pending target of its wave
    return True


def _await_window(ctx: Context, *, window: Window) -> Step:
    ctx.phase = Phase.AWAITING_WINDOW if not ctx.started else Phase.ROLLING_OUT
    ctx.next_window = window.next_start
    ctx.message = (
        f"waiting for the maintenance window opening at {format_time(window.next_start)}"
        if window.next_start
        else "no maintenance window is left in the schedule"
    )
    if window.next_start is None:
        ctx.stalled = reasons.NO_MAINTENANCE_WINDOW
    wait = (window.next_start - ctx.now).total_seconds() if window.next_start else None
    return ctx.finish(requeue_after=min(wait, 300.0) if wait else None)


def soak_remaining(
    entries: Sequence[RolloutEntry], index: int, policy: PolicySpec | None, now: dt.datetime
) -> float | None:
    """Seconds until the previous wave's soak has passed, or None when it has (or none is set)."""
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


def start_target(ctx: Context, *, index: int, workload: Workload) -> Step:
    """Record ``Patching``: the pinned image to write and the image rollback restores."""
    entry = ctx.entries[index]
    target = entry.target
    patch = ctx.patch
    digest = ctx.digest
    ctx.phase = Phase.ROLLING_OUT
    ctx.by = approved_by(patch) or ""
    if gone(ctx, index=index, workload=workload, when=""):
        return ctx.finish(again=True)
    dep = workload.deployment or {}
    current = (container_of(dep, target.container) or {}).get("image", "")
    if current.endswith("@" + digest):
        ctx.entries[index] = replace(
            entry,
            phase=TargetPhase.SKIPPED,
            reason=reasons.ALREADY_UP_TO_DATE,
            previous_image=current,
            target_image=current,
            message="the target digest is already live",
            finished_at=format_time(ctx.now),
        )
        return ctx.finish(again=True)
    if not runs_patch_image(
        patch, current, running_digest(workload.pods, target.container, current)
    ):
        # It was a target when pinned; since then it moved to another tag or digest.
        ctx.skip(
            index,
            reason=reasons.IMAGE_CHANGED,
            message=f"{describe(target)} now runs {current}, not {patch.image}"
            + (f":{patch.tag}" if patch.tag else "")
            + (f"@{patch.current_digest}" if patch.current_digest else ""),
        )
        return ctx.finish(again=True)
    if digest in workload.failed_digests:
        ctx.skip(
            index,
            reason=reasons.DIGEST_FAILED_BEFORE,
            message=f"{digest} already failed on {describe(target)}; "
            "it is not rolled out there again",
        )
        return ctx.finish(again=True)
    blocked = kinds.not_patchable(target.kind, dep) or kinds.cronjob_run_too_far(
        target.kind, dep, ctx.gate, ctx.now
    )
    blocked = blocked or gitops.not_patched(  # i22-gitops hook: GitOps-managed, rollout.mode
        dep, ctx.policy.rollout.mode if ctx.policy else None, patch.policy)
    blocked = blocked or hold.blocked(dep, ctx.now)  # i22-hold hook: the owner's hold
    if blocked is not None:
        # Patching would change no pod (OnDelete), or no run would verify it in
        # time (a CronJob's far schedule): say what to change instead.
        reason, why = blocked
        ctx.skip(index, reason=reason, message=why)
        ctx.warn(target, reason=reason, message=why)
        return ctx.finish(again=True)
    target_image = pinned_image(current, patch.image, digest, pushed_tag(patch, digest))
    git = writeback.settings(ctx)
    ctx.entries[index] = replace(
        entry,
        # A write-back target (rollout.mode GitWriteBack): committed, not patched.
        git_branch=(git.push_branch or git.branch) if git else "",
        phase=TargetPhase.PATCHING,
        previous_image=current,
        # A revert commit restores what Git said (previous_image), not a pinned form of it.
        rollback_image="" if git else rollback_image_for(
            current, patch=patch, workload=workload, container=target.container
        ),
        target_image=target_image,
        started_at=format_time(ctx.now),
        fingerprint=health.pod_template_fingerprint(dep, managed_containers=[target.container]),
        reason="",
        message=f"setting {target.container} to {target_image}",
    )
    ctx.message = f"rolling out to {describe(target)}"
    return ctx.finish(again=True)


def patching(ctx: Context, *, index: int, workload: Workload) -> Step:
    """``Patching`` is recorded: write the image, or notice it landed and start the gate."""
    if gone(ctx, index=index, workload=workload, when=" before it was patched"):
        return ctx.finish(again=True)
    entry = ctx.entries[index]
    dep = workload.deployment or {}
    container = container_of(dep, entry.target.container) or {}
    if container.get("image") == entry.target_image:
        # Our patch landed (perhaps before a restart): gate from here on.
        ctx.entries[index] = replace(
            entry,
            phase=TargetPhase.GATING,
            patched_generation=int(dep["metadata"].get("generation", 0)),
            message="waiting for the health gate",
        )
        return ctx.finish(again=True)
    why = drift(entry, dep, expected_image=entry.previous_image)
    if why:
        return external_change(ctx, index=index, why=why)
    if entry.git_branch:
        return writeback.forward(ctx, index=index)
    action = PatchImage(
        target=entry.target,
        image=entry.target_image,
        resource_version=dep["metadata"]["resourceVersion"],
    )
    return ctx.finish(action=action, again=True)
