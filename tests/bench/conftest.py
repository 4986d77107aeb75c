"""Benchmarks reuse the end-to-end fixtures (the operator under its shipped RBAC)."""

from tests.e2e.conftest import operator  # noqa: F401
