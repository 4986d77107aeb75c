"""Bounded time per registry host: a concurrency limit and a circuit breaker.

Every registry operation (a read or a write, with its retries and token
fetches) passes ``HostGate.operation(host)`` once (``transport.py``,
``_with_retries``), shared by all policies' views of the client:

* **at most ``max_in_flight`` operations per host** at a time; the others
  wait for a slot, so one slow registry holds at most that many of them;
* **a circuit breaker per host** (``core/breaker.py``): after ``failures``
  consecutive failed operations (after their retries) the host is open for
  ``cooldown`` seconds and calls fail fast with ``RegistryCircuitOpen``,
  whose message names the host; then one probe goes through.

It also tells the caller which host its time went to: ``timed_hosts()``
opens a record (a context variable, so concurrent policies each see their
own) that every operation inside adds its seconds to, waiting for a slot
included. Detection names the slow host this way when a policy's pass
budget runs out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from imagepatch.adapters.errors import (
    DIGEST_MISMATCH,
    REGISTRY_ADDRESS_REFUSED,
    REGISTRY_CIRCUIT_OPEN,
    AdapterError,
    TransientError,
)
from imagepatch.core.breaker import BreakerBoard, BreakerSettings, BreakerState

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "HostGate", "HostTimes", "timed_hosts"]

DEFAULT_MAX_IN_FLIGHT = 4


@dataclass
class HostTimes:
    """Seconds spent on each registry host by the operations of one caller."""

    seconds: dict[str, float] = field(default_factory=dict)

    def slowest(self) -> str:
        """The host that took the most time, or "" when none was called."""
        if not self.seconds:
            return ""
        return max(self.seconds.items(), key=lambda item: item[1])[0]


_TIMES: contextvars.ContextVar[HostTimes | None] = contextvars.ContextVar(
    "imagepatch_registry_host_times", default=None
)


@contextlib.contextmanager
def timed_hosts() -> Iterator[HostTimes]:
    """Record the time registry operations in this context spend per host."""
    times = HostTimes()
    token = _TIMES.set(times)
    try:
        yield times
    finally:
        _TIMES.reset(token)


@dataclass
class _Ticket:
    host: str
    probe: bool


class HostGate:
    """The limit and breaker of every host one ``RegistryClient`` (and its views) calls."""

    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float],
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.board = BreakerBoard(breaker or BreakerSettings())
        self._clock = clock
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()  # holding or waiting

    def states(self) -> dict[str, BreakerState]:
        """Each known host's breaker state (for metrics); idle hosts are pruned here."""
        self._prune()
        return self.board.states()

    def in_flight(self, host: str) -> int:
        return self._in_flight[host]

    @contextlib.asynccontextmanager
    async def operation(self, host: str) -> AsyncIterator[None]:
        """One operation on ``host``: wait for a slot, ask the breaker, report the outcome.

        Raises ``TransientError`` (``RegistryCircuitOpen``) at once while the
        host's breaker is open. The outcome counted is the operation's, after
        its retries: a ``TransientError`` (but a digest mismatch: the host
        answered) is a failure; anything the host answered, even a 404, a
        success; a cancellation or a refused address says nothing.
        """
        self._fail_fast(host)
        started = self._clock()
        self._in_flight[host] += 1
        slots = self._slots.get(host)
        if slots is None:
            slots = self._slots[host] = asyncio.Semaphore(self.max_in_flight)
        try:
            async with slots:
                # The breaker may have opened while this call waited for a slot.
                ticket = self._admit(host)
                try:
                    yield
                except TransientError as exc:
                    if _last_reason(exc) == DIGEST_MISMATCH:
                        self.board.get(host).succeeded(self._clock())
                    else:
                        self.board.get(host).failed(self._clock(), _last_reason(exc))
                    raise
                except AdapterError as exc:
                    breaker = self.board.get(host)
                    if exc.reason == REGISTRY_ADDRESS_REFUSED:
                        breaker.abandoned(self._clock(), probe=ticket.probe)
                    else:
                        breaker.succeeded(self._clock())
                    raise
                except BaseException:
                    self.board.get(host).abandoned(self._clock(), probe=ticket.probe)
                    raise
                else:
                    self.board.get(host).succeeded(self._clock())
        finally:
            self._in_flight[host] -= 1
            if not self._in_flight[host]:
                del self._in_flight[host]
                if not slots.locked():
                    self._slots.pop(host, None)
            times = _TIMES.get()
            if times is not None:
                times.seconds[host] = times.seconds.get(host, 0.0) + self._clock() - started
            self._prune()

    def _fail_fast(self, host: str) -> None:
        breaker = self.board.breakers.get(host)
        refused = breaker.would_refuse(self._clock()) if breaker is not None else None
        if refused is not None and breaker is not None:
            raise self._open_error(host, breaker.consecutive, breaker.last_error,
                                   refused.retry_after)  # fmt: skip

    def _admit(self, host: str) -> _Ticket:
        breaker = self.board.get(host)
        admission = breaker.admit(self._clock())
        if not admission.allowed:
            raise self._open_error(host, breaker.consecutive, breaker.last_error,
                                   admission.retry_after)  # fmt: skip
        return _Ticket(host, admission.probe)

    def _open_error(
        self, host: str, failures: int, last: str, retry_after: float
    ) -> TransientError:
        return TransientError(
            f"registry {host} is not answering: its circuit breaker is open after {failures} "
            f"failed operation(s) in a row{f' (last: {last})' if last else ''}; calls to it "
            f"fail fast for {retry_after:.0f}s more",
            reason=REGISTRY_CIRCUIT_OPEN,
            retry_after=retry_after,
        )

    def _prune(self) -> None:
        self.board.prune(self._clock(), busy=frozenset(self._in_flight))


def _last_reason(exc: TransientError) -> str:
    """The reason of the last attempt's error (``_with_retries`` wraps it), else its own."""
    cause = exc.__cause__
    return cause.reason if isinstance(cause, AdapterError) else exc.reason
