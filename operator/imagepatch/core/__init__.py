"""Pure decisions: no I/O, no Kubernetes, no AWS, no network.

Everything here is a function of its arguments (specs, observations, recorded
status and an injected clock), so it is table-tested without a cluster. The
import-linter contract in ``pyproject.toml`` keeps I/O libraries out.
"""
