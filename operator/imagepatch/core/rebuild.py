"""Rebuild and verification steps of an ImagePatch, as pure decisions.

Before any rollout, an ImagePatch without a pinned ``spec.targetDigest``
needs a new image: ``Building`` starts (once) and follows a rebuild, and
``Verifying`` checks the result. Intent goes into ``status`` first:

1. record ``rebuild.startedAt`` and the ``idempotencyKey`` (repository, tag,
   source digest, target base digest, builder: ``idempotency_key``), then ask for
   the build to start;
2. record the builder's id as soon as it is known (starting again with the
   same key returns the same build, so a restart in between is harmless);
3. record each poll's outcome; on success the digest, then ``Verifying``;
4. record the verification; only a ``Passed`` one makes the digest the
   rollout target (``status.rebuild.digest`` with ``verification.result``).

A failed or timed-out build, or a refused verification, ends the patch as
``Failed`` with the reason and the builder's own status.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from imagepatch.core import provenance as slsa
from imagepatch.core import reasons
from imagepatch.core.provenance import ProvenanceCheck
from imagepatch.core.signatures import MISSING, UNVERIFIABLE, VERIFIED, SignatureCheck
from imagepatch.model.imagepatch import ImagePatch
from imagepatch.model.policy import PolicySpec, Rebuild
from imagepatch.model.rebuild_status import RebuildStage, RebuildStatus, VerificationStatus
from imagepatch.model.times import format_time

BUILD_POLL = 5.0  # seconds between polls of a running build
VERIFY_POLL = 10.0  # seconds between checks while a scan of the new image is pending


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildObservation:
    """What the builder said this pass (from the adapter's BuildStatus)."""

    state: str  # Started | Running | Succeeded | Failed
    build_id: str = ""
    digest: str = ""
    builder_status: str = ""
    reason: str = ""
    message: str = ""
    logs_url: str = ""
    # What the build was told, recorded with its id (``status.rebuild``):
    # the base pinned by digest (the BASE_IMAGE build argument), and the tag
    # the rebuild is pushed under (core.tags).
    base_image: str = ""
    tag: str = ""
    # The source revision the build checks out (the running image's label), or
    # why there is none: the build then builds its configured branch.
    revision: str = ""
    source_not_pinned: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Verification:
    """The checks of the rebuilt image (from ``verify``)."""

    result: str  # Passed | Failed | Pending
    message: str
    base_digest: str = ""
    platforms: tuple[str, ...] = ()
    findings_before: int | None = None
    findings_after: int | None = None
    reason: str = ""  # the stall reason when Failed ('' : VerificationFailed)
    signature: SignatureCheck | None = None  # when the policy requires signatures
    provenance: ProvenanceCheck | None = None  # when the policy requires provenance


@dataclass(frozen=True, kw_only=True, slots=True)
class RebuildStep:
    """The status fields to record, what to do next, and the resulting phase."""

    phase: str
    fields: dict[str, Any]
    message: str
    start_build: bool = False
    again: bool = False
    requeue_after: float | None = None
    stalled: str = ""  # a CamelCase reason when the patch ends Failed
    failed_digest: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RebuildChoice:
    """How an image is rebuilt: the strategy, and its CodeBuild project or Job template."""

    strategy: str = ""  # '' when neither the request nor a policy names one
    codebuild_project: str = ""
    job_template: str = ""

    @property
    def builder(self) -> str:
        """The builder as a request names it: ``codebuild:<project>``, ``job:<template>``,
        ``external``, ``rebase`` (the last part of a build's idempotency key)."""
        setting = {"codebuild": self.codebuild_project, "job": self.job_template}.get(
            self.strategy, ""
        )
        return f"{self.strategy}:{setting}" if setting else self.strategy

    def as_spec(self) -> dict[str, Any]:
        """``spec.rebuild`` of an ImagePatch: the strategy and the setting it needs."""
        spec: dict[str, Any] = {"strategy": self.strategy}
        if self.strategy == "codebuild":
            spec["codebuildProject"] = self.codebuild_project
        elif self.strategy == "job":
            spec["jobTemplate"] = self.job_template
        return spec


def choose_rebuild(
    policy: Rebuild | None,
    *,
    strategy: str = "",
    codebuild_project: str = "",
    job_template: str = "",
) -> RebuildChoice:
    """The rebuild asked for (a patch's ``spec.rebuild``, a workload's annotation) over the
    policy's default; a project or template the request leaves empty is the policy's own.
    """
    return RebuildChoice(
        strategy=strategy or (str(policy.strategy) if policy else ""),
        codebuild_project=codebuild_project
        or (policy.codebuild.project if policy and policy.codebuild else ""),
        job_template=job_template or (policy.job.template if policy and policy.job else ""),
    )


def choice_for(patch: ImagePatch, policy: PolicySpec | None) -> RebuildChoice:
    """How ``patch`` is rebuilt: its ``spec.rebuild`` over its policy's default."""
    return choose_rebuild(
        policy.rebuild if policy else None,
        strategy=patch.rebuild_strategy,
        codebuild_project=patch.codebuild_project,
        job_template=patch.job_template,
    )


def refusal_at_start(choice: RebuildChoice, policy: PolicySpec | None) -> str:
    """Why the rebuild a patch carries may not start now, or "" when it may.

    ``spec.rebuild.allowed`` is checked again when the build starts: the
    policy may have changed since detection opened the patch (an admin took a
    template back), and ``spec.rebuild`` is written once, when the patch is
    made. The policy's own strategy, CodeBuild project and Job template are
    always allowed, as they are for workloads that ask for nothing; with no
    (valid) policy nothing allows a build. The message names the strategy,
    project or template and the field an admin changes to allow it.
    """
    what = " ".join(p for p in (choice.strategy, _setting(choice)) if p)
    if policy is None:
        return (
            f"the {what} rebuild is not started: its ImagePatchPolicy is missing or invalid, "
            "so nothing allows it (spec.rebuild.allowed)"
        )
    if choice.as_spec() == choose_rebuild(policy.rebuild).as_spec():
        return ""
    allowed = policy.rebuild.effective_allowed()
    field = "spec.rebuild.allowed"
    unset = (
        ""
        if policy.rebuild.allowed is not None
        else f" ({field} is not set: only the policy's own strategy, project and template)"
    )
    why = ""
    if choice.strategy not in {s.value for s in allowed.strategies}:
        why = f"strategy {choice.strategy!r} is not in {field}.strategies"
    elif choice.strategy == "codebuild" and not any(
        fnmatch.fnmatchcase(choice.codebuild_project, g) for g in allowed.codebuild_projects
    ):
        why = f"CodeBuild project {choice.codebuild_project!r} is not in {field}.codebuildProjects"
    elif choice.strategy == "job" and choice.job_template not in allowed.job_templates:
        why = f"Job template {choice.job_template!r} is not in {field}.jobTemplates"
    if not why:
        return ""
    return (
        f"the {what} rebuild is no longer allowed by its ImagePatchPolicy: {why}{unset}; "
        "nothing was built or rolled out"
    )


def _setting(choice: RebuildChoice) -> str:
    if choice.strategy == "codebuild":
        return f"(CodeBuild project {choice.codebuild_project!r})"
    if choice.strategy == "job":
        return f"(Job template {choice.job_template!r})"
    return ""


# What spec.rebuild of an ImagePatch admits (its CRD): longer names are refused.
MAX_CODEBUILD_PROJECT = 512
MAX_JOB_TEMPLATE = 253


def normalise_rebuild_request(annotation: str) -> str:
    """``imagepatch.dev/rebuild`` in its one canonical form: ``<strategy>[:<argument>]``.

    Whitespace around the value and around each part is dropped, and an
    empty argument (``codebuild:``, the policy's own project) is left out, so
    every reader (the policy's ``allowed`` check, the patch's identity, its
    ``spec.rebuild``) sees the same request. A value of only spaces is no
    request: ``''`` (``rebuild_request_problem`` says it is invalid).
    """
    kind, sep, arg = annotation.strip().partition(":")
    kind, arg = kind.strip(), arg.strip()
    return f"{kind}:{arg}" if sep and arg else kind


def rebuild_request_problem(annotation: str) -> str:
    """Why an ``imagepatch.dev/rebuild`` value can never be a patch's rebuild, or ''.

    Checked before anything is built from it, so the API server never
    refuses the ImagePatch over it: blank, whitespace inside the argument, or
    an argument longer than ``spec.rebuild`` admits. A strategy or project
    the policy does not allow is a refusal instead (``Rebuild.refusal``).
    """
    request = normalise_rebuild_request(annotation)
    if not request:
        return "is blank: name a strategy (codebuild, job, external, rebase) or remove it"
    kind, _, arg = request.partition(":")
    if any(c.isspace() for c in request):
        return f"{request!r} contains whitespace inside a name"
    limit = {"codebuild": MAX_CODEBUILD_PROJECT, "job": MAX_JOB_TEMPLATE}.get(kind)
    if limit is not None and len(arg) > limit:
        return f"names a {kind} argument of {len(arg)} characters; at most {limit} are admitted"
    return ""


def requested_rebuild(annotation: str) -> dict[str, str]:
    """A workload's ``imagepatch.dev/rebuild: <strategy>[:<project or template>]`` as the
    keyword arguments of ``choose_rebuild`` (normalised first; blank asks for nothing)."""
    kind, _, arg = normalise_rebuild_request(annotation).partition(":")
    if not kind:
        return {}
    if kind == "codebuild":
        return {"strategy": kind, "codebuild_project": arg}
    if kind == "job":
        return {"strategy": kind, "job_template": arg}
    return {"strategy": kind}


KEY_FORMAT = "v2"  # the first field of every key this version records


def idempotency_key(
    *, image: str, tag: str, current_digest: str, new_base_digest: str, builder: str = ""
) -> str:
    """What one build makes, and with what:
    ``v2|<repository>:<tag>|<source digest>|<target base digest>|<builder>``.

    A build is started at most once per key, and a builder adopts an existing
    build only when it was made for this key (and pushes where this one
    would). Every part is needed: ``app:1`` and ``app:2`` on the same base
    are two builds (a key without the tag let one tag's rebuild be rolled out
    to the other's workloads), and so are two digests of one tag. The builder
    (``RebuildChoice.builder``) is there because a team's rebuild request is
    part of a patch's identity: two patches of one image that ask for two Job
    templates never share a build. A part that is not known is ``-`` (no tag
    means ``latest``, as the build request reads it).
    """
    return "|".join(
        (
            KEY_FORMAT,
            f"{image}:{tag or 'latest'}",
            current_digest or "-",
            new_base_digest or "-",
            builder or "-",
        )
    )


def is_current_key(key: str) -> bool:
    """Whether ``key`` has this version's format (v0.2 recorded ``<image>|<digest>``)."""
    return key.startswith(KEY_FORMAT + "|")


def verify(
    *,
    target_base_digest: str,
    target_base_platforms: frozenset[str],
    recorded_base_digest: str,
    old_platforms: frozenset[str],
    new_platforms: frozenset[str],
    comparison_accepted: bool | None,
    comparison_reason: str = "",
    findings_before: int | None = None,
    findings_after: int | None = None,
    base_told: str = "",
    scan_pending: bool = False,
    waited: dt.timedelta = dt.timedelta(0),
    max_wait: dt.timedelta = dt.timedelta(minutes=30),
) -> Verification:
    """Is the rebuilt image what was asked for, and no worse?

    * it records the target base (or one of the target index's platforms);
      an image that records none (its lineage was known only from the
      ``imagepatch.dev/base-image`` annotation) is shown built on
      ``base_told``, the base the build was told to use, by its layers, and
      the caller passes the base digest found that way;
    * it is built for the same platforms as the image it replaces;
    * when a scanner is configured, it fixes the findings that made the patch
      and adds none at or over the baseline (``comparison_accepted``, from
      ``core.baseline.compare``); a scan that is not done yet is waited for,
      up to ``max_wait``.
    """
    platforms = tuple(sorted(new_platforms))
    if not recorded_base_digest:
        message = "the new image records no base digest"
        if base_told:
            message += f" and its layers do not start with those of {base_told}, the base the "
            message += "build was told to use"
        return Verification(result="Failed", message=message, platforms=platforms)
    if (
        target_base_digest
        and recorded_base_digest != target_base_digest
        and (recorded_base_digest not in target_base_platforms)
    ):
        return Verification(
            result="Failed",
            base_digest=recorded_base_digest,
            platforms=platforms,
            message=f"the new image is built on {recorded_base_digest}, not on the target base "
            f"{target_base_digest}",
        )
    if old_platforms != new_platforms:
        return Verification(
            result="Failed",
            base_digest=recorded_base_digest,
            platforms=platforms,
            message=f"platforms changed: {sorted(old_platforms) or ['single']} -> "
            f"{sorted(new_platforms) or ['single']}",
        )
    if scan_pending:
        if waited > max_wait:
            return Verification(
                result="Failed",
                base_digest=recorded_base_digest,
                platforms=platforms,
                message=f"the scan of the new image did not finish in {max_wait}",
            )
        return Verification(
            result="Pending",
            base_digest=recorded_base_digest,
            platforms=platforms,
            message="waiting for the scan of the new image",
        )
    if comparison_accepted is False:
        return Verification(
            result="Failed",
            base_digest=recorded_base_digest,
            platforms=platforms,
            findings_before=findings_before,
            findings_after=findings_after,
            message=comparison_reason or "the new image is no better by its findings",
        )
    return Verification(
        result="Passed",
        base_digest=recorded_base_digest,
        platforms=platforms,
        findings_before=findings_before,
        findings_after=findings_after,
        message="base digest, platforms"
        + (" and findings" if comparison_accepted else "")
        + " verified"
        + (f" ({comparison_reason})" if comparison_accepted and comparison_reason else ""),
    )


def with_signature(
    verification: Verification,
    signature: SignatureCheck,
    *,
    waited: dt.timedelta,
    wait_for: dt.timedelta,
) -> Verification:
    """``verification`` (of a digest that passed the other checks) with its signature check.

    Only a ``Verified`` signature keeps it ``Passed``. A missing one is waited
    for up to ``wait_for`` after the build finished (CI signs after it
    pushes), then fails ``SignatureMissing``; signatures that do not verify
    fail ``SignatureInvalid`` at once, and a policy with no key this operator
    can use (only keyless identities, or key Secrets that are not keys) fails
    ``SignatureUnverifiable``: never a pass.
    """
    if verification.result != "Passed":
        return verification
    base = replace(verification, signature=signature)
    if signature.result == VERIFIED:
        return replace(base, message=f"{verification.message}; {signature.message}")
    if signature.result == MISSING and waited <= wait_for:
        return replace(
            base,
            result="Pending",
            message=f"waiting up to {wait_for} for a signature: {signature.message}",
        )
    reason = {
        MISSING: reasons.SIGNATURE_MISSING,
        UNVERIFIABLE: reasons.SIGNATURE_UNVERIFIABLE,
    }.get(signature.result, reasons.SIGNATURE_INVALID)
    return replace(base, result="Failed", reason=reason, message=signature.message)


def with_provenance(
    verification: Verification,
    provenance: ProvenanceCheck,
    *,
    waited: dt.timedelta,
    wait_for: dt.timedelta,
) -> Verification:
    """``verification`` (passed so far, signature included) with its provenance check.

    A missing attestation is waited for like a missing signature (CI attests
    after it pushes), then fails ``ProvenanceMissing``; one that is not
    acceptable (unsigned by the keys, another subject, another builder)
    fails ``ProvenanceInvalid`` at once.
    """
    if verification.result != "Passed":
        return verification
    base = replace(verification, provenance=provenance)
    if provenance.result == slsa.VERIFIED:
        return replace(base, message=f"{verification.message}; {provenance.message}")
    if provenance.result == slsa.MISSING and waited <= wait_for:
        return replace(
            base,
            result="Pending",
            message=f"waiting up to {wait_for} for a provenance attestation: "
            f"{provenance.message}",
        )
    reason = (
        reasons.PROVENANCE_MISSING
        if provenance.result == slsa.MISSING
        else reasons.PROVENANCE_INVALID
    )
    return replace(base, result="Failed", reason=reason, message=provenance.message)


def plan_rebuild(
    *,
    recorded: Mapping[str, Any],  # a raw status
    key: str,
    strategy: str,
    build: BuildObservation | None,
    verification: Verification | None,
    now: dt.datetime,
) -> RebuildStep:
    """``decide_rebuild`` on a raw status document's ``rebuild``."""
    return decide_rebuild(
        rebuild=RebuildStatus.parse(recorded.get("rebuild")),
        key=key,
        strategy=strategy,
        build=build,
        verification=verification,
        now=now,
    )


def decide_rebuild(
    *,
    rebuild: RebuildStatus,
    key: str,
    strategy: str,
    build: BuildObservation | None,
    verification: Verification | None,
    now: dt.datetime,
) -> RebuildStep:
    """The next rebuild step from what is recorded (``rebuild.stage``) and observed.

    ``key`` is recorded with the intent (the first step) and read back from
    status after that; the other steps do not use it.
    """
    if not strategy:
        return RebuildStep(
            phase="Failed",
            fields={},
            stalled=reasons.REBUILD_NOT_CONFIGURED,
            message="no rebuild strategy: set spec.rebuild.strategy in the policy "
            "or the imagepatch.dev/rebuild annotation, or pin "
            "spec.targetDigest",
        )
    stage = rebuild.stage
    if stage == RebuildStage.NOT_STARTED:
        intent = RebuildStatus(strategy=strategy, started_at=format_time(now))
        return RebuildStep(
            phase="Building",
            fields={"rebuild": intent.to_dict(), "idempotencyKey": key},
            message=f"starting the {strategy} rebuild",
            again=True,
        )
    if stage == RebuildStage.STARTING:
        if build is None or build.state not in ("Started", "Failed"):
            return RebuildStep(
                phase="Building",
                fields={},
                start_build=True,
                message=f"starting the {strategy} rebuild",
            )
        if build.state == "Failed":
            return _build_failed(rebuild, build, now)
        rebuild = replace(
            rebuild,
            build_id=build.build_id,
            build_status=build.builder_status or "Started",
            logs_url=build.logs_url or rebuild.logs_url,
            base_image=build.base_image,
            tag=build.tag,
            revision=build.revision,
            source_pinned=(
                True if build.revision else False if build.source_not_pinned else None
            ),
            source_message="" if build.revision else build.source_not_pinned[:1024],
        )
        return RebuildStep(
            phase="Building",
            fields={"rebuild": rebuild.to_dict()},
            message=f"{strategy} build {build.build_id} started",
            again=True,
        )
    if stage == RebuildStage.RUNNING:
        if build is None or build.state in ("Started", "Running"):
            if build is not None and build.builder_status:
                rebuild = replace(
                    rebuild,
                    build_status=build.builder_status,
                    logs_url=build.logs_url or rebuild.logs_url,
                    message=build.message or rebuild.message,
                )
            return RebuildStep(
                phase="Building",
                fields={"rebuild": rebuild.to_dict()},
                message=f"waiting for build {rebuild.build_id}",
                requeue_after=BUILD_POLL,
            )
        if build.state == "Failed":
            return _build_failed(rebuild, build, now)
        rebuild = replace(
            rebuild,
            finished_at=format_time(now),
            digest=build.digest,
            build_status=build.builder_status or "Succeeded",
            message=build.message or "built",
            logs_url=build.logs_url or rebuild.logs_url,
        )
        return RebuildStep(
            phase="Verifying",
            fields={"rebuild": rebuild.to_dict()},
            message=f"verifying {build.digest}",
            again=True,
        )
    digest = rebuild.digest
    if verification is None:
        return RebuildStep(
            phase="Verifying", fields={}, message=f"verifying {digest}", requeue_after=VERIFY_POLL
        )
    checked = VerificationStatus(
        result=verification.result,
        message=verification.message,
        base_digest=verification.base_digest,
        platforms=verification.platforms,
        findings_before=verification.findings_before,
        findings_after=verification.findings_after,
        checked_at=format_time(now),
        signature=verification.signature.to_dict() if verification.signature else None,
        provenance=verification.provenance.to_dict() if verification.provenance else None,
    ).to_dict()
    if verification.result == "Pending":
        return RebuildStep(
            phase="Verifying",
            fields={"verification": checked},
            message=verification.message,
            requeue_after=VERIFY_POLL,
        )
    if verification.result == "Failed":
        return RebuildStep(
            phase="Failed",
            fields={"verification": checked},
            message=f"verification of {digest} failed: {verification.message}",
            stalled=verification.reason or reasons.VERIFICATION_FAILED,
            failed_digest=digest,
        )
    return RebuildStep(
        phase="Verifying",
        fields={"verification": checked},
        message=f"{digest} verified",
        again=True,
    )


def _build_failed(rebuild: RebuildStatus, build: BuildObservation, now: dt.datetime) -> RebuildStep:
    rebuild = replace(
        rebuild,
        finished_at=format_time(now),
        build_status=build.builder_status or "Failed",
        message=build.message or build.reason,
        build_id=build.build_id or rebuild.build_id,
        logs_url=build.logs_url or rebuild.logs_url,
    )
    reason = build.reason or reasons.BUILD_FAILED
    return RebuildStep(
        phase="Failed",
        fields={"rebuild": rebuild.to_dict()},
        stalled=reason,
        message=f"{reason}: {build.message or build.builder_status}",
    )
