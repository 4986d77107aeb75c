"""A real Kubernetes controller built from its Go module, run against the test API server.

Shared by ``tests/support/argo.py`` (Argo Rollouts) and ``tests/support/flagger.py``:
its ``tests/cluster/build-*.sh`` builds the binary (cached) and copies the CRDs
of the same module version beside it (:func:`build`); :func:`install_crds`
applies them server-side and waits until one is established;
:class:`ControllerProcess` runs the binary in its own session with its output
in a log file, and stops the whole session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]


def build(script: Path) -> Path:
    """The directory ``script`` prints last (the built binary and ``crds/``)."""
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{res.stderr[-3000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def install_crds(kube, files: Iterable[Path], crd: str, what: str) -> None:
    """Apply ``files`` and wait until the CRD named ``crd`` is established."""
    for file in files:
        # Server-side: some CRDs are too large for kubectl's last-applied annotation.
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(file))

    def established() -> bool:
        found = json.loads(kube.kubectl("get", "crd", crd, "-o", "json"))
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in (found.get("status") or {}).get("conditions") or [])

    wait_for(established, timeout=60, what=f"the {what} CRD established")


@dataclass
class ControllerProcess:
    kube: object  # tests.conftest.Kube
    log_path: Path
    proc: subprocess.Popen | None = None

    def spawn(self, argv: Sequence[str]) -> None:
        """Run ``argv`` in a session of its own; fail if it exits at once."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{Path(argv[0]).name} exited:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_session(self.proc)


def stop_session(proc: subprocess.Popen | None) -> None:
    """SIGTERM ``proc``'s session (it and its children), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
