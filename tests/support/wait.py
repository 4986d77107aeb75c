"""Polling with a deadline, for tests that wait on a real cluster.

A test waits for a state, never for a fixed time; on timeout the error
carries the last value seen, so a failure says what the cluster looked like.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout: float, interval: float = 0.3, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)
