"""Tell the notifier what the operator just recorded: a patch's phase, a workload's state.

Two hooks, each called right after the record it reports on was written:
:func:`patch_recorded` by the rollout loop after an ImagePatch status write
(a phase change to Succeeded, RolledBack, Failed or AwaitingApproval), and
:func:`workload_state_changed` by detection when a workload's evaluated
state changed (Vulnerable, BaseImageOutdated). Both only build the message
(``core/notify.py``) and queue it (``adapters/notify``): they never wait on a
sink and never raise, so a notification can neither slow nor fail a rollout
or a detection pass.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.adapters.notify import Notifier
from imagepatch.core import notify
from imagepatch.core.compliance import State
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import ImagePatch, parse_imagepatch
from imagepatch.model.times import format_time
from imagepatch.model.workload_state import ContainerState

log = logging.getLogger("imagepatch.notify")

_WORKLOAD_REASONS = (notify.VULNERABLE, notify.BASE_IMAGE_OUTDATED)
_PATCHING = str(State.PATCHING)


def patch_recorded(notifier: Notifier | None, before: ImagePatch,
                   after: Mapping[str, Any] | None, now: dt.datetime) -> bool:
    """Queue a notification if the status just written changed the phase to one worth it."""
    if notifier is None or after is None:
        return False
    try:
        patch = parse_imagepatch(after)
    except SpecError:
        return False
    reason = notify.patch_reason(before.status.phase, patch.status.phase)
    if reason is None:
        return False
    return notifier.submit(patch.policy, notify.for_patch(patch, reason=reason,
                                                          at=format_time(now)))


def workload_state_changed(
    notifier: Notifier | None, *, policy: str, kind: str, workload: Mapping[str, Any],
    state: str, message: str, containers: Sequence[ContainerState], now: dt.datetime,
) -> bool:
    """Queue a notification for a workload that just turned Vulnerable or BaseImageOutdated.

    A workload detection opens a patch for in the same pass is recorded as
    Patching at once, its containers giving the cause as their reason: that
    cause is what the message is about (and says a patch was opened).
    """
    if notifier is None:
        return False
    cause = state
    if state == _PATCHING:
        cause = next((c.reason for c in containers if c.reason in _WORKLOAD_REASONS), "")
    if cause not in _WORKLOAD_REASONS:
        return False
    meta = workload.get("metadata") or {}
    note = notify.for_workload(
        policy=policy, kind=kind, namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""), state=cause, message=message,
        containers=[
            notify.ContainerFinding(name=c.name, image=c.image, digest=c.digest, state=c.state,
                                    reason=c.reason, message=c.message,
                                    by_severity=c.findings_by_severity)
            for c in containers
        ],
        at=format_time(now), patching=state == _PATCHING,
    )
    return notifier.submit(policy, note)
