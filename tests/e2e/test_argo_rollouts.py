"""Argo Rollouts targets (issue 23): blue/green and canary Rollouts roll forward, and roll
back on a crash-looping digest, with Argo's real controller deciding how traffic moves.

Given the operator under its shipped RBAC plus deploy/rbac-argo-rollouts.yaml,
run with ``--argo-rollouts``; Argo Rollouts v1.10.2's controller (built from
its Go module, tests/support/argo.py) on the local cluster, kwok playing the
kubelet; an opted-in Rollout and an ImagePatch with a pinned digest. A Rollout
labelled with ``sim.imagepatch.dev/crashloop-digest`` crash-loops only once a
container runs that digest (tests/cluster/stages/).

What a user sees: the Rollout's template image, the ImagePatch's phase and
reasons, and, after a rollback, Argo's stable ReplicaSet unchanged (the abort
sent traffic back to it, and the restored template matches it, so no new
rollout started).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_tenancy_identity import app_on, patches_for, retrigger, wait_state
from tests.support.images import make_base_image
from tests.support.operator import REPO, OperatorProcess, operator_running
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/argo/app"
OLD = f"{APP}:2.0"
FAST_GATE = {"progressDeadlineSeconds": 60, "healthyFor": "3s", "maxRestarts": 0}
BLUE_GREEN = "blueGreen"
CANARY = "canary"


@pytest.fixture(scope="module")
def operator(kube, crds, argo_rollouts, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator with --argo-rollouts, under deploy/ plus deploy/rbac-argo-rollouts.yaml."""
    with operator_running(kube, tmp_path_factory.mktemp("operator"),
                          extra_args=["--argo-rollouts", "--detect-tick", "1"],
                          rbac=[REPO / "deploy" / "rbac-argo-rollouts.yaml"]) as proc:
        yield proc


def rollout(given: Scenario, argo, ns: str, name: str, *, strategy: str, policy: str,
            auto_promotion: bool = True, crashloop_on: str | None = None,
            image: str = OLD, workload_ref: bool = False) -> dict[str, Any]:
    """An opted-in Rollout as a team using Argo would write it, once Argo reports it Healthy.

    Blue/green: an active and a preview Service (Argo moves their selectors).
    Canary: two replicas, 50% then a manual pause, no traffic router (Argo
    scales the ReplicaSets). ``workload_ref``: the pod template is in the
    Deployment ``<name>-template`` (scaled to zero, as Argo's "Migrating to
    Rollouts" shows, and consenting with imagepatch.dev/rollout), which the
    Rollout references through spec.workloadRef.
    """
    labels = {"app": name}
    if crashloop_on:
        labels["sim.imagepatch.dev/crashloop-digest"] = crashloop_on.split(":")[1][:16]
    if strategy == BLUE_GREEN:
        for svc in (f"{name}-active", f"{name}-preview"):
            given.apply({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": svc, "namespace": ns},
                         "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}})
        spec: dict[str, Any] = {"blueGreen": {
            "activeService": f"{name}-active", "previewService": f"{name}-preview",
            "autoPromotionEnabled": auto_promotion, "scaleDownDelaySeconds": 5}}
        replicas = 1
    else:
        spec = {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
        replicas = 2
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]}}
    pods: dict[str, Any] = {"template": template}
    if workload_ref:
        given.apply({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{name}-template", "namespace": ns,
                         "annotations": {"imagepatch.dev/rollout": name}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": template},
        })
        pods = {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": f"{name}-template", "scaleDown": "never"}}
    given.apply({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"imagepatch.dev/policy": policy}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "progressDeadlineSeconds": 60, **pods, "strategy": spec},
    })
    if not workload_ref:
        return argo.wait_phase(ns, name, "Healthy")

    def running() -> dict[str, Any] | None:  # Argo resolved the template and runs its pods
        ro = argo.wait_phase(ns, name, "Healthy")
        status = ro["status"]
        return ro if status.get("workloadObservedGeneration") and status.get(
            "availableReplicas") == replicas else None

    return wait_for(running, timeout=90, what=f"Rollout {ns}/{name} running its Deployment's pods")


FORWARD = [
    pytest.param(BLUE_GREEN, True, "Never", id="blue-green-auto-promotion"),
    pytest.param(BLUE_GREEN, False, "Auto", id="blue-green-promoted-by-policy"),
    pytest.param(CANARY, True, "Auto", id="canary-steps-promoted-by-policy"),
]


@pytest.mark.parametrize(("strategy", "auto_promotion", "promote"), FORWARD)
def test_rollout_rolls_forward_on_argos_verdict(
    given: Scenario, argo_rollouts, strategy: str, auto_promotion: bool, promote: str
) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest(f"good-{strategy}")
    given.policy(policy, rollout={**FAST_GATE, "argoRollouts": {"promote": promote}})
    ns = given.namespace()
    rollout(given, argo_rollouts, ns, "web", strategy=strategy, policy=policy,
            auto_promotion=auto_promotion)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=120)

    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert (entry["kind"], entry["phase"], entry["previousImage"]) == ("Rollout", "Healthy", OLD)
    assert "Argo Rollouts reports Healthy" in entry["message"]
    assert given.template_image("Rollout", ns, "web") == f"{APP}:2.0@{digest}"
    # Argo itself finished the rollout: the new ReplicaSet is the stable one.
    ro = argo_rollouts.wait_phase(ns, "web", "Healthy")
    assert ro["status"]["stableRS"] == ro["status"]["currentPodHash"]
    patched = given.events(ns, "web")
    assert "Patched" in [e["reason"] for e in patched]


