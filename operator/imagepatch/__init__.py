"""imagepatch: a Kubernetes operator that keeps container images patched.

The package is laid out in layers (enforced by import-linter, see pyproject):
``model`` parses custom resources into frozen dataclasses, ``core`` holds pure
decisions, ``adapters`` hold all I/O, ``reconcile`` runs observe → plan → act →
record, ``handlers`` wires kopf, and ``cli``/``__main__`` are entry points.
"""

__version__ = "0.1.0"
