"""The registry client's per-host gate (adapters/registry/gate.py): a concurrency limit
and a circuit breaker that counts operations after their retries, not attempts.

No request leaves the process: the operations are coroutines run through the
client's ``_with_retries``, as every read and write is.
"""

from __future__ import annotations

import asyncio

import pytest
import stamina

from imagepatch.adapters.errors import (
    DIGEST_MISMATCH,
    REGISTRY_ADDRESS_REFUSED,
    REGISTRY_CIRCUIT_OPEN,
    REGISTRY_TIMEOUT,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from imagepatch.adapters.registry import RegistryClient, RetryPolicy
from imagepatch.adapters.registry.gate import HostGate, timed_hosts
from imagepatch.core.breaker import BreakerSettings, BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(clock: Clock, retry: RetryPolicy | None = None) -> RegistryClient:
    return RegistryClient(
        clock=clock, retry=retry or RetryPolicy(attempts=3, timeout=30.0),
        breaker=BreakerSettings(failures=2, cooldown=30.0),
    )


def test_the_breaker_counts_an_operation_after_its_retries_then_fails_fast_naming_the_host():
    clock = Clock()
    attempts = []

    async def timing_out(budget):
        attempts.append(clock.now)
        raise TransientError("HEAD slow.example/app:1: timed out", reason=REGISTRY_TIMEOUT)

    async def scenario():
        registry = client(clock)
        with stamina.set_testing(True, attempts=3):
            with pytest.raises(TransientError):
                await registry._with_retries("HEAD slow.example/app:1", "slow.example", timing_out)
            # Three attempts, one failed operation: still closed.
            assert len(attempts) == 3
            assert registry.gate.states() == {"slow.example": BreakerState.CLOSED}
            with pytest.raises(TransientError):
                await registry._with_retries("HEAD slow.example/app:1", "slow.example", timing_out)
            assert registry.gate.states() == {"slow.example": BreakerState.OPEN}
            with pytest.raises(TransientError) as refused:
                await registry._with_retries("HEAD slow.example/b:1", "slow.example", timing_out)
        assert len(attempts) == 6  # the third call made no attempt
        assert refused.value.reason == REGISTRY_CIRCUIT_OPEN
        assert "registry slow.example is not answering" in str(refused.value)
        assert "HEAD slow.example/b:1" in str(refused.value)
        assert "RegistryTimeout" in str(refused.value)
        assert refused.value.retry_after == pytest.approx(30.0)
        assert registry.stats.error_count("slow.example", REGISTRY_CIRCUIT_OPEN) == 1
        # Another host is not affected.
        async def fine(budget):
            return "ok"
        assert await registry._with_retries("HEAD other/app:1", "other.example", fine) == "ok"
        # After the cool-down one probe goes; its success closes the breaker.
        clock.now += 30.0
        assert await registry._with_retries("HEAD slow.example/b:1", "slow.example", fine) == "ok"
        assert registry.gate.states()["slow.example"] == BreakerState.CLOSED
        await registry.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("error, state", [
    (NotFoundError("404", reason="ImageNotFound"), BreakerState.CLOSED),
    (ConfigurationError("401", reason="RegistryAuthFailed"), BreakerState.CLOSED),
    (TransientError("bad body", reason=DIGEST_MISMATCH), BreakerState.CLOSED),
    (ConfigurationError("refused", reason=REGISTRY_ADDRESS_REFUSED), BreakerState.OPEN),
])
def test_an_answer_from_the_host_closes_the_breaker_and_a_refused_address_says_nothing(
    error, state
) -> None:
    clock = Clock()

    async def failing(budget):
        raise TransientError("503", reason="RegistryUnavailable")

    async def answered(budget):
        raise error

    async def scenario():
        registry = client(clock, retry=RetryPolicy.disabled())
        gate = registry.gate
        with pytest.raises(TransientError):
            await registry._with_retries("x", "h.example", failing)
        with pytest.raises(type(error)):
            await registry._with_retries("x", "h.example", answered)
        with pytest.raises(TransientError):
            await registry._with_retries("x", "h.example", failing)
        assert gate.states()["h.example"] == state
        await registry.aclose()

    asyncio.run(scenario())


def test_views_of_every_policy_share_one_gate() -> None:
    class Secrets:
        def for_policy(self, policy):
            return None

    async def scenario():
        registry = RegistryClient(policy_credentials=Secrets())  # type: ignore[arg-type]
        assert registry.for_policy("a").gate is registry.gate
        assert registry.for_policy("b").gate is registry.gate
        await registry.aclose()

    asyncio.run(scenario())


def test_at_most_n_operations_per_host_are_in_flight_and_other_hosts_do_not_wait() -> None:
    clock = Clock()
    gate = HostGate(max_in_flight=2, clock=clock)
    running: dict[str, int] = {"slow": 0, "fast": 0}
    peak: dict[str, int] = {"slow": 0, "fast": 0}
    release = asyncio.Event()

    async def op(host: str, wait: bool) -> None:
        async with gate.operation(host):
            running[host] += 1
            peak[host] = max(peak[host], running[host])
            if wait:
                await release.wait()
            running[host] -= 1

    async def scenario():
        slow = [asyncio.create_task(op("slow", True)) for _ in range(5)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert gate.in_flight("slow") == 5  # two holding a slot, three waiting
        assert running["slow"] == 2
        await asyncio.wait_for(op("fast", False), timeout=1)  # not behind the slow host
        release.set()
        await asyncio.gather(*slow)
        assert peak == {"slow": 2, "fast": 1}
        assert gate.in_flight("slow") == 0

    asyncio.run(scenario())


def test_a_cancelled_operation_frees_its_slot_counts_nothing_and_its_time_is_recorded() -> None:
    clock = Clock()
    gate = HostGate(max_in_flight=1, breaker=BreakerSettings(failures=1), clock=clock)

    async def hang() -> None:
        async with gate.operation("tarpit.example"):
            clock.now += 7.0
            await asyncio.sleep(3600)

    async def scenario():
        with timed_hosts() as times:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await hang()
        assert times.slowest() == "tarpit.example"
        assert times.seconds["tarpit.example"] == pytest.approx(7.0)
        assert gate.states()["tarpit.example"] == BreakerState.CLOSED
        assert gate.in_flight("tarpit.example") == 0
        async with gate.operation("tarpit.example"):  # the slot is free again
            pass

    asyncio.run(scenario())


def test_no_host_timed_is_no_slow_host_and_a_gate_needs_a_slot() -> None:
    with timed_hosts() as times:
        assert times.slowest() == ""
    with pytest.raises(ValueError):
        HostGate(max_in_flight=0, clock=Clock())


def test_a_breaker_that_opened_while_a_call_waited_for_a_slot_refuses_it() -> None:
    clock = Clock()
    gate = HostGate(max_in_flight=1, breaker=BreakerSettings(failures=1), clock=clock)
    release = asyncio.Event()

    async def failing() -> None:
        async with gate.operation("h"):
            await release.wait()
            raise TransientError("timed out", reason=REGISTRY_TIMEOUT)

    async def waiting() -> None:
        async with gate.operation("h"):
            pass

    async def scenario():
        first = asyncio.create_task(failing())
        await asyncio.sleep(0)
        second = asyncio.create_task(waiting())
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(TransientError):
            await first
        with pytest.raises(TransientError) as refused:
            await second
        assert refused.value.reason == REGISTRY_CIRCUIT_OPEN

    asyncio.run(scenario())
