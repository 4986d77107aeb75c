"""Flagger targets: a Deployment a Canary targets is gated on the Canary's status, over
imagepatch's pod checks; the primary a Canary controls is never patched; the rollback
entry says Flagger already rolled back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagepatch.core import flagger, kinds, reasons
from imagepatch.core.conditions import format_time
from imagepatch.core.health import HealthReason, HealthState
from imagepatch.core.rollout import Workload, plan
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.policy import Rollout
from tests.unit.test_kinds import NEW, NOW, STARTED, TARGET, pod
from tests.unit.test_rollout_plan import OPEN
from tests.unit.test_rollout_plan import policy as plan_policy

GATE = Rollout(progress_deadline_seconds=600, healthy_for=dt.timedelta(0), max_restarts=0)
LATER = format_time(STARTED + dt.timedelta(seconds=30))


def canary(*, phase: str = "Succeeded", changed: str = LATER, message: str = "",
           target: str = "web", kind: str = "Deployment", namespace: str = "shop",
           name: str = "web", api_version: str | None = "apps/v1") -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": kind, "name": target}
    if api_version is not None:
        ref["apiVersion"] = api_version
    status: dict[str, Any] = {"phase": phase, "failedChecks": 0, "lastTransitionTime": changed}
    if message:
        status["conditions"] = [
            {"type": "Other", "status": "True"},
            {"type": "Promoted", "status": "False", "message": message},
        ]
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"targetRef": ref}, "status": status}


def deployment(*, replicas: int = 0, name: str = "web",
               owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "generation": 3}
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "db"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}},
            "status": {"observedGeneration": 3, "replicas": replicas,
                       "updatedReplicas": replicas, "availableReplicas": replicas}}


def crashing() -> dict[str, Any]:
    broken = pod("web-1", image=NEW, ready=False, waiting="CrashLoopBackOff")
    broken["status"]["containerStatuses"][0]["restartCount"] = 2
    return broken


def judge(obj: dict[str, Any], pods: list[dict[str, Any]] | None = None, **kw: Any):
    args: dict[str, Any] = dict(kind="Deployment", workload=obj, pods=pods or [],
                                target_images=TARGET, gate=GATE, started_at=STARTED,
                                healthy_since=None, now=NOW)
    args.update(kw)
    return kinds.assess(**args)


def flagged(**kw: Any) -> dict[str, Any]:
    return flagger.attach(deployment(), canary(**kw))


# --- finding the Canary -------------------------------------------------------------------


def test_the_canary_is_matched_by_target_ref_in_the_deployment_namespace() -> None:
    dep = deployment()
    assert flagger.canary_for([], dep) is None
    others = [canary(target="api"), canary(kind="StatefulSet"), canary(namespace="other"),
              canary(api_version="apps/v1beta1")]
    assert flagger.canary_for(others, dep) is None
    # Two Canaries claiming one Deployment: the first by name, whatever the listing order.
    found = flagger.canary_for([canary(name="web-b"), canary(name="web-a", api_version=None)],
                               dep)
    assert found is not None and found["metadata"]["name"] == "web-a"


def test_attach_keeps_flaggers_words_and_leaves_a_deployment_without_canary_as_is() -> None:
    dep = deployment()
    assert flagger.attach(dep, None) == dep
    assert flagger.attached(dep) is None
    record = flagger.attached(flagger.attach(dep, canary(phase="Failed", message="halted")))
    assert record == {"name": "shop/web", "phase": "Failed", "lastTransitionTime": LATER,
                      "failedChecks": 0, "message": "halted"}
    bare = flagger.attach(dep, {"metadata": {"name": "web", "namespace": "shop"}})
    assert flagger.attached(bare) == {"name": "shop/web", "phase": "", "lastTransitionTime": "",
                                      "failedChecks": 0, "message": ""}


# --- the gate -------------------------------------------------------------------------------


def test_succeeded_after_the_patch_passes_though_flagger_scaled_the_canary_to_zero() -> None:
    verdict = judge(flagged(phase="Succeeded"))
    assert verdict.state == HealthState.HEALTHY
    assert "Succeeded" in verdict.message


def test_succeeded_from_before_the_patch_waits_for_flagger_to_pick_it_up() -> None:
    for changed in (format_time(STARTED), format_time(STARTED - dt.timedelta(hours=1)), ""):
        verdict = judge(flagged(phase="Succeeded", changed=changed))
        assert verdict.state == HealthState.PROGRESSING
        assert "has not picked up the new revision" in verdict.message


@pytest.mark.parametrize("phase", ["Progressing", "Waiting", "Promoting", "Finalising",
                                   "WaitingPromotion", ""])
def test_every_other_phase_waits(phase: str) -> None:
    verdict = judge(flagged(phase=phase, message="analysis running"))
    assert (verdict.state, verdict.reason) == (HealthState.PROGRESSING, HealthReason.ROLLING_OUT)
    assert f"phase {phase or 'unknown'} (analysis running)" in verdict.message


def test_waiting_past_the_deadline_fails_the_gate() -> None:
    verdict = judge(flagged(phase="Progressing"), now=STARTED + dt.timedelta(hours=1))
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.PROGRESS_DEADLINE_EXCEEDED)


def test_failed_fails_with_flaggers_message() -> None:
    verdict = judge(flagged(phase="Failed", message="Canary analysis failed, Deployment scaled"
                            " to zero."))
    assert (verdict.state, verdict.reason) == (HealthState.FAILED, HealthReason.CANARY_FAILED)
    assert verdict.message == ("Flagger failed Canary shop/web: Canary analysis failed,"
                               " Deployment scaled to zero.")
    assert "no message" in judge(flagged(phase="Failed")).message


def test_failed_before_the_patch_is_no_verdict_on_it() -> None:
    verdict = judge(flagged(phase="Failed", changed=format_time(STARTED)))
    assert verdict.state == HealthState.PROGRESSING


def test_a_broken_canary_pod_fails_whatever_flagger_says_yet() -> None:
    verdict = judge(flagged(phase="Progressing"), [crashing()])
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.CRASH_LOOP_BACK_OFF)


def test_a_restored_image_and_a_plain_deployment_get_the_deployments_own_gate() -> None:
    # Rollback: Flagger scaled the canary to zero; the Deployment's own report says so.
    verdict = judge(flagged(phase="Failed"), rollback=True)
    assert verdict.state == HealthState.SCALED_TO_ZERO
    assert judge(deployment()).state == HealthState.SCALED_TO_ZERO


# --- the primary ----------------------------------------------------------------------------


def test_the_primary_a_canary_controls_is_not_patchable() -> None:
    owner = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "web", "uid": "u"}
    primary = deployment(name="web-primary", owners=[{"kind": "ReplicaSet"}, owner])
    reason, why = kinds.not_patchable("Deployment", primary) or ("", "")
    assert reason == reasons.FLAGGER_PRIMARY
    assert "shop/web-primary is the primary of Flagger Canary web" in why
    assert kinds.not_patchable("Deployment", deployment()) is None
    other = deployment(owners=[{"apiVersion": "example.com/v1", "kind": "Canary"}])
    assert kinds.not_patchable("Deployment", other) is None


# --- the planner: the rollback entry says Flagger already rolled back ------------------------

WEB = Target(namespace="shop", name="web", container="app", kind="Deployment")
REPO_IMAGE = "registry.example.com/db/pg:16"


def gating_step(obj: dict[str, Any], pods: list[dict[str, Any]]):
    patch = parse_imagepatch({
        "metadata": {"name": "p1", "generation": 1},
        "spec": {"image": REPO_IMAGE, "policy": "pol", "reason": "Manual",
                 "targetDigest": NEW.split("@")[1]},
        "status": {"phase": "RollingOut", "rollouts": [{
            "namespace": "shop", "name": "web", "container": "app", "kind": "Deployment",
            "wave": 0, "phase": "Gating", "previousImage": REPO_IMAGE, "targetImage": NEW,
            "startedAt": format_time(STARTED)}]},
    })
    pol = plan_policy(rollout={"progressDeadlineSeconds": 600, "healthyFor": "0s"})
    return plan(patch=patch, policy=pol, candidates=None,
                workload=Workload(target=WEB, deployment=obj, pods=tuple(pods)),
                window=OPEN, now=NOW)


def test_a_failed_canary_starts_a_rollback_that_says_flagger_rolled_back_already() -> None:
    step = gating_step(flagged(phase="Failed", message="Canary analysis failed"), [])
    [recorded] = step.status["rollouts"]
    assert (recorded["phase"], recorded["reason"]) == ("RollingBack", "CanaryFailed")
    assert "Canary analysis failed" in recorded["message"]
    assert "Flagger has already rolled back" in recorded["message"]
    assert "target Deployment's template only" in recorded["message"]


def test_a_canary_pod_crashing_rolls_back_without_the_flagger_note() -> None:
    step = gating_step(flagged(phase="Progressing"), [crashing()])
    [recorded] = step.status["rollouts"]
    assert (recorded["phase"], recorded["reason"]) == ("RollingBack", "CrashLoopBackOff")
    assert "Flagger has already" not in recorded["message"]


def test_the_rollback_note_is_said_once() -> None:
    once = flagger.with_rollback_note("CanaryFailed: x")
    assert flagger.with_rollback_note(once) == once


def test_a_succeeded_canary_passes_the_planners_gate() -> None:
    step = gating_step(flagged(phase="Succeeded"), [])
    [recorded] = step.status["rollouts"]
    assert recorded["phase"] == "Healthy"
