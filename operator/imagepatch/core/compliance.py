"""Compliance of running images against a policy, and which ImagePatches that calls for.

Pure: the detection loop gathers facts (running digest, lineage, the base's
current digest, scan findings) and this module decides, per container and per
workload, the compliance state, and the set of ImagePatches that should be
open. The states, their reasons and their precedence live here only, so
conditions, Events, the report and metrics all agree:

* ``Unknown``: the facts could not be gathered (registry down, no scan yet);
* ``UntrustedBase``: the recorded base does not match ``baseImages.trusted``;
* ``Vulnerable``: findings over the policy's baseline;
* ``BaseImageOutdated``: the base tag now points at another digest;
* ``Compliant``: none of these.

A workload's state is its worst container's; an open ImagePatch for its image
makes it ``Patching``, and a patch that ended rolled back or failed for its
current image makes it ``Failed`` until something newer comes along.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.core import reasons
from imagepatch.core.baseline import BaselineVerdict
from imagepatch.core.images import matches_glob, parse_image
from imagepatch.core.scans import ScanOutcome
from imagepatch.model.imagepatch import TERMINAL_PHASES, Phase, Target
from imagepatch.model.policy import PolicySpec


class State(enum.StrEnum):
    COMPLIANT = "Compliant"
    BASE_IMAGE_OUTDATED = "BaseImageOutdated"
    VULNERABLE = "Vulnerable"
    UNTRUSTED_BASE = "UntrustedBase"
    PATCHING = "Patching"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


# Worst first: a workload shows its worst container's state.
_SEVERITY = [
    State.FAILED,
    State.VULNERABLE,
    State.UNTRUSTED_BASE,
    State.BASE_IMAGE_OUTDATED,
    State.UNKNOWN,
    State.PATCHING,
    State.COMPLIANT,
]

# Policy status field for each state (status.workloads.*).
COUNT_FIELDS = {
    State.COMPLIANT: "compliant",
    State.BASE_IMAGE_OUTDATED: "baseImageOutdated",
    State.VULNERABLE: "vulnerable",
    State.UNTRUSTED_BASE: "untrustedBase",
    State.PATCHING: "patching",
    State.FAILED: "failed",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerFacts:
    """What detection observed of one container's image."""

    container: str
    image: str  # as written in the pod template
    repository: str  # host/repository, normalized
    digest: str = ""  # the running digest
    digest_source: str = ""  # "spec" | "pod-status" | "tag-resolved"
    base_name: str = ""  # as recorded, e.g. registry/base:3.12 (tag) or …@sha256 (pinned)
    base_digest: str = ""  # as recorded (for a multi-arch base: often a platform digest)
    lineage_source: str = (
        ""  # manifest-annotations | index-annotations | config-labels | workload-annotation
    )
    base_current: str = ""  # what the base tag points at now (an index digest for multi-arch)
    base_platforms: Mapping[str, str] = field(default_factory=dict)  # of the current base index
    findings: BaselineVerdict | None = None
    scan: ScanOutcome | None = None
    error_reason: str = ""  # set when a fact could not be gathered
    error: str = ""
    note: str = ""  # said with the assessment (e.g. a base annotation that was not used)
    # baseImages.approveAfter: why the moved base is not adopted yet (core/approval.py).
    base_pending: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Assessment:
    state: State
    reason: str
    message: str


def assess_container(facts: ContainerFacts, policy: PolicySpec) -> Assessment:
    """The compliance of one container's image under ``policy``."""
    if facts.error_reason:
        return Assessment(state=State.UNKNOWN, reason=facts.error_reason, message=facts.error)
    trusted = policy.base_images.trusted
    if trusted:
        if not facts.base_name:
            return Assessment(
                state=State.UNTRUSTED_BASE,
                reason=reasons.BASE_UNKNOWN,
                message=f"{facts.image} records no base image, so it cannot be shown to use a "
                "trusted one (set the imagepatch.dev/base-image annotation)",
            )
        if not matches_glob(facts.base_name, trusted):
            return Assessment(
                state=State.UNTRUSTED_BASE,
                reason=reasons.UNTRUSTED_BASE,
                message=f"base {facts.base_name} matches none of spec.baseImages.trusted",
            )
    if facts.findings is not None and facts.findings.violations:
        ids = ", ".join(f.id for f in facts.findings.violations[:5])
        more = len(facts.findings.violations) - 5
        return Assessment(
            state=State.VULNERABLE,
            reason="Vulnerable",
            message=f"{len(facts.findings.violations)} findings over the baseline: {ids}"
            + (f" and {more} more" if more > 0 else ""),
        )
    if outdated(facts) and not facts.base_pending:
        return Assessment(
            state=State.BASE_IMAGE_OUTDATED,
            reason=reasons.BASE_IMAGE_OUTDATED,
            message=f"base {facts.base_name} moved from {short(facts.base_digest)} "
            f"to {short(facts.base_current)}",
        )
    if facts.scan is not None and not facts.scan.findings_usable:
        # No usable scan (none yet, in progress, failed...) proves nothing: unknown, not compliant.
        return Assessment(state=State.UNKNOWN, reason=facts.scan.reason, message=facts.scan.message)
    if outdated(facts):
        # A new base not yet approved is not a missing patch, as in an SSM
        # patch baseline: compliant until it becomes eligible (the message says when).
        return Assessment(
            state=State.COMPLIANT, reason=reasons.BASE_NOT_YET_APPROVED, message=facts.base_pending
        )
    if not facts.base_name:
        return Assessment(
            state=State.COMPLIANT,
            reason=reasons.NO_BASE_RECORDED,
            message=f"{facts.image} records no base image; only findings are checked",
        )
    return Assessment(
        state=State.COMPLIANT, reason="Compliant", message=f"base {facts.base_name} is current"
    )


