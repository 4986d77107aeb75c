"""The compliance report, as a pure function of what the API serves.

``build_report`` turns what ``adapters.report_source`` read from the cluster
(ImagePatchPolicies, opted-in workloads of every kind imagepatch patches:
Deployments, StatefulSets, DaemonSets and CronJobs, and ImagePatches, as the
API serves them) and an injected ``now`` into typed rows, one per workload,
keyed by kind, namespace and name (a StatefulSet and a Deployment of one name
are two rows); ``imagepatch.cli_render``
renders them as a table, JSON, CSV or HTML. It reads no clock and does no
I/O. Each ImagePatch is read once with ``model.imagepatch.parse_imagepatch``
and placed in time by ``core.patch_timeline`` (as history retention,
``core.retention``, reads it); one that does not parse is left out with a
warning.

Where each value comes from (nothing is guessed):

* a workload's **state, reason, message and containers** are the
  ``imagepatch.dev/state`` annotation that detection writes
  (``reconcile.detection``), read with ``model.workload_state``; that
  annotation is a mirror the workload's owner can edit, so when the reader
  can list the operator's memory (``model.memory``) the state and its
  ``since`` are the operator's, and a disagreeing annotation is named as
  such in the message; a state shown from the annotation alone (the memory
  unreadable, or no record in it) is named in a warning; the states
  are those of ``core.compliance`` plus ``NotAdmitted`` and
  ``PolicyNotFound``. An opted-in workload with no record yet (or one
  recorded under another policy) is ``Unknown`` / ``NotEvaluated``; the
  workload's reason is that of its first container in the workload's state;
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
  workload (same kind, namespace and name) or is for one of its images; its
  result message is the workload's own rollout entry's (``reason:
  message``), else the last history entry's, else the Ready condition's;
* the **history series**: ImagePatches per time bucket (an hour when all of
  them fit in two days, else a day; at most ``max_buckets``, newest last):
  how many reached each terminal phase in the bucket, and how many were open
  at its end, from each patch's ``creationTimestamp`` and ``status.history``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.core import compliance, kinds, reasons
from imagepatch.core.compliance import State
from imagepatch.core.nodes import NodeVerdict, parse_survey
from imagepatch.core.patch_timeline import PatchTimeline, read_patch, ready_condition, repository
from imagepatch.core.reasons import (
    NOT_EVALUATED,
)
from imagepatch.model import memory as memory_model
from imagepatch.model.imagepatch import TERMINAL_PHASES, Phase
from imagepatch.model.names import POLICY_ANNOTATION, STATE_ANNOTATION
from imagepatch.model.times import parse_time
from imagepatch.model.workload_state import ContainerState, WorkloadState, from_annotation

# Workload states detection records besides the compliance states (RebuildNotAllowed:
# outdated or vulnerable, but the policy does not allow the rebuild the workload asks for).
NOT_ADMITTED = reasons.NOT_ADMITTED
POLICY_NOT_FOUND = reasons.POLICY_NOT_FOUND

STATES: tuple[str, ...] = (
    *(str(s) for s in State), NOT_ADMITTED, POLICY_NOT_FOUND, reasons.REBUILD_NOT_ALLOWED,
    reasons.GITOPS_MANAGED, reasons.ROLLOUT_SKIPPED, reasons.HELD,
)

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


HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# Up to this span the chart counts per hour; beyond it, per day.
HOURLY_SPAN = dt.timedelta(days=2)


# --- inputs -------------------------------------------------------------------------------


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


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
    kind: str = kinds.DEPLOYMENT

    @property
    def key(self) -> tuple[str, str, str]:
        """The workload's identity: kind, namespace, name."""
        return (self.kind, self.namespace, self.name)

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
    # The operator's last node AMI survey (core.nodes); None when none was read
    # (the survey is off, or the reader may not read the operator's namespace).
    nodes: tuple[NodeVerdict, ...] | None = None
    nodes_surveyed_at: str = ""


