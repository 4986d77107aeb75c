"""CronJob: its gate is the first Job it runs from the patched template.

A CronJob without a trial run is patched only when its schedule's next run
is due within ``rollout.cronJobRunWithin`` (:func:`cronjob_run_too_far`):
otherwise no run could verify the new image in time, so it is left as it is.
A trial run (``rollout.cronJobTrialRun``) gets a verdict at once
(:func:`trial_job_name`, :func:`trial_run_wanted`). See :func:`assess_cronjob`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.core import health, reasons
from imagepatch.core.health import HealthReason, HealthState, HealthVerdict
from imagepatch.core.kinds.shared import Kind, as_str, display_name, mapping, owned_by
from imagepatch.core.schedule import ScheduleError, parse_schedule, to_croniter
from imagepatch.core.window import next_opening
from imagepatch.model.durations import format_duration
from imagepatch.model.policy import Rollout
from imagepatch.model.times import format_time, parse_time

CRONJOB = "CronJob"
# The label the Job controller puts on a Job's pods (1.27+), and the older one.
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


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
    spec = mapping(cronjob.get("spec"))
    source = as_str(spec.get("schedule")) or ""
    expression = _CRON_MACROS.get(source.strip(), source.strip())
    timezone = as_str(spec.get("timeZone")) or "UTC"
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
    if mapping(cronjob.get("spec")).get("suspend") is True:
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
        f"CronJob {display_name(cronjob)} was not patched: {when}, not within"
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
    suspended = mapping(workload.get("spec")).get("suspend") is True
    return kind == CRONJOB and gate.cron_job_trial_run and not suspended


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
    name = display_name(cronjob)
    if rollback:
        return HealthVerdict(state=HealthState.HEALTHY, reason=HealthReason.HEALTHY,
                             message=f"CronJob {name}: its next run uses the restored template",
                             healthy_since=now)
    uid = mapping(cronjob.get("metadata")).get("uid")
    since = started_at.replace(microsecond=0)
    runs = sorted(
        (
            j for j in jobs
            if owned_by(j, uid)
            and (parse_time(mapping(j.get("metadata")).get("creationTimestamp")) or since) >= since
            and not health.changed_images(j, target_images)
        ),
        key=lambda j: (mapping(j.get("metadata")).get("creationTimestamp") or "",
                       mapping(j.get("metadata")).get("name") or ""),
    )
    deadline = dt.timedelta(seconds=gate.progress_deadline_seconds)
    for job in runs:
        job_name = mapping(job.get("metadata")).get("name")
        failed = _job_condition(job, "Failed")
        if failed:
            detail = failed.get("reason") or "Failed"
            if failed.get("message"):
                detail += f": {failed['message']}"
            return HealthVerdict(state=HealthState.FAILED, reason=HealthReason.JOB_FAILED,
                                 message=f"Job {job_name} of CronJob {name} failed ({detail})",
                                 healthy_since=None, pod=None, container=None)
    for job in runs:
        job_name = mapping(job.get("metadata")).get("name")
        if _job_condition(job, "Complete"):
            return HealthVerdict(state=HealthState.HEALTHY, reason=HealthReason.HEALTHY,
                                 message=f"Job {job_name} of CronJob {name} completed on the"
                                 " new image", healthy_since=now)
    if runs:
        job = runs[0]
        job_name = mapping(job.get("metadata")).get("name")
        begun = parse_time(mapping(job.get("status")).get("startTime")) or parse_time(
            mapping(job.get("metadata")).get("creationTimestamp")) or now
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
    if mapping(cronjob.get("spec")).get("suspend") is True:
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
    last = mapping(cronjob.get("status")).get("lastScheduleTime")
    return HealthVerdict(
        state=HealthState.PROGRESSING, reason=HealthReason.AWAITING_RUN,
        message=f"waiting for the next run of CronJob {name}"
        f" (schedule {nxt.schedule!s}"
        + (f", due {format_time(nxt.at)}" if nxt.at is not None else "")
        + (f", last run {last}" if last else "") + f", patched {format_time(started_at)};"
        f" no run by {format_time(limit)} fails the gate)",
        healthy_since=None,
        recheck_after=max(due - now, dt.timedelta(0)) if now < due else limit - now)


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in mapping(job.get("status")).get("conditions") or ():
        if mapping(cond).get("type") == kind and cond.get("status") == "True":
            found: Mapping[str, Any] = cond
            return found
    return {}


def _gate(
    *,
    workload: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    now: dt.datetime,
    rollback: bool,
) -> HealthVerdict:
    return assess_cronjob(cronjob=workload, jobs=jobs, target_images=target_images, gate=gate,
                          started_at=started_at, now=now, rollback=rollback)


KIND = Kind(name=CRONJOB, api_version="batch/v1", gate=_gate)
