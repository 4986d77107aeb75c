"""The health gate every workload kind shares: is a workload rolled onto a new image healthy?

Each kind's module in ``core.kinds`` reads what its controller reports of a
rollout into a :class:`Progress`; :func:`assess_progress` applies the rules
below to it (``core.kinds.assess`` dispatches by kind). For a Deployment
(``core.kinds.deployment.assess``): after the reconciler sets its images
(DESIGN.md, "The loop", step 5), it calls the gate on every pass with the Deployment and its pods as
the API returns them (plain JSON-like dicts), the images it set, the policy's
``rollout`` gate, the times it recorded, and the clock. The verdict says
whether to keep waiting, declare the rollout healthy, or roll back, and why,
naming the pod, the container and the state (``web-7d9c5-abcde/app:
CrashLoopBackOff, 4 restarts``). The same function gates a rollback, with the
previous images as the targets.

How the gate decides, in order:

1. ``spec.paused`` → ``Paused``. Someone paused the rollout by hand; the
   caller stops and reports, and does not roll back what a human is handling.
   (Kubernetes does not count its own progress deadline while paused either.)
2. ``spec.replicas == 0`` → ``ScaledToZero``. No pod runs, so there is nothing
   to verify: this is neither healthy nor failed. The verdict is explicit so
   the caller can record the rollout as applied but *unverified*, without a
   rollback, and must not treat it as evidence that lets a later wave start.
3. A new pod already says it is broken → ``Failed`` at once, without waiting
   for any deadline. "New" means the pod's spec runs every target image (the
   pod-template-hash would need the ReplicaSet); old pods are ignored, and so
   are pods being deleted. Broken means a container waiting in
   ImagePullBackOff, ErrImagePull, ErrImageNeverPull, InvalidImageName or
   CreateContainerConfigError; restarts over ``maxRestarts`` (reported as
   CrashLoopBackOff when a container is backing off, else TooManyRestarts); or
   a pod in phase Failed (except pods failed by a node shutdown, which the
   ReplicaSet replaces and which say nothing about the image). Restarts are
   summed over the new pods' containers and init containers, minus
   ``baseline_restarts`` (by pod name) when given. A CrashLoopBackOff is a
   crash like any other restart, so ``maxRestarts`` is its tolerance too: with
   the default of 0 the first one fails the gate.
4. The Deployment's own ``Progressing`` condition says
   ``ProgressDeadlineExceeded`` (once the controller has observed the current
   generation, so a stale condition from an earlier rollout does not count).
5. The operator's own deadline, ``progressDeadlineSeconds`` after
   ``started_at``, passes before the rollout is complete. This covers a
   Deployment whose own deadline is longer than the policy's. After the
   rollout has completed once, a new pod that stays not ready for longer than
   the deadline (one added by an HPA, say) fails the gate the same way.
6. Complete means: ``status.observedGeneration >= metadata.generation`` and
   ``updatedReplicas == availableReplicas == replicas == spec.replicas``, the
   last equality meaning no old pod remains. The first time it holds, the
   verdict carries ``healthy_since = now`` for the caller to record; the soak
   runs from there and is ``Healthy`` once ``healthyFor`` has passed while the
   rollout is complete. A resize by an HPA only moves the target: the gate
   compares against the current ``spec.replicas``, the soak is not restarted,
   but ``Healthy`` waits until the new replicas are available too.

Steps 1, 2, 4 and 6 are what a Deployment's controller reports
(``core.kinds.deployment``); StatefulSets and DaemonSets report their own
(``core.kinds.statefulset``, ``core.kinds.daemonset``), and
:func:`assess_progress` applies steps 3 and 5 and the soak to every kind alike.

Also here: :func:`pod_template_fingerprint` and :func:`changed_images`, with
which the caller notices a human changing the template during a rollout
(drift) and stops instead of overwriting it, and :func:`restart_counts` to
record a restart baseline.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.model import names
from imagepatch.model.durations import format_duration
from imagepatch.model.policy import Rollout
from imagepatch.model.times import format_time, parse_time

__all__ = [
    "HealthReason",
    "HealthState",
    "HealthVerdict",
    "Progress",
    "assess_progress",
    "changed_images",
    "pod_template_fingerprint",
    "restart_counts",
    "workload_template",
]


class HealthState(enum.StrEnum):
    PROGRESSING = "Progressing"  # not rolled out yet; keep waiting
    SOAKING = "Soaking"  # rolled out; holding for healthyFor
    HEALTHY = "Healthy"  # rolled out and held for healthyFor: done
    FAILED = "Failed"  # roll back (if the policy says so)
    PAUSED = "Paused"  # spec.paused: stop and report, no rollback
    SCALED_TO_ZERO = "ScaledToZero"  # nothing to verify: applied, unverified

    @property
    def final(self) -> bool:
        """Whether the gate is over: the caller stops polling this rollout."""
        return self not in (HealthState.PROGRESSING, HealthState.SOAKING)


class HealthReason(enum.StrEnum):
    """CamelCase reasons for conditions and Events; failures reuse Kubernetes' own words."""

    ROLLING_OUT = "RollingOut"
    SOAKING = "Soaking"
    HEALTHY = "Healthy"
    DEPLOYMENT_PAUSED = "DeploymentPaused"
    SCALED_TO_ZERO = "ScaledToZero"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    ERR_IMAGE_PULL = "ErrImagePull"
    ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
    INVALID_IMAGE_NAME = "InvalidImageName"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    TOO_MANY_RESTARTS = "TooManyRestarts"
    POD_FAILED = "PodFailed"
    # Other kinds (core.kinds): nothing to verify, or a Job's own verdict.
    PARTITIONED = "Partitioned"
    NO_PODS_SCHEDULED = "NoPodsScheduled"
    CRONJOB_SUSPENDED = "CronJobSuspended"
    JOB_FAILED = "JobFailed"
    # A CronJob's gate waiting for its next scheduled run, and the run that never came.
    AWAITING_RUN = "AwaitingRun"
    NO_RUN_WITHIN_BOUND = "NoRunWithinBound"
    # Argo Rollouts' own verdicts (core.kinds_rollout; hook of issue 23).
    ROLLOUT_PAUSED = "RolloutPaused"
    ROLLOUT_DEGRADED = "Degraded"
    ROLLOUT_ABORTED = "RolloutAborted"
    # Flagger's verdict on a Canary's analysis (core.flagger; issue 23).
    CANARY_FAILED = "CanaryFailed"


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthVerdict:
    """The gate's answer for one Deployment at one instant.

    ``healthy_since`` is what the caller records (and passes back next time):
    when the rollout first became complete, ``None`` before that. ``pod`` and
    ``container`` name the culprit of a failure (or what is being waited for).
    ``restarts`` is the counted total over the new pods. ``recheck_after`` is
    when the verdict can next change with the clock alone (a deadline or the
    end of the soak); pod and Deployment events can change it sooner.
    """

    state: HealthState
    reason: HealthReason
    message: str
    healthy_since: dt.datetime | None
    restarts: int = 0
    pod: str | None = None
    container: str | None = None
    recheck_after: dt.timedelta | None = None

    @property
    def failed(self) -> bool:
        return self.state is HealthState.FAILED


