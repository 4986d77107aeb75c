"""Flagger targets: a Deployment a Flagger ``Canary`` targets, and its gate (issue 23).

Flagger (``flagger.app/v1beta1`` ``Canary``) progressive-delivers a
Deployment named in the Canary's ``spec.targetRef``: when that Deployment's
pod template changes, Flagger scales it up as the canary, runs its analysis,
and on success copies the template into the ``<name>-primary`` Deployment it
owns (which serves the traffic); on failure it scales the canary back to zero
and the primary keeps serving the old template. imagepatch decides *what*
runs and *when*; Flagger decides *how* traffic moves. So:

* **The patch is the usual one**: the digest is written into the target
  Deployment's template, and Flagger takes it from there.
* **The primary is Flagger's**: a Deployment that a Canary controls
  (``ownerReferences``) is never patched (:func:`not_patchable`): Flagger
  copies its template from the canary on promotion, and Flagger copies the
  target's annotations to it too, so it looks opted in.
* **The gate follows the Canary's status** (:func:`assess`), once Flagger
  reacted to the patch (its ``status.lastTransitionTime`` after the patch's
  start): ``Succeeded`` passes (after imagepatch's soak), ``Failed`` fails
  with Flagger's condition message as the reason, every other phase
  (``Progressing``, ``Waiting``, ``Promoting``, ``Finalising``...) waits.
  imagepatch's own pod checks on the canary pods (the target Deployment's
  selector) still apply first as a floor, and its progress deadline bounds
  the wait (Flagger's analysis must fit in ``progressDeadlineSeconds``).
* **Rollback does not fight Flagger**: when Flagger failed the canary it has
  already rolled back (traffic stays on the primary, the canary is scaled to
  zero). imagepatch then only restores the previous digest in the target
  Deployment's template, so Flagger does not retry the bad digest; the entry
  says which rollback it was (:data:`ROLLBACK_NOTE`). Flagger takes a
  template back on its last promoted spec for a rollback by hand
  (``lastPromotedSpec``): it starts no new analysis, the Canary stays
  ``Failed``, and the restored image is gated as any Deployment's (the canary
  scaled to zero).

A Canary is a tenant's object: it is read as a claim on the Deployment. It
can only make imagepatch wait for Flagger or be more careful; it never makes
a Deployment a target (the Deployment's own opt-in does) nor widens what
imagepatch may write. It is matched by ``spec.targetRef`` (``apps/v1``
``Deployment``, the same name) in the Deployment's own namespace.

Pure: plain dicts as the API serves them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from imagepatch.core import health, reasons
from imagepatch.core.health import HealthReason, HealthState, HealthVerdict, Progress
from imagepatch.model.policy import Rollout
from imagepatch.model.times import parse_time_strict

GROUP, VERSION, PLURAL = "flagger.app", "v1beta1", "canaries"
CANARY = "Canary"
# Where an observed Deployment body keeps what imagepatch read of the Canary targeting it
# (:func:`attach`). Set by the adapter; never in an API object.
ATTACHED = "imagepatchFlaggerCanary"
SUCCEEDED, FAILED = "Succeeded", "Failed"
# Said on the rollback entry of a Deployment Flagger failed: which rollback it was.
ROLLBACK_NOTE = (
    "; Flagger has already rolled back (the primary keeps serving, the canary is scaled to"
    " zero); imagepatch restores the previous digest in the target Deployment's template only,"
    " so Flagger does not retry the bad digest"
)


def targets(canary: Mapping[str, Any], namespace: str, name: str) -> bool:
    """The Canary's ``spec.targetRef`` names the apps/v1 Deployment ``namespace/name``."""
    meta = _mapping(canary.get("metadata"))
    ref = _mapping(_mapping(canary.get("spec")).get("targetRef"))
    return (
        meta.get("namespace") == namespace
        and ref.get("kind") == "Deployment"
        and ref.get("apiVersion") in ("apps/v1", None)
        and ref.get("name") == name
    )


