"""Supervised background tasks: restarted with back-off when they raise, never lost silently.

The operator runs long-lived asyncio tasks beside kopf's handlers: the
detection loop, the policy resync, the queue consumer and one loop per
unfinished ImagePatch. Each catches the errors it expects; anything else
used to end the task for the life of the process while the liveness probe
stayed green. Every such task is started here instead:

* an unexpected exception is logged with its traceback, counted in
  ``imagepatch_task_restarts_total{task}`` and the task is started again
  after a jittered exponential back-off (``outcomes.Backoff``), reset once a
  run has lasted longer than the back-off cap;
* each death is remembered for ``window`` seconds, and the liveness probe
  (``handlers.liveness``) fails while a task has died more than
  ``max_restarts`` times in that window (``core.liveness.tasks_liveness``),
  so the kubelet replaces a process that cannot keep its tasks alive;
* a task that returns has finished (a patch loop whose patch is done);
  cancellation (shutdown) is never caught.

``kind`` names what the metric and the probe count: every patch loop shares
``patch-loop``, so label values stay bounded however many patches exist.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

from imagepatch.adapters import metrics
from imagepatch.core.liveness import Liveness, tasks_liveness
from imagepatch.reconcile.outcomes import Backoff

log = logging.getLogger("imagepatch.supervisor")



class Supervisor:
    """Starts background tasks and restarts the ones that raise."""

    def __init__(
        self,
        *,
        window: float = 600.0,
        max_restarts: int = 5,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.window = window
        self.max_restarts = max_restarts
        self.backoff = backoff or Backoff(base=1.0, cap=60.0, jitter=0.5)
        self.monotonic = monotonic
        self.sleep = sleep
        self.deaths: dict[str, collections.deque[float]] = {}
        self.restarts: collections.Counter[str] = collections.Counter()

    def spawn(
        self, kind: str, run: Callable[[], Awaitable[None]], *, name: str = ""
    ) -> asyncio.Task[None]:
        """Start ``run()`` as a task that is restarted whenever it raises.

        ``run`` is called again for each restart, so it must build a fresh
        coroutine (``lambda: detector.run(stop)``).
        """
        return asyncio.create_task(self._supervise(kind, name or kind, run), name=name or kind)

    def liveness(self) -> Liveness:
        return tasks_liveness(
            now=self.monotonic(), deaths=self.deaths, window=self.window,
            max_restarts=self.max_restarts,
        )  # fmt: skip

    async def _supervise(self, kind: str, name: str, run: Callable[[], Awaitable[None]]) -> None:
        key = f"task/{name}"
        while True:
            started = self.monotonic()
            try:
                await run()
                self.backoff.reset(key)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                now = self.monotonic()
                if now - started > self.backoff.cap:
                    self.backoff.reset(key)  # it ran well for a while: start the back-off over
                delay = self.backoff.next_delay(key)
                self._record_death(kind, now)
                log.exception(
                    "background task %s died (%d times in the last %.0fs); restarting in %.1fs",
                    name, self._recent(kind, now), self.window, delay,
                )  # fmt: skip
            await self.sleep(delay)

    def _record_death(self, kind: str, now: float) -> None:
        # Only the last max_restarts + 1 deaths can decide the probe: a bounded
        # list however long a task keeps dying.
        remembered = self.deaths.setdefault(
            kind, collections.deque(maxlen=self.max_restarts + 1))
        remembered.append(now)
        self.restarts[kind] += 1
        metrics.record_task_restart(kind)

    def _recent(self, kind: str, now: float) -> int:
        return sum(1 for t in self.deaths.get(kind, ()) if now - t <= self.window)

    def forget(self, name: str) -> None:
        """Drop the back-off state of a task that will not come back (its object is gone)."""
        self.backoff.reset(f"task/{name}")
