"""Circuit breakers per registry host: when to stop calling a host that does not answer.

Pure state machines with the clock passed in (``now``, monotonic seconds);
the registry transport (``adapters/registry/transport.py``) asks before each
operation and reports how it ended, after its retries (an operation, not an
attempt, is what counts).

* **closed**: calls go through; ``failures`` consecutive failed operations
  (timeouts, 5xx, connection errors after retries) open it.
* **open**: calls fail fast, for ``cooldown`` seconds from the last failure.
* **half-open**: after the cool-down one call (the probe) goes through; its
  success closes the breaker, its failure opens it again for another
  cool-down. Other calls fail fast while the probe is out.

An outcome that says nothing of the host's health (the call was cancelled,
or refused before any connection) is ``abandoned``: it changes no count, and
frees the probe slot.

``BreakerBoard`` keeps one breaker per host and forgets hosts not used for
``idle`` seconds, so its size (and the metric series it feeds) follows the
hosts in use, not every host ever named.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Admission", "Breaker", "BreakerBoard", "BreakerSettings", "BreakerState"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerSettings:
    """``failures`` consecutive failed operations open a breaker for ``cooldown`` seconds."""

    failures: int = 5
    cooldown: float = 30.0
    # A host unused this long is forgotten (its breaker closed, its series gone).
    idle: float = 600.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown < 0 or self.idle <= 0:
            raise ValueError(f"invalid breaker settings: {self}")


@dataclass(frozen=True)
class Admission:
    """Whether one call may go: ``probe`` when it is the half-open probe;
    when refused, ``retry_after`` seconds until a probe may go."""

    allowed: bool
    probe: bool = False
    retry_after: float = 0.0


@dataclass
class Breaker:
    """One host's breaker. ``last_error`` is the reason of the last failure (for messages)."""

    settings: BreakerSettings = field(default_factory=BreakerSettings)
    state: BreakerState = BreakerState.CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    probing: bool = False
    last_error: str = ""
    last_used: float = 0.0

    def would_refuse(self, now: float) -> Admission | None:
        """The refusal ``admit`` would give now, without taking the probe slot; None if not."""
        if self.state == BreakerState.CLOSED:
            return None
        left = self.opened_at + self.settings.cooldown - now
        if self.state == BreakerState.OPEN and left > 0:
            return Admission(False, retry_after=left)
        if self.probing:  # half-open (or due to be): one probe at a time
            return Admission(False, retry_after=max(left, 0.0) or self.settings.cooldown)
        return None

    def admit(self, now: float) -> Admission:
        self.last_used = now
        refused = self.would_refuse(now)
        if refused is not None:
            return refused
        if self.state == BreakerState.CLOSED:
            return Admission(True)
        # Open and cooled down, or half-open without a probe out: this call probes.
        self.state = BreakerState.HALF_OPEN
        self.probing = True
        return Admission(True, probe=True)

    def succeeded(self, now: float) -> None:
        self.last_used = now
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.probing = False

    def failed(self, now: float, reason: str = "") -> None:
        self.last_used = now
        self.last_error = reason or self.last_error
        if self.state == BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self.state == BreakerState.OPEN:
            return  # a call admitted before it opened: the cool-down already runs
        self.consecutive += 1
        if self.consecutive >= self.settings.failures:
            self._open(now)

    def abandoned(self, now: float, *, probe: bool) -> None:
        """The call ended saying nothing of the host (cancelled, refused before connecting)."""
        self.last_used = now
        if probe:
            self.probing = False

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.probing = False


@dataclass
class BreakerBoard:
    """One breaker per host, created on first use and forgotten after ``settings.idle``."""

    settings: BreakerSettings = field(default_factory=BreakerSettings)
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def get(self, host: str) -> Breaker:
        breaker = self.breakers.get(host)
        if breaker is None:
            breaker = self.breakers[host] = Breaker(self.settings)
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {host: b.state for host, b in self.breakers.items()}

    def prune(self, now: float, *, busy: frozenset[str] = frozenset()) -> list[str]:
        """Forget hosts unused for ``settings.idle`` seconds (never one in ``busy``)."""
        gone = [
            host
            for host, b in self.breakers.items()
            if host not in busy and now - b.last_used >= self.settings.idle
        ]
        for host in gone:
            del self.breakers[host]
        return gone
