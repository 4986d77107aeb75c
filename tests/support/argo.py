"""Argo Rollouts' real controller against the test API server (issue 23).

``tests/cluster/build-argo-rollouts.sh`` builds ``rollouts-controller`` from
its Go module (cached) and copies the CRDs of the same module version beside
it. :meth:`ArgoRollouts.start` installs those CRDs and runs the controller
with the admin kubeconfig, cluster-wide; kwok plays the kubelet for the
ReplicaSets it creates, as for Deployments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "cluster" / "build-argo-rollouts.sh"


def build() -> Path:
    """The directory holding ``rollouts-controller`` and ``crds/`` (built once, cached)."""
    res = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"build-argo-rollouts.sh failed:\n{res.stderr[-3000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def install_crds(kube) -> Path:
    """Argo Rollouts' CRDs of the built version, established; the build directory."""
    directory = build()
    for crd in sorted((directory / "crds").glob("*.yaml")):
        # Server-side: the Rollout CRD is too large for kubectl's last-applied annotation.
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))

    def established() -> bool:
        crd = json.loads(kube.kubectl("get", "crd", "rollouts.argoproj.io", "-o", "json"))
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    wait_for(established, timeout=60, what="the Rollout CRD established")
    return directory


@dataclass
class ArgoRollouts:
    kube: object  # tests.conftest.Kube
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        directory = install_crds(self.kube)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(directory / "rollouts-controller"), "--kubeconfig", str(self.kube.kubeconfig),
             "--leader-elect=false", "--metricsport", str(free_port()),
             "--healthzPort", str(free_port()), "--loglevel", "info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"rollouts-controller exited:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

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

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
