"""Fixtures shared by the integration tests: the ``helm`` binary (built once, see test_packaging)."""

from tests.integration.test_packaging import helm  # noqa: F401 - a fixture, shared by the chart tests
