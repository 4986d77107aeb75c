"""The test session's own rule (tests/conftest.py): an external cluster is never shared by xdist workers.

Each xdist worker starts its own operators; on one external cluster
(``IMAGEPATCH_TEST_KUBECONFIG``) they would reconcile each other's objects, so
pytest refuses more than one worker there and says how to run instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def collect(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGEPATCH_TEST_KUBECONFIG": str(tmp_path / "kubeconfig")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args,
         "tests/unit/test_coverage_gate.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_an_external_cluster_refuses_two_workers(tmp_path: Path) -> None:
    res = collect(tmp_path, "-n", "2")
    assert res.returncode == 4, res.stdout + res.stderr  # pytest's usage error
    assert "run with -n0" in res.stderr


def test_an_external_cluster_runs_serially(tmp_path: Path) -> None:
    res = collect(tmp_path, "-n0")
    assert res.returncode == 0, res.stdout + res.stderr
