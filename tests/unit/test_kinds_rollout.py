"""Argo Rollouts' Rollout as a target kind: Argo's verdict over imagepatch's pod checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from imagepatch.core import kinds, kinds_rollout
from imagepatch.core.conditions import format_time
from imagepatch.core.health import HealthReason, HealthState
from imagepatch.core.rollout import Workload, plan
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.policy import ArgoPromote, Rollout, parse_policy
from tests.unit.test_kinds import NEW, NOW, STARTED, TARGET, pod
from tests.unit.test_rollout_plan import OPEN
from tests.unit.test_rollout_plan import policy as plan_policy

GATE = Rollout(progress_deadline_seconds=600, healthy_for=dt.timedelta(0), max_restarts=0)
AUTO = replace(GATE, argo_promote=ArgoPromote.AUTO)


def rollout(*, phase: str = "Healthy", observed: str = "2", abort: bool = False,
            message: str = "", paused: bool = False, pause_conditions: bool = False,
            steps: list[dict[str, Any]] | None = None, step: int | None = None) -> dict[str, Any]:
    strategy: dict[str, Any] = {"blueGreen": {"activeService": "web"}}
    if steps is not None:
        strategy = {"canary": {"steps": steps}}
    status: dict[str, Any] = {"phase": phase, "observedGeneration": observed,
                              "updatedReplicas": 1, "availableReplicas": 1}
    if abort:
        status["abort"] = True
    if message:
        status["message"] = message
    if pause_conditions:
        status["pauseConditions"] = [{"reason": "BlueGreenPause"}]
    if step is not None:
        status["currentStepIndex"] = step
    return {
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": 2},
        "spec": {"replicas": 1, "paused": paused, "strategy": strategy,
                 "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}},
        "status": status,
    }


def judge(obj: dict[str, Any], pods: list[dict[str, Any]] | None = None, **kw: Any):
    args: dict[str, Any] = dict(kind=kinds_rollout.ROLLOUT, workload=obj,
                                pods=[pod("web-1", image=NEW)] if pods is None else pods,
                                target_images=TARGET, gate=GATE, started_at=STARTED,
                                healthy_since=None, now=NOW)
    args.update(kw)
    return kinds.assess(**args)


def test_a_rollout_is_a_kind_with_its_template_and_api_version() -> None:
    assert kinds_rollout.ROLLOUT in kinds.KINDS
    assert kinds.api_version("Rollout") == "argoproj.io/v1alpha1"
    assert [c["name"] for _, c in kinds.containers(rollout())] == ["app"]


def test_healthy_observed_rollout_passes_after_the_pod_checks() -> None:
    verdict = judge(rollout())
    assert verdict.state == HealthState.HEALTHY
    assert "Argo Rollouts reports Healthy" in verdict.message


def test_a_healthy_phase_of_an_older_generation_is_not_yet_a_verdict() -> None:
    verdict = judge(rollout(observed="1"))
    assert verdict.state == HealthState.PROGRESSING
    assert "has not observed the latest generation" in verdict.message


def test_degraded_fails_with_argos_message() -> None:
    verdict = judge(rollout(phase="Degraded", message="ProgressDeadlineExceeded: too slow"))
    assert (verdict.state, verdict.reason) == (HealthState.FAILED, HealthReason.ROLLOUT_DEGRADED)
    assert "too slow" in verdict.message


def test_aborted_fails_with_argos_message() -> None:
    verdict = judge(rollout(phase="Degraded", abort=True, message="RolloutAborted: by analysis"))
    assert (verdict.state, verdict.reason) == (HealthState.FAILED, HealthReason.ROLLOUT_ABORTED)
    assert "by analysis" in verdict.message


def test_the_abort_imagepatch_asked_for_is_no_failure_of_the_rollback() -> None:
    verdict = judge(rollout(phase="Degraded", abort=True), rollback=True)
    assert verdict.state == HealthState.PROGRESSING


def test_a_crash_looping_new_pod_fails_whatever_argo_says_yet() -> None:
    pods = [pod("web-1", image=NEW, ready=False, waiting="CrashLoopBackOff")]
    pods[0]["status"]["containerStatuses"][0]["restartCount"] = 2
    verdict = judge(rollout(phase="Paused", pause_conditions=True), pods)
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.CRASH_LOOP_BACK_OFF)


@pytest.mark.parametrize(("gate", "says"), [
    (GATE, "kubectl argo rollouts promote"), (AUTO, "imagepatch promotes it")])
def test_paused_waits_and_says_who_promotes(gate: Rollout, says: str) -> None:
    verdict = judge(rollout(phase="Paused", pause_conditions=True), gate=gate)
    assert (verdict.state, verdict.reason) == (HealthState.PAUSED, HealthReason.ROLLOUT_PAUSED)
    assert says in verdict.message
    assert kinds_rollout.wants_promotion(verdict, gate) == (gate is AUTO)


def test_paused_past_the_deadline_still_waits_for_the_promotion() -> None:
    verdict = judge(rollout(phase="Paused", pause_conditions=True),
                    now=STARTED + dt.timedelta(hours=2))
    assert verdict.state == HealthState.PAUSED


def test_promote_patches_are_kubectl_argo_rollouts_promote() -> None:
    assert kinds_rollout.promote_patches(rollout(paused=True, pause_conditions=True)) == (
        {"spec": {"paused": False}}, {"status": {"pauseConditions": None}})
    # A canary between steps without pause conditions moves to the next step.
    steps = [{"setWeight": 50}, {"pause": {}}]
    assert kinds_rollout.promote_patches(rollout(steps=steps, step=1)) == (
        None, {"status": {"pauseConditions": None, "currentStepIndex": 2}})
    assert kinds_rollout.promote_patches(rollout(steps=steps, step=2))[1] == {
        "status": {"pauseConditions": None, "currentStepIndex": 2}}
    assert kinds_rollout.promote_patches(rollout()) == (None, None)


def test_the_rollback_note_is_said_once() -> None:
    once = kinds_rollout.with_rollback_note("CrashLoopBackOff: web-1/app")
    assert "Argo's abort" in once
    assert kinds_rollout.with_rollback_note(once) == once


def policy(rollout_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
            "metadata": {"name": "p", "generation": 1},
            "spec": {"namespaceSelector": {}, "rollout": rollout_spec}}


def test_policy_argo_rollouts_promote_defaults_to_never_and_names_the_field() -> None:
    assert parse_policy(policy({})).spec.rollout.argo_promote == ArgoPromote.NEVER
    parsed = parse_policy(policy({"argoRollouts": {"promote": "Auto"}}))
    assert parsed.spec.rollout.argo_promote == ArgoPromote.AUTO
    with pytest.raises(SpecError, match=r"rollout\.argoRollouts\.promote"):
        parse_policy(policy({"argoRollouts": {"promote": "Sometimes"}}))


# --- the planner: promote as the policy says; the rollback entry says which ------------------

WEB = Target(namespace="shop", name="web", container="app", kind="Rollout")
REPO_IMAGE = "registry.example.com/db/pg:16"


def gating_step(obj: dict[str, Any], pods: list[dict[str, Any]], *, promote: str = "Never"):
    started = format_time(STARTED)
    patch = parse_imagepatch({
        "metadata": {"name": "p1", "generation": 1},
        "spec": {"image": REPO_IMAGE, "policy": "pol", "reason": "Manual",
                 "targetDigest": NEW.split("@")[1]},
        "status": {"phase": "RollingOut", "rollouts": [{
            "namespace": "shop", "name": "web", "container": "app", "kind": "Rollout",
            "wave": 0, "phase": "Gating", "previousImage": REPO_IMAGE, "targetImage": NEW,
            "startedAt": started}]},
    })
    pol = plan_policy(rollout={"progressDeadlineSeconds": 60, "healthyFor": "30s",
                               "argoRollouts": {"promote": promote}})
    return plan(patch=patch, policy=pol, candidates=None,
                workload=Workload(target=WEB, deployment=obj, pods=tuple(pods)),
                window=OPEN, now=NOW)


@pytest.mark.parametrize(("promote", "promoted"), [("Auto", True), ("Never", False)])
def test_the_gate_promotes_a_paused_rollout_only_when_the_policy_says_auto(
    promote: str, promoted: bool
) -> None:
    paused = rollout(phase="Paused", pause_conditions=True)
    step = gating_step(paused, [pod("web-1", image=NEW)], promote=promote)
    assert step.promote == (WEB if promoted else None)
    assert step.action is None
    [recorded] = step.status["rollouts"]
    assert recorded["reason"] == "RolloutPaused"


def test_a_failed_rollout_gate_starts_a_rollback_that_says_argo_aborts() -> None:
    step = gating_step(rollout(phase="Degraded", message="RolloutAborted: analysis failed"),
                       [pod("web-1", image=NEW)])
    [recorded] = step.status["rollouts"]
    assert (recorded["phase"], recorded["reason"]) == ("RollingBack", "Degraded")
    assert "analysis failed" in recorded["message"] and "Argo's abort" in recorded["message"]
