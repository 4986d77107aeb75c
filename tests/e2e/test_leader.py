"""Two replicas, one actor: a Lease decides, and a standby takes over a killed leader.

Given two operator processes under the shipped RBAC (each with its own log),
only the one holding the ``imagepatch-leader`` Lease acts; the other stands
by. The leader is SIGKILLed (no clean shutdown, so no Lease release) while a
rollout holds its health gate; the standby takes over once the Lease has gone
unrenewed for its duration, resumes the gate from the recorded status and
finishes the rollout, with exactly one image patch of the Deployment between
the two of them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.operator import (
    NAMESPACE,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
GATE = {"progressDeadlineSeconds": 90, "healthyFor": "6s", "maxRestarts": 0}
LEASE_SECONDS = 15  # the default --lease-duration


def lease_holder(kube) -> str:
    raw = kube.kubectl("get", "lease", "imagepatch-leader", "-n", NAMESPACE, "-o", "json",
                       check=False)
    return (json.loads(raw).get("spec") or {}).get("holderIdentity", "") if raw else ""


def test_a_standby_takes_over_a_killed_leader_and_patches_once(kube, crds, tmp_path: Path) -> None:
    install_rbac(kube)
    kubeconfig = service_account_kubeconfig(kube, tmp_path / "operator.kubeconfig")
    given = Scenario(kube)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("leader-takeover")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)

    first = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "first.log")
    second = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "second.log")
    try:
        first.start()
        wait_for(lambda: lease_holder(kube).endswith(f"_{first.proc.pid}"), timeout=60,
                 what="the first operator to hold the Lease")
        second.start()  # its liveness endpoint answers while it stands by
        wait_for(lambda: "standing by" in second.log(), timeout=30, what="the standby")

        given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

        def gating():
            rollouts = given.get("imagepatch", patch).get("status", {}).get("rollouts", [])
            return rollouts and rollouts[0]["phase"] == "Gating" and rollouts[0]
        recorded = wait_for(gating, timeout=60, what="the gate")
        # Only the leader acted: the standby never started kopf or touched anything.
        assert first.image_patches(ns, "web") and not second.image_patches(ns, "web")
        assert "became the leader" not in second.log()
        assert "kopf" not in second.log().split("standing by", 1)[1]

        first.kill()
        killed = time.monotonic()
        wait_for(lambda: lease_holder(kube).endswith(f"_{second.proc.pid}"),
                 timeout=LEASE_SECONDS * 4, what="the standby to take the Lease")
        took_over = time.monotonic() - killed
        print(f"\nstandby took over {took_over:.1f}s after the leader was killed "
              f"(lease duration {LEASE_SECONDS}s)")

        done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["rollouts"][0]["startedAt"] == recorded["startedAt"]
        patches = first.image_patches(ns, "web") + second.image_patches(ns, "web")
        assert len(patches) == 1, patches  # exactly one patch between the two replicas
        assert given.image_of(ns, "web") == f"{OLD}@{digest}"
    finally:
        first.stop()
        second.stop()
        given.cleanup()
    for proc in (first, second):
        assert not proc.forbidden_lines(), proc.forbidden_lines()[:10]
    # A clean stop hands the Lease over: nobody holds it now.
    assert lease_holder(kube) == ""
