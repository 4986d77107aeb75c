"""Advance an ImagePatch's rollout: observe the target workload, plan, record, act.

One pass runs steps until the planner waits: each step's status is written
(with a resourceVersion precondition) **before** its side effect, so a
restarted operator resumes from the record and never repeats a patch.

A target starts only under ``CLAIMS``: the step that moves a container from
Pending to Patching reads which containers other open patches hold, and
records its own claim, before the next patch may look. With one leader per
cluster this makes "one actor per container" exact, not a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.adapters import flagger, metrics
from imagepatch.adapters.builders import Builder
from imagepatch.adapters.builders.reservations import TagReservations
from imagepatch.adapters.errors import AdapterError, ConflictError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.notify import Notifier
from imagepatch.adapters.registry import RegistryClient
from imagepatch.adapters.signatures import SignatureVerifier
from imagepatch.core import gitops, kinds, kinds_rollout, reasons
from imagepatch.core.images import parse_image
from imagepatch.core.rebuild import BuildObservation
from imagepatch.core.rollout import (
    FAILED_ANNOTATION,
    GATE_POLL,
    Candidate,
    FailedDigest,
    GitResult,
    GitWrite,
    PatchImage,
    Window,
    Workload,
    active_target,
    next_in_line,
    plan,
    running_digest,
    target_digest,
)
from imagepatch.core.scans import FindingsSource
from imagepatch.core.window import window_state
from imagepatch.model import memory as memory_model
from imagepatch.model import names
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import (
    ImagePatch,
    Phase,
    Target,
    TargetPhase,
    parse_imagepatch,
)
from imagepatch.model.policy import PolicySpec, parse_policy
from imagepatch.model.rebuild_status import RebuildStage
from imagepatch.model.times import Clock, parse_time_strict, utcnow
from imagepatch.reconcile import notifications, rebuilds
from imagepatch.reconcile.writeback import GitWriter

log = logging.getLogger("imagepatch.rollouts")


# --- ImagePatch rollouts ------------------------------------------------------------

# A pass runs steps until the plan waits; this bounds one pass.
MAX_STEPS = 25


# Held while a target may move from Pending to Patching (see the module docstring).
CLAIMS = asyncio.Lock()
_HOLDING = (TargetPhase.PATCHING, TargetPhase.GATING, TargetPhase.ROLLING_BACK)


async def discover_targets(kube: Kube, patch: ImagePatch, policy: PolicySpec) -> list[Candidate]:
    """Opted-in containers in admitted namespaces that run ``patch.image`` (same repository).

    Called once per patch, only for a patch without ``spec.targets`` (a
    human's) when it is about to pin them; the planner keeps only those at the
    patch's tag and digest. The running digest comes from the pods' imageID.
    """
    wanted = parse_image(patch.image).name
    candidates: list[Candidate] = []
    labels_cache: dict[str, dict[str, str]] = {}
    for kind, obj in await kube.list_opted_in_workloads(patch.policy):
        ns = obj["metadata"]["namespace"]
        if ns not in labels_cache:
            labels_cache[ns] = await kube.namespace_labels(ns)
        if not policy.namespace_selector.matches(labels_cache[ns]):
            continue
        pods: list[dict[str, Any]] | None = None
        for _, container in kinds.containers(obj):
            image = container.get("image", "")
            try:
                ref = parse_image(image)
            except ValueError:
                continue
            if ref.name != wanted:
                continue
            digest = ref.digest or ""
            if not digest and patch.current_digest:
                if pods is None:
                    pods = await kube.workload_pods(kind, obj)
                digest = running_digest(pods, container["name"], image)
            candidates.append(
                Candidate(
                    namespace=ns,
                    name=obj["metadata"]["name"],
                    container=container["name"],
                    kind=kind,
                    namespace_labels=labels_cache[ns],
                    image=image,
                    digest=digest,
                )
            )
    return candidates


async def held_containers(kube: Kube, *, but: str) -> dict[tuple[str, str, str, str], str]:
    """Containers that open ImagePatches other than ``but`` are changing now -> holder name."""
    held: dict[tuple[str, str, str, str], str] = {}
    for body in await kube.list_imagepatches():
        name = (body.get("metadata") or {}).get("name", "")
        if name == but:
            continue
        try:
            other = parse_imagepatch(body)
        except SpecError:
            continue
        if other.status.phase.terminal:
            continue
        for entry in other.status.rollouts:
            if entry.phase in _HOLDING:
                held[entry.target.key] = name
    return held


def _claiming(patch: ImagePatch) -> bool:
    """Whether this pass may move a target from Pending to Patching (pins count too)."""
    if not target_digest(patch) or patch.status.phase.terminal:
        return False
    entries = patch.status.rollouts
    if not entries:
        return True
    # CronJobs awaited on the side hold their claim already; the one in line may start.
    nxt = next_in_line(entries)
    return nxt is not None and entries[nxt].phase == TargetPhase.PENDING


def _sooner(a: float | None, b: float | None) -> float | None:
    """The earlier of two requeue times (None: no timer, only a wake or the resync)."""
    if a is None:
        return b
    return a if b is None else min(a, b)


async def observe_workload(
    kube: Kube, target: Target, memory: OperatorMemory | None = None
) -> Workload:
    """The target's workload (of its kind), its pods, for a CronJob its Jobs, and the
    digests that failed on it before (the operator's memory, never its annotations).
    With ``--flagger``, a Deployment comes with the Canary that targets it (``core.flagger``)."""
    obj = await kube.get_workload(target.kind, target.namespace, target.name)
    if obj is None:
        return Workload(target=target, deployment=None)
    if kube.flagger and target.kind == kinds.DEPLOYMENT:
        obj = await flagger.with_canary(kube, obj)  # its gate follows Flagger's verdict
    pods = await kube.workload_pods(target.kind, obj)
    jobs = await kube.cronjob_jobs(obj) if target.kind == kinds.CRONJOB else []
    record = (memory or OperatorMemory()).get(
        target.kind, target.namespace, target.name, (obj.get("metadata") or {}).get("uid", "")
    )
    return Workload(target=target, deployment=obj, pods=tuple(pods), jobs=tuple(jobs),
                    failed_digests=frozenset(e["digest"] for e in record.failed))


def _involved(target: Target, workload: Workload | None) -> dict[str, Any]:
    meta = (workload.deployment or {}).get("metadata", {}) if workload else {}
    return {
        "apiVersion": kinds.api_version(target.kind),
        "kind": target.kind,
        "namespace": target.namespace,
        "name": target.name,
        "uid": meta.get("uid", ""),
    }


async def _post_source_not_pinned(
    kube: Kube, body: Mapping[str, Any], build: BuildObservation
) -> None:
    """A Warning Event on the ImagePatch: this build builds its branch, not the running code."""
    meta = body.get("metadata") or {}
    try:
        await kube.emit_event(
            involved={
                "apiVersion": names.API_VERSION,
                "kind": "ImagePatch",
                "name": meta.get("name", ""),
                "uid": meta.get("uid", ""),
            },
            type="Warning",
            reason=reasons.SOURCE_NOT_PINNED,
            message=f"build {build.build_id} builds its configured branch, not the revision "
            f"that runs: {build.source_not_pinned}",
        )
    except AdapterError as exc:  # an Event is a report, not a reason to stop
        log.warning("could not post event %s: %s", reasons.SOURCE_NOT_PINNED, exc)


@dataclass
class RebuildTools:
    """What the rebuild and verification steps need (absent: rollouts of pinned digests only)."""

    registry: RegistryClient
    builders: Mapping[str, Builder]
    findings: FindingsSource | None = None
    # spec.verification.signatures: reads the keys and the registry's signatures.
    signatures: SignatureVerifier | None = None
    # rollout.mode GitWriteBack: commits and reverts in the policy's repository.
    git: GitWriter | None = None
    # Push tags chosen and not pushed yet: no two builds share one.
    tags: TagReservations | None = None


async def _observe_rebuild(
    tools: RebuildTools | None,
    patch: ImagePatch,
    policy: PolicySpec | None,
    now: dt.datetime,
    seen: dict[str, Any],
) -> None:
    """Poll a running build or verify a finished one, once per pass, into ``seen``."""
    if tools is None or target_digest(patch):
        return
    recorded = patch.status.rebuild
    if recorded.stage == RebuildStage.RUNNING and "build" not in seen:
        seen["build"] = await rebuilds.poll(
            tools.builders, recorded.build_id, rebuilds.build_request(patch, policy)
        )
    elif recorded.stage == RebuildStage.FINISHED and recorded.digest and "verification" not in seen:
        seen["verification"] = await rebuilds.verify(
            registry=tools.registry.for_policy(patch.policy), findings=tools.findings,
            patch=patch, policy=policy, now=now, signatures=tools.signatures,
        )  # fmt: skip


def _seconds_between(start: str | None, end: str | None) -> float | None:
    begun, ended = parse_time_strict(start), parse_time_strict(end)
    if begun is None or ended is None:
        return None
    return (ended - begun).total_seconds()


def _record_metrics(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Results and durations, once, at the step that records them."""
    phase = new.get("phase")
    if phase and phase != old.get("phase") and Phase(phase).terminal:
        metrics.record_result(phase)
        started = next(
            (h["at"] for h in new.get("history", []) if h["phase"] == Phase.ROLLING_OUT), None
        )
        ended = (new.get("history") or [{}])[-1].get("at")
        if (took := _seconds_between(started, ended)) is not None:
            metrics.record_duration("rollout", took)
    build_old, build_new = old.get("rebuild") or {}, new.get("rebuild") or {}
    if build_new.get("finishedAt") and not build_old.get("finishedAt"):
        took = _seconds_between(build_new.get("startedAt"), build_new.get("finishedAt"))
        if took is not None:
            metrics.record_duration("build", took)
    done_before = {
        (r["namespace"], r["name"], r["container"])
        for r in old.get("rollouts", [])
        if r.get("phase") in (TargetPhase.ROLLED_BACK, TargetPhase.FAILED)
    }
    for r in new.get("rollouts", []) or []:
        key = (r["namespace"], r["name"], r["container"])
        if r.get("phase") == TargetPhase.ROLLED_BACK and key not in done_before:
            took = _seconds_between(r.get("rollbackStartedAt"), r.get("finishedAt"))
            if took is not None:
                metrics.record_duration("rollback", took)


async def _remember_failed(
    memory: OperatorMemory, act: PatchImage | GitWrite, workload: Workload | None
) -> str:
    """Record the rollback's failed digest in the operator's memory; the annotation mirror."""
    assert act.failed is not None
    failed: FailedDigest = act.failed
    meta = ((workload.deployment if workload else None) or {}).get("metadata") or {}
    target = act.target
    record = memory_model.with_failed(
        memory.get(target.kind, target.namespace, target.name, meta.get("uid", "")),
        digest=failed.digest, key=failed.key, patch=failed.patch, now=failed.at,
    )
    await memory.put(record)
    return memory_model.failed_mirror(record)


async def _write_back(
    tools: RebuildTools | None, act: GitWrite, patch: ImagePatch, policy: PolicySpec | None,
    workload: Workload | None,
) -> GitResult:
    if tools is None or tools.git is None:
        return GitResult(target=act.target, revert=act.revert,
                         reason=reasons.GIT_WRITE_BACK_FAILED,
                         message="this operator runs without Git write-back")
    meta = ((workload.deployment if workload else None) or {}).get("metadata") or {}
    owner = gitops.owner_of(meta.get("labels") or {}, meta.get("annotations") or {})
    return await tools.git.run(act, patch=patch, policy=policy, owner=owner)


async def reconcile_imagepatch(
    *,
    name: str,
    kube: Kube,
    clock: Clock = utcnow,
    logger: logging.Logger = log,
    tools: RebuildTools | None = None,
    memory: OperatorMemory | None = None,
    notifier: Notifier | None = None,
) -> float | None:
    """Advance one ImagePatch as far as it can go now; return when to look again.

    ``memory``: the operator's memory (``adapters.memory``): the digests that
    failed on a target before, and where a rollback records its failed digest
    before it writes (an in-process one when not given: unit tests).
    ``notifier``: where phase changes are reported (``adapters.notify``), if anywhere.
    """
    memory = memory if memory is not None else OperatorMemory()
    body = await kube.get_imagepatch(name)
    seen: dict[str, Any] = {}  # rebuild observations of this pass
    candidates: list[Candidate] | None = None  # looked for once, when the planner asks
    # Targets that waited this pass, and the soonest of their requeue times: the
    # one in line and each CronJob awaited on the side get one look per pass.
    waited: set[tuple[str, str, str, str]] = set()
    requeue: float | None = None
    for _ in range(MAX_STEPS):
        if body is None:
            return None
        patch = parse_imagepatch(body)
        if patch.status.phase.terminal:
            return None
        policy_body = await kube.get_policy(patch.policy)
        policy = None
        if policy_body is not None:
            try:
                policy = parse_policy(policy_body).spec
            except SpecError:
                policy = None  # the policy's own status says what is wrong
        now = clock()
        target = active_target(patch, skip=waited)
        if target is None and waited and active_target(patch) is not None:
            return requeue  # every target this pass could look at is waiting
        workload = await observe_workload(kube, target, memory) if target else None
        state = window_state(policy.maintenance_window if policy else None, now)
        await _observe_rebuild(tools, patch, policy, now, seen)
        claiming = _claiming(patch)
        async with CLAIMS if claiming else contextlib.nullcontext():
            held = await held_containers(kube, but=name) if claiming and target else {}
            step = plan(
                patch=patch,
                policy=policy,
                candidates=candidates,
                workload=workload,
                window=Window(can_start=state.can_start, next_start=state.next_start),
                now=now,
                build=seen.get("build"),
                verification=seen.get("verification"),
                held_by=held,
                git=seen.pop("git", None),
            )
            if step.status:
                _record_metrics(patch.status.to_dict(), step.status)
                # Intent first: if this write fails, nothing below happens.
                body = await kube.write_imagepatch_status(
                    name, step.status, resource_version=body["metadata"]["resourceVersion"]
                )
                # A phase worth a message (Patched, RolledBack, ...): queued, never awaited.
                notifications.patch_recorded(notifier, patch, body, now)
        if step.discover and policy is not None:
            candidates = await discover_targets(kube, patch, policy)
            continue
        for event in step.events:
            try:
                await kube.emit_event(
                    involved=_involved(event.target, workload),
                    type=event.type,
                    reason=event.reason,
                    message=event.message,
                )
            except AdapterError as exc:  # an Event is a report, not a reason to stop
                logger.warning("could not post event %s: %s", event.reason, exc)
        if step.start_build:
            if tools is None:
                seen["build"] = BuildObservation(
                    state="Failed",
                    reason=reasons.REBUILD_UNAVAILABLE,
                    message="this operator runs without builders",
                )
            else:
                seen["build"] = await rebuilds.start(
                    tools.builders,
                    rebuilds.build_request(patch, policy),
                    # The tag choice and the source revision are read with
                    # the patch's policy's credentials, as detection read them.
                    registry=tools.registry.for_policy(patch.policy),
                    policy=policy,
                    reservations=tools.tags,
                    owner=str(body["metadata"].get("uid") or ""),
                )
                if seen["build"].source_not_pinned:
                    await _post_source_not_pinned(kube, body, seen["build"])
            continue
        if step.trial_job and workload is not None and workload.deployment is not None:
            # Its name was recorded first: a Job of that name existing is fine.
            logger.info("ImagePatch %s: starting trial run %s", name, step.trial_job)
            await kube.create_trial_job(workload.deployment, step.trial_job)
            continue
        if step.delete_pods is not None:
            # A StatefulSet's forced rollback; the pods were named in the
            # entry first. Each delete holds only if the pod is still the one
            # observed; the next plan sees what is left.
            target = step.delete_pods.target
            deleted = await kube.delete_stuck_pods(target.namespace, step.delete_pods.pods)
            logger.info("ImagePatch %s: forced rollback of %s %s/%s deleted %s", name,
                        target.kind, target.namespace, target.name, deleted or "no pod")
            continue
        if step.promote is not None and workload is not None and workload.deployment is not None:
            # An Argo Rollout paused at a manual step, promoted as the policy asks
            # (rollout.argoRollouts.promote: Auto); the entry said so first.
            logger.info("ImagePatch %s: promoting Rollout %s/%s", name,
                        step.promote.namespace, step.promote.name)
            await kube.promote_rollout(workload.deployment)
            return _sooner(requeue, step.requeue_after)
        if step.git is not None:
            # rollout.mode GitWriteBack: Patching (or RollingBack) is recorded; the
            # commit is found by its trailer or made, and the next plan records it.
            git = step.git
            if git.failed is not None:
                await _remember_failed(memory, git, workload)  # before the revert is pushed
            seen["git"] = await _write_back(tools, git, patch, policy, workload)
            continue
        if step.action is not None:
            act = step.action
            logger.info(
                "ImagePatch %s: setting %s/%s/%s to %s",
                name,
                act.target.namespace,
                act.target.name,
                act.target.container,
                act.image,
            )
            # The planner saw the container in this workload; which list holds
            # it (containers or initContainers) is the adapter's business.
            found = kinds.find_container(workload.deployment if workload else None,
                                         act.target.container)
            annotations = dict(act.annotations)
            if act.failed is not None:
                # Intent before the side effect: the failed digest is in the operator's
                # memory before the rollback is written (a failure here raises, and
                # nothing is written); the annotation is the mirror of that record.
                annotations[FAILED_ANNOTATION] = await _remember_failed(memory, act, workload)
                if act.target.kind == kinds_rollout.ROLLOUT:
                    # Argo's abort first: the stable ReplicaSet takes the traffic back at once;
                    # the restored template then matches it, so no new rollout starts.
                    await kube.abort_rollout(act.target.namespace, act.target.name)
            try:
                await kube.set_container_image(
                    act.target.namespace,
                    act.target.name,
                    container=act.target.container,
                    image=act.image,
                    resource_version=act.resource_version,
                    annotations=annotations,
                    allow_unpinned=not act.pinned,
                    kind=act.target.kind,
                    container_list=found[0] if found else "containers",
                )
            except ConflictError:
                logger.info("%s changed since it was read; planning again", act.target.kind)
            continue
        if not step.again:
            if target is None or not patch.status.rollouts:
                return _sooner(requeue, step.requeue_after)
            waited.add(target.key)
            requeue = _sooner(requeue, step.requeue_after)
            if body is None:
                return None
            if active_target(parse_imagepatch(body), skip=waited) is None:
                return requeue  # nothing else to look at this pass: no further reads
    return GATE_POLL