def outdated(facts: ContainerFacts) -> bool:
    """The recorded base digest is neither the current base nor one of its platforms."""
    if not (facts.base_digest and facts.base_current):
        return False
    if facts.base_digest == facts.base_current:
        return False
    return facts.base_digest not in set(facts.base_platforms.values())


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "?"


def worst(states: Iterable[State]) -> State:
    present = set(states)
    return next((s for s in _SEVERITY if s in present), State.COMPLIANT)


# --- ImagePatches ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchIntent:
    """An ImagePatch that detection wants to exist."""

    name: str
    key: str
    image: str  # repository, no tag
    current_digest: str
    reason: str  # BaseImageOutdated | Vulnerable
    evidence: Mapping[str, Any]
    tag: str = ""  # the tag the judged containers run (a patch never crosses tags)
    targets: tuple[Target, ...] = ()  # exactly the containers judged to need it
    # The imagepatch.dev/rebuild its targets asked for, normalised ("": the
    # policy's default). Part of the key, so every target asked for this one.
    rebuild: str = ""


_NAME_SAFE = re.compile(r"[^a-z0-9-]+")


def patch_key(repository: str, digest: str, reason: str, new_base: str, tag: str = "") -> str:
    """Identity of a needed patch: the image and tag, its digest, why, and the base to move to.

    The same facts give the same key, so re-evaluation never makes a second
    ImagePatch; a newer base (or a new image digest) gives a new one, which is
    how a digest that failed is tried again only once something newer exists.
    The tag is part of it because a rebuild is pushed under the tag it patches:
    ``app:1.4`` and ``app:latest`` on the same digest are two patches, never one
    that writes ``app:latest@<rebuilt 1.4>``.
    """
    return "|".join([f"{repository}:{tag}" if tag else repository, digest, reason, new_base])


def patch_name(repository: str, key: str) -> str:
    """A DNS-1123 name: the image's last path part and a hash of the key."""
    tail = _NAME_SAFE.sub("-", repository.rsplit("/", 1)[-1].lower()).strip("-")[:40] or "image"
    return f"{tail}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def with_rebuild_override(intent: PatchIntent, requested: str) -> PatchIntent:
    """The intent for workloads whose imagepatch.dev/rebuild asks for ``requested``.

    An override is part of the patch's identity: a rebuild a team asked for goes
    only to the workloads that asked for the same one, and the others running
    the same image get their own patch (the policy's default has no suffix).
    The intent carries the request: the patch's ``spec.rebuild`` is made from
    it alone, never from another workload that shares a namespace and name.
    """
    if not requested:
        return intent
    key = f"{intent.key}|rebuild={requested}"
    return replace(intent, key=key, name=patch_name(intent.image, key), rebuild=requested)


def intent_for(facts: ContainerFacts, assessment: Assessment) -> PatchIntent | None:
    """The ImagePatch a container's assessment calls for, if any.

    ``UntrustedBase`` and ``Unknown`` call for none: no rebuild can be derived
    from them automatically; they are reported instead.
    """
    if assessment.state not in (State.VULNERABLE, State.BASE_IMAGE_OUTDATED):
        return None
    evidence: dict[str, Any] = {}
    new_base = ""
    if facts.base_name and facts.base_digest and facts.base_current:
        # Both digests or no baseImage at all: the CRD wants each to be a sha256 digest.
        evidence["baseImage"] = {
            "name": facts.base_name,
            "oldDigest": facts.base_digest,
            "newDigest": facts.base_current,
        }
    if outdated(facts):
        new_base = facts.base_current
    if facts.findings is not None and facts.findings.violations:
        evidence["findings"] = [
            {
                k: v
                for k, v in {
                    "id": f.id,
                    "severity": f.severity_label,
                    "package": f.package,
                    "fixAvailable": f.fix_available,
                    "firstObservedAt": (
                        f.first_observed_at.isoformat().replace("+00:00", "Z")
                        if f.first_observed_at
                        else None
                    ),
                }.items()
                if v is not None and v != ""
            }
            for f in facts.findings.violations[:50]
        ]
    tag = image_tag(facts.image)
    key = patch_key(facts.repository, facts.digest, str(assessment.state), new_base, tag)
    return PatchIntent(
        name=patch_name(facts.repository, key),
        key=key,
        image=facts.repository,
        current_digest=facts.digest,
        reason=str(assessment.state),
        evidence=evidence,
        tag=tag,
    )


