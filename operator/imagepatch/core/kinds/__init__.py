"""Workload kinds: where each keeps its pod template and containers, and its health gate.

imagepatch patches four kinds (DESIGN.md, "Decisions for v0.2"): Deployment,
StatefulSet, DaemonSet and CronJob, and Argo Rollouts' Rollout when the
operator runs with ``--argo-rollouts``. Each kind is one module of this package
(``deployment``, ``statefulset``, ``daemonset``, ``cronjob``, ``rollout``) that ends with
its ``KIND`` entry; ``REGISTRY`` lists them, and the functions here dispatch
on it, so the planner stays kind-agnostic. A new kind is one new module and
one line in ``REGISTRY``. What the kinds share is ``shared``:

* **Where the pod template is.** ``spec.template``, or a CronJob's
  ``spec.jobTemplate.spec.template`` (:func:`pod_template`).
* **Which containers count.** Every container of the template:
  ``containers`` and ``initContainers``, native sidecars
  (``restartPolicy: Always``) included. ``ephemeralContainers`` never: they
  are added to running pods by ``kubectl debug``, are not part of any
  template, and are not the workload's software. Kubernetes requires
  container names to be unique across all of a pod's lists, so a target
  names its container only; :func:`find_container` says which list it is in.
* **When a rollout is complete** (:func:`assess`): each kind's module says
  (its controller's report, judged by ``core.health`` with the same pod
  rules, deadlines and soak; or a gate of its own, a CronJob's).
* **OnDelete** (StatefulSet or DaemonSet): not patched. Its pods change only
  when someone deletes them, so a gate could never pass and a "patched"
  template would claim a fix no pod runs. The target is skipped with
  ``OnDeleteStrategy`` and an Event that says to switch to
  ``RollingUpdate`` (:func:`not_patchable`).

Pure: plain dicts as the API serves them, the clock passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.core.health import HealthVerdict
from imagepatch.core.kinds import cronjob, daemonset, deployment, rollout, statefulset
from imagepatch.core.kinds.cronjob import (
    CRONJOB,
    JOB_NAME_LABELS,
    NextRun,
    assess_cronjob,
    cronjob_run_too_far,
    next_cronjob_run,
    trial_job_name,
    trial_run_wanted,
)
from imagepatch.core.kinds.daemonset import DAEMONSET, daemonset_progress
from imagepatch.core.kinds.deployment import DEPLOYMENT, deployment_progress
from imagepatch.core.kinds.shared import (
    CONTAINER_LISTS,
    Kind,
    containers,
    find_container,
    is_native_sidecar,
    pod_template,
)
from imagepatch.core.kinds.statefulset import (
    FORCED_ROLLBACK_LIMIT,
    STATEFULSET,
    StuckPod,
    bad_revision,
    forced_rollback,
    statefulset_progress,
)
from imagepatch.model.policy import Rollout

# Every kind imagepatch patches, by name, in the order they are listed and watched.
REGISTRY: dict[str, Kind] = {
    k.name: k
    for k in (
        deployment.KIND,
        statefulset.KIND,
        daemonset.KIND,
        cronjob.KIND,
        rollout.KIND,  # Argo Rollouts (issue 23): listed only with --argo-rollouts
    )
}
KINDS = tuple(REGISTRY)

__all__ = [
    "CONTAINER_LISTS",
    "CRONJOB",
    "DAEMONSET",
    "DEPLOYMENT",
    "FORCED_ROLLBACK_LIMIT",
    "JOB_NAME_LABELS",
    "KINDS",
    "REGISTRY",
    "STATEFULSET",
    "Kind",
    "NextRun",
    "StuckPod",
    "api_version",
    "assess",
    "assess_cronjob",
    "bad_revision",
    "containers",
    "cronjob_run_too_far",
    "daemonset_progress",
    "deployment_progress",
    "find_container",
    "forced_rollback",
    "is_native_sidecar",
    "registered",
    "next_cronjob_run",
    "not_patchable",
    "pod_template",
    "statefulset_progress",
    "trial_job_name",
    "trial_run_wanted",
]


def registered(kind: str) -> Kind:
    """The registry's entry for ``kind``; an unknown kind is treated as a Deployment."""
    return REGISTRY.get(kind, deployment.KIND)


def api_version(kind: str) -> str:
    """The apiVersion of ``kind`` (for Events' involvedObject)."""
    entry = REGISTRY.get(kind)
    return entry.api_version if entry is not None else "apps/v1"


def not_patchable(kind: str, workload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when patching the template would change no pod, else ``None``."""
    entry = REGISTRY.get(kind)
    return entry.not_patchable(workload) if entry is not None else None


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
    return registered(kind).gate(
        workload=workload, pods=pods, jobs=jobs, target_images=target_images, gate=gate,
        started_at=started_at, healthy_since=healthy_since, now=now, rollback=rollback,
    )  # fmt: skip
