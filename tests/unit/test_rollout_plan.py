"""The rollout planner, step by step, with an injected clock and no cluster.

Each test gives a recorded ImagePatch status and an observed Deployment, and
checks the one step the planner returns: what it records, and the single side
effect (if any) it asks for. The restart cases seed the status a killed
operator would have left behind.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagepatch.core import health
from imagepatch.core.conditions import format_time
from imagepatch.core.rollout import Candidate, PatchImage, Window, Workload, plan
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.policy import parse_policy_spec

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
REPO = "registry.local/app"
OLD = f"{REPO}:1.4"
DIGEST = "sha256:" + "a" * 64
NEW = f"{REPO}:1.4@{DIGEST}"
OLD_DIGEST = "sha256:" + "0" * 64
OLD_PINNED = f"{OLD}@{OLD_DIGEST}"
WEB = Target(namespace="shop", name="web", container="app")
OPEN = Window(can_start=True)
CLOSED = Window(can_start=False, next_start=T0 + dt.timedelta(hours=17))


def policy(**spec: Any):
    return parse_policy_spec({"namespaceSelector": {}, **spec})


GATE = {"progressDeadlineSeconds": 60, "healthyFor": "30s", "maxRestarts": 0}


def imagepatch(status: dict | None = None, **spec: Any):
    body = {
        "metadata": {"name": "p1", "generation": 1},
        "spec": {"image": REPO, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST, **spec},
        "status": status or {},
    }
    return parse_imagepatch(body)


def entry(phase: str, target: Target = WEB, wave: int = 0, **extra: Any) -> dict:
    return {"namespace": target.namespace, "name": target.name, "container": target.container,
            "kind": "Deployment", "wave": wave, "phase": phase, **extra}


def deployment(image: str, *, generation: int = 1, rolled: bool = True, env: list | None = None,
               replicas: int = 3) -> dict:
    container = {"name": "app", "image": image, **({"env": env} if env else {})}
    status = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
              "availableReplicas": replicas, "readyReplicas": replicas}
    if not rolled:
        status = {"observedGeneration": generation, "replicas": replicas + 1, "updatedReplicas": 1,
                  "availableReplicas": replicas}
    return {
        "metadata": {"name": "web", "namespace": "shop", "generation": generation,
                     "resourceVersion": f"rv{generation}"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [container]}}},
        "status": status,
    }


def pod(image: str, *, name: str = "web-abc12-xyz", crash_restarts: int = 0) -> dict:
    state: dict = {"running": {"startedAt": "2026-11-27T08:59:00Z"}}
    if crash_restarts:
        state = {"waiting": {"reason": "CrashLoopBackOff"}}
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "False" if crash_restarts else "True"}],
                   "containerStatuses": [{"name": "app", "image": image, "ready": not crash_restarts,
                                          "restartCount": crash_restarts, "state": state}]},
    }


def settle(status: dict, **kw: Any):
    """Plan, record, plan again, as the reconcile loop does, until it acts or waits."""
    events = []
    for _ in range(10):
        step = step_for(imagepatch(status), **kw)
        status = {**status, **{k: v for k, v in step.status.items() if v is not None}}
        events += [e.reason for e in step.events]
        if step.action or not step.again:
            return status, step, events
    raise AssertionError("the planner did not settle")


def fingerprint(dep: dict) -> str:
    return health.pod_template_fingerprint(dep, managed_containers=["app"])


WEB_CANDIDATE = Candidate(namespace="shop", name="web", container="app", image=OLD)


def step_for(patch, *, pol=None, dep: dict | None = None, pods=(), window=OPEN, now=T0,
             candidates=(WEB_CANDIDATE,), target=WEB, failed=frozenset()):
    workload = Workload(target=target, deployment=dep, pods=tuple(pods), failed_digests=failed)
    return plan(patch=patch, policy=pol if pol is not None else policy(rollout=GATE),
                candidates=candidates, workload=workload, window=window, now=now)


# --- before the first patch -----------------------------------------------------------


def test_without_a_target_digest_it_starts_a_rebuild_first() -> None:
    step = step_for(imagepatch(targetDigest=None))
    assert step.status["phase"] == "Building"
    assert step.status["idempotencyKey"] == f"v2|{REPO}:latest|-|-|external"  # nothing else known
    assert step.action is None and not step.start_build  # intent first


def test_manual_approval_holds_until_approved() -> None:
    pol = policy(rollout=GATE, approval="Manual")
    waiting = step_for(imagepatch(), pol=pol)
    assert waiting.status["phase"] == "AwaitingApproval"
    assert "kubectl patch imagepatch p1" in waiting.status["history"][-1]["message"]

    approved = step_for(imagepatch(approval={"decision": "Approved", "by": "alice"}), pol=pol)
    assert approved.status["phase"] == "RollingOut"
    assert [r["phase"] for r in approved.status["rollouts"]] == ["Pending"]
    assert approved.status["history"][-1]["by"] == "alice"


def test_a_decision_the_crd_would_not_admit_counts_as_none() -> None:
    pol = policy(rollout=GATE, approval="Manual")
    patch = imagepatch(approval={"decision": "approved", "by": "mallory"})
    assert patch.approval is None
    assert step_for(patch, pol=pol).status["phase"] == "AwaitingApproval"


def test_rejection_fails_and_remembers_the_digest() -> None:
    step = step_for(imagepatch(approval={"decision": "Rejected", "by": "bob", "reason": "not now"}))
    assert step.status["phase"] == "Failed"
    assert step.status["failedDigests"] == [DIGEST]
    assert step.status["history"][-1]["message"] == "rejected by bob: not now"


@pytest.mark.parametrize("window", [CLOSED, Window(can_start=False, next_start=None)])
def test_closed_window_or_past_cutoff_holds_the_first_patch(window: Window) -> None:
    pinned = {"phase": "RollingOut", "rollouts": [entry("Pending")]}
    step = step_for(imagepatch(pinned), dep=deployment(OLD), window=window)
    assert step.status["phase"] == "AwaitingWindow"
    assert step.action is None
    if window.next_start:
        assert step.status["nextWindowStart"] == "2026-11-28T02:00:00Z"
    else:
        assert {c["type"]: c for c in step.status["conditions"]}["Stalled"]["reason"] == "NoMaintenanceWindow"


def test_targets_are_pinned_in_wave_order_before_anything_is_patched() -> None:
    pol = policy(rollout={**GATE, "waves": [
        {"name": "staging", "namespaceSelector": {"matchLabels": {"stage": "staging"}}},
        {"name": "prod", "namespaceSelector": {"matchLabels": {"stage": "prod"}}}]})
    candidates = (
        Candidate(namespace="prod-a", name="web", container="app", namespace_labels={"stage": "prod"}, image=OLD),
        Candidate(namespace="other", name="web", container="app", namespace_labels={}, image=OLD),
        Candidate(namespace="stg", name="web", container="app", namespace_labels={"stage": "staging"}, image=OLD),
    )
    step = step_for(imagepatch(), pol=pol, candidates=candidates, dep=None)
    assert [(r["namespace"], r["wave"]) for r in step.status["rollouts"]] == [
        ("stg", 0), ("prod-a", 1), ("other", 2)]
    assert step.action is None and step.again


def test_first_step_on_a_target_records_intent_without_acting() -> None:
    dep = deployment(OLD)
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}), dep=dep)
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["previousImage"], rec["targetImage"]) == ("Patching", OLD, NEW)
    assert rec["startedAt"] == format_time(T0)
    assert rec["fingerprint"] == fingerprint(dep)
    assert step.action is None  # the patch comes only after this is recorded


def test_target_already_on_the_digest_is_a_no_op() -> None:
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}),
                    dep=deployment(f"{REPO}@{DIGEST}"))
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Skipped", "AlreadyUpToDate")
    assert step.action is None


# --- restarts: what a killed operator left behind ---------------------------------------


def patching_status(dep: dict) -> dict:
    return {"phase": "RollingOut", "rollouts": [entry(
        "Patching", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
        fingerprint=fingerprint(dep))]}


def test_killed_after_intent_before_patch_patches_exactly_once() -> None:
    dep = deployment(OLD)
    step = step_for(imagepatch(patching_status(dep)), dep=dep)
    assert step.action == PatchImage(target=WEB, image=NEW, resource_version="rv1")
    assert step.status["rollouts"][0]["phase"] == "Patching"


def test_killed_after_patch_before_record_does_not_patch_again() -> None:
    dep_old = deployment(OLD)
    dep_new = deployment(NEW, generation=2, rolled=False)
    step = step_for(imagepatch(patching_status(dep_old)), dep=dep_new)
    assert step.action is None
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["patchedGeneration"]) == ("Gating", 2)


def test_killed_during_the_gate_keeps_the_recorded_deadline() -> None:
    dep_old = deployment(OLD)
    started = T0 - dt.timedelta(seconds=120)  # the 60 s deadline passed while we were down
    gating = {"phase": "RollingOut", "rollouts": [entry(
        "Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(started),
        fingerprint=fingerprint(dep_old), patchedGeneration=2)]}
    dep = deployment(NEW, generation=2, rolled=False)
    step = step_for(imagepatch(gating), dep=dep, pods=[pod(NEW)])
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("RollingBack", "ProgressDeadlineExceeded")
    assert step.status["failedDigests"] == [DIGEST]


def test_killed_mid_rollback_finishes_the_rollback_and_never_rolls_forward() -> None:
    dep_old = deployment(OLD)
    rolling_back = {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [entry(
        "RollingBack", previousImage=OLD, rollbackImage=OLD_PINNED, targetImage=NEW,
        startedAt=format_time(T0), fingerprint=fingerprint(dep_old),
        rollbackStartedAt=format_time(T0),
        reason="CrashLoopBackOff", message="web-x/app: CrashLoopBackOff, 3 restarts")]}
    on_new = deployment(NEW, generation=2)
    step = step_for(imagepatch(rolling_back), dep=on_new, pods=[pod(NEW, crash_restarts=3)])
    assert step.action is not None
    assert (step.action.image, step.action.resource_version, step.action.pinned) == (
        OLD_PINNED, "rv2", True)

    back = deployment(OLD_PINNED, generation=3)
    status, step, events = settle(rolling_back, dep=back, pods=[pod(OLD_PINNED)])
    assert step.action is None
    assert status["phase"] == "RolledBack"
    assert status["rollouts"][0]["phase"] == "RolledBack"
    assert events == ["RolledBack"]


# --- the gate ---------------------------------------------------------------------------


def gating_status(dep_old: dict, *, healthy_since: str = "", started: dt.datetime = T0,
                  extra_entries: list | None = None) -> dict:
    rec = entry("Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(started),
                fingerprint=fingerprint(dep_old), patchedGeneration=2)
    if healthy_since:
        rec["healthySince"] = healthy_since
    return {"phase": "RollingOut", "rollouts": [rec, *(extra_entries or [])]}


def test_gate_soaks_then_passes_even_after_the_window_closed() -> None:
    dep_old, dep = deployment(OLD), deployment(NEW, generation=2)
    soaking = step_for(imagepatch(gating_status(dep_old)), dep=dep, pods=[pod(NEW)], window=CLOSED)
    assert soaking.status["rollouts"][0]["healthySince"] == format_time(T0)
    assert soaking.action is None and soaking.requeue_after

    later = T0 + dt.timedelta(seconds=31)
    status, step, events = settle(gating_status(dep_old, healthy_since=format_time(T0)), dep=dep,
                                  pods=[pod(NEW)], window=CLOSED, now=later)
    assert status["phase"] == "Succeeded"
    assert status["rollouts"][0]["phase"] == "Healthy"
    assert events == ["Patched"]


def test_window_closing_stops_the_next_target_from_starting() -> None:
    other = Target(namespace="shop", name="api", container="app")
    status = {"phase": "RollingOut", "rollouts": [
        entry("Healthy", previousImage=OLD, targetImage=NEW, finishedAt=format_time(T0)),
        entry("Pending", target=other)]}
    step = step_for(imagepatch(status), dep=deployment(OLD), window=CLOSED, target=other)
    assert step.action is None
    assert step.status["phase"] == "RollingOut"
    assert step.status["nextWindowStart"] == "2026-11-28T02:00:00Z"


def test_crashloop_starts_a_rollback_with_pod_and_container_named() -> None:
    dep_old, dep = deployment(OLD), deployment(NEW, generation=2, rolled=False)
    step = step_for(imagepatch(gating_status(dep_old)), dep=dep,
                    pods=[pod(NEW, name="web-7d9c5-abcde", crash_restarts=4)])
    [rec] = step.status["rollouts"]
    assert rec["phase"] == "RollingBack"
    assert rec["reason"] == "CrashLoopBackOff"
    assert rec["message"].startswith("web-7d9c5-abcde/app: CrashLoopBackOff, 4 restarts")
    assert [e.reason for e in step.events] == ["RollingBack"]
    assert step.action is None  # the rollback patch follows once this is recorded


def test_rollback_disabled_fails_and_stalls_without_touching_the_workload() -> None:
    dep_old, dep = deployment(OLD), deployment(NEW, generation=2, rolled=False)
    step = step_for(imagepatch(gating_status(dep_old)), pol=policy(rollout={**GATE, "rollback": False}),
                    dep=dep, pods=[pod(NEW, crash_restarts=2)])
    assert step.status["phase"] == "Failed"
    assert {c["type"]: c for c in step.status["conditions"]}["Stalled"]["reason"] == "RollbackDisabled"
    assert step.action is None


def test_a_failed_rollback_stalls_instead_of_ping_ponging() -> None:
    dep_old = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [entry(
        "RollingBack", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
        fingerprint=fingerprint(dep_old), rollbackStartedAt=format_time(T0))]}
    back = deployment(OLD, generation=3, rolled=False)
    step = step_for(imagepatch(status), dep=back, pods=[pod(OLD, crash_restarts=5)])
    assert step.status["phase"] == "Failed"
    assert step.status["rollouts"][0]["reason"] == "RollbackFailed"
    assert step.action is None


def test_human_template_change_mid_gate_is_reported_not_overwritten() -> None:
    dep_old = deployment(OLD)
    edited = deployment(NEW, generation=3, env=[{"name": "FEATURE_X", "value": "on"}])
    step = step_for(imagepatch(gating_status(dep_old)), dep=edited, pods=[pod(NEW)])
    assert step.status["phase"] == "Failed"
    assert step.status["rollouts"][0]["reason"] == "ExternalChange"
    assert step.action is None
    assert [e.reason for e in step.events] == ["ExternalChange"]


def test_human_image_change_mid_gate_is_reported_not_overwritten() -> None:
    dep_old = deployment(OLD)
    step = step_for(imagepatch(gating_status(dep_old)), dep=deployment(f"{REPO}:1.5", generation=3))
    assert step.status["rollouts"][0]["reason"] == "ExternalChange"
    assert "image changed to registry.local/app:1.5" in step.status["rollouts"][0]["message"]
    assert step.action is None


def test_failure_in_the_first_wave_skips_the_later_waves() -> None:
    dep_old, dep = deployment(OLD), deployment(NEW, generation=2, rolled=False)
    prod = Target(namespace="prod", name="web", container="app", wave=1)
    status = gating_status(dep_old, extra_entries=[entry("Pending", target=prod, wave=1)])
    step = step_for(imagepatch(status), dep=dep, pods=[pod(NEW, crash_restarts=1)])
    assert [(r["namespace"], r["phase"]) for r in step.status["rollouts"]] == [
        ("shop", "RollingBack"), ("prod", "Skipped")]


# --- waves ------------------------------------------------------------------------------


@pytest.mark.parametrize(("minutes_later", "waits"), [(5, True), (11, False)])
def test_next_wave_waits_for_the_previous_waves_soak(minutes_later: int, waits: bool) -> None:
    pol = policy(rollout={**GATE, "waves": [
        {"name": "staging", "namespaceSelector": {"matchLabels": {"stage": "staging"}}, "soak": "10m"},
        {"name": "prod", "namespaceSelector": {"matchLabels": {"stage": "prod"}}}]})
    prod = Target(namespace="prod", name="web", container="app", wave=1)
    status = {"phase": "RollingOut", "rollouts": [
        entry("Healthy", previousImage=OLD, targetImage=NEW, finishedAt=format_time(T0)),
        entry("Pending", target=prod, wave=1)]}
    now = T0 + dt.timedelta(minutes=minutes_later)
    step = step_for(imagepatch(status), pol=pol, dep=deployment(OLD), now=now, target=prod)
    if waits:
        assert step.action is None and step.requeue_after == pytest.approx(300, abs=1)
        assert step.status["rollouts"][1]["phase"] == "Pending"
    else:
        assert step.status["rollouts"][1]["phase"] == "Patching"


def test_paused_deployment_holds_the_gate_without_rolling_back() -> None:
    dep_old = deployment(OLD)
    paused = deployment(NEW, generation=2, rolled=False)
    paused["spec"]["paused"] = True
    later = T0 + dt.timedelta(minutes=10)  # far past the deadline
    step = step_for(imagepatch(gating_status(dep_old)), dep=paused, pods=[pod(OLD)], now=later)
    [rec] = step.status["rollouts"]
    assert rec["phase"] == "Gating"
    assert rec["reason"] == "DeploymentPaused"
    assert step.action is None and step.requeue_after


def test_scaled_to_zero_is_applied_but_recorded_as_unverified() -> None:
    dep_old = deployment(OLD)
    zero = deployment(NEW, generation=2, replicas=0)
    status, step, events = settle(gating_status(dep_old), dep=zero, pods=[])
    [rec] = status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Healthy", "ScaledToZero")
    assert "verif" in rec["message"].lower()


def test_hpa_resize_during_the_soak_is_followed_not_failed() -> None:
    dep_old = deployment(OLD)
    resized = deployment(NEW, generation=2, replicas=5)
    resized["status"]["availableReplicas"] = 4  # the HPA's new replica is still starting
    step = step_for(imagepatch(gating_status(dep_old, healthy_since=format_time(T0))), dep=resized,
                    pods=[pod(NEW)], now=T0 + dt.timedelta(seconds=40))
    [rec] = step.status["rollouts"]
    assert rec["phase"] == "Gating"
    assert step.action is None


def test_deadline_condition_left_from_the_bad_rollout_does_not_fail_the_rollback() -> None:
    dep_old = deployment(OLD)
    started = T0 - dt.timedelta(seconds=5)
    status = {"phase": "RollingOut", "rollouts": [entry(
        "RollingBack", previousImage=OLD, targetImage=NEW, startedAt=format_time(started),
        fingerprint=fingerprint(dep_old), rollbackStartedAt=format_time(started))]}
    back = deployment(OLD, generation=3)
    back["status"]["conditions"] = [{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "web-bad" has timed out progressing.',
        "lastUpdateTime": format_time(started - dt.timedelta(seconds=1)),
        "lastTransitionTime": format_time(started - dt.timedelta(seconds=1))}]
    status, step, events = settle(status, dep=back, pods=[pod(OLD)])
    assert status["phase"] == "RolledBack", status["rollouts"]
