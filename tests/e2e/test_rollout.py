"""Digest-pinned rollouts with a health gate, automatic rollback, drift, approval, waves.

Given the operator running under its shipped RBAC on the local cluster, and
an ImagePatch that already carries a verified target digest (a human pinned
it), these scenarios check what a user sees: the Deployment's image, the
ImagePatch's phase and reasons, and the Events on the workload.

Pods are simulated by kwok. A Deployment labelled
``sim.imagepatch.dev/crashloop-digest`` (or ``never-ready-digest``) runs fine
on its current image and turns bad only once it runs that digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
# A deadline with room for a busy 2-core CI machine; failures are caught by pod state first.
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def test_rolls_a_deployment_forward_to_the_digest(given: Scenario, operator) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("good")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Succeeded", done["status"]
    # The tag stays readable; the kubelet pulls by digest.
    assert given.image_of(ns, "web") == f"{APP}:1.4@{digest}"
    given.wait_available(ns, "web", 3)
    assert len(operator.image_patches(ns, "web")) == 1  # one patch
    [entry] = done["status"]["rollouts"]
    assert (entry["phase"], entry["previousImage"]) == ("Healthy", OLD)
    assert done["status"]["progress"] == "1/1"
    assert done["status"]["targetDigest"] == digest
    reasons = [e["reason"] for e in given.events(ns, "web")]
    assert "Patched" in reasons
    printed = given.kube.kubectl("get", "imagepatches", patch)
    assert "Succeeded" in printed and "1/1" in printed


@pytest.mark.parametrize("behaviour", ["crashloop", "never-ready"])
def test_unhealthy_digest_is_rolled_back_with_the_reason(given: Scenario, behaviour: str) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest(f"bad-{behaviour}")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    bad = {"crashloop_on": digest} if behaviour == "crashloop" else {"never_ready_on": digest}
    # A short Deployment deadline makes never-ready pods fail the gate quickly.
    given.deployment(ns, "web", image=OLD, policy=policy, progress_deadline=8, **bad)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    assert given.image_of(ns, "web") == OLD
    given.wait_available(ns, "web", 3)
    [entry] = done["status"]["rollouts"]
    expected = "CrashLoopBackOff" if behaviour == "crashloop" else "ProgressDeadlineExceeded"
    assert entry["phase"] == "RolledBack"
    assert entry["reason"] == expected
    if behaviour == "crashloop":
        # The reason names the pod and the container.
        assert "web-" in entry["message"] and "/app: CrashLoopBackOff" in entry["message"]
    assert digest in done["status"]["failedDigests"]
    # RolledBack is posted after the phase is written: wait for it.
    warnings = {e["reason"]: e for e in given.wait_events(
        ns, "web", "RollingBack", "RolledBack", type="Warning")}
    assert {"RollingBack", "RolledBack"} <= set(warnings)
    assert expected in warnings["RolledBack"]["message"] or expected in warnings["RollingBack"]["message"]


def test_human_change_during_the_gate_stops_without_overwriting(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("drift")
    given.policy(policy, rollout={**FAST_GATE, "healthyFor": "60s"})
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    def gating():
        rollouts = given.get("imagepatch", patch).get("status", {}).get("rollouts", [])
        return rollouts and rollouts[0]["phase"] == "Gating"

    from tests.support.wait import wait_for

    wait_for(gating, timeout=60, what="the gate to start")
    # A human edits the pod template mid-rollout.
    given.kube.kubectl("set", "env", "-n", ns, "deployment/web", "FEATURE_X=on")
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Failed", done["status"]
    [entry] = done["status"]["rollouts"]
    assert entry["reason"] == "ExternalChange"
    stalled = {c["type"]: c for c in done["status"]["conditions"]}["Stalled"]
    assert stalled["reason"] == "ExternalChange"
    # Nothing was overwritten: the human's env var and the image both stay.
    dep = given.get("deployment", "web", ns)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "FEATURE_X", "value": "on"} in container.get("env", [])
    assert container["image"] == f"{APP}:1.4@{digest}"
    # The Warning is posted after the phase is written: wait for it.
    assert "ExternalChange" in [e["reason"] for e in given.wait_events(ns, "web", "ExternalChange")]


def test_manual_approval_waits_then_rolls_out(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("approved")
    given.policy(policy, rollout=FAST_GATE, approval="Manual")
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    waiting = given.wait_phase(patch, "AwaitingApproval")
    assert "kubectl patch imagepatch" in waiting["status"]["history"][-1]["message"]
    assert given.image_of(ns, "web") == OLD

    given.approve(patch, by="alice")
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert given.image_of(ns, "web") == f"{APP}:1.4@{digest}"
    assert any(h.get("by") == "alice" for h in done["status"]["history"])


def test_rejection_closes_the_patch_and_remembers_the_digest(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("rejected")
    given.policy(policy, rollout=FAST_GATE, approval="Manual")
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    given.wait_phase(patch, "AwaitingApproval")

    given.approve(patch, decision="Rejected", by="bob")
    done = given.wait_phase(patch, "Failed", "Succeeded")
    assert done["status"]["phase"] == "Failed", done["status"]
    assert digest in done["status"]["failedDigests"]
    assert "rejected by bob" in done["status"]["history"][-1]["message"]
    assert given.image_of(ns, "web") == OLD


def test_waves_stop_a_bad_digest_before_prod(given: Scenario, operator) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("bad-wave")
    stage = unique("stage")
    given.policy(policy, rollout={**FAST_GATE, "waves": [
        {"name": "staging", "namespaceSelector": {"matchLabels": {"stage": f"{stage}-staging"}}},
        {"name": "prod", "namespaceSelector": {"matchLabels": {"stage": f"{stage}-prod"}}},
    ]})
    prod = given.namespace("prod", stage=f"{stage}-prod")
    staging = given.namespace("staging", stage=f"{stage}-staging")
    given.deployment(prod, "web", image=OLD, policy=policy, crashloop_on=digest)
    given.deployment(staging, "web", image=OLD, policy=policy, crashloop_on=digest)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "RolledBack", done["status"]
    by_ns = {e["namespace"]: e for e in done["status"]["rollouts"]}
    assert (by_ns[staging]["wave"], by_ns[prod]["wave"]) == (0, 1)
    assert by_ns[staging]["phase"] == "RolledBack"
    assert by_ns[prod]["phase"] == "Skipped"
    # prod was never touched.
    assert given.image_of(prod, "web") == OLD
    assert operator.image_patches(prod, "web") == []


def test_patch_waits_for_the_maintenance_window(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("window")
    # New Year's Day only: closed today (the window math itself is unit-tested).
    given.policy(policy, rollout=FAST_GATE, maintenanceWindow={
        "schedule": "cron(0 0 1 1 ? *)", "duration": "2h", "cutoff": "1h", "timezone": "UTC"})
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    waiting = given.wait_phase(patch, "AwaitingWindow")
    assert waiting["status"]["nextWindowStart"].endswith("-01-01T00:00:00Z")
    assert given.image_of(ns, "web") == OLD
    printed = json.dumps(waiting["status"]["conditions"])
    assert "maintenance window" in printed