def canary_for(
    canaries: Iterable[Mapping[str, Any]], deployment: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The Canary (of those listed) that targets ``deployment``; the first by name if several."""
    meta = _mapping(deployment.get("metadata"))
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    found = [c for c in canaries if targets(c, ns, name)]
    return min(found, key=_name) if found else None


def attach(deployment: Mapping[str, Any], canary: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Deployment with what the gate reads of ``canary`` (:data:`ATTACHED`); unchanged
    (a copy) when no Canary targets it."""
    if canary is None:
        return dict(deployment)
    status = _mapping(canary.get("status"))
    return {
        **deployment,
        ATTACHED: {
            "name": _name(canary),
            "phase": str(status.get("phase") or ""),
            "lastTransitionTime": str(status.get("lastTransitionTime") or ""),
            "failedChecks": _int(status.get("failedChecks")),
            "message": _promoted_message(status),
        },
    }


def attached(deployment: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The :data:`ATTACHED` record of a Deployment a Canary targets, else None."""
    record = deployment.get(ATTACHED)
    return record if isinstance(record, Mapping) else None


def not_patchable(deployment: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) for a Deployment a Flagger Canary controls (its primary), else None."""
    refs = _mapping(deployment.get("metadata")).get("ownerReferences") or ()
    owner = next(
        (
            _mapping(r)
            for r in refs
            if _mapping(r).get("kind") == CANARY
            and str(_mapping(r).get("apiVersion") or "").startswith(GROUP + "/")
        ),
        None,
    )
    if owner is None:
        return None
    meta = _mapping(deployment.get("metadata"))
    return (
        reasons.FLAGGER_PRIMARY,
        f"Deployment {meta.get('namespace', '')}/{meta.get('name', '')} is the primary of"
        f" Flagger Canary {owner.get('name', '')}: Flagger copies the canary's template into it"
        " on promotion, so imagepatch patches the Canary's target Deployment instead",
    )


def fresh(record: Mapping[str, Any], started_at: dt.datetime) -> bool:
    """Flagger changed the Canary's phase after the patch started (its verdict is about it).

    Times have one-second resolution; a phase change in the patch's very second
    counts as older, so the gate waits for the next one (Flagger needs at least
    one analysis interval to conclude).
    """
    changed = parse_time_strict(str(record.get("lastTransitionTime") or ""))
    return changed is not None and changed > started_at


def progress(
    deployment: Mapping[str, Any], record: Mapping[str, Any], started_at: dt.datetime
) -> Progress:
    """The Canary's analysis in the gate's terms: complete when Flagger says ``Succeeded``
    about this patch. The Deployment's own replica counts are not judged: Flagger scales
    the canary to zero once it promoted."""
    want = _int(_mapping(deployment.get("spec")).get("replicas")) or 1
    phase = str(record.get("phase") or "")
    message = str(record.get("message") or "")
    counts = f"Flagger Canary {record.get('name', '')} phase {phase or 'unknown'}" + (
        f" ({message})" if message else ""
    )
    seen = fresh(record, started_at)
    if not seen:
        counts += ", Flagger has not picked up the new revision yet"
    return Progress(
        want=want,
        complete=seen and phase == SUCCEEDED,
        counts=counts,
        done_text=f"Flagger Canary {record.get('name', '')} Succeeded: promoted to the primary",
    )


def assess(
    *,
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
) -> HealthVerdict | None:
    """imagepatch's pod checks first (the floor), then Flagger's verdict; None when no
    Canary targets ``deployment`` (the Deployment's own gate applies)."""
    record = attached(deployment)
    if record is None:
        return None
    floor = health.assess_progress(
        progress=progress(deployment, record, started_at), pods=pods,
        target_images=target_images, gate=gate, started_at=started_at,
        healthy_since=healthy_since, baseline_restarts=None, now=now,
    )  # fmt: skip
    timed_out = floor.reason == HealthReason.PROGRESS_DEADLINE_EXCEEDED
    if floor.state == HealthState.FAILED and not timed_out:
        return floor  # a canary pod is broken: whatever Flagger says yet
    if fresh(record, started_at) and record.get("phase") == FAILED:
        message = str(record.get("message") or "no message")
        return HealthVerdict(
            state=HealthState.FAILED, reason=HealthReason.CANARY_FAILED,
            message=f"Flagger failed Canary {record.get('name', '')}: {message}",
            healthy_since=None,
        )  # fmt: skip
    return floor


def with_rollback_note(message: str) -> str:
    """The rollback entry's message, saying which rollback a Flagger target gets."""
    return message if ROLLBACK_NOTE in message else message + ROLLBACK_NOTE


def _promoted_message(status: Mapping[str, Any]) -> str:
    """Flagger's own words: its ``Promoted`` condition's message."""
    for c in status.get("conditions") or ():
        if _mapping(c).get("type") == "Promoted":
            return str(_mapping(c).get("message") or "")
    return ""


def _name(obj: Mapping[str, Any]) -> str:
    meta = _mapping(obj.get("metadata"))
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
