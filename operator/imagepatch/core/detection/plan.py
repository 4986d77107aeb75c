"""The plan stage of a detection pass: which ImagePatches to create, close or retarget.

Pure. Input: each admitted workload's assessed containers (``Observation``)
and the policy's ImagePatches as detection sees them (``known_patch``, from
``model.parse_imagepatch``). Output: a ``PassPlan``. The act stage carries it
out and returns one ``Outcome`` per write; ``settle`` says what those outcomes
change in the known patches (and which images' patches the API server
refused), so the report is computed from values, never from shared state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from imagepatch.core import compliance, gitops, hold, rebuild
from imagepatch.core.compliance import KnownPatch
from imagepatch.core.detection.assess import Observation, TargetKey
from imagepatch.core.detection.lineage import follows
from imagepatch.core.detection.workload import image_name, kind_of, requested_rebuild
from imagepatch.core.rollout import wave_for
from imagepatch.model.imagepatch import ImagePatch, Target, TargetPhase
from imagepatch.model.names import BASE_ANNOTATION, GROUP, KEY_ANNOTATION, POLICY_LABEL, VERSION
from imagepatch.model.policy import PolicySpec

MANAGED_BY = ("app.kubernetes.io/managed-by", "imagepatch")

# Target phases in which a patch is changing the container now: no other patch
# is opened for it meanwhile.
_HOLDING = (TargetPhase.PATCHING, TargetPhase.GATING, TargetPhase.ROLLING_BACK)

@dataclass(frozen=True, kw_only=True, slots=True)
class PassPlan:
    patches: compliance.PatchPlan
    refused: Mapping[str, str]  # uid -> why its imagepatch.dev/rebuild is not allowed
    skipped: Mapping[str, gitops.Skip]  # uid -> why it is not patched (GitOps, or a hold)
    follows: Mapping[str, frozenset[tuple[str, str]]]  # uid -> images it runs or follows
    bases: frozenset[str]  # the base names the policy's evaluated workloads follow


def known_patch(patch: ImagePatch) -> KnownPatch:
    """An ImagePatch as detection needs to see it."""
    rollouts = patch.status.rollouts
    return KnownPatch(
        name=patch.name,
        key=patch.key,
        image=image_name(patch.image),
        current_digest=patch.current_digest,
        phase=str(patch.status.phase),
        started=any(r.phase != TargetPhase.PENDING for r in rollouts),
        tag=patch.tag,
        targets=frozenset(t.key for t in patch.targets),
        held=frozenset(r.target.key for r in rollouts if r.phase in _HOLDING),
        close_requested=bool(patch.close_requested),
    )


def plan_pass(
    observations: Sequence[Observation],
    spec: PolicySpec,
    known: Sequence[KnownPatch],
    *,
    targeted: bool,
    policy: str = "",
    now: dt.datetime | None = None,
) -> PassPlan:
    """What the pass creates, closes and retargets, from what it observed.

    ``targeted``: only some of the policy's workloads were observed, so no
    patch is closed that has a target this pass did not evaluate. ``now``: when
    the workloads' holds are read (``core.hold``; without it, none is).
    """
    intents: dict[str, compliance.PatchIntent] = {}
    failed_keys: set[str] = set()
    refused: dict[str, str] = {}
    skipped: dict[str, gitops.Skip] = {}
    for seen in observations:
        meta = seen.workload["metadata"]
        remembered = {m.get("key") for m in (seen.memory.failed if seen.memory else ())}
        requested = requested_rebuild(seen.workload)
        refusal = spec.rebuild.refusal(requested) if requested else None
        if refusal:
            refused[seen.uid] = refusal
            continue  # no build on its behalf; reported
        if why := gitops.skip(seen.workload, spec, policy):
            skipped[seen.uid] = why
            continue  # a GitOps tool delivers it (or mode Skip): reported, never patched
        if now is not None and (why := hold.skip(seen.workload, now)):
            skipped[seen.uid] = why
            continue  # its owner's hold (imagepatch.dev/hold): reported Held, not patched
        for facts, assessment in seen.assessed:
            intent = compliance.intent_for(facts, assessment)
            if intent is None:
                continue
            intent = compliance.with_rebuild_override(intent, requested)
            if intent.key in remembered:
                failed_keys.add(intent.key)
            target = Target(
                kind=kind_of(seen.workload),
                namespace=meta["namespace"],
                name=meta["name"],
                container=facts.container,
                wave=wave_for(seen.namespace_labels, spec.rollout.waves),
            )
            before = intents.get(intent.key, intent)
            intents[intent.key] = replace(before, targets=(*before.targets, target))
    evaluated = {f.repository for s in observations for f, _ in s.assessed if not f.error_reason}
    bases = {image_name(f.base_name) for s in observations for f, _ in s.assessed if f.base_name}
    followed = {}
    for seen in observations:
        override = (seen.workload["metadata"].get("annotations") or {}).get(BASE_ANNOTATION)
        if override:
            bases.add(image_name(override))
        followed[seen.uid] = follows(seen.assessed, override)
    patches = compliance.plan_patches(
        list(intents.values()),
        known,
        evaluated_images=evaluated,
        failed_keys=failed_keys,
        evaluated_targets={s.target(f.container) for s in observations for f, _ in s.assessed}
        if targeted
        else None,
    )
    return PassPlan(
        patches=patches, refused=refused, skipped=skipped, follows=followed,
        bases=frozenset(bases),
    )


def targets_field(targets: Iterable[Target], existing: Iterable[Target]) -> list[dict[str, Any]]:
    """``spec.targets``: the existing entries, then the new ones, each container once."""
    out: dict[TargetKey, dict[str, Any]] = {}
    for t in (*existing, *targets):
        out.setdefault(
            t.key,
            {
                "kind": t.kind,
                "namespace": t.namespace,
                "name": t.name,
                "container": t.container,
                "wave": t.wave,
            },
        )
    return list(out.values())


def patch_body(policy: str, spec: PolicySpec, intent: compliance.PatchIntent) -> dict[str, Any]:
    """The ImagePatch for ``intent``; its ``spec.rebuild`` is decided here, once.

    It comes from the intent alone: the normalised ``imagepatch.dev/rebuild``
    that its targets (kind, namespace, name) asked for, which is part of
    its key, over the policy's default. A workload whose request is refused
    is never a target, so its request reaches no patch, including a patch
    for another kind of workload with the same namespace and name.
    """
    tag = intent.tag
    requested = rebuild.requested_rebuild(intent.rebuild) if intent.rebuild else {}
    choice = rebuild.choose_rebuild(spec.rebuild, **requested)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImagePatch",
        "metadata": {
            "name": intent.name,
            "labels": {POLICY_LABEL: policy, MANAGED_BY[0]: MANAGED_BY[1]},
            "annotations": {KEY_ANNOTATION: intent.key},
        },
        "spec": {
            "image": intent.image,
            "currentDigest": intent.current_digest,
            **({"tag": tag} if tag else {}),
            "policy": policy,
            "targets": targets_field(intent.targets, []),
            "reason": intent.reason,
            "evidence": dict(intent.evidence),
            "rebuild": choice.as_spec(),
        },
    }


# -- the act stage's outcomes ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Created:
    """A planned ImagePatch now exists (``known`` None: it existed already)."""

    known: KnownPatch | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Refused:
    """The API server refused a planned ImagePatch (a 4xx): its workloads are Unknown."""

    image: str
    digest: str
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CloseRequested:
    name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Retargeted:
    """Targets were added to an open patch (none when it changed since it was read)."""

    name: str
    added: frozenset[TargetKey] = frozenset()


Outcome = Created | Refused | CloseRequested | Retargeted


@dataclass(frozen=True, kw_only=True, slots=True)
class Settled:
    known: tuple[KnownPatch, ...]  # the policy's patches after the act stage
    rejected: Mapping[tuple[str, str], str]  # (image, digest) -> why its patch was refused


def settle(known: Sequence[KnownPatch], outcomes: Iterable[Outcome]) -> Settled:
    """The known patches once the act stage's writes took effect, in their order."""
    after = list(known)
    rejected: dict[tuple[str, str], str] = {}
    for outcome in outcomes:
        if isinstance(outcome, Created):
            if outcome.known is not None:
                after.append(outcome.known)
        elif isinstance(outcome, Refused):
            rejected[(outcome.image, outcome.digest)] = outcome.message
        elif isinstance(outcome, CloseRequested):
            after = [replace(k, close_requested=True) if k.name == outcome.name else k
                     for k in after]  # fmt: skip
        else:
            after = [replace(k, targets=k.targets | outcome.added) if k.name == outcome.name
                     else k for k in after]  # fmt: skip
    return Settled(known=tuple(after), rejected=rejected)
