"""The record stage's writes: a workload's state on it, in memory, and as an Event.

The operator's memory (``adapters.memory``) says what changed; the
``imagepatch.dev/state`` annotation is only its mirror for people, written
when it differs. An Event is posted when the state changed, and a
``HoldIgnored`` Warning Event when the workload's ``imagepatch.dev/hold``
cannot be honoured, once per distinct annotation value (its fingerprint is
remembered in the operator's memory, so neither a pass nor a restart repeats it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.notify import Notifier
from imagepatch.core import hold, kinds, reasons
from imagepatch.core.compliance import State
from imagepatch.core.detection.workload import clip, kind_of, mirror
from imagepatch.model import memory as memory_model
from imagepatch.model.memory import WorkloadMemory
from imagepatch.model.names import STATE_ANNOTATION
from imagepatch.model.times import Clock
from imagepatch.model.workload_state import ContainerState, WorkloadState
from imagepatch.reconcile import notifications

log = logging.getLogger("imagepatch.detection")

# Workload states that are not compliance states: reported, never counted.
NOT_ADMITTED = reasons.NOT_ADMITTED
POLICY_NOT_FOUND = reasons.POLICY_NOT_FOUND
WARNING_STATES = {
    str(State.BASE_IMAGE_OUTDATED),
    str(State.VULNERABLE),
    str(State.UNTRUSTED_BASE),
    str(State.FAILED),
    str(State.UNKNOWN),
    NOT_ADMITTED,
    POLICY_NOT_FOUND,
    reasons.REBUILD_NOT_ALLOWED,
}
# States in which a workload's hold is never read: nothing would patch it anyway.
HOLD_UNREAD = {NOT_ADMITTED, POLICY_NOT_FOUND}


class StateRecorder:
    """Writes workloads' states (one instance per detector)."""

    def __init__(
        self,
        *,
        kube: Kube,
        memory: OperatorMemory,
        clock: Clock,
        remembered: Callable[[Mapping[str, Any]], WorkloadMemory],
        notifier: Notifier | None = None,
    ) -> None:
        self.kube = kube
        self.memory = memory
        self.clock = clock
        self.remembered = remembered
        # Where a state worth a message (Vulnerable, ...) is queued (spec.notifications).
        self.notifier = notifier

    async def report(
        self,
        workload: Mapping[str, Any],
        state: str,
        message: str,
        containers: Sequence[ContainerState],
        policy: str,
    ) -> None:
        """Record the workload's state on it; post an Event when the state changed."""
        meta = workload["metadata"]
        remembered = self.remembered(workload)
        changed = remembered.state != state
        kept = memory_model.with_state(remembered, state=state, now=self.clock())
        record = WorkloadState(
            policy=policy, state=state, message=message[:1000], containers=tuple(containers),
            since=kept.since,
        )  # fmt: skip
        value = record.to_annotation()
        if mirror(meta) != value:
            await self.kube.annotate_workload(
                kind_of(workload), meta["namespace"], meta["name"], {STATE_ANNOTATION: value}
            )
            # Keep our copy in step, so the next pass compares with what we wrote.
            meta.setdefault("annotations", {})[STATE_ANNOTATION] = value
        if changed:
            await self.event(workload, state, message)
            # Queued, never awaited: a sink never holds a pass.
            notifications.workload_state_changed(
                self.notifier, policy=policy, kind=kind_of(workload), workload=workload,
                state=state, message=message, containers=containers, now=self.clock(),
            )  # fmt: skip
        if state not in HOLD_UNREAD:
            kept = await self._hold_ignored(workload, kept)
        self.memory.stage(kept)  # written at the end of the pass

    async def _hold_ignored(
        self, workload: Mapping[str, Any], kept: WorkloadMemory
    ) -> WorkloadMemory:
        """Warn once per distinct unreadable hold; the memory that records it."""
        found = hold.ignored(workload, self.clock())
        if found is None:
            # Readable or gone: the same bad value written again is reported again.
            return memory_model.with_hold_warned(kept, "")
        reason, message, fingerprint = found
        if kept.hold_warned == fingerprint:
            return kept
        if not await self.event(workload, reason, message, warning=True):
            return kept  # not posted: tried again next pass
        return memory_model.with_hold_warned(kept, fingerprint)

    async def event(
        self, workload: Mapping[str, Any], state: str, message: str, *, warning: bool = False
    ) -> bool:
        """Post an Event (reason ``state``); False when the API server refused it (logged)."""
        meta = workload["metadata"]
        try:
            await self.kube.emit_event(
                involved={
                    "apiVersion": kinds.api_version(kind_of(workload)),
                    "kind": kind_of(workload),
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta.get("uid", ""),
                },
                type="Warning" if warning or state in WARNING_STATES else "Normal",
                reason=state,
                message=clip(message, 1024),
            )
        except AdapterError as exc:
            log.warning("could not post event %s: %s", state, exc)
            return False
        return True
