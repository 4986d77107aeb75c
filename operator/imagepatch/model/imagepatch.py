"""ImagePatch objects parsed into frozen dataclasses: spec, and the recorded status.

The status is the operator's memory: intent is written there before each
side effect, so the parsed ``RolloutEntry`` list is what the planner resumes
from after a restart. Parsing is lenient about status (an older operator may
have written fewer fields) and strict about the spec fields it needs, raising
``SpecError`` with the field's path. The rebuild's and the verification's
records are typed in ``model.rebuild_status``; ``ImagePatchStatus.to_dict``
gives the recorded status back in its wire form, so the planner can tell what
a step changes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imagepatch.model import names
from imagepatch.model.errors import SpecError
from imagepatch.model.rebuild_status import RebuildStatus, VerificationStatus

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")

# Detection's identity of the patch it created (see core.compliance.patch_key),
# and its request to close a patch that is no longer needed: the planner, the
# one writer of ImagePatch status, closes it if no target has started.
KEY_ANNOTATION = names.KEY_ANNOTATION
CLOSE_ANNOTATION = names.CLOSE_ANNOTATION


class Phase(enum.StrEnum):
    PENDING = "Pending"
    AWAITING_WINDOW = "AwaitingWindow"
    AWAITING_APPROVAL = "AwaitingApproval"
    BUILDING = "Building"
    VERIFYING = "Verifying"
    ROLLING_OUT = "RollingOut"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    CLOSED = "Closed"  # no longer needed: closed by detection before any rollout

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.CLOSED)


# The phases a patch ends in, as the strings status holds, in declaration order.
TERMINAL_PHASES: tuple[str, ...] = tuple(str(p) for p in Phase if p.terminal)


class TargetPhase(enum.StrEnum):
    PENDING = "Pending"
    PATCHING = "Patching"
    GATING = "Gating"
    HEALTHY = "Healthy"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    SKIPPED = "Skipped"

    @property
    def done(self) -> bool:
        return self in (
            TargetPhase.HEALTHY,
            TargetPhase.ROLLED_BACK,
            TargetPhase.FAILED,
            TargetPhase.SKIPPED,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """One container of one workload that runs the image."""

    namespace: str
    name: str
    container: str
    kind: str = "Deployment"
    wave: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.namespace, self.name, self.container)


class ApprovalDecision(enum.StrEnum):
    """A human's ``spec.approval.decision`` (the CRD admits only these)."""

    APPROVED = "Approved"
    REJECTED = "Rejected"