def _seconds(since: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


def _approval(patch: PatchTimeline) -> Mapping[str, str] | None:
    approval = patch.patch.approval
    if approval is None:
        return None
    return {"decision": str(approval.decision), "by": approval.by, "reason": approval.reason}


def _kind(body: Mapping[str, Any]) -> str:
    """The workload's kind (``report_source`` sets it on each item; none: a Deployment)."""
    kind = body.get("kind")
    return kind if kind in kinds.KINDS else kinds.DEPLOYMENT


def _result(patch: PatchTimeline, key: tuple[str, str, str]) -> str:
    status = patch.patch.status
    for entry in status.rollouts:
        target = entry.target
        if (target.kind, target.namespace, target.name) == key and (
            entry.message or entry.reason
        ):
            return ": ".join(p for p in (entry.reason, entry.message) if p)
    timed = [(at, h) for h in status.history if (at := parse_time(h.get("at")))]
    if timed:
        last = max(timed, key=lambda e: e[0])[1]
        if last.get("message"):
            return str(last["message"])
    return str(ready_condition(status.conditions).get("message") or "")


def _phase_since(patch: PatchTimeline) -> dt.datetime | None:
    """When the patch entered its current phase (its latest timeline entry of that phase)."""
    return next((at for at, p in reversed(patch.timeline) if p == patch.phase), patch.last_activity)


def _newest(patches: Iterable[PatchTimeline]) -> PatchTimeline | None:
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(patches, key=lambda p: (p.last_activity or epoch, p.name), default=None)


def _kept(
    dep: Mapping[str, Any], memory: Mapping[str, str] | None
) -> memory_model.WorkloadMemory | None:
    """The operator's record of the workload's state, if the reader has one."""
    meta = _meta(dep)
    key = memory_model.data_key(_kind(dep), meta.get("namespace", ""), meta.get("name", ""))
    kept = memory_model.decode((memory or {}).get(key))
    if kept is None or not kept.state or (kept.uid and kept.uid != meta.get("uid", kept.uid)):
        return None
    return kept


def _verdict(
    dep: Mapping[str, Any], record: WorkloadState | None, memory: Mapping[str, str] | None
) -> WorkloadState | None:
    """The annotation's record checked against the operator's memory (``model.memory``).

    The annotation is a mirror the workload's owner can edit; the operator's
    memory holds the state it decided and since when. Where they disagree the
    memory wins and the message says the annotation was not the verdict. With
    no record of the operator's, the annotation is shown as it is (and
    ``build_report`` warns that it is a mirror).
    """
    kept = _kept(dep, memory)
    if kept is None:
        return record
    if record is not None and record.state == kept.state:
        return replace(record, since=kept.since or record.since)
    said = f"the workload's state annotation says {record.state!r}; " if record else ""
    return WorkloadState(
        policy=record.policy if record else None, state=kept.state, since=kept.since,
        message=f"{said}the operator recorded {kept.state} (the annotation is a mirror its "
        "owner can edit)",
    )


def _workload_row(
    dep: Mapping[str, Any],
    patches: Sequence[PatchTimeline],
    now: dt.datetime,
    memory: Mapping[str, str] | None = None,
) -> WorkloadRow:
    meta = _meta(dep)
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    kind = _kind(dep)
    annotations = meta.get("annotations") or {}
    policy = annotations.get(POLICY_ANNOTATION, "")
    record = from_annotation(annotations.get(STATE_ANNOTATION))
    record = _verdict(dep, record, memory)
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

    def runs(p: PatchTimeline, c: ContainerState) -> bool:
        # "For exactly the digest it runs": a Closed patch means compliant in between.
        return (
            p.phase != str(Phase.CLOSED)
            and p.image == repository(c.image)
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
                repository=repository(c.image),
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
        f
        for c in raw_containers
        for p in patches
        if runs(p, c)
        for f in p.finding_ids
    })

    repositories = {c.repository for c in containers}
    related = [
        p for p in patches if p.image in repositories or (kind, namespace, name) in p.targets()
    ]
    last = _newest(related)
    last_patch = None
    if last is not None:
        last_patch = PatchRef(
            name=last.name,
            phase=last.phase,
            reason=last.reason,
            at=_phase_since(last),
            result=_result(last, (kind, namespace, name)),
            approval=_approval(last),
        )
    return WorkloadRow(
        kind=kind,
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


def _audit(patch: PatchTimeline) -> PatchAudit:
    keep_rollout = ("kind", "namespace", "name", "container", "phase", "reason", "message",
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
        approval=_approval(patch),
        rollouts=tuple(
            {k: str(r[k]) for k in keep_rollout if r.get(k) not in (None, "")}
            for r in (e.as_dict() for e in patch.patch.status.rollouts)
        ),
        history=tuple(
            {k: str(h[k]) for k in keep_history if h.get(k) not in (None, "")}
            for h in patch.patch.status.history
        ),
    )


def _floor(when: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    when = when.astimezone(dt.UTC)
    if unit == DAY:
        return when.replace(hour=0, minute=0, second=0, microsecond=0)
    return when.replace(minute=0, second=0, microsecond=0)


def history_series(
    patches: Iterable[Mapping[str, Any] | PatchTimeline],
    *,
    now: dt.datetime,
    max_buckets: int = 60,
) -> tuple[str, tuple[HistoryBucket, ...]]:
    """ImagePatches per bucket: reached each terminal phase in it, and open at its end.

    Returns the unit (``"hour"`` or ``"day"``) and the buckets, oldest first,
    the last one holding ``now``. No patches, no buckets.
    """
    timelines = [p if isinstance(p, PatchTimeline) else read_patch(p) for p in patches]
    parsed = [p for p in timelines if p is not None and p.created is not None]
    if not parsed:
        return "day", ()
    first = min(p.created for p in parsed if p.created)
    unit = HOUR if now - first <= HOURLY_SPAN else DAY
    end = _floor(now, unit) + unit
    start = max(_floor(first, unit), end - unit * max_buckets)
    buckets = []
    while start < end:
        stop = start + unit
        ended = dict.fromkeys(TERMINAL_PHASES, 0)
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
    workloads: Iterable[Mapping[str, Any]],
    imagepatches: Iterable[Mapping[str, Any]],
    now: dt.datetime,
    filters: Filters = Filters(),
    warnings: Sequence[str] = (),
    max_buckets: int = 60,
    memory: Mapping[str, str] | None = None,
    node_survey: Mapping[str, Any] | None = None,
) -> Report:
    """The report over the opted-in ``workloads`` (of any kind) that pass ``filters``.

    ``memory``: the operator's memory records (ConfigMap data, by key) when the
    reader could list them; each workload's state is then the one the operator
    decided, not the annotation (a mirror its owner can edit). A state shown
    from an annotation alone (None: unreadable, or no record) is named in a
    warning. ``node_survey``: the operator's recorded node survey, shown as it is.

    Workloads without the opt-in annotation are ignored. ImagePatches are
    narrowed to the filtered policies and, when a workload filter is set, to
    those that concern a shown workload (its image or a rollout target).
    """
    workloads = list(workloads)  # read twice: the rows, and which came from a mirror only
    policy_bodies = {_meta(p).get("name", ""): p for p in policies}
    read = [(body, read_patch(body)) for body in imagepatches]
    warnings = [
        *warnings,
        *(
            f"ImagePatch {_meta(body).get('name', '')!r} is malformed and left out"
            for body, patch in read
            if patch is None
        ),
    ]
    all_patches = sorted((p for _, p in read if p is not None), key=lambda p: p.name)
    if filters.policies:
        all_patches = [p for p in all_patches if p.policy in filters.policies]
    rows = sorted(
        (
            row
            for dep in workloads
            if POLICY_ANNOTATION in (_meta(dep).get("annotations") or {})
            for row in [_workload_row(dep, all_patches, now, memory)]
            if filters.keeps(row)
        ),
        key=lambda r: (r.policy, r.namespace, r.name, r.kind),
    )
    shown = {r.key for r in rows}
    mirrors = sorted(
        f"{_kind(dep)} {_meta(dep).get('namespace', '')}/{_meta(dep).get('name', '')}"
        for dep in workloads
        if (_kind(dep), _meta(dep).get("namespace", ""), _meta(dep).get("name", "")) in shown
        and STATE_ANNOTATION in (_meta(dep).get("annotations") or {})
        and _kept(dep, memory) is None
    )
    if mirrors:
        warnings.append(
            f"{len(mirrors)} workload state(s) are shown from their imagepatch.dev/state "
            "annotations, a mirror the workloads' owners can edit, not the operator's record ("
            + ("its memory could not be read: see --operator-namespace"
               if memory is None else "it holds none for them")
            + "): " + ", ".join(mirrors[:5]) + (" and more" if len(mirrors) > 5 else "")
        )
    patches = all_patches
    if filters.namespace or filters.states:
        shown = {r.key for r in rows}
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
        ready = ready_condition(tuple(status.get("conditions") or ()))
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
    surveyed_at, node_rows = parse_survey(node_survey) if node_survey is not None else ("", [])
    return Report(
        nodes=tuple(node_rows) if node_survey is not None else None,
        nodes_surveyed_at=surveyed_at,
        generated_at=now,
        filters=filters,
        workloads=tuple(rows),
        policies=tuple(summaries),
        patches=tuple(_audit(p) for p in patches),
        history_unit=unit,
        history=series,
        warnings=tuple(warnings),
    )
