"""The operator survives a kube-apiserver restart, and its liveness probe tells the truth.

Given a rollout holding its health gate, the local kube-apiserver is stopped
(etcd keeps the state) and started again. While it is away, the operator
hears nothing: no watch event and no API answer, so its liveness probe turns
to HTTP 500 after ``--liveness-stale-seconds`` instead of answering "ok"
regardless (the zombie-operator failure, nolar/kopf#787, #1276). Once the API
server is back, the watches re-establish, the probe recovers and the rollout
finishes with one image patch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
GATE = {"progressDeadlineSeconds": 300, "healthyFor": "5s", "maxRestarts": 0}
STALE = 5


@pytest.fixture
def operator(kube, crds, tmp_path: Path) -> Iterator[OperatorProcess]:
    if kube.cluster is None:
        pytest.skip("restarts the local kube-apiserver")
    install_rbac(kube)
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, tmp_path / "operator.kubeconfig"),
        log_path=tmp_path / "operator.log",
        # A lease long enough to outlive the outage: this test is about watches,
        # and a leader that cannot renew in time exits by design (test_leader.py).
        extra_args=["--liveness-stale-seconds", str(STALE), "--lease-duration", "120"],
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_rollout_finishes_across_an_apiserver_restart(kube, operator) -> None:
    given = Scenario(kube)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("apiserver-restart")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    def gating():
        rollouts = given.get("imagepatch", patch).get("status", {}).get("rollouts", [])
        return rollouts and rollouts[0]["phase"] == "Gating"
    wait_for(gating, timeout=60, what="the gate")
    assert operator.healthz() == 200

    stopped = time.monotonic()
    kube.cluster.stop_apiserver()  # returns once it has exited (graceful shutdown takes a while)
    try:
        # kopf caches probe results for 10 s, so allow for that on top of STALE.
        wait_for(lambda: operator.healthz() == 500, timeout=STALE + 40, interval=1,
                 what="the liveness probe to report the dead API connection")
        print(f"\nliveness probe failed {time.monotonic() - stopped:.1f}s after the "
              "API server stopped")
    finally:
        kube.cluster.start_apiserver()
    restarted = time.monotonic()

    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    wait_for(lambda: operator.healthz() == 200, timeout=60, interval=1,
             what="the liveness probe to recover")
    print(f"rollout finished and the probe recovered {time.monotonic() - restarted:.1f}s "
          "after the API server came back")
    assert len(operator.image_patches(ns, "web")) == 1
    assert given.image_of(ns, "web") == f"{OLD}@{digest}"
    assert operator.proc.poll() is None  # it lived through the outage
    given.cleanup()
