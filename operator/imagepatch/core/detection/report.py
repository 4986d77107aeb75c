"""The record stage of a detection pass: each workload's state, and the policy's status.

Pure. ``report_pass`` computes every evaluated workload's reported state from
what the pass observed and what its act stage did (``plan.Settled``): a
container whose patch the API server refused is Unknown, one whose rebuild
already failed here is Failed, and the open patches overlay the rest
(``compliance.overlay``). ``policy_status`` gives the policy's counts and
whether findings could be read. The reconcile side only writes the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from imagepatch.core import compliance, gitops, kinds, reasons
from imagepatch.core.compliance import Assessment, ContainerFacts, KnownPatch, State
from imagepatch.core.detection.assess import Observation
from imagepatch.core.detection.plan import Settled
from imagepatch.core.detection.workload import clip, kind_of, requested_rebuild
from imagepatch.core.reasons import PATCH_REJECTED
from imagepatch.core.user_rollback import REJECTED_BY_USER, rejection_message
from imagepatch.model.memory import WorkloadMemory
from imagepatch.model.policy import VulnerabilitySource
from imagepatch.model.workload_state import ContainerState

Assessed = Sequence[tuple[ContainerFacts, Assessment]]


@dataclass
class WorkloadResult:
    """One workload's last evaluation: what the policy counts and Security Hub exports."""

    namespace: str
    name: str
    uid: str
    state: str
    message: str
    containers: Sequence[Mapping[str, Any]]
    kind: str = kinds.DEPLOYMENT  # with namespace and name, the workload's identity


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadReport:
    """What the record stage writes for one workload."""

    workload: Mapping[str, Any]
    state: str  # reported: a compliance state, or RebuildNotAllowed
    message: str
    containers: tuple[ContainerState, ...]
    result: WorkloadResult


def with_failed_memory(
    assessed: Assessed, workload: Mapping[str, Any], record: WorkloadMemory
) -> list[tuple[ContainerFacts, Assessment]]:
    """Containers whose patch already failed here read ``Failed``, saying which rebuild.

    The memory is the operator's (``adapters.memory``: it outlives history
    retention of the failed ImagePatch); the workload's
    ``imagepatch.dev/failed-digests`` annotation is only its mirror.
    """
    memory = {m.get("key"): m for m in record.failed if m.get("key")}
    out = []
    for facts, assessment in assessed:
        intent = compliance.intent_for(facts, assessment)
        if intent is not None:
            intent = compliance.with_rebuild_override(intent, requested_rebuild(workload))
        failed = memory.get(intent.key) if intent is not None else None
        if failed and failed.get("reason") == REJECTED_BY_USER:
            # A person rolled this digest back by hand: not rolled out here again.
            assessment = Assessment(state=State.FAILED, reason=REJECTED_BY_USER,
                                    message=rejection_message(failed))
        elif failed:
            assessment = Assessment(
                state=State.FAILED,
                reason=reasons.REBUILD_FAILED_BEFORE,
                message=f"the rebuild {failed['digest']} failed here (ImagePatch "
                f"{failed.get('patch', '?')}, {failed.get('at', '')}); waiting for a newer "
                "base or image",
            )
        out.append((facts, assessment))
    return out


def with_rejections(
    assessed: Assessed, rejected: Mapping[tuple[str, str], str]
) -> list[tuple[ContainerFacts, Assessment]]:
    """Containers whose ImagePatch the API server refused read ``Unknown``, saying why."""
    out = []
    for facts, assessment in assessed:
        why = rejected.get((facts.repository, facts.digest))
        if why is not None:
            facts = replace(facts, error_reason=PATCH_REJECTED, error=why)
            assessment = Assessment(state=State.UNKNOWN, reason=PATCH_REJECTED, message=why)
        out.append((facts, assessment))
    return out


def container_state(facts: ContainerFacts, assessment: Assessment, state: State) -> ContainerState:
    """One container's record in the workload's state."""
    findings = facts.findings
    return ContainerState(
        name=facts.container,
        image=facts.image,
        digest=facts.digest,
        digest_source=facts.digest_source,
        base=facts.base_name,
        base_digest=facts.base_digest,
        base_current=facts.base_current,
        lineage=facts.lineage_source,
        state=str(state),
        reason=assessment.reason,
        message=assessment.message,
        findings_over_baseline=None if findings is None else len(findings.violations),
        findings_by_severity={}
        if findings is None
        else {
            k.upper(): v
            for k, v in findings.violation_counts.as_dict().items()
            if v and k != "total"
        },
    )


def workload_report(
    seen: Observation,
    *,
    known: Sequence[KnownPatch],
    rejected: Mapping[tuple[str, str], str],
    record: WorkloadMemory,
    refusal: str | None,
    skip: gitops.Skip | None = None,
) -> WorkloadReport:
    """One workload's state: its worst container's, with the open patches overlaid."""
    workload = seen.workload
    meta = workload["metadata"]
    assessed = with_failed_memory(with_rejections(seen.assessed, rejected), workload, record)
    states = [
        a.state
        if a.state == State.FAILED
        else compliance.overlay(
            a.state, f.repository, f.digest, known, compliance.image_tag(f.image),
            target=seen.target(f.container),
        )
        for f, a in assessed
    ]  # fmt: skip
    state = compliance.worst(states)
    containers = tuple(
        container_state(f, a, s) for (f, a), s in zip(assessed, states, strict=True)
    )
    records = [c.to_record() for c in containers]
    message = "; ".join(
        f"{c['name']}: {c['message']}" for c in records if c["state"] == str(state)
    ) or str(state)
    reported = str(state)
    if refusal and state in (State.VULNERABLE, State.BASE_IMAGE_OUTDATED):
        reported = reasons.REBUILD_NOT_ALLOWED
        message = f"{state}, but no rebuild is started: {refusal}"
    reported, message = gitops.reported(skip, state, (reported, message))
    return WorkloadReport(
        workload=workload,
        state=reported,
        message=message,
        containers=containers,
        result=WorkloadResult(
            kind=kind_of(workload),
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            state=str(state),
            message=message,
            containers=records,
        ),
    )


def report_pass(
    observations: Sequence[Observation],
    settled: Settled,
    *,
    refused: Mapping[str, str],
    memory: Mapping[str, WorkloadMemory],
    skipped: Mapping[str, gitops.Skip] | None = None,
) -> list[WorkloadReport]:
    """Every evaluated workload's report, from the pass's observations and act outcomes.

    ``memory``: uid -> the operator's memory of the workload (its failed rebuilds).
    """
    return [
        workload_report(
            seen,
            known=settled.known,
            rejected=settled.rejected,
            record=memory[seen.uid],
            refusal=refused.get(seen.uid),
            skip=(skipped or {}).get(seen.uid),
        )
        for seen in observations
    ]


def policy_status(
    counted: Iterable[WorkloadResult],
    *,
    source: VulnerabilitySource,
    findings_errors: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The policy status detection writes: its workloads' counts, and whether findings
    could be read (read by core/policy.py into the FindingsReadable condition)."""
    status: dict[str, Any] = {"workloads": compliance.counts(State(r.state) for r in counted)}
    if source != VulnerabilitySource.NONE:
        status["findings"] = (
            {"readable": False, "reason": findings_errors[0][0],
             "message": clip(findings_errors[0][1], 1000)}
            if findings_errors
            else {"readable": True, "reason": "FindingsRead", "message": ""}
        )  # fmt: skip
    return status
