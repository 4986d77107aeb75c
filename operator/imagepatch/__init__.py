"""imagepatch: a Kubernetes operator that keeps container images patched.

The package is laid out in layers (enforced by import-linter, see pyproject):
``model`` parses custom resources into frozen dataclasses, ``core`` holds pure
decisions, ``adapters`` hold all I/O, ``reconcile`` runs observe → plan → act →
record, ``handlers`` wires kopf, and ``cli``/``__main__`` are entry points.
"""

# The one version source: pyproject reads it (dynamic version), the chart's
# version/appVersion and the Dockerfile's VERSION build arg are kept equal to it
# (tests/integration/test_release.py), and `imagepatch version` prints it.
__version__ = "0.3.0"
