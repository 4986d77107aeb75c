"""Observe a rebuild for the planner: start it, poll it, verify its result.

``core.rebuild`` decides; this module does the I/O it asks for, through the
builder adapters (``adapters.builders``), the registry and the findings
reader, and hands back what it saw as core observations. Nothing here writes
status: the rollout reconcile loop records every observation through the
planner, intent first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from imagepatch.adapters.builders import Builder, BuildRequest, BuildState, BuildStatus
from imagepatch.adapters.builders.lineage import (
    REVISION_LABEL,
    base_by_layers,
    image_revision,
    is_revision,
)
from imagepatch.adapters.builders.reservations import Claim, TagReservations
from imagepatch.adapters.errors import AdapterError, ConfigurationError, NotFoundError
from imagepatch.adapters.registry import RegistryClient
from imagepatch.adapters.signatures import SignatureVerifier
from imagepatch.core import baseline, reasons, rebuild, tags
from imagepatch.core.images import ImageRef, InvalidImageReference, is_ecr_host, parse_image
from imagepatch.core.scans import FindingsSource
from imagepatch.core.signatures import UNVERIFIABLE, SignatureCheck
from imagepatch.model.imagepatch import ImagePatch
from imagepatch.model.policy import PolicySpec, TagPolicy, VulnerabilitySource
from imagepatch.model.times import parse_time_strict

log = logging.getLogger("imagepatch.rebuilds")


def build_request(patch: ImagePatch, policy: PolicySpec | None) -> BuildRequest:
    """The build the planner asked for: its key and start time as recorded in status."""
    recorded = patch.status
    choice = rebuild.choice_for(patch, policy)
    return BuildRequest(
        key=recorded.idempotency_key,
        strategy=choice.strategy,
        image=patch.image,
        tag=patch.tag or "latest",
        current_digest=patch.current_digest,
        base_name=patch.base_name,
        base_digest=patch.new_base_digest,
        old_base_digest=patch.old_base_digest,
        codebuild_project=choice.codebuild_project,
        job_template=choice.job_template,
        started_at=parse_time_strict(recorded.rebuild.started_at),
        timeout=policy.rebuild.timeout if policy else dt.timedelta(hours=1),
        push_tag=recorded.rebuild.tag,
        revision=recorded.rebuild.revision,
        policy=patch.policy,
        signing_key=policy.rebuild.rebase.signing_key if policy else None,
    )


def _observation(status: BuildStatus) -> rebuild.BuildObservation:
    state = {
        BuildState.RUNNING: "Running",
        BuildState.SUCCEEDED: "Succeeded",
        BuildState.FAILED: "Failed",
    }[status.state]
    return rebuild.BuildObservation(
        state=state,
        build_id=status.build_id,
        digest=status.digest,
        builder_status=status.builder_status,
        reason=status.reason,
        message=status.message,
        logs_url=status.logs_url,
    )


async def start(
    builders: Mapping[str, Builder],
    request: BuildRequest,
    *,
    registry: RegistryClient | None = None,
    policy: PolicySpec | None = None,
    reservations: TagReservations | None = None,
    owner: str = "",
) -> rebuild.BuildObservation:
    """Start the build ``request`` names, if its policy still allows it.

    ``reservations``, ``owner`` (the ImagePatch's uid): the push tag is
    chosen free of every other patch's (``with_push_tag``).

    ``spec.rebuild.allowed`` is checked again here, as the build starts
    (``core.rebuild.refusal_at_start``): the policy may have changed since
    the patch was opened. A refused build is never asked of a builder; the
    patch ends ``Failed`` with ``RebuildNotAllowed`` and nothing rolls out.
    """
    choice = rebuild.RebuildChoice(
        strategy=request.strategy,
        codebuild_project=request.codebuild_project,
        job_template=request.job_template,
    )
    refusal = rebuild.refusal_at_start(choice, policy)
    if refusal:
        log.warning("rebuild of %s refused at start: %s", request.image, refusal)
        return rebuild.BuildObservation(
            state="Failed", reason=reasons.REBUILD_NOT_ALLOWED, message=refusal
        )
    builder = builders.get(request.strategy)
    if builder is None:
        return rebuild.BuildObservation(
            state="Failed",
            reason=reasons.REBUILD_STRATEGY_UNAVAILABLE,
            message=f"the {request.strategy!r} rebuild strategy is not available in this operator",
        )
    try:
        request = await with_push_tag(registry, request, policy, reservations, owner)
        unpinned = ""
        if request.strategy != "rebase":  # a rebase builds no source: it moves layers
            request, unpinned = await with_source_revision(registry, request)
        build_id = await builder.start(request)
    except ConfigurationError as exc:
        return rebuild.BuildObservation(state="Failed", reason=exc.reason, message=str(exc))
    log.info(
        "rebuild of %s started: %s %s, pushing %s", request.image, request.strategy, build_id,
        request.target,
    )  # fmt: skip
    # What the build was told is recorded with its id: where it pushes, which base.
    return rebuild.BuildObservation(
        state="Started",
        build_id=build_id,
        base_image=request.base_image,
        tag=request.push_to,
        revision=request.revision,
        source_not_pinned=unpinned,
    )


async def recorded_push_tags(kube: Any) -> list[Claim]:
    """Every ImagePatch's recorded push tag (``status.rebuild.tag``), as (uid, image, tag).

    ``kube``: ``adapters.kube.Kube`` (its ``list_imagepatches``).
    """
    claims: list[Claim] = []
    for body in await kube.list_imagepatches():
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        tag = ((body.get("status") or {}).get("rebuild") or {}).get("tag")
        if isinstance(tag, str) and tag and isinstance(spec.get("image"), str):
            claims.append((str(meta.get("uid") or ""), spec["image"], tag))
    return claims


async def with_source_revision(
    registry: RegistryClient | None, request: BuildRequest
) -> tuple[BuildRequest, str]:
    """The request with the running image's source revision, and why it has none ("" if it has).

    Read from the current image's ``org.opencontainers.image.revision``
    label. Without one the build builds its configured branch, and the
    returned sentence says so (recorded in status and posted as an Event).
    """
    if request.revision:
        return request, ""
    if registry is None or not request.current_digest:
        return request, "the running image's digest is not known, so its revision cannot be read"
    try:
        image = parse_image(request.image).with_digest(request.current_digest)
        revision = await image_revision(registry, image)
    except (NotFoundError, InvalidImageReference) as exc:
        return request, f"the running image's revision could not be read: {exc}"
    if not revision:
        return request, f"{request.image}@{request.current_digest} has no {REVISION_LABEL} label"
    if not is_revision(revision):
        return request, f"its {REVISION_LABEL} label {revision[:64]!r} is not a revision"
    return replace(request, revision=revision), ""


async def with_push_tag(
    registry: RegistryClient | None,
    request: BuildRequest,
    policy: PolicySpec | None,
    reservations: TagReservations | None = None,
    owner: str = "",
) -> BuildRequest:
    """The request with the tag to push under: the first free one from the policy's template.

    ``tagPolicy: Overwrite`` (or no policy, or no registry to ask) keeps the
    running tag. One HEAD per candidate; a tag that exists is never reused,
    whatever it points to, since an immutable repository would refuse the push.
    With ``reservations`` a tag another ImagePatch chose (recorded, or
    reserved in this process and about to be) is not free either, and the
    check and the reservation are one step per repository
    (``adapters/builders/reservations.py``): two builds never share a push tag.

    The tag is recorded with the build id, in the same status write. An
    operator killed between starting the build and that write chooses again
    when it restarts, and gets the same tag unless the build has pushed in
    the meantime (it was down for the whole build); then the build of the key
    pushed to the first choice and is not adopted (builders adopt only a build
    of the same key *and* target): CodeBuild starts a build for the second
    choice, the Job builder refuses the Job of that name (``JobNameTaken``).
    Either is visible and safe: another push target's result is never rolled out.
    """
    if request.push_tag or registry is None or policy is None:
        return request
    if policy.rebuild.tag_policy is TagPolicy.OVERWRITE:
        return request
    day = (request.started_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    choosing = (reservations.choosing(request.image, owner) if reservations is not None
                else contextlib.nullcontext(frozenset[str]()))
    try:
        async with choosing as taken:
            for candidate in tags.candidates(policy.rebuild.tag_template, tag=request.tag,
                                             day=day):
                if candidate in taken:
                    continue  # another patch's build is to push it
                try:
                    await registry.head_manifest(f"{request.image}:{candidate}")
                except NotFoundError:
                    if reservations is not None:
                        reservations.reserve(request.image, candidate, owner)
                    return replace(request, push_tag=candidate)
    except ValueError as exc:  # the template makes no valid tag of this one
        raise ConfigurationError(
            f"spec.rebuild.tagTemplate: {exc}", reason=reasons.INVALID_SPEC
        ) from None
    raise ConfigurationError(
        f"every tag spec.rebuild.tagTemplate {policy.rebuild.tag_template!r} makes for "
        f"{request.image}:{request.tag} on {day} exists already ({tags.MAX_CANDIDATES})",
        reason=reasons.NO_FREE_TAG,
    )


async def poll(
    builders: Mapping[str, Builder], build_id: str, request: BuildRequest
) -> rebuild.BuildObservation | None:
    """None when the builder could not be asked this time (a transient error)."""
    builder = builders.get(request.strategy)
    if builder is None:
        return rebuild.BuildObservation(
            state="Failed",
            build_id=build_id,
            reason=reasons.REBUILD_STRATEGY_UNAVAILABLE,
            message=f"no {request.strategy!r} builder",
        )
    try:
        return _observation(await builder.poll(build_id, request))
    except ConfigurationError as exc:
        return rebuild.BuildObservation(
            state="Failed", build_id=build_id, reason=exc.reason, message=str(exc)
        )
    except AdapterError as exc:
        log.warning("polling build %s: %s: %s", build_id, exc.reason, exc)
        return None


async def verify(
    *,
    registry: RegistryClient,
    findings: FindingsSource | None,
    patch: ImagePatch,
    policy: PolicySpec | None,
    now: dt.datetime,
    signatures: SignatureVerifier | None = None,
) -> rebuild.Verification | None:
    """Check the rebuilt image; None when the registry could not answer this time.

    When the policy requires signatures (``spec.verification.signatures``),
    a digest that passed every other check is then looked up for a valid
    cosign signature (``verify_signature``), before anything rolls out.
    """
    recorded = patch.status.rebuild
    digest = recorded.digest
    finished = recorded.finished_at
    waited = now - (parse_time_strict(finished) or now)
    image = parse_image(patch.image)
    new = ImageRef(host=image.host, repository=image.repository, digest=digest)
    old = ImageRef(host=image.host, repository=image.repository, digest=patch.current_digest)
    # The base the build was told to use (recorded when it started; a patch
    # from an older operator has only its evidence).
    base_told = recorded.base_image or build_request(patch, policy).base_image
    try:
        lineage = await registry.image_lineage(new)
        recorded_base = lineage.base_digest or ""
        if not recorded_base and base_told:
            recorded_base = await base_by_layers(registry, new, parse_image(base_told))
        new_platforms = frozenset(await registry.platform_digests(new))
        old_platforms = (
            frozenset(await registry.platform_digests(old))
            if patch.current_digest
            else new_platforms
        )
        target_platforms: frozenset[str] = frozenset()
        if patch.base_name and patch.new_base_digest:
            base = parse_image(patch.base_name)
            base_ref = ImageRef(
                host=base.host, repository=base.repository, digest=patch.new_base_digest
            )
            target_platforms = frozenset((await registry.platform_digests(base_ref)).values())
    except AdapterError as exc:
        if isinstance(exc, ConfigurationError):
            return rebuild.Verification(result="Failed", message=f"{exc.reason}: {exc}")
        log.warning("verifying %s: %s: %s", digest, exc.reason, exc)
        return None
    accepted: bool | None = None
    reason = ""
    before_n = after_n = None
    pending = False
    source = policy.vulnerabilities.source if policy else VulnerabilitySource.NONE
    ecr = is_ecr_host(image.host)
    # (policy is never None here when source is not NONE; the check says so to mypy.)
    if (
        policy is not None
        and source != VulnerabilitySource.NONE
        and findings is not None
        and ecr is not None
    ):
        try:
            after = await findings.read_async(
                repository=image.repository, digest=digest, source=source,
                registry_id=ecr.account, region=ecr.region,
            )  # fmt: skip
            before = await findings.read_async(
                repository=image.repository,
                digest=patch.current_digest,
                source=source,
                registry_id=ecr.account,
                region=ecr.region,
            )
        except AdapterError as exc:
            log.warning("findings for %s: %s: %s", digest, exc.reason, exc)
            return None
        after_verdict = after.verdict(policy.vulnerabilities, now=now)
        before_verdict = before.verdict(policy.vulnerabilities, now=now)
        if after_verdict is None:
            pending = True
        elif before_verdict is not None:
            comparison = baseline.compare(
                before_verdict,
                after_verdict,
                required=patch.evidence_findings,
                base_moved=bool(patch.new_base_digest)
                and patch.new_base_digest != patch.old_base_digest,
            )
            accepted, reason = comparison.accepted, comparison.reason
            before_n, after_n = comparison.before, comparison.after
    checked = rebuild.verify(
        target_base_digest=patch.new_base_digest,
        target_base_platforms=target_platforms,
        recorded_base_digest=recorded_base,
        base_told=base_told if not lineage.base_digest else "",
        old_platforms=old_platforms,
        new_platforms=new_platforms,
        comparison_accepted=accepted,
        comparison_reason=reason,
        findings_before=before_n,
        findings_after=after_n,
        scan_pending=pending,
        waited=waited,
        max_wait=policy.rebuild.timeout if policy else dt.timedelta(hours=1),
    )
    return await verify_signature(
        checked, registry=registry, signatures=signatures, policy=policy, image=new, waited=waited
    )


async def verify_signature(
    checked: rebuild.Verification,
    *,
    registry: RegistryClient,
    signatures: SignatureVerifier | None,
    policy: PolicySpec | None,
    image: ImageRef,
    waited: dt.timedelta,
) -> rebuild.Verification | None:
    """``checked`` with the signature (and provenance) checks the policy asks for.

    None: the registry or KMS could not answer this time; ask again later.
    Provenance needs signature keys (the policy parser insists), so it is
    looked at only once the signature verified.
    """
    requirement = policy.verification.signatures if policy else None
    if requirement is None or checked.result != "Passed":
        return checked
    digest = image.digest or ""
    if signatures is None:  # never in the operator; fail closed all the same
        found = SignatureCheck(result=UNVERIFIABLE, message="no signature verifier configured")
    else:
        try:
            found = await signatures.check(
                registry, ImageRef(host=image.host, repository=image.repository), digest,
                requirement,
            )  # fmt: skip
        except AdapterError as exc:
            if isinstance(exc, ConfigurationError):
                return replace(
                    checked, result="Failed", reason=reasons.SIGNATURE_UNVERIFIABLE,
                    message=f"the signatures of {digest} could not be read: {exc.reason}: {exc}",
                )  # fmt: skip
            log.warning("signatures of %s: %s: %s", digest, exc.reason, exc)
            return None
    log.info("signature check of %s: %s: %s", digest, found.result, found.message)
    checked = rebuild.with_signature(checked, found, waited=waited, wait_for=requirement.wait_for)
    wanted = policy.verification.provenance if policy else None
    if wanted is None or signatures is None or checked.result != "Passed":
        return checked
    try:
        attested = await signatures.check_provenance(
            registry, ImageRef(host=image.host, repository=image.repository), digest, wanted,
            requirement.keys,
        )  # fmt: skip
    except AdapterError as exc:
        log.warning("provenance of %s: %s: %s", digest, exc.reason, exc)
        return None
    log.info("provenance check of %s: %s: %s", digest, attested.result, attested.message)
    return rebuild.with_provenance(checked, attested, waited=waited, wait_for=requirement.wait_for)
