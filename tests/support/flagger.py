"""Flagger's real controller against the test API server (issue 23).

``tests/cluster/build-flagger.sh`` builds ``flagger`` from its Go module
(cached) and copies the CRDs of the same module version beside it.
:meth:`Flagger.start` installs those CRDs and runs the controller with the
admin kubeconfig, cluster-wide, with ``-mesh-provider=kubernetes``: blue/green
through Kubernetes Services, no service mesh. No metrics server runs: the
Canaries the tests write have no metrics (Flagger's analysis then checks the
canary Deployment's readiness only), and Flagger only logs that the
``-metrics-server`` it was given (a closed local port) is unreachable. kwok
plays the kubelet for the canary and primary Deployments' pods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.support import controller
from tests.support.controller import REPO, ControllerProcess
from tests.support.ports import free_port
from tests.support.wait import wait_for

BUILD = REPO / "tests" / "cluster" / "build-flagger.sh"


def build() -> Path:
    """The directory holding ``flagger`` and ``crds/`` (built once, cached)."""
    return controller.build(BUILD)


def install_crds(kube) -> Path:
    """Flagger's CRDs of the built version, established; the build directory."""
    directory = build()
    controller.install_crds(kube, [directory / "crds" / "crd.yaml"], "canaries.flagger.app",
                            "Canary")
    return directory


@dataclass
class Flagger(ControllerProcess):
    def start(self) -> None:
        directory = install_crds(self.kube)
        self.spawn([str(directory / "flagger"), "-kubeconfig", str(self.kube.kubeconfig),
                    "-mesh-provider=kubernetes", "-log-level=info",
                    # Nothing listens there: no Canary here asks for a metric.
                    f"-metrics-server=http://127.0.0.1:{free_port()}", "-port", str(free_port()),
                    "-control-loop-interval=2s", "-enable-config-tracking=false"])

    def canary(self, namespace: str, name: str) -> dict:
        return json.loads(self.kube.kubectl("get", "canaries.flagger.app", name, "-n", namespace,
                                            "-o", "json"))

    def wait_phase(self, namespace: str, name: str, *phases: str, timeout: float = 90) -> dict:
        """The Canary once Flagger reports one of ``phases``."""

        def probe():
            canary = self.canary(namespace, name)
            return canary if (canary.get("status") or {}).get("phase") in phases else None

        try:
            return wait_for(probe, timeout=timeout, what=f"Canary {namespace}/{name} in {phases}")
        except Exception as exc:
            raise AssertionError(f"{exc}\nflagger log:\n{self.log_tail()}") from exc
