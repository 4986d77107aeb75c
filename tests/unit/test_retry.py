"""adapters/retry.py: the one retry loop the forge adapter and the notifier share."""

from __future__ import annotations

import asyncio

import pytest

from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.adapters.retry import Backoff, RetrySettings, retrying

FAST = RetrySettings(attempts=3, timeout=5.0, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0)


def test_backoff_retries_only_transient_errors_and_honours_the_peers_wait():
    backoff = Backoff(RetrySettings(wait_initial=1.0, wait_max=4.0, wait_jitter=0.0,
                                    timeout=30.0))
    assert backoff(ConfigurationError("x")) is False
    assert backoff(TransientError("x")) == 1.0
    assert backoff(TransientError("x", retry_after=10.0)) == 10.0
    assert backoff(TransientError("x", retry_after=999.0)) == 30.0  # never past the timeout
    assert backoff(TransientError("x")) == 4.0
    assert backoff.failures == 4
    jittered = Backoff(RetrySettings(wait_jitter=0.5))
    assert 1.0 <= jittered(TransientError("x")) <= 1.5


def test_retrying_answers_after_transient_failures_and_counts_them():
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("busy")
        return "done"

    backoff = Backoff(FAST)
    assert asyncio.run(retrying(FAST, flaky, backoff)) == "done"
    assert (len(calls), backoff.failures) == (3, 2)


def test_retrying_gives_up_after_the_attempts_and_never_retries_a_configuration_error():
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise TransientError("down")

    with pytest.raises(TransientError):
        asyncio.run(retrying(FAST, down))
    assert len(calls) == 3

    async def wrong() -> None:
        calls.append(1)
        raise ConfigurationError("bad token")

    with pytest.raises(ConfigurationError):
        asyncio.run(retrying(FAST, wrong))
    assert len(calls) == 4
