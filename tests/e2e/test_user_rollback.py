"""A rollback a person makes by hand is respected (issue 22).

Given an app on base v1 that imagepatch patched to a rebuild on base v2
(detection opened the patch, CI pushed the rebuild, the rollout Succeeded),
when a person sets the Deployment's image back to what it ran before, then
imagepatch remembers the rebuild's digest as rejected for that workload: even
after history retention prunes the Succeeded ImagePatch, re-detection opens no
new patch for it, the workload reads Failed / RejectedByUser naming the
digest, ``kubectl imagepatch why`` says so, and the person's image stays.

On today's main this fails: once the Succeeded patch is pruned, detection
proposes the same rebuild again and rolls it out over the person's rollback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_detection import ECR, build_app_on, patches_for, retrigger, wait_state
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def detector(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("user-rollback")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}=http://{registry.host}", "--detect-tick", "1"],
        metrics=True,  # the test waits on its detection pass counter
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, detector) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def test_a_hand_made_rollback_is_not_undone(given, registry, buildah, detector) -> None:
    base_repo, app_repo = unique("ubase"), unique("uapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    old_app = build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    # keepCount 0: the Succeeded patch is pruned, so only the operator's memory can stop
    # detection from proposing the same rebuild again.
    given.policy(policy, baseImages={"checkInterval": "1h"},
                 rebuild={"strategy": "external", "tagPolicy": "Overwrite"},
                 history={"keepCount": 0, "maxAge": "2160h"},
                 rollout={"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0})
    ns = given.namespace()
    running = f"{ECR}/{app_repo}:1@{old_app.digest}"
    given.deployment(ns, "web", image=running, policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")

    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_state(given, ns, "Patching")
    [patch] = patches_for(given, policy)
    name = patch["metadata"]["name"]
    given.wait_phase(name, "Building")
    new_app = build_app_on(buildah, base_v2, app_repo)  # CI overwrites tag 1
    done = given.wait_phase(name, "Succeeded", "RolledBack", "Failed", "Closed", timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert given.image_of(ns, "web") == f"{ECR}/{app_repo}:1@{new_app.digest}"

    # A person rolls it back by hand.
    given.kube.kubectl("set", "image", "deployment/web", f"app={running}", "-n", ns)
    retrigger(given, policy)
    state = wait_state(given, ns, "Failed", timeout=60)
    assert state["containers"][0]["reason"] == "RejectedByUser", state
    assert new_app.digest in state["containers"][0]["message"]

    # Retention prunes the Succeeded patch; re-detection must not propose it again.
    wait_for(lambda: not patches_for(given, policy), timeout=60, what="the patch to be pruned")
    for _ in range(3):
        # The workload already reads Failed, so wait for whole passes that began
        # after the retrigger before reading its state.
        passes = detector.metric("imagepatch_detection_passes_total")
        retrigger(given, policy)
        detector.wait_passes(after=passes)
        state = wait_state(given, ns, "Failed", timeout=30)
        assert not patches_for(given, policy), "the rejected rebuild was proposed again"
    assert state["containers"][0]["reason"] == "RejectedByUser"
    assert given.image_of(ns, "web") == running

    env = {**os.environ, "KUBECONFIG": str(given.kube.kubeconfig)}
    why = subprocess.run([sys.executable, "-m", "imagepatch", "why", "deploy/web", "-n", ns],
                         capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
                         check=True).stdout
    assert f"Deployment {ns}/web is Failed" in why and "RejectedByUser" in why, why
    assert f"rolled back by hand from {new_app.digest}" in why, why
    print(json.dumps(state, indent=1))