def image_tag(image: str) -> str:
    """The tag of an image reference, or "" (none, or not a valid reference)."""
    try:
        return parse_image(image).tag or ""
    except ValueError:
        return ""


@dataclass(frozen=True, kw_only=True, slots=True)
class KnownPatch:
    """An existing ImagePatch, as detection needs to see it."""

    name: str
    key: str  # "" for ImagePatches detection did not create
    image: str
    current_digest: str
    phase: str
    started: bool  # a rollout entry left Pending: never close it then
    tag: str = ""
    targets: frozenset[tuple[str, str, str, str]] = frozenset()  # spec.targets keys
    held: frozenset[tuple[str, str, str, str]] = frozenset()  # containers it is changing now
    close_requested: bool = False

    @property
    def open(self) -> bool:
        return self.phase not in TERMINAL_PHASES

    @property
    def closing(self) -> bool:
        """Asked to close before anything started: its planner closes it next."""
        return self.open and self.close_requested and not self.started


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchPlan:
    create: tuple[PatchIntent, ...]
    close: tuple[KnownPatch, ...]  # open, detection-made, no longer needed, not started
    # Open, not started, detection-made patches that miss containers judged since.
    retarget: tuple[tuple[KnownPatch, PatchIntent], ...] = ()


def plan_patches(
    intents: Sequence[PatchIntent],
    known: Sequence[KnownPatch],
    *,
    evaluated_images: Iterable[str],
    failed_keys: Iterable[str] = (),
    evaluated_targets: Collection[tuple[str, str, str, str]] | None = None,
) -> PatchPlan:
    """What to create, close and retarget, for the images that were evaluated.

    A patch is closed only when its image was evaluated this time (so a
    registry outage never closes anything) and no intent asks for its key;
    closing is a request the patch's own planner carries out (it is the one
    writer of ImagePatch status), so it is asked for once.

    No patch is created while every container it would target is held by
    another open patch that is changing it (one actor per container), nor for
    a key whose rebuild already failed on its workloads (``failed_keys``: the
    memory kept on the workloads, which outlives history pruning).

    ``evaluated_targets`` (kind, namespace, name, container): a pass that
    evaluated only these (an event's targeted pass) closes only a patch whose
    every target is among them; a patch listing no targets is left for a
    full pass.
    """
    by_key = {p.key: p for p in known if p.key}
    wanted = {i.key: i for i in intents}
    held = {t for p in known if p.open for t in p.held}
    failed = set(failed_keys)
    create = tuple(
        i
        for k, i in sorted(wanted.items())
        if k not in by_key
        and k not in failed
        and not (i.targets and all(t.key in held for t in i.targets))
    )
    evaluated = set(evaluated_images)
    scope = None if evaluated_targets is None else frozenset(evaluated_targets)
    close = tuple(
        p
        for p in known
        if p.key
        and p.open
        and not p.started
        and not p.close_requested
        and p.key not in wanted
        and p.image in evaluated
        and (scope is None or (bool(p.targets) and p.targets <= scope))
    )
    retarget = tuple(
        (by_key[k], i)
        for k, i in sorted(wanted.items())
        if k in by_key
        and by_key[k].open
        and not by_key[k].started
        and by_key[k].targets
        and not {t.key for t in i.targets} <= by_key[k].targets
    )
    return PatchPlan(create=create, close=close, retarget=retarget)


def overlay(
    state: State,
    repository: str,
    digest: str,
    known: Sequence[KnownPatch],
    tag: str = "",
    target: tuple[str, str, str, str] | None = None,
) -> State:
    """Patching while a patch for this image+tag+digest is open; Failed if the last one failed.

    With ``target`` (kind, namespace, name, container), a patch that lists
    its targets counts only for those: a workload running the same image that
    is not one of them (its rebuild was refused, say) is not being patched.
    """
    mine = [
        p
        for p in known
        if p.image == repository
        and p.current_digest == digest
        and (not p.tag or p.tag == tag)
        and (target is None or not p.targets or target in p.targets)
    ]
    if any(p.open and not p.closing for p in mine):
        return State.PATCHING
    if state in (State.VULNERABLE, State.BASE_IMAGE_OUTDATED) and any(
        p.phase in (Phase.ROLLED_BACK, Phase.FAILED) for p in mine
    ):
        return State.FAILED
    return state


def counts(states: Iterable[State]) -> dict[str, int]:
    """``status.workloads`` of a policy."""
    result = {"total": 0, **{f: 0 for f in COUNT_FIELDS.values()}}
    for s in states:
        result["total"] += 1
        if s in COUNT_FIELDS:
            result[COUNT_FIELDS[s]] += 1
    return result
