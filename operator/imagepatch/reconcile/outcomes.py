"""Every error of a reconcile becomes a condition and a requeue time, mapped here once.

``reconcile_imagepatch`` and ``reconcile_policy`` raise what they meet; the
guarded entry points below turn each kind into what a user sees and into when
the loop looks again (as Flux does):

* ``SpecError`` (a malformed ImagePatch) and ``ScheduleError`` (a policy's
  schedule or timezone that fails at run time): ``Stalled=True``, reason
  ``InvalidSpec``, the field named in the message, and no hot retry: the next
  look is the slow resync, or at once when the spec changes (a watch wakes the
  loop). The planner's next successful write replaces the conditions, so a
  fixed spec clears it.
* ``ConflictError``: someone wrote in between; look again almost at once.
* ``TransientError``: ``Ready=False`` with its reason, and a growing,
  jittered, capped back-off (the server's Retry-After wins when longer).
* ``ConfigurationError``: as transient, and ``Stalled=True``: a person must act.
* anything else: logged with its traceback, ``Ready=False`` reason
  ``ReconcileError``, back-off. Nothing crash-loops silently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from imagepatch.adapters.errors import (
    AdapterError,
    ConfigurationError,
    ConflictError,
    TransientError,
)
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.notify import Notifier
from imagepatch.core import reasons
from imagepatch.core.conditions import Condition, merge
from imagepatch.core.reasons import (
    RECONCILE_ERROR,
)
from imagepatch.core.schedule import ScheduleError
from imagepatch.model.errors import SpecError
from imagepatch.model.times import Clock, utcnow
from imagepatch.reconcile.policies import reconcile_policy
from imagepatch.reconcile.rollouts import RebuildTools, reconcile_imagepatch

log = logging.getLogger("imagepatch.reconcile")

# A spec a person must fix is looked at again on this slow resync (or when it changes).
SPEC_RESYNC = 300.0
# Someone wrote in between: re-read and re-plan soon, without counting a failure.
CONFLICT_RETRY = 1.0
MESSAGE_LIMIT = 1024


@dataclass
class Backoff:
    """Per-key exponential back-off: base·2ⁿ, capped, with downward jitter.

    Jitter spreads retries of many objects that failed together (an API
    server restart) so they do not come back in step. ``rng`` is injectable
    so tests can pin it.
    """

    base: float = 10.0
    cap: float = 300.0
    jitter: float = 0.2
    rng: Callable[[], float] = random.random
    failures: dict[str, int] = field(default_factory=dict)

    def next_delay(self, key: str) -> float:
        attempt = self.failures.get(key, 0)
        self.failures[key] = attempt + 1
        delay: float = min(self.cap, self.base * 2 ** min(attempt, 32))
        return delay * (1.0 - self.jitter * self.rng())

    def reset(self, key: str) -> None:
        self.failures.pop(key, None)


@dataclass(frozen=True, kw_only=True)
class Failure:
    """What one error means for the object: its conditions and when to look again."""

    reason: str
    message: str
    stalled: bool  # a person must act
    spec: bool = False  # a spec error: slow resync, no back-off
    retry_after: float | None = None  # the server's hint
    unexpected: bool = False  # log the traceback


def classify(exc: Exception, *, policy: str = "") -> Failure | None:
    """The one mapping from an exception to a Failure; None for a conflict (re-plan soon)."""
    if isinstance(exc, ConflictError):
        return None
    if isinstance(exc, SpecError):
        return Failure(reason=reasons.INVALID_SPEC, message=str(exc), stalled=True, spec=True)
    if isinstance(exc, ScheduleError):
        # Raised while reading the policy's window at run time: name that field.
        owner = f"ImagePatchPolicy {policy!r} " if policy else ""
        return Failure(
            reason=reasons.INVALID_SPEC,
            message=f"{owner}spec.maintenanceWindow: {exc}",
            stalled=True,
            spec=True,
        )
    if isinstance(exc, TransientError):
        return Failure(reason=exc.reason, message=str(exc), stalled=False,
                       retry_after=exc.retry_after)
    if isinstance(exc, ConfigurationError):
        return Failure(reason=exc.reason, message=str(exc), stalled=True)
    if isinstance(exc, AdapterError):
        return Failure(reason=exc.reason, message=str(exc), stalled=False)
    return Failure(
        reason=RECONCILE_ERROR,
        message=f"{type(exc).__name__}: {exc}",
        stalled=False,
        unexpected=True,
    )


def failure_conditions(
    recorded: Mapping[str, Any] | None, failure: Failure, *, generation: int, now: dt.datetime
) -> list[dict[str, Any]]:
    """Conditions for ``failure``, merged into the recorded ones (transition times kept)."""
    message = failure.message[:MESSAGE_LIMIT]
    desired = [Condition(type=reasons.READY, status="False", reason=failure.reason,
                         message=message, observed_generation=generation)]
    drop = [reasons.STALLED]
    if failure.stalled:
        desired.append(Condition(type=reasons.STALLED, status="True", reason=failure.reason,
                                 message=message, observed_generation=generation))
        drop = []
    conditions = (recorded or {}).get("conditions")
    return merge(conditions, desired, now=now, drop=drop)


def _delay(failure: Failure, backoff: Backoff, key: str) -> float:
    if failure.spec:
        backoff.reset(key)
        return SPEC_RESYNC
    delay = backoff.next_delay(key)
    if failure.retry_after is not None:
        delay = max(delay, failure.retry_after)
    return delay


def _log(logger: logging.Logger, what: str, failure: Failure) -> None:
    if failure.unexpected:
        logger.exception("%s failed unexpectedly: %s", what, failure.message)
    else:
        logger.warning("%s: %s: %s", what, failure.reason, failure.message)


async def reconcile_imagepatch_guarded(
    *,
    name: str,
    kube: Kube,
    backoff: Backoff,
    clock: Clock = utcnow,
    logger: logging.Logger = log,
    tools: RebuildTools | None = None,
    memory: OperatorMemory | None = None,
    notifier: Notifier | None = None,
) -> float | None:
    """``reconcile_imagepatch``, with every error recorded as a condition.

    Returns when to look again (None: only when woken or at the resync).
    Never raises, except cancellation.
    """
    try:
        after = await reconcile_imagepatch(
            name=name, kube=kube, clock=clock, logger=logger, tools=tools, memory=memory,
            notifier=notifier,
        )
    except Exception as exc:  # noqa: BLE001 - the one place every error is mapped
        policy = ""
        body: dict[str, Any] | None = None
        try:
            body = await kube.get_imagepatch(name)
        except AdapterError:
            body = None
        if body is not None:
            policy = str((body.get("spec") or {}).get("policy") or "")
        failure = classify(exc, policy=policy)
        if failure is None:
            logger.info("ImagePatch %s changed while it was planned; planning again", name)
            return CONFLICT_RETRY
        _log(logger, f"ImagePatch {name}", failure)
        if body is not None:
            await _record(kube, name, body, failure, clock, logger)
        return _delay(failure, backoff, name)
    backoff.reset(name)
    return after


async def _record(
    kube: Kube, name: str, body: Mapping[str, Any], failure: Failure, clock: Clock,
    logger: logging.Logger,
) -> None:
    status = body.get("status") or {}
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    conditions = failure_conditions(status, failure, generation=generation, now=clock())
    if conditions == status.get("conditions"):
        return  # already shown: do not write (and wake watchers) again
    try:
        await kube.write_imagepatch_status(
            name, {"conditions": conditions},
            resource_version=body["metadata"]["resourceVersion"],
        )
    except AdapterError as exc:  # the next attempt records it
        logger.warning("could not record the error on ImagePatch %s: %s", name, exc)


def reconcile_policy_guarded(
    *, body: Mapping[str, Any], patch: MutableMapping[str, Any], clock: Clock = utcnow,
    logger: logging.Logger = log,
) -> dict[str, Any] | None:
    """``reconcile_policy``, with an unexpected error shown as ``Ready=False``.

    Spec errors are already conditions (``core.policy``); anything else is
    logged with its traceback and recorded, and the policy's resync timer
    looks again, so kopf does not retry it in a hot loop.
    """
    try:
        return reconcile_policy(body=body, patch=patch, clock=clock)
    except Exception as exc:  # noqa: BLE001 - the one place every error is mapped
        failure = classify(exc) or Failure(reason=RECONCILE_ERROR, message=str(exc),
                                           stalled=False)
        name = (body.get("metadata") or {}).get("name", "")
        _log(logger, f"ImagePatchPolicy {name}", failure)
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        patch.setdefault("status", {})["conditions"] = failure_conditions(
            body.get("status"), failure, generation=generation, now=clock()
        )
        return None


async def resync_policies(
    kube: Kube, stop: asyncio.Event, *, every: float, clock: Clock = utcnow,
    logger: logging.Logger = log,
) -> None:
    """Level-based resync of every policy's status, without a kopf timer.

    A kopf timer would put kopf's finalizer on every ImagePatchPolicy
    (nolar/kopf#1074), so deleting a policy would hang while the operator is
    down. Watch events (create/update/resume) keep the status current; this
    loop recomputes it every ``every`` seconds for what time alone changes
    (the next maintenance window) and for events that were lost.
    """
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
            return
        except TimeoutError:
            pass
        try:
            await resync_policies_once(kube, clock=clock, logger=logger)
        except AdapterError as exc:
            logger.warning("policy resync failed: %s: %s", exc.reason, exc)


async def refresh_policy(kube: Kube, name: str, *, clock: Clock = utcnow,
                         logger: logging.Logger = log) -> bool:
    """Recompute one policy's status now (after another writer changed a field it reads,
    such as the notifier's ``status.notifications``); whether it changed."""
    body = await kube.get_policy(name)
    if body is None:
        return False
    patch: dict[str, Any] = {}
    reconcile_policy_guarded(body=body, patch=patch, clock=clock, logger=logger)
    if patch.get("status"):
        await kube.write_policy_status(name, patch["status"])
        return True
    return False


async def resync_policies_once(
    kube: Kube, *, clock: Clock = utcnow, logger: logging.Logger = log
) -> int:
    """Recompute and write each policy's status where it changed; return how many changed."""
    changed = 0
    for body in await kube.list_policies():
        patch: dict[str, Any] = {}
        reconcile_policy_guarded(body=body, patch=patch, clock=clock, logger=logger)
        if patch.get("status"):
            await kube.write_policy_status(body["metadata"]["name"], patch["status"])
            changed += 1
    return changed
