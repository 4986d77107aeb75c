"""Retry one outbound call on transient failures: stamina's loop, our back-off hook.

The forge adapter (a pull request's REST calls) and the notifier (one
delivery to one sink) retried the same way with the same code; this is that
code, once. Only ``TransientError`` is retried (a configuration error never
gets better by waiting); the wait is jittered exponential back-off within
``wait_max``, but never shorter than the peer's own hint (``Retry-After``,
carried as ``TransientError.retry_after``), which is capped at the whole
call's ``timeout`` (waiting longer than that only to give up is pointless).
stamina caps the attempts and the total time, and its testing mode
(``stamina.set_testing``) turns the waits off.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina

from imagepatch.adapters.errors import TransientError

__all__ = ["Backoff", "RetrySettings", "retrying"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrySettings:
    """How long one call is retried on transient failures (stamina's settings)."""

    attempts: int = 5
    timeout: float = 60.0  # seconds, all attempts of one call
    wait_initial: float = 1.0
    wait_max: float = 15.0
    wait_jitter: float = 1.0


class Backoff:
    """stamina hook: retry only transient failures, honouring the peer's wait; counts them."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings
        self.failures = 0

    def __call__(self, exc: Exception) -> bool | float:
        if not isinstance(exc, TransientError):
            return False
        self.failures += 1
        s = self.settings
        jitter = random.uniform(0, s.wait_jitter) if s.wait_jitter else 0.0  # noqa: S311
        wait = min(s.wait_max, s.wait_initial * 2.0 ** min(self.failures - 1, 30) + jitter)
        return max(wait, min(exc.retry_after or 0.0, s.timeout))


async def retrying(settings: RetrySettings, call: Callable[[], Awaitable[T]],
                   backoff: Backoff | None = None) -> T:
    """``call()``'s answer, retried as ``settings`` say; the last error propagates.

    ``backoff`` (made from ``settings`` when not given) is handed in by a
    caller that reports how many attempts failed.
    """
    hook = backoff or Backoff(settings)
    async for attempt in stamina.retry_context(
        on=hook, attempts=settings.attempts, timeout=settings.timeout,
        wait_initial=settings.wait_initial, wait_max=settings.wait_max,
        wait_jitter=settings.wait_jitter,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: stamina yields at least one attempt")
