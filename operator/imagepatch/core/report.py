"""The compliance report and the ImagePatch retention rule, as pure functions of plain dicts.

``build_report`` turns what ``adapters.report_source`` read from the cluster
(ImagePatchPolicies, opted-in Deployments, ImagePatches, as the API serves
them) and an injected ``now`` into typed rows; ``cli_report`` renders them as
a table, JSON, CSV or HTML. ``retention`` picks the ImagePatches that a
policy's history retention lets go. Neither reads a clock or does I/O.

Where each value comes from (nothing is guessed):

* a workload's **state, reason, message and containers** are the
  ``imagepatch.dev/state`` annotation that detection writes
  (``reconcile.detection``); the states are those of ``core.compliance`` plus
  ``NotAdmitted`` and ``PolicyNotFound``. An opted-in workload with no record
  yet (or one recorded under another policy) is ``Unknown`` / ``NotEvaluated``;
  the workload's reason is that of its first container in the workload's state;
* **out of compliance since**: only for the non-compliant states
  (BaseImageOutdated, Vulnerable, UntrustedBase, Patching, Failed; not
  Unknown, which proves nothing either way): the earliest of the state
  record's ``since`` and the creation of any ImagePatch, other than a Closed
  one, for exactly the digest the workload runs. Detection opens that patch in
  the same pass in which it first sees the image break the policy, and a
  Closed patch means the image was compliant again in between;
* **base outdated since** (the "base age" we can prove): the cluster does
  not record when a base image was published, only when detection saw it
  move. A container's base is outdated when its recorded reason is
  ``BaseImageOutdated`` (the reason survives the Patching and Failed
  overlays); since when is the earliest of the creation of a
  ``BaseImageOutdated`` ImagePatch (not Succeeded, not Closed) for its running
  digest and the state's ``since`` if the container's state is the
  workload's. ``None`` when the base is current or the time unknown;
* **findings over the baseline**: the count per container from the record,
  and the finding ids from the ``evidence.findings`` of the ImagePatches for
  the running digest;
* **last patch**: the most recently active ImagePatch that targets the
  workload or is for one of its images; its result message is the
  workload's own rollout entry's (``reason: message``), else the last
  history entry's, else the Ready condition's;
* the **history series**: ImagePatches per time bucket (an hour when all of
  them fit in two days, else a day; at most ``max_buckets``, newest last):
  how many reached each terminal phase in the bucket, and how many were open
  at its end, from each patch's ``creationTimestamp`` and ``status.history``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagepatch.core import compliance, reasons
from imagepatch.core.compliance import State
from imagepatch.core.images import parse_image
from imagepatch.core.reasons import (
    NOT_EVALUATED,
)
from imagepatch.model.imagepatch import TERMINAL_PHASES, Phase
from imagepatch.model.names import POLICY_ANNOTATION, STATE_ANNOTATION
from imagepatch.model.times import format_time, parse_time
from imagepatch.model.workload_state import ContainerState, WorkloadState, from_annotation

# Workload states detection records besides the compliance states.
NOT_ADMITTED = reasons.NOT_ADMITTED
POLICY_NOT_FOUND = reasons.POLICY_NOT_FOUND

STATES: tuple[str, ...] = (*(str(s) for s in State), NOT_ADMITTED, POLICY_NOT_FOUND)

# States that mean "the running image breaks the policy". Unknown is not one:
# it means the facts could not be gathered, which proves neither.
NONCOMPLIANT: frozenset[str] = frozenset(
    str(s)
    for s in (
        State.BASE_IMAGE_OUTDATED,
        State.VULNERABLE,
        State.UNTRUSTED_BASE,
        State.PATCHING,
        State.FAILED,
    )
)

TERMINAL = TERMINAL_PHASES
# JSON keys of the history series, per terminal phase.
RESULT_KEYS = {
    str(Phase.SUCCEEDED): "succeeded",
    str(Phase.ROLLED_BACK): "rolledBack",
    str(Phase.FAILED): "failed",
    str(Phase.CLOSED): "closed",
}

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# Up to this span the chart counts per hour; beyond it, per day.
HOURLY_SPAN = dt.timedelta(days=2)


# --- inputs -------------------------------------------------------------------------------


def _repository(image: str) -> str:
    """``host/repository`` of an image reference; the text itself when it does not parse."""
    try:
        return parse_image(image).name
    except ValueError:
        return image


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


@dataclass(frozen=True, kw_only=True, slots=True)
class _Patch:
    """One ImagePatch, read once: what every part of the report needs of it."""

    name: str
    policy: str
    image: str  # host/repository
    current_digest: str
    target_digest: str
    reason: str
    phase: str
    created: dt.datetime | None
    timeline: tuple[tuple[dt.datetime, str], ...]  # (when, phase), oldest first
    ended: dt.datetime | None  # when it reached a terminal phase
    result: str  # that terminal phase; "" while active
    last_activity: dt.datetime | None
    body: Mapping[str, Any]

    @property
    def active(self) -> bool:
        return self.phase not in TERMINAL

    def targets(self) -> set[tuple[str, str]]:
        spec = self.body.get("spec") or {}
        status = self.body.get("status") or {}
        return {
            (t.get("namespace", ""), t.get("name", ""))
            for t in [*(spec.get("targets") or []), *(status.get("rollouts") or [])]
        }


def _ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


def _parse_patch(body: Mapping[str, Any]) -> _Patch:
    meta, spec, status = _meta(body), body.get("spec") or {}, body.get("status") or {}
    phase = status.get("phase") or str(Phase.PENDING)
    history = sorted(
        ((at, str(h.get("phase") or "")) for h in status.get("history") or []
         if (at := parse_time(h.get("at"))) is not None),
        key=lambda e: e[0],
    )
    # A restored (e.g. Velero) object gets a new creationTimestamp but keeps its
    # history: the earlier of the two is when the patch really began.
    created = min(
        [t for t in (parse_time(meta.get("creationTimestamp")), history[0][0] if history else None)
         if t is not None],
        default=None,
    )
    timeline = list(history)
    if created is not None and (not timeline or timeline[0][0] > created):
        timeline.insert(0, (created, str(Phase.PENDING)))
    ended, result = next(((at, p) for at, p in timeline if p in TERMINAL), (None, ""))
    if phase in TERMINAL and ended is None:
        # Terminal with no history entry saying when (an older writer, or history
        # trimmed to its last 50): the Ready condition's transition is the best record.
        ended = parse_time(_ready_condition(status).get("lastTransitionTime")) or created
        result = phase
        if ended is not None:
            timeline.append((ended, phase))
            timeline.sort(key=lambda e: e[0])
    return _Patch(
        name=meta.get("name", ""),
        policy=spec.get("policy", ""),
        image=_repository(spec.get("image", "")),
        current_digest=spec.get("currentDigest", ""),
        target_digest=status.get("targetDigest") or spec.get("targetDigest") or "",
        reason=spec.get("reason") or "Manual",
        phase=phase,
        created=created,
        timeline=tuple(timeline),
        ended=ended,
        result=result,
        last_activity=timeline[-1][0] if timeline else created,
        body=body,
    )


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Filters:
    """What to show; an empty field does not filter. States match case-insensitively."""

    namespace: str | None = None
    policies: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()

    def keeps(self, row: WorkloadRow) -> bool:
        if self.namespace and row.namespace != self.namespace:
            return False
        if self.policies and row.policy not in self.policies:
            return False
        return not self.states or row.state.lower() in {s.lower() for s in self.states}

    @property
    def any(self) -> bool:
        return bool(self.namespace or self.policies or self.states)


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerRow:
    name: str
    image: str
    repository: str
    digest: str
    digest_source: str
    base: str
    base_digest: str
    base_current: str
    base_outdated: bool
    base_outdated_since: dt.datetime | None
    base_outdated_seconds: int | None
    state: str
    reason: str
    message: str
    findings_over_baseline: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchRef:
    """The last ImagePatch that concerns a workload, and how it ended (or stands)."""

    name: str
    phase: str
    reason: str
    at: dt.datetime | None  # when it entered its current phase
    result: str
    approval: Mapping[str, str] | None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadRow:
    namespace: str
    name: str
    policy: str
    state: str
    reason: str
    message: str
    since: dt.datetime | None
    out_of_compliance_since: dt.datetime | None
    out_of_compliance_seconds: int | None
    findings_over_baseline: int | None
    finding_ids: tuple[str, ...]
    containers: tuple[ContainerRow, ...]
    last_patch: PatchRef | None

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(c.digest for c in self.containers if c.digest)


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicySummary:
    name: str
    exists: bool
    ready: Mapping[str, str] | None  # status, reason, message of the Ready condition
    status_counts: Mapping[str, int] | None  # status.workloads as the operator recorded it
    report_counts: Mapping[str, int]  # the same counts over this report's rows
    open_patches: int
    patches_by_phase: Mapping[str, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchAudit:
    """An ImagePatch as an audit record: what, why, who approved, each phase and its end."""

    name: str
    policy: str
    image: str
    current_digest: str
    target_digest: str
    reason: str
    phase: str
    created_at: dt.datetime | None
    ended_at: dt.datetime | None
    approval: Mapping[str, str] | None
    rollouts: tuple[Mapping[str, str], ...]
    history: tuple[Mapping[str, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryBucket:
    start: dt.datetime
    end: dt.datetime
    open: int  # open (non-terminal) at the end of the bucket
    ended: Mapping[str, int]  # terminal phase -> how many reached it in the bucket


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    generated_at: dt.datetime
    filters: Filters
    workloads: tuple[WorkloadRow, ...]
    policies: tuple[PolicySummary, ...]
    patches: tuple[PatchAudit, ...]
    history_unit: str  # "hour" | "day"
    history: tuple[HistoryBucket, ...]
    warnings: tuple[str, ...] = field(default=())


def _seconds(since: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


def _approval(spec: Mapping[str, Any]) -> Mapping[str, str] | None:
    raw = spec.get("approval") or {}
    if not raw.get("decision"):
        return None
    return {
        "decision": str(raw["decision"]),
        "by": str(raw.get("by") or ""),
        "reason": str(raw.get("reason") or ""),
    }


def _result(patch: _Patch, namespace: str, name: str) -> str:
    status = patch.body.get("status") or {}
    for entry in status.get("rollouts") or []:
        if (entry.get("namespace"), entry.get("name")) == (namespace, name) and (
            entry.get("message") or entry.get("reason")
        ):
            return ": ".join(p for p in (entry.get("reason"), entry.get("message")) if p)
    timed = [(at, h) for h in status.get("history") or [] if (at := parse_time(h.get("at")))]
    if timed:
        last = max(timed, key=lambda e: e[0])[1]
        if last.get("message"):
            return str(last["message"])
    return str(_ready_condition(status).get("message") or "")


def _phase_since(patch: _Patch) -> dt.datetime | None:
    """When the patch entered its current phase (its latest timeline entry of that phase)."""
    return next((at for at, p in reversed(patch.timeline) if p == patch.phase), patch.last_activity)


def _newest(patches: Iterable[_Patch]) -> _Patch | None:
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(patches, key=lambda p: (p.last_activity or epoch, p.name), default=None)


def _workload_row(
    dep: Mapping[str, Any], patches: Sequence[_Patch], now: dt.datetime
) -> WorkloadRow:
    meta = _meta(dep)
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    annotations = meta.get("annotations") or {}
    policy = annotations.get(POLICY_ANNOTATION, "")
    record = from_annotation(annotations.get(STATE_ANNOTATION))
    reason = ""
    if record is None or (record.policy is not None and record.policy != policy):
        # Opted in (or moved to another policy) since detection last looked.
        record = WorkloadState(
            policy=policy, state=str(State.UNKNOWN), message="not evaluated yet under this policy"
        )
        reason = NOT_EVALUATED
    state = record.state or str(State.UNKNOWN)
    since = record.since
    raw_containers = record.containers

    def runs(p: _Patch, c: ContainerState) -> bool:
        # "For exactly the digest it runs": a Closed patch means compliant in between.
        return (
            p.phase != str(Phase.CLOSED)
            and p.image == _repository(c.image)
            and bool(c.digest)
            and p.current_digest == c.digest
        )

    containers = []
    for c in raw_containers:
        # Outdated is what detection recorded now (the reason survives the Patching
        # and Failed overlays); patches only tell since when.
        outdated = c.reason == str(State.BASE_IMAGE_OUTDATED)
        starts = [
            p.created
            for p in patches
            if runs(p, c) and p.created and p.reason == str(State.BASE_IMAGE_OUTDATED)
            and p.phase != str(Phase.SUCCEEDED)
        ]
        if since and c.state == state:
            starts.append(since)
        base_since = min(starts) if outdated and starts else None
        containers.append(
            ContainerRow(
                name=c.name,
                image=c.image,
                repository=_repository(c.image),
                digest=c.digest,
                digest_source=c.digest_source,
                base=c.base,
                base_digest=c.base_digest,
                base_current=c.base_current,
                base_outdated=outdated,
                base_outdated_since=base_since,
                base_outdated_seconds=_seconds(base_since, now),
                state=c.state,
                reason=c.reason,
                message=c.message,
                findings_over_baseline=c.findings_over_baseline,
            )
        )

    reason = (
        reason
        or next((c.reason for c in containers if c.state == state and c.reason), "")
        or state
    )
    out_since = None
    if state in NONCOMPLIANT:
        starts = [since] if since else []
        starts += [p.created for c in raw_containers for p in patches if runs(p, c) and p.created]
        out_since = min(starts) if starts else None
    counted = [c.findings_over_baseline for c in containers if c.findings_over_baseline is not None]
    finding_ids = sorted({
        str(f["id"])
        for c in raw_containers
        for p in patches
        if runs(p, c)
        for f in ((p.body.get("spec") or {}).get("evidence") or {}).get("findings") or []
        if isinstance(f, dict) and f.get("id")
    })

    repositories = {c.repository for c in containers}
    related = [
        p for p in patches if p.image in repositories or (namespace, name) in p.targets()
    ]
    last = _newest(related)
    last_patch = None
    if last is not None:
        last_patch = PatchRef(
            name=last.name,
            phase=last.phase,
            reason=last.reason,
            at=_phase_since(last),
            result=_result(last, namespace, name),
            approval=_approval(last.body.get("spec") or {}),
        )
    return WorkloadRow(
        namespace=namespace,
        name=name,
        policy=policy,
        state=state,
        reason=reason,
        message=record.message,
        since=since,
        out_of_compliance_since=out_since,
        out_of_compliance_seconds=_seconds(out_since, now),
        findings_over_baseline=sum(counted) if counted else None,
        finding_ids=tuple(finding_ids),
        containers=tuple(containers),
        last_patch=last_patch,
    )


def _audit(patch: _Patch) -> PatchAudit:
    spec, status = patch.body.get("spec") or {}, patch.body.get("status") or {}
    keep_rollout = ("namespace", "name", "container", "phase", "reason", "message",
                    "startedAt", "finishedAt")
    keep_history = ("phase", "at", "message", "by")
    return PatchAudit(
        name=patch.name,
        policy=patch.policy,
        image=patch.image,
        current_digest=patch.current_digest,
        target_digest=patch.target_digest,
        reason=patch.reason,
        phase=patch.phase,
        created_at=patch.created,
        ended_at=patch.ended,
        approval=_approval(spec),
        rollouts=tuple(
            {k: str(r[k]) for k in keep_rollout if r.get(k) not in (None, "")}
            for r in status.get("rollouts") or []
        ),
        history=tuple(
            {k: str(h[k]) for k in keep_history if h.get(k) not in (None, "")}
            for h in status.get("history") or []
        ),
    )


def _floor(when: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    when = when.astimezone(dt.UTC)
    if unit == DAY:
        return when.replace(hour=0, minute=0, second=0, microsecond=0)
    return when.replace(minute=0, second=0, microsecond=0)


def history_series(
    patches: Iterable[Mapping[str, Any]], *, now: dt.datetime, max_buckets: int = 60
) -> tuple[str, tuple[HistoryBucket, ...]]:
    """ImagePatches per bucket: reached each terminal phase in it, and open at its end.

    Returns the unit (``"hour"`` or ``"day"``) and the buckets, oldest first,
    the last one holding ``now``. No patches, no buckets.
    """
    parsed = [p if isinstance(p, _Patch) else _parse_patch(p) for p in patches]
    parsed = [p for p in parsed if p.created is not None]
    if not parsed:
        return "day", ()
    first = min(p.created for p in parsed if p.created)
    unit = HOUR if now - first <= HOURLY_SPAN else DAY
    end = _floor(now, unit) + unit
    start = max(_floor(first, unit), end - unit * max_buckets)
    buckets = []
    while start < end:
        stop = start + unit
        ended = dict.fromkeys(TERMINAL, 0)
        still_open = 0
        for p in parsed:
            if p.ended is not None and start <= p.ended < stop:
                ended[p.result] += 1
            if p.created is not None and p.created < stop and (p.ended is None or p.ended >= stop):
                still_open += 1
        buckets.append(HistoryBucket(start=start, end=stop, open=still_open, ended=ended))
        start = stop
    return ("hour" if unit == HOUR else "day"), tuple(buckets)


def build_report(
    *,
    policies: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    imagepatches: Iterable[Mapping[str, Any]],
    now: dt.datetime,
    filters: Filters = Filters(),
    warnings: Sequence[str] = (),
    max_buckets: int = 60,
) -> Report:
    """The report over the opted-in ``deployments`` that pass ``filters``.

    Deployments without the opt-in annotation are ignored. ImagePatches are
    narrowed to the filtered policies and, when a workload filter is set, to
    those that concern a shown workload (its image or a rollout target).
    """
    policy_bodies = {_meta(p).get("name", ""): p for p in policies}
    all_patches = sorted((_parse_patch(p) for p in imagepatches), key=lambda p: p.name)
    if filters.policies:
        all_patches = [p for p in all_patches if p.policy in filters.policies]
    rows = sorted(
        (
            row
            for dep in deployments
            if POLICY_ANNOTATION in (_meta(dep).get("annotations") or {})
            for row in [_workload_row(dep, all_patches, now)]
            if filters.keeps(row)
        ),
        key=lambda r: (r.policy, r.namespace, r.name),
    )
    patches = all_patches
    if filters.namespace or filters.states:
        shown = {(r.namespace, r.name) for r in rows}
        repositories = {c.repository for r in rows for c in r.containers}
        patches = [p for p in patches if p.image in repositories or p.targets() & shown]

    names = set(policy_bodies) | {r.policy for r in rows}
    if filters.policies:
        names &= set(filters.policies)
    if filters.namespace or filters.states:
        # Only the policies of what is shown (and those the filter names).
        names &= {r.policy for r in rows} | set(filters.policies)
    summaries = []
    for name in sorted(names):
        body = policy_bodies.get(name)
        status = (body or {}).get("status") or {}
        ready = _ready_condition(status)
        mine = [p for p in patches if p.policy == name]
        by_phase: dict[str, int] = {}
        for p in mine:
            by_phase[p.phase] = by_phase.get(p.phase, 0) + 1
        summaries.append(
            PolicySummary(
                name=name,
                exists=body is not None,
                ready={k: str(ready.get(k, "")) for k in ("status", "reason", "message")}
                if ready
                else None,
                status_counts=dict(status["workloads"]) if status.get("workloads") else None,
                report_counts=compliance.counts(
                    State(r.state) for r in rows if r.policy == name and r.state in set(State)
                ),
                open_patches=sum(1 for p in mine if p.active),
                patches_by_phase=dict(sorted(by_phase.items())),
            )
        )
    unit, series = history_series(patches, now=now, max_buckets=max_buckets)
    return Report(
        generated_at=now,
        filters=filters,
        workloads=tuple(rows),
        policies=tuple(summaries),
        patches=tuple(_audit(p) for p in patches),
        history_unit=unit,
        history=series,
        warnings=tuple(warnings),
    )


# --- retention ----------------------------------------------------------------------------


def retention(
    patches: Iterable[Mapping[str, Any]],
    *,
    keep_count: int | None,
    max_age: dt.timedelta | None,
    now: dt.datetime,
) -> list[str]:
    """The names of the ImagePatches to delete under a policy's history retention.

    Only terminal patches (Succeeded, RolledBack, Failed, Closed) are ever
    chosen: an active one is the operator's memory of work in progress. Per
    ``spec.policy``, terminal patches are ranked newest first by when they
    ended; one is chosen when it ranks beyond ``keep_count`` **or** ended more
    than ``max_age`` ago. ``None`` turns either limit off. Patches already
    being deleted are left out. The names come back sorted.
    """
    if keep_count is not None and keep_count < 0:
        raise ValueError("keep_count must be >= 0")
    by_policy: dict[str, list[_Patch]] = {}
    for body in patches:
        if _meta(body).get("deletionTimestamp"):
            continue
        patch = _parse_patch(body)
        if patch.active:
            continue
        by_policy.setdefault(patch.policy, []).append(patch)
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    doomed: set[str] = set()
    for group in by_policy.values():
        # Newest first; a patch with no time at all counts as the oldest.
        group.sort(key=lambda p: (p.ended or p.created or epoch, p.name), reverse=True)
        for rank, patch in enumerate(group):
            ended = patch.ended or patch.created
            too_many = keep_count is not None and rank >= keep_count
            too_old = max_age is not None and (ended is None or now - ended > max_age)
            if too_many or too_old:
                doomed.add(patch.name)
    return sorted(doomed)


# --- presentation helpers shared by the renderers ------------------------------------------


def format_age(seconds: int | None) -> str:
    """``3d4h``, ``5h12m``, ``42m``, ``30s``; empty for None. Two units at most."""
    if seconds is None:
        return ""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _time_or_none(when: dt.datetime | None) -> str | None:
    return format_time(when) if when is not None else None


def report_as_dict(report: Report) -> dict[str, Any]:
    """The JSON document (schema in ``imagepatch.cli_report``'s docstring)."""

    def container(c: ContainerRow) -> dict[str, Any]:
        return {
            "name": c.name,
            "image": c.image,
            "repository": c.repository,
            "digest": c.digest,
            "digestSource": c.digest_source,
            "base": c.base,
            "baseDigest": c.base_digest,
            "baseCurrent": c.base_current,
            "baseOutdated": c.base_outdated,
            "baseOutdatedSince": _time_or_none(c.base_outdated_since),
            "baseOutdatedSeconds": c.base_outdated_seconds,
            "state": c.state,
            "reason": c.reason,
            "message": c.message,
            "findingsOverBaseline": c.findings_over_baseline,
        }

    def workload(r: WorkloadRow) -> dict[str, Any]:
        last = None
        if r.last_patch is not None:
            last = {
                "name": r.last_patch.name,
                "phase": r.last_patch.phase,
                "reason": r.last_patch.reason,
                "at": _time_or_none(r.last_patch.at),
                "result": r.last_patch.result,
                "approval": dict(r.last_patch.approval) if r.last_patch.approval else None,
            }
        return {
            "namespace": r.namespace,
            "name": r.name,
            "kind": "Deployment",
            "policy": r.policy,
            "state": r.state,
            "reason": r.reason,
            "message": r.message,
            "since": _time_or_none(r.since),
            "outOfComplianceSince": _time_or_none(r.out_of_compliance_since),
            "outOfComplianceSeconds": r.out_of_compliance_seconds,
            "findingsOverBaseline": r.findings_over_baseline,
            "findingIds": list(r.finding_ids),
            "digests": list(r.digests),
            "containers": [container(c) for c in r.containers],
            "lastPatch": last,
        }

    return {
        "kind": "ImagePatchReport",
        "schemaVersion": 1,
        "generatedAt": format_time(report.generated_at),
        "filters": {
            "namespace": report.filters.namespace,
            "policy": sorted(report.filters.policies),
            "state": sorted(report.filters.states),
        },
        "warnings": list(report.warnings),
        "policies": [
            {
                "name": s.name,
                "exists": s.exists,
                "ready": dict(s.ready) if s.ready else None,
                "statusCounts": dict(s.status_counts) if s.status_counts is not None else None,
                "reportCounts": dict(s.report_counts),
                "openPatches": s.open_patches,
                "patchesByPhase": dict(s.patches_by_phase),
            }
            for s in report.policies
        ],
        "workloads": [workload(r) for r in report.workloads],
        "patches": [
            {
                "name": p.name,
                "policy": p.policy,
                "image": p.image,
                "currentDigest": p.current_digest,
                "targetDigest": p.target_digest,
                "reason": p.reason,
                "phase": p.phase,
                "createdAt": _time_or_none(p.created_at),
                "endedAt": _time_or_none(p.ended_at),
                "approval": dict(p.approval) if p.approval else None,
                "rollouts": [dict(r) for r in p.rollouts],
                "history": [dict(h) for h in p.history],
            }
            for p in report.patches
        ],
        "history": {
            "unit": report.history_unit,
            "buckets": [
                {
                    "start": format_time(b.start),
                    "end": format_time(b.end),
                    "open": b.open,
                    **{RESULT_KEYS[k]: v for k, v in b.ended.items()},
                }
                for b in report.history
            ],
        },
    }