def test_paused_rollout_waits_for_a_person_when_the_policy_never_promotes(
    given: Scenario, argo_rollouts, kube
) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("manual-bg")
    given.policy(policy, rollout=FAST_GATE)  # argoRollouts.promote defaults to Never
    ns = given.namespace()
    rollout(given, argo_rollouts, ns, "web", strategy=BLUE_GREEN, policy=policy,
            auto_promotion=False)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    argo_rollouts.wait_phase(ns, "web", "Paused")

    def waiting() -> dict | None:
        obj = given.get("imagepatch", patch)
        entries = (obj.get("status") or {}).get("rollouts") or []
        return obj if entries and entries[0].get("reason") == "RolloutPaused" else None

    obj = wait_for(waiting, timeout=60, what="the gate waiting at Argo's pause")
    assert obj["status"]["phase"] == "RollingOut"
    assert "kubectl argo rollouts promote" in obj["status"]["rollouts"][0]["message"]
    # A person promotes, as `kubectl argo rollouts promote` does; the gate then passes.
    kube.kubectl("patch", "rollout", "web", "-n", ns, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": {"pauseConditions": None}}))
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=90)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])


@pytest.mark.parametrize("strategy", [BLUE_GREEN, CANARY])
def test_crash_looping_digest_is_aborted_and_the_stable_replicaset_stays(
    given: Scenario, argo_rollouts, strategy: str
) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest(f"bad-{strategy}")
    given.policy(policy, rollout={**FAST_GATE, "argoRollouts": {"promote": "Auto"}})
    ns = given.namespace()
    before = rollout(given, argo_rollouts, ns, "web", strategy=strategy, policy=policy,
                     crashloop_on=digest)
    stable = before["status"]["stableRS"]

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=120)

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert entry["reason"] == "CrashLoopBackOff"
    assert "web-" in entry["message"] and "/app: CrashLoopBackOff" in entry["message"]
    # The entry says which rollback this was.
    assert "Argo's abort" in entry["message"], entry["message"]
    assert given.template_image("Rollout", ns, "web") == OLD
    assert digest in done["status"]["failedDigests"]
    # Argo went back to the stable ReplicaSet it had, without a new rollout, and
    # cleared the abort once the template matched it again.
    after = argo_rollouts.wait_phase(ns, "web", "Healthy")
    assert after["status"]["stableRS"] == stable == after["status"]["currentPodHash"]
    assert not after["status"].get("abort")


def test_an_opted_in_rollout_is_detected_like_a_deployment(
    given: Scenario, argo_rollouts, registry
) -> None:
    # Given a Rollout running an app image built on base v1, opted in
    base_repo, app_repo = unique("rbase"), unique("rapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app_on(registry, app_repo, base_v1)
    image = f"{registry.host}/{app_repo}:1"
    policy = unique("pol")
    given.policy(policy, approval="Manual", baseImages={"checkInterval": "1h"},
                 rebuild={"strategy": "external"})
    ns = given.namespace()
    rollout(given, argo_rollouts, ns, "web", strategy=BLUE_GREEN, policy=policy, image=image)
    # Detection watched it and judged it like a Deployment.
    wait_state(given, "Rollout", ns, "web", "Compliant")

    # When its base moves
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)

    # Then a patch is opened for the Rollout's container, by kind, namespace and name
    [patch] = wait_for(lambda: patches_for(given, policy), timeout=60, what="the Rollout's patch")
    assert [(t["kind"], t["namespace"], t["name"], t["container"])
            for t in patch["spec"]["targets"]] == [("Rollout", ns, "web", "app")]


def test_workload_ref_rollout_rolls_forward_through_its_deployments_template(
    given: Scenario, argo_rollouts
) -> None:
    # Given a blue/green Rollout whose pod template is a Deployment's (spec.workloadRef)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("good-ref")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    rollout(given, argo_rollouts, ns, "web", strategy=BLUE_GREEN, policy=policy,
            workload_ref=True)

    # When a pinned digest is rolled out to it
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=120)

    # Then the target is the Rollout, the digest went into the referenced Deployment's
    # template, and Argo rolled it out
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert (entry["kind"], entry["name"], entry["previousImage"]) == ("Rollout", "web", OLD)
    assert "Argo Rollouts reports Healthy" in entry["message"]
    assert given.template_image("Deployment", ns, "web-template") == f"{APP}:2.0@{digest}"
    ro = argo_rollouts.wait_phase(ns, "web", "Healthy")
    assert ro["status"]["stableRS"] == ro["status"]["currentPodHash"]
    assert "spec" not in ro or not ro["spec"].get("template")  # the Rollout's stays empty


def test_workload_ref_rollout_rolls_back_a_crash_looping_digest_in_its_deployment(
    given: Scenario, argo_rollouts
) -> None:
    # Given a workloadRef Rollout whose pods crash-loop on the new digest
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("bad-ref")
    given.policy(policy, rollout={**FAST_GATE, "argoRollouts": {"promote": "Auto"}})
    ns = given.namespace()
    before = rollout(given, argo_rollouts, ns, "web", strategy=BLUE_GREEN, policy=policy,
                     crashloop_on=digest, workload_ref=True)
    stable = before["status"]["stableRS"]

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=120)

    # Then it is rolled back: Argo's abort, and the previous image restored in the
    # Deployment's template; Argo keeps its stable ReplicaSet
    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert entry["reason"] == "CrashLoopBackOff"
    assert "Argo's abort" in entry["message"], entry["message"]
    assert given.template_image("Deployment", ns, "web-template") == OLD
    assert digest in done["status"]["failedDigests"]
    after = argo_rollouts.wait_phase(ns, "web", "Healthy")
    assert after["status"]["stableRS"] == stable == after["status"]["currentPodHash"]