# Waiting reasons that the kubelet does not get out of by itself for this pod
# spec, so waiting for the deadline would only delay the rollback.
# ErrImagePull can be a registry blip, but the image was verified to exist
# before the rollout, and the kubelet backs off between pulls, so the issue
# asks to fail fast on it too.
_FATAL_WAITING = {
    "ImagePullBackOff": HealthReason.IMAGE_PULL_BACK_OFF,
    "ErrImagePull": HealthReason.ERR_IMAGE_PULL,
    "ErrImageNeverPull": HealthReason.ERR_IMAGE_NEVER_PULL,
    "InvalidImageName": HealthReason.INVALID_IMAGE_NAME,
    "CreateContainerConfigError": HealthReason.CREATE_CONTAINER_CONFIG_ERROR,
}
_CRASH_LOOP = "CrashLoopBackOff"

# status.reason of pods that graceful node shutdown marked Failed: "Shutdown"
# (1.20), "NodeShutdown" (rejected at admission) and "Terminated" (1.21+). The
# ReplicaSet replaces them; they say nothing about the image.
_NODE_SHUTDOWN_REASONS = frozenset({"Shutdown", "NodeShutdown", "Terminated"})

# The operator's own template annotations are not a human's change.
_OWN_ANNOTATION_PREFIX = names.PREFIX

_MESSAGE_DETAIL_LIMIT = 160
# recheck_after lands just past a boundary, since deadlines are strict (">").
_TICK = dt.timedelta(seconds=1)


