"""Argo Rollouts' real controller against the test API server (issue 23).

``tests/cluster/build-argo-rollouts.sh`` builds ``rollouts-controller`` from
its Go module (cached) and copies the CRDs of the same module version beside
it. :meth:`ArgoRollouts.start` installs those CRDs and runs the controller
with the admin kubeconfig, cluster-wide; kwok plays the kubelet for the
ReplicaSets it creates, as for Deployments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.support import controller
from tests.support.controller import REPO, ControllerProcess
from tests.support.ports import free_port
from tests.support.wait import wait_for

BUILD = REPO / "tests" / "cluster" / "build-argo-rollouts.sh"


def build() -> Path:
    """The directory holding ``rollouts-controller`` and ``crds/`` (built once, cached)."""
    return controller.build(BUILD)


def install_crds(kube) -> Path:
    """Argo Rollouts' CRDs of the built version, established; the build directory."""
    directory = build()
    controller.install_crds(kube, sorted((directory / "crds").glob("*.yaml")),
                            "rollouts.argoproj.io", "Rollout")
    return directory


@dataclass
class ArgoRollouts(ControllerProcess):
    def start(self) -> None:
        directory = install_crds(self.kube)
        self.spawn([str(directory / "rollouts-controller"), "--kubeconfig",
                    str(self.kube.kubeconfig), "--leader-elect=false",
                    "--metricsport", str(free_port()), "--healthzPort", str(free_port()),
                    "--loglevel", "info"])

    def wait_phase(self, namespace: str, name: str, *phases: str, timeout: float = 90) -> dict:
        """The Rollout once Argo observed its generation and reports one of ``phases``."""

        def probe():
            ro = json.loads(self.kube.kubectl("get", "rollout", name, "-n", namespace, "-o", "json"))
            st = ro.get("status") or {}
            observed = str(st.get("observedGeneration") or "")
            if observed != str(ro["metadata"]["generation"]):
                return None
            return ro if st.get("phase") in phases else None

        return wait_for(probe, timeout=timeout, what=f"Rollout {namespace}/{name} in {phases}")
