"""The status of an ImagePatchPolicy, as a pure function of its object and the clock.

A spec that the CRD schema accepted can still be unusable: a cron expression
with an hour of 25, a timezone that does not exist, a Git write-back message
template with an unknown placeholder. Those end as
``Stalled=True`` with reason ``InvalidSpec`` and a message that names the
field, and no retry is scheduled until the spec changes (as Flux does). When
the spec is fixed, the next reconcile turns the policy ``Ready`` again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from imagepatch.core import reasons, writeback
from imagepatch.core.conditions import Condition, merge
from imagepatch.core.schedule import ScheduleError, parse_schedule
from imagepatch.model import names
from imagepatch.model.errors import SpecError
from imagepatch.model.policy import PolicySpec, parse_policy
from imagepatch.model.times import format_time

# `kubectl annotate ipp NAME imagepatch.dev/requestedAt="$(date -Is)"` asks for
# a reconcile now; the value is echoed in status.lastHandledReconcileAt.
REQUESTED_AT_ANNOTATION = names.REQUESTED_AT_ANNOTATION


def check_policy(spec: PolicySpec) -> None:
    """Checks the CRD's CEL rules cannot make; raise SpecError naming the field."""
    wb = spec.rollout.git_write_back
    if wb is not None and wb.message_template:
        # An unknown placeholder would otherwise fail only at the first commit.
        problem = writeback.check_template(wb.message_template)
        if problem is not None:
            raise SpecError("spec.rollout.gitWriteBack.messageTemplate", problem)
    window = spec.maintenance_window
    if window is None:
        return
    try:
        parse_schedule(window.schedule, "UTC")
    except ScheduleError as exc:
        raise SpecError("spec.maintenanceWindow.schedule", str(exc)) from exc
    try:
        parse_schedule(window.schedule, window.timezone)
    except ScheduleError as exc:
        raise SpecError("spec.maintenanceWindow.timezone", str(exc)) from exc


def notifications_condition(
    spec: PolicySpec, recorded: Mapping[str, Any], generation: int
) -> Condition | None:
    """``NotificationsDegraded`` from ``status.notifications`` (None: the policy has no sinks).

    True while a sink's last delivery failed (the notifier records it, naming
    the sink, the reason and a message with no secret in it); False otherwise.
    """
    if not spec.notifications:
        return None
    sinks = {s.name for s in spec.notifications}
    found = (recorded.get("notifications") or {}).get("failing") if isinstance(
        recorded.get("notifications"), Mapping) else None
    failing = [f for f in found or [] if isinstance(f, Mapping) and f.get("sink") in sinks]
    if not failing:
        return Condition(type=reasons.NOTIFICATIONS_DEGRADED, status="False",
                         reason=reasons.NOTIFICATIONS_DELIVERED,
                         message="no notification sink is failing",
                         observed_generation=generation)
    message = "; ".join(
        f"sink {f.get('sink')} ({f.get('type')}): {f.get('reason')}: {f.get('message')}"
        for f in failing)
    return Condition(type=reasons.NOTIFICATIONS_DEGRADED, status="True",
                     reason=reasons.NOTIFICATION_FAILED, message=message[:4000],
                     observed_generation=generation)


def policy_status(obj: Mapping[str, Any], *, now: dt.datetime) -> dict[str, Any]:
    """The full ``status`` to record for the policy object ``obj``."""
    meta = obj.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    recorded = obj.get("status") or {}
    status: dict[str, Any] = {"observedGeneration": generation}

    try:
        policy = parse_policy(obj)
        check_policy(policy.spec)
    except SpecError as exc:
        problem = str(exc)
        desired = [
            Condition(type=reasons.READY, status="False", reason=reasons.INVALID_SPEC,
                      message=problem, observed_generation=generation),
            Condition(type=reasons.STALLED, status="True", reason=reasons.INVALID_SPEC,
                      message=problem, observed_generation=generation),
        ]
        status["conditions"] = merge(recorded.get("conditions"), desired, now=now,
                                     drop=[reasons.RECONCILING])
    else:
        if policy.spec.suspend:
            ready = Condition(type=reasons.READY, status="True", reason=reasons.SUSPENDED,
                              message="spec.suspend is true: no new patches start",
                              observed_generation=generation)
        else:
            ready = Condition(type=reasons.READY, status="True", reason=reasons.RECONCILED,
                              message="policy is valid and active", observed_generation=generation)
        desired = [ready]
        drop = [reasons.STALLED, reasons.RECONCILING]
        findings = recorded.get("findings")
        if policy.spec.vulnerabilities.source.value == "none" or not isinstance(findings, Mapping):
            drop.append(reasons.FINDINGS_READABLE)
        elif findings.get("readable") is False:
            # Never a silent Compliant: say that the findings could not be read.
            desired.append(Condition(
                type=reasons.FINDINGS_READABLE, status="False",
                reason=str(findings.get("reason") or reasons.FINDINGS_UNAVAILABLE),
                message=str(findings.get("message") or "findings could not be read")[:1000],
                observed_generation=generation))
        else:
            desired.append(Condition(
                type=reasons.FINDINGS_READABLE, status="True", reason=reasons.FINDINGS_READ,
                message="vulnerability findings were read", observed_generation=generation))
        notifications = notifications_condition(policy.spec, recorded, generation)
        if notifications is None:
            drop.append(reasons.NOTIFICATIONS_DEGRADED)
        else:
            desired.append(notifications)
        status["conditions"] = merge(recorded.get("conditions"), desired, now=now, drop=drop)

    requested = (meta.get("annotations") or {}).get(REQUESTED_AT_ANNOTATION)
    if requested:
        status["lastHandledReconcileAt"] = requested
    return status


__all__ = [
    "REQUESTED_AT_ANNOTATION",
    "check_policy",
    "format_time",
    "notifications_condition",
    "policy_status",
]
