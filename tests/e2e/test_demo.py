"""The README's demo (`make demo`) keeps working: it runs as a subprocess, start to end.

It brings up its own control plane, registry, moto and operator, so it is
independent of the other fixtures; only the local kwok cluster can simulate
the crash it shows, hence the marker.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.kwok


def test_demo_tells_the_whole_story() -> None:
    run = subprocess.run([sys.executable, "-m", "tests.demo"], capture_output=True, text=True,
                         timeout=600)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "phase Succeeded" in out
    assert "verification Passed" in out
    assert "wave 1 demo-prod/payments-api: Healthy" in out
    assert "result: RolledBack" in out
    assert "wave 1 demo-prod/payments-api: Skipped" in out
    assert "Warning RolledBack" in out
    assert "prod untouched" in out
    assert "demo complete" in out
