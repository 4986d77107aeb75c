"""Argo Rollouts targets: an opted-in ``argoproj.io/v1alpha1`` ``Rollout`` and its gate.

A Rollout is detected and patched like a Deployment: it keeps its pod template
in ``spec.template`` and its pods match ``spec.selector``. How the new pods get
traffic (blue/green or canary steps) is Argo's business; imagepatch decides
*what* runs and *when*, and reads Argo's verdict on *how* it went:

* **The gate is the Rollout's own verdict** (``status.phase``, which Argo
  computes once its controller observed the generation): ``Healthy`` passes
  (after imagepatch's soak, ``healthyFor``), ``Degraded`` or an aborted
  rollout (``status.abort``) fails with Argo's ``status.message`` as the
  reason, ``Paused`` (a manual step: a canary ``pause: {}``, or blue/green
  with ``autoPromotionEnabled: false``) waits, or is promoted when the policy
  says ``rollout.argoRollouts.promote: Auto``. imagepatch's own pod checks
  still apply on top as a floor: a crash-looping new pod fails the gate
  whatever Argo says yet.
* **Promotion** is what ``kubectl argo rollouts promote`` does
  (:func:`promote_patches`): ``spec.paused`` cleared, then the status
  subresource's ``pauseConditions`` cleared (a canary paused between steps
  moves to the next step).
* **Rollback** is Argo's abort (``status.abort: true`` on the status
  subresource, as ``kubectl argo rollouts abort`` writes it: the stable
  ReplicaSet takes all traffic back at once) followed by the previous digest
  restored in the template. The template then matches the stable ReplicaSet
  again, so Argo clears the abort and starts no new rollout.

Pure: plain dicts as the API serves them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.core import health, workload_ref
from imagepatch.core.health import HealthReason, HealthState, HealthVerdict, Progress
from imagepatch.model.policy import ArgoPromote, Rollout

ROLLOUT = "Rollout"
API_VERSION = "argoproj.io/v1alpha1"
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
# ``kubectl argo rollouts abort``'s patch, on the status subresource.
ABORT_PATCH: Mapping[str, Any] = {"status": {"abort": True}}
# Said on the rollback entry of a Rollout: which rollback it was.
ROLLBACK_NOTE = (
    "; rollback is Argo's abort (the stable ReplicaSet keeps serving) and the previous"
    " digest restored in the Rollout's template"
)


def progress(rollout: Mapping[str, Any]) -> Progress:
    """The Rollout's rollout in the gate's terms: complete when Argo says ``Healthy``."""
    spec, status = _mapping(rollout.get("spec")), _mapping(rollout.get("status"))
    want = _int(spec.get("replicas"), 1)
    phase = str(status.get("phase") or "")
    observed = observed_generation(rollout)
    counts = (
        f"Argo Rollouts phase {phase or 'unknown'}"
        + (f" ({status['message']})" if status.get("message") else "")
        + f", {_int(status.get('updatedReplicas'), 0)}/{want} updated,"
        f" {_int(status.get('availableReplicas'), 0)}/{want} available"
    )
    if not observed:
        counts += ", the Argo Rollouts controller has not observed the latest generation yet"
    return Progress(
        want=want,
        complete=observed and phase == "Healthy",
        counts=counts,
        done_text=f"Argo Rollouts reports Healthy, {want}/{want} replicas updated and available",
    )


def observed_generation(rollout: Mapping[str, Any]) -> bool:
    """Argo's ``status.observedGeneration`` (a string) caught up with ``metadata.generation``;
    for a Rollout read through its workloadRef, also ``status.workloadObservedGeneration``
    with the referenced Deployment's generation (a template change is made there)."""
    status = _mapping(rollout.get("status"))
    observed = str(status.get("observedGeneration") or "")
    generation = _int(_mapping(rollout.get("metadata")).get("generation"), 0)
    ref = workload_ref.resolved(rollout)
    if ref is not None and str(status.get("workloadObservedGeneration")) != ref["generation"]:
        return False
    return observed.isdigit() and int(observed) >= generation