# --- public API ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """What a workload's controller reports of a rollout, in the gate's terms.

    Each kind reads its own status fields into this (each kind's module
    in ``core.kinds``), and
    :func:`assess_progress` applies the same pod rules, deadlines and soak to
    all of them. ``want`` is the number of pods that must run the new
    template; ``complete`` is the kind's own "rolled out" test; ``stop``
    ends the gate at once without judging pods (paused, nothing to verify);
    ``gave_up`` is the controller's own failure verdict (a Deployment's
    ``ProgressDeadlineExceeded``); ``no_pod_note`` explains why no new pod
    exists when none can be blamed.
    """

    want: int
    complete: bool
    counts: str
    done_text: str = ""
    stop: tuple[HealthState, HealthReason, str] | None = None
    gave_up: str = ""
    no_pod_note: str = ""


def assess_progress(
    *,
    progress: Progress,
    pods: Sequence[Mapping[str, Any]],
    target_images: Mapping[str, str],
    gate: Rollout,
    started_at: dt.datetime,
    healthy_since: dt.datetime | None,
    baseline_restarts: Mapping[str, int] | None,
    now: dt.datetime,
) -> HealthVerdict:
    """The verdict for any kind whose controller's report is ``progress`` (module docstring)."""
    for name, value in (("now", now), ("started_at", started_at)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime")
    if not target_images:
        raise ValueError("target_images must name at least one container")
    deadline = dt.timedelta(seconds=gate.progress_deadline_seconds)

    if progress.stop is not None:
        state, reason, text = progress.stop
        return HealthVerdict(state=state, reason=reason, message=text, healthy_since=healthy_since)

    new_pods = sorted(
        (p for p in pods if _runs_images(p, target_images)), key=lambda p: _pod_name(p)
    )
    baseline = baseline_restarts or {}
    counted = {
        _pod_name(p): max(0, _pod_restarts(p) - _int(baseline.get(_pod_name(p)), default=0))
        for p in new_pods
    }
    restarts = sum(counted.values())

    def verdict(
        state: HealthState,
        reason: HealthReason,
        message: str,
        *,
        since: dt.datetime | None = healthy_since,
        culprit: _Culprit | None = None,
        recheck_after: dt.timedelta | None = None,
    ) -> HealthVerdict:
        return HealthVerdict(
            state=state,
            reason=reason,
            message=message,
            healthy_since=since,
            restarts=restarts,
            pod=culprit.pod if culprit else None,
            container=culprit.container if culprit else None,
            recheck_after=recheck_after,
        )

    # 3. A new pod already says it is broken: fail now, whatever the deadlines.
    broken = _broken_pod(new_pods, counted, restarts, gate.max_restarts)
    if broken is not None:
        reason, culprit, message = broken
        return verdict(HealthState.FAILED, reason, message, culprit=culprit)

    want = progress.want
    counts = progress.counts
    waiting_for = _first_unready(new_pods)

    # 4. The workload's controller gave up on the rollout itself.
    if progress.gave_up:
        return verdict(
            HealthState.FAILED,
            HealthReason.PROGRESS_DEADLINE_EXCEEDED,
            _blame(waiting_for, f"{counts}; {progress.gave_up}", progress.no_pod_note),
            culprit=waiting_for,
        )

    # 5a. A new pod not ready for longer than the deadline. Counted from when
    # it last turned not ready, and never from before the patch.
    recheck: list[dt.timedelta] = []
    for pod in new_pods:
        since = _not_ready_since(pod)
        if since is None:
            continue
        since = max(since, started_at)
        if now - since > deadline:
            unready = _first_unready([pod])
            return verdict(
                HealthState.FAILED,
                HealthReason.PROGRESS_DEADLINE_EXCEEDED,
                _blame(
                    unready,
                    f"not ready for more than {format_duration(deadline)}; {counts}",
                    progress.no_pod_note,
                ),
                culprit=unready,
            )
        recheck.append(since + deadline - now + _TICK)

    complete = progress.complete
    restarts_text = f"{restarts} restart{'' if restarts == 1 else 's'} (limit {gate.max_restarts})"
    crash_note = _tolerated_crash(new_pods)

    if not complete:
        if healthy_since is None:
            # 5b. The operator's own deadline, from the recorded patch time.
            if now - started_at > deadline:
                return verdict(
                    HealthState.FAILED,
                    HealthReason.PROGRESS_DEADLINE_EXCEEDED,
                    _blame(
                        waiting_for,
                        f"not rolled out within {format_duration(deadline)}; {counts}",
                        progress.no_pod_note,
                    ),
                    culprit=waiting_for,
                )
            message = f"rolling out: {counts}"
            if waiting_for is not None:
                message += f"; waiting for {waiting_for.text}"
            if crash_note:
                message += f"; {crash_note}"
            return verdict(
                HealthState.PROGRESSING,
                HealthReason.ROLLING_OUT,
                message,
                culprit=waiting_for,
                recheck_after=min([started_at + deadline - now + _TICK, *recheck]),
            )
        # Rolled out before, not complete now: an HPA resize, or a pod that
        # turned not ready. The soak goes on; Healthy waits for the new target.
        message = (
            f"soaking since {format_time(healthy_since)}, waiting for the current target: {counts}"
        )
        if waiting_for is not None:
            message += f"; waiting for {waiting_for.text}"
        return verdict(
            HealthState.SOAKING,
            HealthReason.SOAKING,
            message,
            culprit=waiting_for,
            recheck_after=min(recheck) if recheck else None,
        )

    since = healthy_since or now
    soaked = now - since
    done_text = progress.done_text or f"{want}/{want} pods updated and available"
    if soaked >= gate.healthy_for:
        return verdict(
            HealthState.HEALTHY,
            HealthReason.HEALTHY,
            f"{done_text} for {format_duration(soaked)}"
            f" (healthyFor {format_duration(gate.healthy_for)}), {restarts_text}",
            since=since,
        )
    message = (
        f"{done_text}; soaking for"
        f" {format_duration(gate.healthy_for - soaked)} more, {restarts_text}"
    )
    if crash_note:
        message += f"; {crash_note}"
    return verdict(
        HealthState.SOAKING,
        HealthReason.SOAKING,
        message,
        since=since,
        recheck_after=since + gate.healthy_for - now,
    )


def restart_counts(
    pods: Sequence[Mapping[str, Any]], target_images: Mapping[str, str]
) -> dict[str, int]:
    """Restarts so far of each pod running ``target_images``, by pod name.

    Record this as ``baseline_restarts`` when the gate must ignore restarts
    that happened before it started (the pods already ran the target).
    """
    return {_pod_name(p): _pod_restarts(p) for p in pods if _runs_images(p, target_images)}


def pod_template_fingerprint(
    deployment: Mapping[str, Any], *, managed_containers: Iterable[str] | None = None
) -> str:
    """A stable ``sha256:…`` of the pod template, minus what the operator itself changes.

    The ``image`` of each managed container (all containers when
    ``managed_containers`` is ``None``) is left out, and so are template
    annotations under ``imagepatch.dev/``. Record it when patching; if it
    differs on a later pass, a human changed the template (drift) and the
    rollout stops instead of overwriting the change. Pass the names of the
    containers the operator sets, so a human's image change to any other
    container counts as drift too; image changes to managed containers are
    found by :func:`changed_images`. Keys are sorted (canonical JSON), so the
    fingerprint does not depend on the order the API server returned them in;
    list order (e.g. of containers) is kept because it is meaningful.
    """
    template = workload_template(deployment)
    managed = None if managed_containers is None else set(managed_containers)
    masked = json.loads(json.dumps(template))  # a deep copy of plain JSON
    spec = masked.get("spec")
    if isinstance(spec, dict):
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or ():
                if isinstance(container, dict) and (
                    managed is None or container.get("name") in managed
                ):
                    container.pop("image", None)
    meta = masked.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        meta["annotations"] = {
            k: v
            for k, v in meta["annotations"].items()
            if not str(k).startswith(_OWN_ANNOTATION_PREFIX)
        }
    canonical = json.dumps(masked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def changed_images(
    deployment: Mapping[str, Any], expected: Mapping[str, str]
) -> dict[str, str | None]:
    """Containers whose template image is not the one the operator set.

    Maps container name to the image found, or ``None`` when the container is
    gone from the template. Empty means the images are as the operator left them.
    """
    found = _template_images(workload_template(deployment))
    return {name: found.get(name) for name, image in expected.items() if found.get(name) != image}


def workload_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template of any workload kind.

    ``spec.template`` (Deployment, StatefulSet, DaemonSet, Job), or a
    CronJob's ``spec.jobTemplate.spec.template``.
    """
    spec = _mapping(workload.get("spec"))
    if "jobTemplate" in spec:
        return _mapping(_mapping(_mapping(spec.get("jobTemplate")).get("spec")).get("template"))
    return _mapping(spec.get("template"))


# --- pods ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Culprit:
    pod: str
    container: str | None
    state: str

    @property
    def text(self) -> str:
        where = self.pod if self.container is None else f"{self.pod}/{self.container}"
        return f"{where}: {self.state}"


def _broken_pod(
    pods: Sequence[Mapping[str, Any]],
    counted: Mapping[str, int],
    restarts: int,
    max_restarts: int,
) -> tuple[HealthReason, _Culprit, str] | None:
    """The most telling sign that a new pod is broken, or ``None``.

    Checked in order of how specific the evidence is, pods in name order, so
    the same observations always blame the same pod.
    """
    live = [p for p in pods if not _terminating(p)]
    over_limit = restarts > max_restarts
    limit_text = f"{restarts} restarts across new pods, maxRestarts {max_restarts}"

    for pod in live:
        for cs in _container_statuses(pod):
            reason = _FATAL_WAITING.get(_waiting_reason(cs) or "")
            if reason is not None:
                culprit = _Culprit(_pod_name(pod), _str(cs.get("name")), _describe(cs))
                return reason, culprit, culprit.text
    if over_limit:
        for pod in live:
            for cs in _container_statuses(pod):
                if _waiting_reason(cs) == _CRASH_LOOP:
                    culprit = _Culprit(_pod_name(pod), _str(cs.get("name")), _describe(cs))
                    return (
                        HealthReason.CRASH_LOOP_BACK_OFF,
                        culprit,
                        f"{culprit.text}; {limit_text}",
                    )
    for pod in live:
        pod_status = _mapping(pod.get("status"))
        if pod_status.get("phase") != "Failed":
            continue
        if pod_status.get("reason") in _NODE_SHUTDOWN_REASONS:
            continue
        culprit = _failed_pod_culprit(pod)
        return HealthReason.POD_FAILED, culprit, culprit.text
    if over_limit:
        # Blame the pod with the most counted restarts, then its container
        # with the most restarts (max() keeps the first of equals, and the
        # pods come sorted by name).
        pod = max(pods, key=lambda p: counted.get(_pod_name(p), 0))
        statuses = _container_statuses(pod)
        busiest: Mapping[str, Any] | None = max(
            statuses, key=lambda c: _int(c.get("restartCount"), default=0), default=None
        )
        culprit = _Culprit(
            _pod_name(pod),
            _str(busiest.get("name")) if busiest else None,
            _describe(busiest) if busiest else _pod_phase_text(pod),
        )
        return HealthReason.TOO_MANY_RESTARTS, culprit, f"{culprit.text}; {limit_text}"
    return None


def _failed_pod_culprit(pod: Mapping[str, Any]) -> _Culprit:
    status = _mapping(pod.get("status"))
    # Prefer the container that failed, with its exit code.
    for cs in _container_statuses(pod):
        terminated = _mapping(_mapping(cs.get("state")).get("terminated"))
        if terminated and _int(terminated.get("exitCode"), default=0) != 0:
            return _Culprit(_pod_name(pod), _str(cs.get("name")), "Failed, " + _describe(cs))
    text = "Failed"
    if status.get("reason"):
        text += f", {status['reason']}"
    if status.get("message"):
        text += f": {short_detail(str(status['message']))}"
    return _Culprit(_pod_name(pod), None, text)


def _tolerated_crash(pods: Sequence[Mapping[str, Any]]) -> str:
    """A crash within maxRestarts: not a failure, but worth saying."""
    for pod in pods:
        for cs in _container_statuses(pod):
            if _waiting_reason(cs) == _CRASH_LOOP:
                return f"{_pod_name(pod)}/{cs.get('name')}: {_describe(cs)} (within maxRestarts)"
    return ""


def _first_unready(pods: Sequence[Mapping[str, Any]]) -> _Culprit | None:
    """The first new pod that is not ready, and its first container that is not."""
    for pod in pods:
        if not _active(pod) or _pod_ready(pod):
            continue
        for cs in _container_statuses(pod):
            if cs.get("ready") is not True:
                return _Culprit(_pod_name(pod), _str(cs.get("name")), _describe(cs))
        return _Culprit(_pod_name(pod), None, _pod_phase_text(pod))
    return None


def _blame(culprit: _Culprit | None, detail: str, no_pod_note: str) -> str:
    if culprit is not None:
        return f"{culprit.text}; {detail}"
    if no_pod_note:
        detail += f"; {no_pod_note}"
    return f"no pod runs the new image; {detail}"


def _describe(cs: Mapping[str, Any]) -> str:
    """A container's state as kubectl would summarise it, e.g. ``CrashLoopBackOff, 4 restarts``."""
    state = _mapping(cs.get("state"))
    waiting = _mapping(state.get("waiting"))
    running = _mapping(state.get("running"))
    terminated = _mapping(state.get("terminated"))
    if waiting:
        reason = _str(waiting.get("reason")) or "Waiting"
        text = reason
        if reason in _FATAL_WAITING and waiting.get("message"):
            text += f" ({short_detail(str(waiting['message']))})"
    elif running:
        text = "Running" if cs.get("ready") is True else "Running, not ready"
    elif terminated:
        text = f"terminated with {_str(terminated.get('reason')) or 'Error'}"
        text += f" (exit code {terminated.get('exitCode')})"
        if terminated.get("message"):
            text += f": {short_detail(str(terminated['message']))}"
    else:
        text = "not started"
    count = _int(cs.get("restartCount"), default=0)
    if count:
        text += f", {count} restart{'' if count == 1 else 's'}"
        last = _mapping(_mapping(cs.get("lastState")).get("terminated"))
        if last:
            text += (
                f" (last exit: {_str(last.get('reason')) or 'Error'}, code {last.get('exitCode')})"
            )
    return text


def _pod_phase_text(pod: Mapping[str, Any]) -> str:
    status = _mapping(pod.get("status"))
    text = _str(status.get("phase")) or "Pending"
    scheduled = _pod_condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        text += f", {scheduled.get('reason') or 'not scheduled'}"
        if scheduled.get("message"):
            text += f": {short_detail(str(scheduled['message']))}"
    return text


def _runs_images(pod: Mapping[str, Any], target_images: Mapping[str, str]) -> bool:
    images = _template_images(pod)
    if not images:
        # No spec in the dict (not from the API): fall back to the images the
        # kubelet reports, which may be normalised (docker.io/library/…).
        images = {
            _str(cs.get("name")) or "": _str(cs.get("image")) or ""
            for cs in _container_statuses(pod)
        }
    return all(images.get(name) == image for name, image in target_images.items())


def _template_images(obj: Mapping[str, Any]) -> dict[str, str]:
    """Container name → image in a pod or pod template (``spec.containers``)."""
    spec = _mapping(obj.get("spec"))
    out: dict[str, str] = {}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or ():
            if isinstance(c, Mapping) and isinstance(c.get("name"), str):
                out[c["name"]] = _str(c.get("image")) or ""
    return out


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = _mapping(pod.get("status"))
    return [
        cs
        for key in ("initContainerStatuses", "containerStatuses")
        for cs in status.get(key) or ()
        if isinstance(cs, Mapping)
    ]


def _pod_restarts(pod: Mapping[str, Any]) -> int:
    return sum(_int(cs.get("restartCount"), default=0) for cs in _container_statuses(pod))


def _waiting_reason(cs: Mapping[str, Any]) -> str | None:
    return _str(_mapping(_mapping(cs.get("state")).get("waiting")).get("reason"))


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return _pod_condition(pod, "Ready").get("status") == "True"


def _not_ready_since(pod: Mapping[str, Any]) -> dt.datetime | None:
    """When a new pod last became not ready, or ``None`` if it is ready or not active."""
    if not _active(pod) or _pod_ready(pod):
        return None
    ready = _pod_condition(pod, "Ready")
    return parse_time(ready.get("lastTransitionTime")) or parse_time(
        _mapping(pod.get("metadata")).get("creationTimestamp")
    )


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool(_mapping(pod.get("metadata")).get("deletionTimestamp"))


def _active(pod: Mapping[str, Any]) -> bool:
    """Neither going away nor finished: a pod that can still become ready.

    A Failed pod that the gate forgave (node shutdown) stays in the API until
    the pod garbage collector removes it, possibly days later; it must not
    then trip the not-ready deadline.
    """
    phase = _mapping(pod.get("status")).get("phase")
    return not _terminating(pod) and phase not in ("Failed", "Succeeded")


def _pod_condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return condition(_mapping(pod.get("status")), kind)


def _pod_name(pod: Mapping[str, Any]) -> str:
    return _str(_mapping(pod.get("metadata")).get("name")) or "<unnamed pod>"


# --- small readers -----------------------------------------------------------------


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, *, default: int) -> int:
    # bool is an int in Python but not in JSON.
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def short_detail(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _MESSAGE_DETAIL_LIMIT:
        return text
    return text[: _MESSAGE_DETAIL_LIMIT - 1] + "…"