@dataclass(frozen=True, kw_only=True, slots=True)
class Approval:
    decision: ApprovalDecision
    by: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RolloutEntry:
    """The recorded state of one target's rollout (``status.rollouts[]``)."""

    target: Target
    phase: TargetPhase = TargetPhase.PENDING
    previous_image: str = ""
    target_image: str = ""
    started_at: str = ""
    healthy_since: str = ""
    finished_at: str = ""
    reason: str = ""
    message: str = ""
    fingerprint: str = ""
    patched_generation: int = 0
    rollback_started_at: str = ""
    # What rollback writes: the previous image pinned to the digest that ran
    # (``repo:tag@sha256:…``), or previous_image itself when no digest was known.
    rollback_image: str = ""
    # A CronJob's trial run (policy rollout.cronJobTrialRun): the Job's name,
    # recorded before it is created.
    trial_job: str = ""
    # A StatefulSet's forced rollback: the controller revision that ran
    # targetImage, recorded before any pod of it is deleted, and the pods
    # deleted (or being deleted) so the restored template can replace them.
    bad_revision: str = ""
    deleted_pods: tuple[str, ...] = ()
    # rollout.mode GitWriteBack (set when the target starts: a write-back target):
    # the branch written to, the patch's commit there and the revert's, each
    # recorded once pushed (core.rollout.writeback).
    git_branch: str = ""
    git_commit: str = ""
    git_revert: str = ""
    # gitWriteBack.pullRequest: the request opened for the push branch (its web
    # page and number), recorded once the forge answered.
    git_pull_request: str = ""
    git_pull_request_number: int = 0
    # What the forge last said of it (Open, Merged, Closed), and once merged the
    # commit the merge put on the branch (what a revert undoes, even after a
    # squash) and when (the applyTimeout clock starts there).
    git_pull_request_state: str = ""
    git_merge_commit: str = ""
    git_merged_at: str = ""

    @property
    def restore_image(self) -> str:
        return self.rollback_image or self.previous_image

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wave": self.target.wave,
            "namespace": self.target.namespace,
            "kind": self.target.kind,
            "name": self.target.name,
            "container": self.target.container,
            "phase": str(self.phase),
        }
        optional = {
            "previousImage": self.previous_image,
            "targetImage": self.target_image,
            "startedAt": self.started_at,
            "healthySince": self.healthy_since,
            "finishedAt": self.finished_at,
            "reason": self.reason,
            "message": self.message,
            "fingerprint": self.fingerprint,
            "patchedGeneration": self.patched_generation,
            "rollbackStartedAt": self.rollback_started_at,
            "rollbackImage": self.rollback_image,
            "trialJob": self.trial_job,
            "badRevision": self.bad_revision,
            "deletedPods": list(self.deleted_pods),
            "gitBranch": self.git_branch,
            "gitCommit": self.git_commit,
            "gitRevert": self.git_revert,
            "gitPullRequest": self.git_pull_request,
            "gitPullRequestNumber": self.git_pull_request_number,
            "gitPullRequestState": self.git_pull_request_state,
            "gitMergeCommit": self.git_merge_commit,
            "gitMergedAt": self.git_merged_at,
        }
        out.update({k: v for k, v in optional.items() if v})
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ImagePatchStatus:
    phase: Phase = Phase.PENDING
    observed_generation: int = 0
    target_digest: str = ""
    progress: str = ""
    next_window_start: str = ""
    rollouts: tuple[RolloutEntry, ...] = ()
    failed_digests: tuple[str, ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    conditions: tuple[Mapping[str, Any], ...] = ()
    idempotency_key: str = ""  # recorded once, with the rebuild's intent
    rebuild: RebuildStatus = field(default_factory=RebuildStatus)
    verification: VerificationStatus = field(default_factory=VerificationStatus)

    @property
    def verified_digest(self) -> str:
        """``status.rebuild.digest`` once verification passed, else ''."""
        return self.rebuild.digest if self.verification.passed else ""

    def to_dict(self) -> dict[str, Any]:
        """The recorded status in its wire form (to tell what a new step changes)."""
        return {
            "phase": str(self.phase),
            "observedGeneration": self.observed_generation,
            "targetDigest": self.target_digest,
            "progress": self.progress,
            "nextWindowStart": self.next_window_start or None,
            "rollouts": [e.as_dict() for e in self.rollouts],
            "failedDigests": list(self.failed_digests),
            "history": [dict(h) for h in self.history],
            "conditions": [dict(c) for c in self.conditions],
            "idempotencyKey": self.idempotency_key,
            "rebuild": self.rebuild.to_dict() or None,
            "verification": self.verification.to_dict() or None,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ImagePatch:
    name: str
    generation: int
    image: str
    policy: str
    reason: str
    current_digest: str = ""
    target_digest: str = ""
    tag: str = ""
    base_name: str = ""  # spec.evidence.baseImage.name
    old_base_digest: str = ""
    new_base_digest: str = ""
    # spec.evidence.findings[].id: the findings that made the patch; None when
    # it records none (a human's patch), "must fix" then falls back to the scan.
    evidence_findings: tuple[str, ...] | None = None
    rebuild_strategy: str = ""  # spec.rebuild.strategy; "" means the policy's default
    codebuild_project: str = ""
    job_template: str = ""
    targets: tuple[Target, ...] = ()
    approval: Approval | None = None
    key: str = ""  # KEY_ANNOTATION: set on the patches detection creates
    close_requested: str = ""  # CLOSE_ANNOTATION: why detection asks to close it
    status: ImagePatchStatus = field(default_factory=ImagePatchStatus)


def _str(raw: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise SpecError(f"{path}.{key}", "is required")
        return ""
    if not isinstance(value, str):
        raise SpecError(f"{path}.{key}", f"must be a string, not {type(value).__name__}")
    return value


def _digest(raw: Mapping[str, Any], key: str, path: str) -> str:
    value = _str(raw, key, path)
    if value and not _DIGEST.fullmatch(value):
        raise SpecError(f"{path}.{key}", f"{value!r} is not a sha256 digest")
    return value


def _target(raw: Mapping[str, Any], path: str) -> Target:
    return Target(
        namespace=_str(raw, "namespace", path, required=True),
        name=_str(raw, "name", path, required=True),
        container=_str(raw, "container", path, required=True),
        kind=_str(raw, "kind", path) or "Deployment",
        wave=int(raw.get("wave") or 0),
    )


def _entry(raw: Mapping[str, Any], index: int) -> RolloutEntry:
    path = f"status.rollouts[{index}]"
    try:
        phase = TargetPhase(raw.get("phase") or "Pending")
    except ValueError as exc:
        raise SpecError(f"{path}.phase", f"unknown phase {raw.get('phase')!r}") from exc
    return RolloutEntry(
        target=_target(raw, path),
        phase=phase,
        previous_image=raw.get("previousImage") or "",
        target_image=raw.get("targetImage") or "",
        started_at=raw.get("startedAt") or "",
        healthy_since=raw.get("healthySince") or "",
        finished_at=raw.get("finishedAt") or "",
        reason=raw.get("reason") or "",
        message=raw.get("message") or "",
        fingerprint=raw.get("fingerprint") or "",
        patched_generation=int(raw.get("patchedGeneration") or 0),
        rollback_started_at=raw.get("rollbackStartedAt") or "",
        rollback_image=raw.get("rollbackImage") or "",
        trial_job=raw.get("trialJob") or "",
        bad_revision=raw.get("badRevision") or "",
        deleted_pods=tuple(str(n) for n in raw.get("deletedPods") or ()),
        git_branch=raw.get("gitBranch") or "",
        git_commit=raw.get("gitCommit") or "",
        git_revert=raw.get("gitRevert") or "",
        git_pull_request=raw.get("gitPullRequest") or "",
        git_pull_request_number=int(raw.get("gitPullRequestNumber") or 0),
        git_pull_request_state=raw.get("gitPullRequestState") or "",
        git_merge_commit=raw.get("gitMergeCommit") or "",
        git_merged_at=raw.get("gitMergedAt") or "",
    )


def parse_status(raw: Mapping[str, Any] | None) -> ImagePatchStatus:
    raw = raw or {}
    try:
        phase = Phase(raw.get("phase") or "Pending")
    except ValueError as exc:
        raise SpecError("status.phase", f"unknown phase {raw.get('phase')!r}") from exc
    return ImagePatchStatus(
        phase=phase,
        observed_generation=int(raw.get("observedGeneration") or 0),
        target_digest=raw.get("targetDigest") or "",
        progress=raw.get("progress") or "",
        next_window_start=raw.get("nextWindowStart") or "",
        rollouts=tuple(_entry(e, i) for i, e in enumerate(raw.get("rollouts") or [])),
        failed_digests=tuple(raw.get("failedDigests") or ()),
        history=tuple(raw.get("history") or ()),
        conditions=tuple(raw.get("conditions") or ()),
        idempotency_key=raw.get("idempotencyKey") or "",
        rebuild=RebuildStatus.parse(raw.get("rebuild")),
        verification=VerificationStatus.parse(raw.get("verification")),
    )


def parse_imagepatch(body: Mapping[str, Any]) -> ImagePatch:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    approval_raw = spec.get("approval") or {}
    approval = None
    # A decision the CRD would not admit counts as none, as it always did.
    if approval_raw.get("decision") in tuple(ApprovalDecision):
        approval = Approval(
            decision=ApprovalDecision(approval_raw["decision"]),
            by=approval_raw.get("by") or "",
            reason=approval_raw.get("reason") or "",
        )
    base = (spec.get("evidence") or {}).get("baseImage") or {}
    rebuild = spec.get("rebuild") or {}
    recorded_findings = (spec.get("evidence") or {}).get("findings")
    return ImagePatch(
        evidence_findings=(
            tuple(
                str(f["id"]) for f in recorded_findings if isinstance(f, Mapping) and f.get("id")
            )
            if isinstance(recorded_findings, list)
            else None
        ),
        tag=_str(spec, "tag", "spec"),
        base_name=base.get("name") or "",
        old_base_digest=base.get("oldDigest") or "",
        new_base_digest=base.get("newDigest") or "",
        rebuild_strategy=rebuild.get("strategy") or "",
        codebuild_project=rebuild.get("codebuildProject") or "",
        job_template=rebuild.get("jobTemplate") or "",
        name=meta.get("name") or "",
        generation=int(meta.get("generation") or 0),
        image=_str(spec, "image", "spec", required=True),
        policy=_str(spec, "policy", "spec", required=True),
        reason=_str(spec, "reason", "spec") or "Manual",
        current_digest=_digest(spec, "currentDigest", "spec"),
        target_digest=_digest(spec, "targetDigest", "spec"),
        targets=tuple(
            _target(t, f"spec.targets[{i}]") for i, t in enumerate(spec.get("targets") or [])
        ),
        approval=approval,
        key=(meta.get("annotations") or {}).get(KEY_ANNOTATION) or "",
        close_requested=(meta.get("annotations") or {}).get(CLOSE_ANNOTATION) or "",
        status=parse_status(body.get("status")),
    )
