"""Workload kinds: where each keeps its pod template and containers, and its health gate.

imagepatch patches four kinds (DESIGN.md, "Decisions for v0.2"): Deployment,
StatefulSet, DaemonSet and CronJob. They differ in three things only, and
this module is where each difference lives, so the planner stays
kind-agnostic:

* **Where the pod template is.** ``spec.template``, or a CronJob's
  ``spec.jobTemplate.spec.template`` (:func:`pod_template`).
* **Which containers count.** Every container of the template:
  ``containers`` and ``initContainers``, native sidecars
  (``restartPolicy: Always``) included. ``ephemeralContainers`` never: they
  are added to running pods by ``kubectl debug``, are not part of any
  template, and are not the workload's software. Kubernetes requires
  container names to be unique across all of a pod's lists, so a target
  names its container only; :func:`find_container` says which list it is in.
* **When a rollout is complete** (:func:`assess`). A Deployment's gate is
  ``core.health``. The others:

  - **StatefulSet**, ``RollingUpdate``: the gate waits for the ordinals the
    controller updates, those at or above ``rollingUpdate.partition``, and
    never fights the partition: ordinals below it keep the current revision
    (that is what a partition is for: a staged or canary rollout the owner
    advances by hand). Complete means the controller observed the
    generation, ``updatedReplicas`` reached ``replicas - partition``, every
    updated ordinal is Ready, no ordinal at or above the partition runs an
    old revision, and, without a partition, ``currentRevision ==
    updateRevision``. A partition at or above ``replicas`` updates nothing:
    the image is set but unverified (``Partitioned``), as with a Deployment
    scaled to zero.

    A rollback of an ``OrderedReady`` StatefulSet (the default
    ``podManagementPolicy``) needs more than the reverted template: the
    controller waits for every pod to be Running and Ready before it replaces
    any, so a pod of the bad revision that never gets Ready blocks it for
    ever. Kubernetes documents the cure as the "forced rollback": delete the
    pods of the bad revision once the template is reverted
    (:func:`bad_revision`, :func:`forced_rollback`; ``Parallel`` ones too,
    see there).
  - **DaemonSet**, ``RollingUpdate``: ``updatedNumberScheduled`` and
    ``numberAvailable`` equal ``desiredNumberScheduled`` once the controller
    observed the generation. The controller itself keeps no more than
    ``maxUnavailable`` nodes unavailable, so a broken image stalls the
    rollout at that budget: the gate says so in its message and fails on the
    first broken new pod or at the deadline, whichever comes first. No node
    to run on (``desiredNumberScheduled`` 0): unverified (``NoPodsScheduled``).
  - **OnDelete** (StatefulSet or DaemonSet): not patched. Its pods change only
    when someone deletes them, so a gate could never pass and a "patched"
    template would claim a fix no pod runs. The target is skipped with
    ``OnDeleteStrategy`` and an Event that says to switch to
    ``RollingUpdate`` (:func:`not_patchable`).
  - **CronJob**: see :func:`assess_cronjob`. A CronJob without a trial run
    is patched only when its schedule's next run is due within
    ``rollout.cronJobRunWithin`` (:func:`cronjob_run_too_far`): otherwise no
    run could verify the new image in time, so it is left as it is.

Pure: plain dicts as the API serves them, the clock passed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.core import health, kinds_rollout, reasons
from imagepatch.core.health import HealthReason, HealthState, HealthVerdict, Progress
from imagepatch.core.schedule import ScheduleError, parse_schedule, to_croniter
from imagepatch.core.window import next_opening
from imagepatch.model.durations import format_duration
from imagepatch.model.policy import Rollout
from imagepatch.model.times import format_time, parse_time

DEPLOYMENT = "Deployment"
STATEFULSET = "StatefulSet"
DAEMONSET = "DaemonSet"
CRONJOB = "CronJob"
# Hook of issue 23: Argo Rollouts' Rollout is a kind of its own (core.kinds_rollout).
KINDS = (DEPLOYMENT, STATEFULSET, DAEMONSET, CRONJOB, kinds_rollout.ROLLOUT)

# The container lists of a pod template that imagepatch changes, in the order
# it looks (ephemeralContainers never: see the module docstring).
CONTAINER_LISTS = ("containers", "initContainers")

_API_VERSIONS = {
    DEPLOYMENT: "apps/v1",
    STATEFULSET: "apps/v1",
    DAEMONSET: "apps/v1",
    CRONJOB: "batch/v1",
    kinds_rollout.ROLLOUT: kinds_rollout.API_VERSION,  # hook of issue 23
}
# The label the Job controller puts on a Job's pods (1.27+), and the older one.
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
_ORDINAL = re.compile(r"-(\d+)$")


def api_version(kind: str) -> str:
    """The apiVersion of ``kind`` (for Events' involvedObject)."""
    return _API_VERSIONS.get(kind, "apps/v1")


def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template of any kind (``spec.template`` or the CronJob's job template's)."""
    return health.workload_template(workload)


def containers(workload: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every (list, container) of the template: ``containers``, then ``initContainers``."""
    spec = _mapping(pod_template(workload).get("spec"))
    return [
        (key, c)
        for key in CONTAINER_LISTS
        for c in spec.get(key) or ()
        if isinstance(c, Mapping) and isinstance(c.get("name"), str)
    ]


def find_container(
    workload: Mapping[str, Any] | None, name: str
) -> tuple[str, Mapping[str, Any]] | None:
    """The list (``containers`` or ``initContainers``) holding ``name``, and the container."""
    return next(((k, c) for k, c in containers(workload or {}) if c["name"] == name), None)


def is_native_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container that keeps running beside the app (``restartPolicy: Always``)."""
    return container.get("restartPolicy") == "Always"


def not_patchable(kind: str, workload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when patching the template would change no pod, else ``None``."""
    if kind not in (STATEFULSET, DAEMONSET):
        return None
    strategy = _mapping(_mapping(workload.get("spec")).get("updateStrategy"))
    if strategy.get("type") != "OnDelete":
        return None
    return (
        reasons.ON_DELETE_STRATEGY,
        f"{kind} {_name(workload)} uses updateStrategy OnDelete: its pods change only when"
        " someone deletes them, so imagepatch does not patch it; set"
        " spec.updateStrategy.type to RollingUpdate to have it patched",
    )


# The CronJob controller's schedule macros (robfig/cron's descriptors).
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class NextRun:
    """When a CronJob's schedule next fires: ``at``, or never (``known`` with no ``at``).

    ``known`` is False when the schedule cannot be read here (a form the
    controller accepts that this parser does not): nothing is promised then.
    """

    at: dt.datetime | None
    known: bool
    schedule: str


def next_cronjob_run(cronjob: Mapping[str, Any], after: dt.datetime) -> NextRun:
    """The first time at or after ``after`` the CronJob's schedule fires (its ``timeZone``)."""
    spec = _mapping(cronjob.get("spec"))
    source = _str(spec.get("schedule")) or ""
    expression = _CRON_MACROS.get(source.strip(), source.strip())
    timezone = _str(spec.get("timeZone")) or "UTC"
    try:
        to_croniter(expression)
        parsed = parse_schedule(expression, timezone)
    except ScheduleError as exc:
        # A well-formed expression that matches no date (30 February) never fires.
        never = "never matches" in str(exc)
        return NextRun(at=None, known=never, schedule=source)
    return NextRun(at=next_opening(parsed, after), known=True, schedule=source)


def cronjob_run_too_far(
    kind: str, cronjob: Mapping[str, Any], gate: Rollout, now: dt.datetime
) -> tuple[str, str] | None:
    """(reason, message) when a CronJob's gate could not get a run in time, else ``None``.

    Only for a CronJob the gate waits on a scheduled run for (no trial run, not
    suspended: a suspended one is patched and unverified, see
    :func:`assess_cronjob`). Its next run must be due within
    ``rollout.cronJobRunWithin``; a schedule that never fires, or fires later,
    gets no patch: the image it runs stays the one it had, and the message
    says when it would run and how to have it verified (a trial run).
    """
    if kind != CRONJOB or gate.cron_job_trial_run:
        return None
    if _mapping(cronjob.get("spec")).get("suspend") is True:
        return None
    nxt = next_cronjob_run(cronjob, now)
    bound = gate.cron_job_run_within
    if not nxt.known or (nxt.at is not None and nxt.at <= now + bound):
        return None
    when = (
        f"its schedule {nxt.schedule!r} never fires"
        if nxt.at is None
        else f"its next run ({nxt.schedule!r}) is at {format_time(nxt.at)}"
    )
    return (
        reasons.CRONJOB_RUN_TOO_FAR,
        f"CronJob {_name(cronjob)} was not patched: {when}, not within"
        f" {format_duration(bound)} (spec.rollout.cronJobRunWithin), so no run would verify"
        " the new image in time; it keeps its image. Set spec.rollout.cronJobTrialRun: true"
        " to verify it with a trial run, or raise cronJobRunWithin",
    )


def trial_job_name(cronjob: str, *, patch: str, started_at: str) -> str:
    """The name of a CronJob's trial run: deterministic, so a retry creates nothing twice.

    ``<cronjob>-imagepatch-<10 hex>``, the hash over the patch and the
    recorded start of this target, so a later rollout (another patch, or
    the same one after a restart of the target) gets a Job of its own. At
    most 63 characters: a Job's name is also its pods' ``job-name`` label.
    """
    suffix = hashlib.sha256(f"{patch}/{started_at}".encode()).hexdigest()[:10]
    return f"{cronjob[:41].rstrip('-.')}-imagepatch-{suffix}"


def trial_run_wanted(kind: str, workload: Mapping[str, Any], gate: Rollout) -> bool:
    """Whether the gate starts a trial run: a CronJob, asked for, and not suspended."""
    suspended = _mapping(workload.get("spec")).get("suspend") is True
    return kind == CRONJOB and gate.cron_job_trial_run and not suspended


# --- gates -------------------------------------------------------------------------


def assess(
    *,
    kind: str,
    workload: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
    jobs: Sequence[Mapping[str, Any]] = (),
    rollback: bool = False,
) -> HealthVerdict:
    """The health verdict of ``workload`` (of ``kind``) rolled onto ``target_images``.

    ``pods`` are the workload's pods (its selector's; for a CronJob, its
    Jobs' pods), ``jobs`` a CronJob's Jobs. ``rollback`` gates the previous
    images coming back (a CronJob has nothing to wait for then: its next
    run uses the restored template). See the module docstring.
    """
    if kind == CRONJOB:
        return assess_cronjob(
            cronjob=workload,
            jobs=jobs,
            target_images=target_images,
            gate=gate,
            started_at=started_at,
            now=now,
            rollback=rollback,
        )
    if kind == kinds_rollout.ROLLOUT:  # hook of issue 23: Argo's verdict over the pod checks
        return kinds_rollout.assess(rollout=workload, pods=pods, target_images=target_images,
                                    gate=gate, started_at=started_at,
                                    healthy_since=healthy_since, now=now, rollback=rollback)
    if kind == STATEFULSET:
        progress = statefulset_progress(workload, pods)
    elif kind == DAEMONSET:
        progress = daemonset_progress(workload)
    else:
        progress = health.deployment_progress(workload)
    return health.assess_progress(
        progress=progress,
        pods=pods,
        target_images=target_images,
        gate=gate,
        started_at=started_at,
        healthy_since=healthy_since,
        baseline_restarts=None,
        now=now,
    )


def statefulset_progress(
    statefulset: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> Progress:
    """A StatefulSet's RollingUpdate, gated on the ordinals at or above the partition."""
    meta = _mapping(statefulset.get("metadata"))
    spec = _mapping(statefulset.get("spec"))
    status = _mapping(statefulset.get("status"))
    replicas = _int(spec.get("replicas"), 1)
    rolling = _mapping(_mapping(spec.get("updateStrategy")).get("rollingUpdate"))
    partition = min(max(_int(rolling.get("partition"), 0), 0), replicas)
    want = replicas - partition
    name = _name(statefulset)
    if replicas == 0:
        return Progress(want=0, complete=False, counts="", stop=(
            HealthState.SCALED_TO_ZERO, HealthReason.SCALED_TO_ZERO,
            f"StatefulSet {name} is scaled to 0 replicas: the new image is set but no pod"
            " runs it, so it is not verified"))
    if want == 0:
        return Progress(want=0, complete=False, counts="", stop=(
            HealthState.SCALED_TO_ZERO, HealthReason.PARTITIONED,
            f"StatefulSet {name} has rollingUpdate.partition {partition} with {replicas}"
            " replicas: no ordinal is updated, so the new image is set but not verified;"
            " lower the partition to roll it out"))
    observed = _int(status.get("observedGeneration"), 0) >= _int(meta.get("generation"), 0)
    update_revision = _str(status.get("updateRevision"))
    current_revision = _str(status.get("currentRevision"))
    updated = _int(status.get("updatedReplicas"), 0)
    gated = [
        p for p in pods
        if not _mapping(p.get("metadata")).get("deletionTimestamp")
        and (_ordinal(p) or 0) >= partition
    ]
    on_update = [p for p in gated if _revision(p) == update_revision]
    ready = sum(1 for p in on_update if _pod_ready(p))
    old = len(gated) - len(on_update)
    counts = f"{updated}/{want} updated, {ready}/{want} ready"
    if partition:
        counts += (
            f" (ordinals {partition}..{replicas - 1}; partition {partition} keeps"
            f" 0..{partition - 1} on the current revision)"
        )
    if observed and old > 0:
        counts += f", {old} old pod{'' if old == 1 else 's'} left"
    if not observed:
        counts += ", the StatefulSet controller has not observed the latest generation yet"
    complete = (
        observed
        and bool(update_revision)
        and updated >= want
        and ready >= want
        and old == 0
        and (partition > 0 or current_revision == update_revision)
    )
    what = f"{want}/{want} ordinal{'' if want == 1 else 's'}"
    if partition:
        what += f" at or above partition {partition}"
    return Progress(want=want, complete=complete, counts=counts,
                    done_text=f"{what} updated and ready")


def daemonset_progress(daemonset: Mapping[str, Any]) -> Progress:
    """A DaemonSet's RollingUpdate: every scheduled node updated and available."""
    meta = _mapping(daemonset.get("metadata"))
    spec = _mapping(daemonset.get("spec"))
    status = _mapping(daemonset.get("status"))
    observed = _int(status.get("observedGeneration"), 0) >= _int(meta.get("generation"), 0)
    want = _int(status.get("desiredNumberScheduled"), 0)
    if observed and want == 0:
        return Progress(want=0, complete=False, counts="", stop=(
            HealthState.SCALED_TO_ZERO, HealthReason.NO_PODS_SCHEDULED,
            f"DaemonSet {_name(daemonset)} runs on no node (desiredNumberScheduled 0):"
            " the new image is set but no pod runs it, so it is not verified"))
    updated = _int(status.get("updatedNumberScheduled"), 0)
    available = _int(status.get("numberAvailable"), 0)
    unavailable = _int(status.get("numberUnavailable"), 0)
    rolling = _mapping(_mapping(spec.get("updateStrategy")).get("rollingUpdate"))
    budget = rolling.get("maxUnavailable", 1)
    counts = f"{updated}/{want} nodes updated, {available}/{want} available"
    if unavailable:
        counts += f", {unavailable} unavailable (maxUnavailable {budget})"
        if _budget_used(unavailable, budget, want):
            counts += ": the controller waits for these before updating more nodes"
    if not observed:
        counts += ", the DaemonSet controller has not observed the latest generation yet"
    complete = observed and updated == want and available == want
    return Progress(want=want, complete=complete, counts=counts,
                    done_text=f"{want}/{want} nodes updated and available")


def assess_cronjob(
    *,
    cronjob: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    now: dt.datetime,
    rollback: bool = False,
) -> HealthVerdict:
    """A CronJob's gate: the first Job it runs from the patched template.

    The Jobs judged are the CronJob's own (ownerReferences), created at or
    after ``started_at`` (the patch), from a template that runs
    ``target_images``: a scheduled run, or the trial run the policy asked for
    (``rollout.cronJobTrialRun``). ``Complete`` passes the gate (a Job is
    its own soak: it ran to its end); ``Failed`` (``BackoffLimitExceeded``,
    ``DeadlineExceeded``...) fails it with the Job's reason; a Job that does
    not finish within ``progressDeadlineSeconds`` of its start fails it too.
    While no run has started the gate waits (``AwaitingRun``) for the run
    due first after the patch, at most ``rollout.cronJobRunWithin`` away, plus
    ``progressDeadlineSeconds`` for the controller to start it; no run by then
    fails the gate (``NoRunWithinBound``), so the gate always ends. The
    planner awaits a CronJob's gate on the side, without holding its other
    targets; ask for a trial run to get a verdict at once.
    A suspended CronJob starts no run: the image is set but unverified
    (``CronJobSuspended``). A rollback needs no run: the next one uses the
    restored template.
    """
    name = _name(cronjob)
    if rollback:
        return HealthVerdict(state=HealthState.HEALTHY, reason=HealthReason.HEALTHY,
                             message=f"CronJob {name}: its next run uses the restored template",
                             healthy_since=now)
    uid = _mapping(cronjob.get("metadata")).get("uid")
    since = started_at.replace(microsecond=0)
    runs = sorted(
        (
            j for j in jobs
            if _owned_by(j, uid)
            and (parse_time(_mapping(j.get("metadata")).get("creationTimestamp")) or since) >= since
            and not health.changed_images(j, target_images)
        ),
        key=lambda j: (_mapping(j.get("metadata")).get("creationTimestamp") or "",
                       _mapping(j.get("metadata")).get("name") or ""),
    )
    deadline = dt.timedelta(seconds=gate.progress_deadline_seconds)
    for job in runs:
        job_name = _mapping(job.get("metadata")).get("name")
        failed = _job_condition(job, "Failed")
        if failed:
            detail = failed.get("reason") or "Failed"
            if failed.get("message"):
                detail += f": {failed['message']}"
            return HealthVerdict(state=HealthState.FAILED, reason=HealthReason.JOB_FAILED,
                                 message=f"Job {job_name} of CronJob {name} failed ({detail})",
                                 healthy_since=None, pod=None, container=None)
    for job in runs:
        job_name = _mapping(job.get("metadata")).get("name")
        if _job_condition(job, "Complete"):
            return HealthVerdict(state=HealthState.HEALTHY, reason=HealthReason.HEALTHY,
                                 message=f"Job {job_name} of CronJob {name} completed on the"
                                 " new image", healthy_since=now)
    if runs:
        job = runs[0]
        job_name = _mapping(job.get("metadata")).get("name")
        begun = parse_time(_mapping(job.get("status")).get("startTime")) or parse_time(
            _mapping(job.get("metadata")).get("creationTimestamp")) or now
        if now - begun > deadline:
            return HealthVerdict(
                state=HealthState.FAILED, reason=HealthReason.PROGRESS_DEADLINE_EXCEEDED,
                message=f"Job {job_name} of CronJob {name} did not complete within"
                f" {format_duration(deadline)} (progressDeadlineSeconds)",
                healthy_since=None)
        return HealthVerdict(state=HealthState.PROGRESSING, reason=HealthReason.ROLLING_OUT,
                             message=f"waiting for Job {job_name} of CronJob {name} to complete",
                             healthy_since=None,
                             recheck_after=begun + deadline - now + dt.timedelta(seconds=1))
    if _mapping(cronjob.get("spec")).get("suspend") is True:
        return HealthVerdict(
            state=HealthState.SCALED_TO_ZERO, reason=HealthReason.CRONJOB_SUSPENDED,
            message=f"CronJob {name} is suspended (spec.suspend): the new image is set but no"
            " Job runs it, so it is not verified", healthy_since=None)
    # The wait for a run is bounded too: the run due first after the patch
    # (at most cronJobRunWithin away), plus progressDeadlineSeconds for the
    # controller to start it. No run by then fails the gate, so it always ends.
    # A run in the very second of the patch may still be the old template's.
    nxt = next_cronjob_run(cronjob, since + dt.timedelta(seconds=1))
    due = since + gate.cron_job_run_within
    if nxt.at is not None:
        due = min(due, nxt.at)
    limit = due + deadline
    if now > limit:
        return HealthVerdict(
            state=HealthState.FAILED, reason=HealthReason.NO_RUN_WITHIN_BOUND,
            message=f"CronJob {name} started no run from the patched template by"
            f" {format_time(limit)} (schedule {nxt.schedule!r}, patched"
            f" {format_time(started_at)}): the new image is not verified",
            healthy_since=None)
    last = _mapping(cronjob.get("status")).get("lastScheduleTime")
    return HealthVerdict(
        state=HealthState.PROGRESSING, reason=HealthReason.AWAITING_RUN,
        message=f"waiting for the next run of CronJob {name}"
        f" (schedule {nxt.schedule!s}"
        + (f", due {format_time(nxt.at)}" if nxt.at is not None else "")
        + (f", last run {last}" if last else "") + f", patched {format_time(started_at)};"
        f" no run by {format_time(limit)} fails the gate)",
        healthy_since=None,
        recheck_after=max(due - now, dt.timedelta(0)) if now < due else limit - now)


# --- forced rollback (StatefulSet) --------------------------------------------------

# At most this many pods are deleted, and named in the rollout entry, by one
# target's forced rollback (a StatefulSet's pod names are fixed, so one name
# is deleted at most once in practice). Broken pods beyond it are left for a
# human; the rollback gate then fails at its deadline.
FORCED_ROLLBACK_LIMIT = 100


@dataclass(frozen=True, slots=True)
class StuckPod:
    """A pod to delete, only while it is still the very pod observed (uid, resourceVersion)."""

    name: str
    uid: str
    resource_version: str


def bad_revision(
    statefulset: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    container: str,
    image: str,
) -> str:
    """The revision of ``statefulset`` whose ``container`` runs ``image`` (the bad one), or ''.

    While the bad template is live and the controller has observed it, that is
    the controller's own record, ``status.updateRevision`` (a status tenants
    do not write). Otherwise (the template is restored already, or the
    controller has not caught up) it is the ``controller-revision-hash`` of
    the StatefulSet's own pods (ownerReferences) whose ``container`` runs
    ``image``, when they all carry the same one; '' when no pod does.
    """
    found = find_container(statefulset, container)
    update_revision = _str(_mapping(statefulset.get("status")).get("updateRevision"))
    if found is not None and found[1].get("image") == image and _observed(statefulset) \
            and update_revision:
        return update_revision
    uid = _mapping(statefulset.get("metadata")).get("uid")
    revisions = {
        _revision(p) or ""
        for p in pods
        if _owned_by(p, uid) and _pod_image(p, container) == image
    }
    revisions.discard("")
    return revisions.pop() if len(revisions) == 1 else ""


def forced_rollback(
    statefulset: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    bad_revision: str,
) -> tuple[StuckPod, ...]:
    """The pods of ``bad_revision`` that the reverted StatefulSet's controller never replaces.

    Kubernetes' "forced rollback" (concepts/workloads/controllers/statefulset):
    with ``podManagementPolicy: OrderedReady`` (the default) the controller
    stops at the first pod that is not Running and Ready, before it replaces
    any pod of an old revision, so a broken pod of the bad revision stays for
    ever after the template is reverted. These are the pods to delete; the
    controller then recreates them from the restored template. Only pods that
    block:

    * of the bad revision (``controller-revision-hash``), owned by this
      StatefulSet (ownerReferences uid), at or above the partition (the
      ordinals its rollout changed), not already terminating;
    * not Running and Ready. A Ready pod of the bad revision does not block:
      the controller replaces it itself, one at a time in ordinal order, once
      the blocking ones are back, which keeps the availability a rolling
      update promises; a forced delete of it would only cost a serving pod.
      A ``Failed`` or ``Succeeded`` pod the controller deletes itself.

    ``Parallel`` StatefulSets too. Their controller's default update loop
    deletes a pod of an old revision before it waits for readiness, so the
    pod is usually terminating already when this looks, and nothing is left
    to do. But behind the ``MaxUnavailableStatefulSet`` feature gate (alpha
    in 1.34, beta from 1.35) the loop first counts unavailable pods against
    ``maxUnavailable`` (1 by default) and stops when they reach it (read in
    the 1.34 source), so the broken pod blocks it as well. Deleting a pod
    that serves nothing costs nothing, and the preconditions make a race
    with the controller harmless.

    Empty until the controller has observed the restored template
    (``observedGeneration``, and an ``updateRevision`` that is not the bad
    one; a pod deleted before that would be recreated on the bad revision);
    empty for ``OnDelete`` (never patched). Sorted by ordinal.
    """
    spec = _mapping(statefulset.get("spec"))
    status = _mapping(statefulset.get("status"))
    strategy = _mapping(spec.get("updateStrategy"))
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return ()
    update_revision = _str(status.get("updateRevision"))
    if not bad_revision or not _observed(statefulset) or not update_revision \
            or update_revision == bad_revision:
        return ()
    uid = _mapping(statefulset.get("metadata")).get("uid")
    replicas = _int(spec.get("replicas"), 1)
    partition = min(max(_int(_mapping(strategy.get("rollingUpdate")).get("partition"), 0), 0),
                    replicas)
    stuck = [
        p for p in pods
        if _owned_by(p, uid)
        and _revision(p) == bad_revision
        and not _mapping(p.get("metadata")).get("deletionTimestamp")
        and (_ordinal(p) or 0) >= partition
        and _mapping(p.get("status")).get("phase") not in ("Failed", "Succeeded")
        and not (_mapping(p.get("status")).get("phase") == "Running" and _pod_ready(p))
    ]
    stuck.sort(key=lambda p: (_ordinal(p) or 0, _str(_mapping(p.get("metadata")).get("name"))))
    metas = [_mapping(p.get("metadata")) for p in stuck]
    # Every pod the API serves has a name and a uid; without them no delete
    # could carry its precondition.
    return tuple(
        StuckPod(name=meta["name"], uid=meta["uid"],
                 resource_version=_str(meta.get("resourceVersion")) or "")
        for meta in metas
        if _str(meta.get("name")) and _str(meta.get("uid"))
    )


# --- small readers -------------------------------------------------------------------


def _observed(workload: Mapping[str, Any]) -> bool:
    """Whether the workload's controller has observed its latest generation."""
    status = _mapping(workload.get("status"))
    generation = _int(_mapping(workload.get("metadata")).get("generation"), 0)
    return _int(status.get("observedGeneration"), 0) >= generation


def _pod_image(pod: Mapping[str, Any], container: str) -> str | None:
    """The image ``container`` of ``pod`` runs (its spec; init containers too)."""
    spec = _mapping(pod.get("spec"))
    for key in CONTAINER_LISTS:
        for c in spec.get(key) or ():
            if _mapping(c).get("name") == container:
                return _str(c.get("image"))
    return None


def _owned_by(obj: Mapping[str, Any], uid: Any) -> bool:
    refs = _mapping(obj.get("metadata")).get("ownerReferences") or ()
    return bool(uid) and any(_mapping(r).get("uid") == uid for r in refs)


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in _mapping(job.get("status")).get("conditions") or ():
        if _mapping(cond).get("type") == kind and cond.get("status") == "True":
            found: Mapping[str, Any] = cond
            return found
    return {}


def _budget_used(unavailable: int, budget: Any, want: int) -> bool:
    if isinstance(budget, int) and not isinstance(budget, bool):
        return unavailable >= budget
    if isinstance(budget, str) and budget.endswith("%") and budget[:-1].isdigit():
        # Kubernetes rounds a percentage of maxUnavailable up (at least 1).
        allowed = max(1, -(-want * int(budget[:-1]) // 100))
        return unavailable >= allowed
    return False


def _ordinal(pod: Mapping[str, Any]) -> int | None:
    meta = _mapping(pod.get("metadata"))
    label = _mapping(meta.get("labels")).get("apps.kubernetes.io/pod-index")
    if isinstance(label, str) and label.isdigit():
        return int(label)
    match = _ORDINAL.search(_str(meta.get("name")) or "")
    return int(match.group(1)) if match else None


def _revision(pod: Mapping[str, Any]) -> str | None:
    return _str(_mapping(_mapping(pod.get("metadata")).get("labels")).get(
        "controller-revision-hash"))


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        _mapping(c).get("type") == "Ready" and c.get("status") == "True"
        for c in _mapping(pod.get("status")).get("conditions") or ()
    )


def _name(obj: Mapping[str, Any]) -> str:
    meta = _mapping(obj.get("metadata"))
    name = _str(meta.get("name")) or "<unnamed>"
    namespace = _str(meta.get("namespace"))
    return f"{namespace}/{name}" if namespace else name


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
