"""Deployment: the controller's rollout report, and the Deployment's health gate.

A Deployment's rollout is complete when the controller observed the
generation and ``updated == available == replicas == spec.replicas`` (no old
pod left); paused (``spec.paused``) or scaled to zero, the gate stops without
judging pods. Its ``Progressing`` condition's ``ProgressDeadlineExceeded`` is
the controller's own failure verdict. ``core.health`` applies the pod rules,
deadlines and soak (see its docstring for the order). A Deployment a Flagger
Canary targets is gated on Flagger's verdict instead, and the primary a Canary
controls is never patched (``core.flagger``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.core import flagger
from imagepatch.core.health import (
    HealthReason,
    HealthState,
    HealthVerdict,
    Progress,
    assess_progress,
    condition,
    short_detail,
)
from imagepatch.core.kinds.shared import Kind, as_int, display_name, mapping, progress_gate
from imagepatch.model.policy import Rollout

DEPLOYMENT = "Deployment"


def assess(
    *,
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    baseline_restarts: Mapping[str, int] | None,
    now: dt.datetime,
) -> HealthVerdict:
    """The health verdict of ``deployment`` rolled onto ``target_images``.

    ``pods`` are the Deployment's pods (those its selector matches, old and
    new); ``target_images`` maps container name to the image the operator set
    (``repo@sha256:…``); ``started_at`` is when the operator patched the
    Deployment, as recorded in status, so a restarted operator keeps its
    deadline; ``healthy_since`` is the value recorded from an earlier verdict.
    See the module docstring for the rules. Drift (a human changing the
    template) is checked by the caller with :func:`pod_template_fingerprint`
    before acting on a verdict.
    """
    return assess_progress(
        progress=deployment_progress(deployment),
        pods=pods,
        target_images=target_images,
        gate=gate,
        started_at=started_at,
        healthy_since=healthy_since,
        baseline_restarts=baseline_restarts,
        now=now,
    )


def deployment_progress(deployment: Mapping[str, Any]) -> Progress:
    """A Deployment's rollout: ``updated == available == replicas == spec.replicas``."""
    metadata = mapping(deployment.get("metadata"))
    spec = mapping(deployment.get("spec"))
    status = mapping(deployment.get("status"))
    # The API server defaults spec.replicas to 1; an HPA keeps it set.
    want = as_int(spec.get("replicas"), default=1)
    stop = None
    if spec.get("paused") is True:
        stop = (
            HealthState.PAUSED,
            HealthReason.DEPLOYMENT_PAUSED,
            f"Deployment {display_name(deployment)} is paused (spec.paused); the gate"
            " stops without a rollback until someone resumes it",
        )
    elif want == 0:
        stop = (
            HealthState.SCALED_TO_ZERO,
            HealthReason.SCALED_TO_ZERO,
            f"Deployment {display_name(deployment)} is scaled to 0 replicas: the new"
            " image is set but no pod runs it, so it is not verified",
        )
    observed = as_int(status.get("observedGeneration"), default=0) >= as_int(
        metadata.get("generation"), default=0
    )
    updated = as_int(status.get("updatedReplicas"), default=0)
    available = as_int(status.get("availableReplicas"), default=0)
    replicas = as_int(status.get("replicas"), default=0)
    progressing = condition(status, "Progressing")
    gave_up = ""
    if observed and progressing.get("reason") == "ProgressDeadlineExceeded":
        gave_up = short_detail(str(progressing.get("message") or "progress deadline exceeded"))
    # No new pod to blame: maybe the ReplicaSet cannot create any (quota,
    # admission), which the Deployment reports as ReplicaFailure.
    failure = condition(status, "ReplicaFailure")
    note = ""
    if failure.get("status") == "True":
        detail = str(failure.get("message") or failure.get("reason"))
        note = f"ReplicaFailure: {short_detail(detail)}"
    return Progress(
        want=want,
        complete=observed and updated == want and available == want and replicas == want,
        counts=_counts_text(
            want=want, updated=updated, available=available, replicas=replicas, observed=observed
        ),
        done_text=f"{want}/{want} replicas updated and available",
        stop=stop,
        gave_up=gave_up,
        no_pod_note=note,
    )


def _counts_text(*, want: int, updated: int, available: int, replicas: int, observed: bool) -> str:
    text = f"{updated}/{want} updated, {available}/{want} available"
    old = replicas - updated
    if old > 0:
        text += f", {old} old pod{'' if old == 1 else 's'} left"
    if not observed:
        text += ", the Deployment controller has not observed the latest generation yet"
    return text


def _progress(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Progress:
    return deployment_progress(deployment)


_OWN_GATE = progress_gate(_progress)


def _gate(
    *,
    workload: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
    rollback: bool,
) -> HealthVerdict:
    """A Flagger Canary's target is gated on Flagger's verdict (``core.flagger``); a
    restored image, and any other Deployment, on the Deployment's own report."""
    flagged = None if rollback else flagger.assess(
        deployment=workload, pods=pods, target_images=target_images, gate=gate,
        started_at=started_at, healthy_since=healthy_since, now=now,
    )  # fmt: skip
    if flagged is not None:
        return flagged
    return _OWN_GATE(
        workload=workload, pods=pods, jobs=jobs, target_images=target_images, gate=gate,
        started_at=started_at, healthy_since=healthy_since, now=now, rollback=rollback,
    )  # fmt: skip


KIND = Kind(name=DEPLOYMENT, api_version="apps/v1", gate=_gate,
            not_patchable=flagger.not_patchable)
