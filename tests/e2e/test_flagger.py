"""Flagger targets (issue 23): a Deployment a Flagger Canary targets rolls forward through
Flagger's blue/green analysis, and a bad digest is rolled back by Flagger, imagepatch
only restoring the template, with Flagger's real controller deciding how traffic moves.

Given the operator under its shipped RBAC plus deploy/rbac-flagger.yaml, run
with ``--flagger``; Flagger v1.36.1's controller (built from its Go module,
tests/support/flagger.py) on the local cluster with ``-mesh-provider=kubernetes``
and no metrics server, kwok playing the kubelet; an opted-in Deployment, a
Canary targeting it (blue/green: one iteration, a short interval, no metrics),
and an ImagePatch with a pinned digest. A Deployment labelled with
``sim.imagepatch.dev/never-ready-digest`` runs pods that never turn ready once
a container runs that digest (tests/cluster/stages/).

What a user sees: the Canary's phase, the target and ``<name>-primary``
Deployments' template images, and the ImagePatch's phase and reasons.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.flagger import Flagger
from tests.support.operator import REPO, OperatorProcess, operator_running
from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok

APP = "registry.local/flagger/app"
OLD = f"{APP}:2.0"
# imagepatch's own deadline is longer than Flagger's analysis and its progress deadline,
# so Flagger's verdict is the one that decides.
GATE = {"progressDeadlineSeconds": 120, "healthyFor": "2s", "maxRestarts": 0}
CANARY_DEADLINE = 10


@pytest.fixture(scope="module")
def flagger(kube, tmp_path_factory) -> Iterator[Flagger]:
    """Flagger's controller, started once for this module (local cluster only: it installs
    CRDs and runs cluster-wide)."""
    if not kube.kwok:
        pytest.skip("Flagger is started only on the local test cluster")
    started = time.monotonic()
    proc = Flagger(kube=kube, log_path=tmp_path_factory.mktemp("flagger") / "flagger.log")
    proc.start()
    print(f"\nFlagger built (cached) and started in {time.monotonic() - started:.1f}s")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def operator(kube, crds, flagger, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator with --flagger, under deploy/ plus deploy/rbac-flagger.yaml."""
    with operator_running(kube, tmp_path_factory.mktemp("operator"),
                          extra_args=["--flagger", "--detect-tick", "1"],
                          rbac=[REPO / "deploy" / "rbac-flagger.yaml"]) as proc:
        yield proc


def canary_target(given: Scenario, flagger: Flagger, ns: str, name: str, *, policy: str,
                  never_ready_on: str | None = None,
                  crashloop_on: str | None = None) -> dict[str, Any]:
    """An opted-in Deployment and the Canary a team using Flagger writes for it (blue/green
    through Kubernetes Services, one iteration, no metrics), once Flagger initialised it."""
    labels = {"app": name}
    if never_ready_on:
        labels["sim.imagepatch.dev/never-ready-digest"] = never_ready_on.split(":")[1][:16]
    if crashloop_on:
        labels["sim.imagepatch.dev/crashloop-digest"] = crashloop_on.split(":")[1][:16]
    given.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"imagepatch.dev/policy": policy}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": OLD}]}}},
    })
    given.apply({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"provider": "kubernetes",
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "progressDeadlineSeconds": CANARY_DEADLINE,
                 "service": {"port": 80, "portDiscovery": False},
                 # 10s: the shortest interval Flagger runs (a shorter one is raised to it).
                 "analysis": {"interval": "10s", "threshold": 1, "iterations": 1}},
    })
    started = time.monotonic()
    initialized = flagger.wait_phase(ns, name, "Initialized", timeout=90)
    print(f"\nFlagger initialised Canary {ns}/{name} in {time.monotonic() - started:.1f}s")
    return initialized


def entries_by_name(done: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in done["status"]["rollouts"]}


def test_canary_target_rolls_forward_on_flaggers_verdict(given: Scenario, flagger: Flagger) -> None:
    # Given a Deployment a Flagger Canary targets, initialised (its primary serves)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("flagger-good")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    canary_target(given, flagger, ns, "web", policy=policy)

    # When a pinned digest is rolled out to it
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=150)

    # Then the digest went into the target Deployment's template, Flagger ran its analysis
    # and promoted it into the primary, and the gate passed on Flagger's Succeeded
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    entries = entries_by_name(done)
    web = entries["web"]
    assert (web["kind"], web["phase"], web["previousImage"]) == ("Deployment", "Healthy", OLD)
    assert "Flagger Canary" in web["message"] and "Succeeded" in web["message"], web["message"]
    new = f"{APP}:2.0@{digest}"
    assert given.template_image("Deployment", ns, "web") == new
    assert given.template_image("Deployment", ns, "web-primary") == new
    assert flagger.canary(ns, "web")["status"]["phase"] == "Succeeded"
    # The primary is Flagger's: opted in by the annotations Flagger copied, never patched
    # (by the time its turn comes, Flagger has promoted the digest into it).
    if "web-primary" in entries:
        primary = entries["web-primary"]
        assert primary["phase"] == "Skipped", primary
        assert primary["reason"] in ("AlreadyUpToDate", "FlaggerPrimary"), primary


def test_failed_canary_is_rolled_back_by_flagger_and_the_template_restored(
    given: Scenario, flagger: Flagger
) -> None:
    # Given a Canary-targeted Deployment whose pods never turn ready on the new digest
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("flagger-bad")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    canary_target(given, flagger, ns, "web", policy=policy, never_ready_on=digest)

    # When the digest is rolled out
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=150)

    # Then Flagger failed the canary and rolled back (its primary never ran the digest);
    # imagepatch recorded Flagger's reason and restored only the template
    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    web = entries_by_name(done)["web"]
    assert web["reason"] == "CanaryFailed", web
    assert "Flagger failed Canary" in web["message"]
    assert "Flagger has already rolled back" in web["message"], web["message"]
    assert digest in done["status"]["failedDigests"]
    assert given.template_image("Deployment", ns, "web") == OLD
    assert given.template_image("Deployment", ns, "web-primary") == OLD
    # Flagger takes a template back on its last promoted spec for a rollback by hand: no
    # new analysis; the Canary stays Failed and the canary Deployment scaled to zero.
    canary = flagger.canary(ns, "web")
    assert canary["status"]["phase"] == "Failed"
    assert given.get("deployment", "web", ns)["spec"]["replicas"] == 0


def test_crash_looping_canary_pod_is_rolled_back_by_imagepatchs_floor_without_fighting_flagger(
    given: Scenario, flagger: Flagger
) -> None:
    # Given a Canary-targeted Deployment whose pods crash-loop on the new digest
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("flagger-crash")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    canary_target(given, flagger, ns, "web", policy=policy, crashloop_on=digest)

    # When the digest is rolled out
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=150)

    # Then imagepatch's own pod check on the canary pods fails first (the floor), before
    # Flagger's progress deadline; it restores the template, and the primary, which
    # serves the traffic, never ran the digest
    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    web = entries_by_name(done)["web"]
    assert web["reason"] == "CrashLoopBackOff", web
    assert "Flagger has already rolled back" not in web["message"]
    assert given.template_image("Deployment", ns, "web") == OLD
    assert given.template_image("Deployment", ns, "web-primary") == OLD
    # Flagger sees the template back on its last promoted spec and concludes, without
    # ever promoting the digest.
    final = flagger.wait_phase(ns, "web", "Succeeded", "Failed", timeout=90)
    print(f"\nFlagger's Canary after imagepatch's rollback: {final['status']['phase']}")
    assert given.template_image("Deployment", ns, "web-primary") == OLD