def assess(
    *,
    rollout: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
    rollback: bool = False,
) -> HealthVerdict:
    """imagepatch's pod checks first (the floor), then Argo's own verdict (module docstring).

    ``rollback``: the restored image is gated; the abort imagepatch itself
    asked for (and Argo's ``Degraded`` that reports it) is no failure then:
    Argo clears it once the template matches the stable ReplicaSet again.
    """
    floor = health.assess_progress(
        progress=progress(rollout), pods=pods, target_images=target_images, gate=gate,
        started_at=started_at, healthy_since=healthy_since, baseline_restarts=None, now=now,
    )  # fmt: skip
    timed_out = floor.reason == HealthReason.PROGRESS_DEADLINE_EXCEEDED
    if floor.state == HealthState.FAILED and not timed_out:
        return floor  # a new pod is broken: whatever Argo says yet
    status = _mapping(rollout.get("status"))
    name = _name(rollout)
    message = str(status.get("message") or "")
    if rollback:
        return floor
    if observed_generation(rollout) and status.get("abort") is True:
        return HealthVerdict(
            state=HealthState.FAILED, reason=HealthReason.ROLLOUT_ABORTED,
            message=f"Argo Rollouts aborted Rollout {name}: {message or 'status.abort is set'}",
            healthy_since=None,
        )  # fmt: skip
    phase = status.get("phase")
    if observed_generation(rollout) and phase == "Degraded":
        return HealthVerdict(
            state=HealthState.FAILED, reason=HealthReason.ROLLOUT_DEGRADED,
            message=f"Argo Rollouts reports Rollout {name} Degraded: {message or 'no message'}",
            healthy_since=None,
        )  # fmt: skip
    if observed_generation(rollout) and phase == "Paused":
        how = (
            "imagepatch promotes it (rollout.argoRollouts.promote: Auto)"
            if gate.argo_promote == ArgoPromote.AUTO
            else "promote it with `kubectl argo rollouts promote`, or set"
            " rollout.argoRollouts.promote: Auto on the policy"
        )
        return HealthVerdict(
            state=HealthState.PAUSED, reason=HealthReason.ROLLOUT_PAUSED,
            message=f"Rollout {name} is paused ({message or 'a manual step'}); {how}",
            healthy_since=healthy_since,
        )  # fmt: skip
    return floor


def wants_promotion(verdict: HealthVerdict, gate: Rollout) -> bool:
    """The gate waits at a manual step and the policy lets imagepatch promote."""
    return verdict.reason == HealthReason.ROLLOUT_PAUSED and gate.argo_promote == ArgoPromote.AUTO


def promote_patches(
    rollout: Mapping[str, Any],
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(spec merge patch, status merge patch) of a plain ``kubectl argo rollouts promote``.

    As Argo's CLI (pkg/kubectl-argo-rollouts/cmd/promote): ``spec.paused``
    cleared if set; the pause conditions cleared if any, else a canary with
    steps (paused by its controller between steps) moves to the next step.
    """
    spec, status = _mapping(rollout.get("spec")), _mapping(rollout.get("status"))
    spec_patch = {"spec": {"paused": False}} if spec.get("paused") is True else None
    status_patch: Mapping[str, Any] | None = None
    if status.get("pauseConditions"):
        status_patch = {"status": {"pauseConditions": None}}
    else:
        steps = _mapping(_mapping(spec.get("strategy")).get("canary")).get("steps")
        if isinstance(steps, list) and steps:
            index = min(_int(status.get("currentStepIndex"), 0) + 1, len(steps))
            status_patch = {"status": {"pauseConditions": None, "currentStepIndex": index}}
    return spec_patch, status_patch


def with_rollback_note(message: str) -> str:
    """The rollback entry's message, saying which rollback a Rollout gets."""
    return message if ROLLBACK_NOTE in message else message + ROLLBACK_NOTE


def _name(obj: Mapping[str, Any]) -> str:
    meta = _mapping(obj.get("metadata"))
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}".lstrip("/")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
