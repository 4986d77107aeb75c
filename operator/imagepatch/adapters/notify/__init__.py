"""Deliver notifications in the background: bounded, retried, deduplicated, never in the way.

The rollout loop and detection hand a :class:`~imagepatch.core.notify.Notification`
to :meth:`Notifier.submit`, which never waits and never raises: it drops a
notification no sink of the policy wants (known from the policy watch,
:meth:`Notifier.observe_policy`), one already submitted (same key: one per
patch and reason) and one that finds the queue full (counted as ``dropped``). Worker tasks
(:meth:`Notifier.run`, supervised like every background task) take them
from the queue, read the policy's ``spec.notifications`` and send to each
sink that asks for the reason (``senders.py``), retrying transient failures
with jittered exponential back-off (stamina) within a cap on attempts and on
total time. A sink that answers 500 forever therefore costs one worker a few
minutes, and a rollout nothing.

Outcomes are counted in ``imagepatch_notifications_total{sink_type, outcome}``
(``sent``, ``failed``, ``dropped``). A sink whose last delivery failed is
recorded in the policy's ``status.notifications.failing`` (sink, type, reason,
message: never a URL or token), which ``core/policy.py`` shows as the
``NotificationsDegraded`` condition; its next success removes it.

Restarts: the triggers are transitions the operator records once (an
ImagePatch's phase, written with a resourceVersion precondition; a workload's
state in the operator's memory), so a restarted operator does not send them
again; a notification still queued when the operator stops is lost (at most
once, as Flux's notification-controller delivers). Within a process the keys
seen are remembered (bounded) against a handler that runs twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.adapters import metrics
from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.notify.senders import Senders
from imagepatch.adapters.retry import Backoff, retrying
from imagepatch.adapters.retry import RetrySettings as _Settings
from imagepatch.core import notify
from imagepatch.model.errors import SpecError
from imagepatch.model.policy import NotificationSink, parse_policy
from imagepatch.model.times import format_time, utcnow

log = logging.getLogger("imagepatch.notify")

__all__ = ["Notifier", "RetrySettings", "Senders"]

QUEUE_SIZE = 256
WORKERS = 2
SEEN_LIMIT = 10_000
MAX_FAILING = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrySettings(_Settings):
    """How long one delivery to one sink is retried (``adapters.retry``)."""

    attempts: int = 8
    timeout: float = 300.0  # seconds, all attempts of one delivery
    wait_max: float = 60.0


class Notifier:
    """The queue, its workers, and each policy's record of failing sinks."""

    def __init__(
        self,
        *,
        kube: Any,
        senders: Senders,
        on_status: Callable[[str], Awaitable[object]] | None = None,
        queue_size: int = QUEUE_SIZE,
        workers: int = WORKERS,
        retry: RetrySettings | None = None,
    ) -> None:
        self.kube = kube
        self.senders = senders
        self.on_status = on_status
        self.queue: asyncio.Queue[tuple[str, notify.Notification]] = asyncio.Queue(queue_size)
        self.workers = workers
        self.retry = retry or RetrySettings()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        # Policy -> the reasons its sinks want, from the policy watch: a message no
        # sink wants is never queued (a base push over a thousand workloads of a
        # policy without sinks must not fill the queue).
        self._wants: dict[str, frozenset[str]] = {}

    # -- the producers' side (never blocks, never raises) -----------------------------

    def observe_policy(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keep which reasons each policy's sinks want current (from the policy watch)."""
        name = str((body.get("metadata") or {}).get("name") or "")
        if event_type == "DELETED":
            self._wants.pop(name, None)
            return
        try:
            sinks = parse_policy(body).spec.notifications
        except SpecError:
            sinks = ()  # the policy's own status says what is wrong
        self._wants[name] = frozenset(r for sink in sinks for r in sink.reasons)

    def submit(self, policy: str, note: notify.Notification | None) -> bool:
        """Queue ``note`` for ``policy``'s sinks; False if no sink wants it, it was a repeat,
        or the queue is full."""
        if note is None or note.key in self._seen:
            return False
        if note.reason not in self._wants.get(policy, frozenset()):
            return False
        try:
            self.queue.put_nowait((policy, note))
        except asyncio.QueueFull:
            metrics.record_notification("any", "dropped")
            log.warning("notification queue full: dropped %s %s (policy %s)",
                        note.reason, note.key, policy)
            return False
        self._seen[note.key] = None
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        return True

    async def aclose(self) -> None:
        await self.senders.aclose()

    # -- the workers --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set."""
        workers = [asyncio.create_task(self._work(), name=f"notify-{i}")
                   for i in range(self.workers)]
        try:
            await stop.wait()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            policy, note = await self.queue.get()
            try:
                await self.deliver(policy, note)
            except Exception:  # a bug here must not stop the next notification
                log.exception("delivering notification %s failed unexpectedly", note.key)
            finally:
                self.queue.task_done()

    async def deliver(self, policy: str, note: notify.Notification) -> None:
        """Send ``note`` to each of ``policy``'s sinks that wants its reason."""
        try:
            body = await self.kube.get_policy(policy)
            sinks = parse_policy(body).spec.notifications if body else ()
        except (AdapterError, SpecError) as exc:
            log.warning("notification %s not sent: policy %s unreadable (%s)", note.key, policy,
                        exc)
            return
        for sink in sinks:
            if note.reason not in sink.reasons:
                continue
            error = await self._send(sink, note)
            await self._record(policy, sink, error)

    async def _send(self, sink: NotificationSink, note: notify.Notification
                    ) -> AdapterError | None:
        backoff = Backoff(self.retry)
        try:
            await retrying(self.retry, lambda: self.senders.send(sink, note), backoff)
        except AdapterError as exc:
            metrics.record_notification(str(sink.type), "failed")
            log.warning("notification %s to %s sink %r failed after %d attempt(s): %s: %s",
                        note.reason, sink.type, sink.name, backoff.failures or 1, exc.reason, exc)
            return exc
        metrics.record_notification(str(sink.type), "sent")
        log.info("notification %s (%s) sent to %s sink %r", note.reason, note.key, sink.type,
                 sink.name)
        return None

    # -- the policy's record of failing sinks ------------------------------------------

    async def _record(self, policy: str, sink: NotificationSink, error: AdapterError | None
                      ) -> None:
        """Add or remove ``sink`` in ``status.notifications.failing``, when that changes."""
        async with self._locks.setdefault(policy, asyncio.Lock()):
            try:
                body = await self.kube.get_policy(policy)
                if body is None:
                    return
                recorded = _failing(body)
                names = {s.name for s in parse_policy(body).spec.notifications}
                failing = [f for f in recorded if f.get("sink") in names and
                           f.get("sink") != sink.name]
                if error is not None:
                    failing.append({"sink": sink.name, "type": str(sink.type),
                                    "reason": error.reason, "message": str(error)[:4096],
                                    "at": format_time(utcnow())})
                if _without_times(failing) == _without_times(recorded):
                    return
                await self.kube.write_policy_status(
                    policy, {"notifications": {"failing": failing[-MAX_FAILING:]}})
                if self.on_status is not None:
                    await self.on_status(policy)
            except (AdapterError, SpecError) as exc:
                log.warning("could not record the notification health of policy %s: %s",
                            policy, exc)


def _failing(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = ((body.get("status") or {}).get("notifications") or {}).get("failing") or []
    return [dict(f) for f in found if isinstance(f, Mapping)]


def _without_times(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((str(f.get("sink")), str(f.get("reason")), str(f.get("message")))
                  for f in entries)

