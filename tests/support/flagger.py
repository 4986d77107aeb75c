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
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "cluster" / "build-flagger.sh"


def build() -> Path:
    """The directory holding ``flagger`` and ``crds/`` (built once, cached)."""
    res = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"build-flagger.sh failed:\n{res.stderr[-3000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def install_crds(kube) -> Path:
    """Flagger's CRDs of the built version, established; the build directory."""
    directory = build()
    kube.kubectl("apply", "--server-side", "--force-conflicts",
                 "-f", str(directory / "crds" / "crd.yaml"))

    def established() -> bool:
        crd = json.loads(kube.kubectl("get", "crd", "canaries.flagger.app", "-o", "json"))
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    wait_for(established, timeout=60, what="the Canary CRD established")
    return directory


@dataclass
class Flagger:
    kube: object  # tests.conftest.Kube
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        directory = install_crds(self.kube)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(directory / "flagger"), "-kubeconfig", str(self.kube.kubeconfig),
             "-mesh-provider=kubernetes", "-log-level=info",
             # Nothing listens there: no Canary here asks for a metric.
             f"-metrics-server=http://127.0.0.1:{free_port()}", "-port", str(free_port()),
             "-control-loop-interval=2s", "-enable-config-tracking=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"flagger exited:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

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

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
