"""The health gate: verdicts from Deployment and pod dicts as the API returns them.

The shapes follow what kube-controller-manager writes to a Deployment's status
and the kubelet (or our cluster's kwok stages, tests/cluster/stages/) writes to
a pod's: ``crashloop`` pods wait in CrashLoopBackOff with a rising
restartCount, ``never-ready`` pods run with Ready=False, and ``job-fail``
pods end in phase Failed with a terminated container.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

import pytest

from imagepatch.core.health import (
    HealthReason,
    HealthState,
    changed_images,
    pod_template_fingerprint,
    restart_counts,
)
from imagepatch.core.kinds.deployment import assess
from imagepatch.model.policy import Rollout

OLD = "registry.example.com/shop/web@sha256:" + "a" * 64
NEW = "registry.example.com/shop/web@sha256:" + "b" * 64
SIDECAR = "registry.example.com/mesh/proxy:1.22.3"
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
STARTED = NOW - dt.timedelta(minutes=2)  # when the operator patched the Deployment
GATE = Rollout(progress_deadline_seconds=600, healthy_for=dt.timedelta(minutes=5), max_restarts=0)
TARGET = {"app": NEW}


def ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- builders for realistic objects ----------------------------------------------------


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 2,
    observed: int = 2,
    status_replicas: int = 3,
    updated: int = 3,
    available: int = 3,
    paused: bool = False,
    progressing: tuple[str, str, str] | None = None,
    replica_failure: str | None = None,
    image: str = NEW,
) -> dict[str, Any]:
    """A Deployment as the API returns it; defaults: fully rolled out onto NEW."""
    if progressing is None:
        done = updated == status_replicas == available == (replicas or 0)
        progressing = (
            ("True", "NewReplicaSetAvailable", 'ReplicaSet "web-7d9c5" has successfully progressed.')
            if done
            else ("True", "ReplicaSetUpdated", 'ReplicaSet "web-7d9c5" is progressing.')
        )
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "replicas": status_replicas,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": ts(STARTED),
                "lastTransitionTime": ts(STARTED),
            },
            {
                "type": "Progressing",
                "status": progressing[0],
                "reason": progressing[1],
                "message": progressing[2],
                "lastUpdateTime": ts(STARTED),
                "lastTransitionTime": ts(STARTED),
            },
        ],
    }
    if status_replicas > available:
        status["unavailableReplicas"] = status_replicas - available
    if replica_failure:
        status["conditions"].append(
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": replica_failure}
        )
    spec: dict[str, Any] = {
        "progressDeadlineSeconds": 600,
        "revisionHistoryLimit": 10,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        "template": {
            "metadata": {
                "labels": {"app": "web"},
                "annotations": {"imagepatch.dev/patch": "web-b7c1"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "LOG_LEVEL", "value": "info"}],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    },
                    {"name": "proxy", "image": SIDECAR, "imagePullPolicy": "IfNotPresent"},
                ],
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30,
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if paused:
        spec["paused"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "generation": generation,
            "resourceVersion": "48213",
            "uid": "6f1b1c8e-2b7e-4d55-9a41-0c1e0d7f3a10",
            "annotations": {"deployment.kubernetes.io/revision": "2", "imagepatch.dev/policy": "critical-fixes"},
        },
        "spec": spec,
        "status": status,
    }


def running(ready: bool = True, restarts: int = 0, image: str = NEW, name: str = "app") -> dict:
    cs: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": image,
        "ready": ready,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ts(STARTED + dt.timedelta(seconds=20))}},
        "lastState": {},
    }
    if restarts:
        cs["lastState"] = {
            "terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": ts(STARTED), "finishedAt": ts(STARTED)}
        }
    return cs


def waiting(reason: str, message: str = "", restarts: int = 0, name: str = "app", image: str = NEW) -> dict:
    cs: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, **({"message": message} if message else {})}},
        "lastState": {},
    }
    return cs


def crashloop(restarts: int, name: str = "app", image: str = NEW) -> dict:
    """The kwok ``crashloop`` stage's container status."""
    return {
        "name": name,
        "image": image,
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "lastState": {
            "terminated": {"exitCode": 1, "reason": "Error", "startedAt": ts(NOW), "finishedAt": ts(NOW)}
        },
        "state": {
            "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off restarting failed container {name}"}
        },
    }


def pod(
    name: str,
    *containers: dict,
    image: str = NEW,
    phase: str = "Running",
    ready: bool | None = None,
    ready_since: dt.datetime | None = None,
    created: dt.datetime | None = None,
    init: tuple[dict, ...] = (),
    status_extra: dict | None = None,
    deleting: bool = False,
    scheduled: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A pod of the Deployment; its spec runs ``image`` for app beside the proxy sidecar."""
    if not containers and phase == "Running":
        containers = (running(image=image), running(image=SIDECAR, name="proxy"))
    if ready is None:
        ready = phase == "Running" and all(c.get("ready") for c in containers)
    created = created or STARTED + dt.timedelta(seconds=5)
    hash_ = "7d9c5" if image == NEW else "5f6b8"
    conditions = [
        {"type": "Initialized", "status": "True", "lastTransitionTime": ts(created)},
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            **({} if ready else {"reason": "ContainersNotReady"}),
            "lastTransitionTime": ts(ready_since or created),
        },
        {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": ts(created)},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(created)},
    ]
    if scheduled:
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": scheduled[0],
                "message": scheduled[1],
                "lastTransitionTime": ts(created),
            }
        ]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "startTime": ts(created)}
    if containers:
        status["containerStatuses"] = list(containers)
    if init:
        status["initContainerStatuses"] = list(init)
    status.update(status_extra or {})
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "shop",
        "labels": {"app": "web", "pod-template-hash": hash_},
        "creationTimestamp": ts(created),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"web-{hash_}", "controller": True}],
    }
    if deleting:
        metadata["deletionTimestamp"] = ts(NOW)
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": image}, {"name": "proxy", "image": SIDECAR}],
        "nodeName": "kwok-node-0",
    }
    if init:
        spec["initContainers"] = [{"name": c["name"], "image": c["image"]} for c in init]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def healthy_pods(n: int = 3) -> list[dict]:
    return [pod(f"web-7d9c5-{s}") for s in ("abcde", "fghij", "klmno", "pqrst", "uvwxy")[:n]]


def old_pod(name: str = "web-5f6b8-zzzzz", *containers: dict) -> dict:
    return pod(name, *containers, image=OLD)


def run(
    dep: dict,
    pods: list[dict],
    *,
    gate: Rollout = GATE,
    started_at: dt.datetime = STARTED,
    healthy_since: dt.datetime | None = None,
    baseline: dict[str, int] | None = None,
    now: dt.datetime = NOW,
    target: dict[str, str] | None = None,
):
    return assess(
        deployment=dep,
        pods=pods,
        target_images=target or TARGET,
        gate=gate,
        started_at=started_at,
        healthy_since=healthy_since,
        baseline_restarts=baseline,
        now=now,
    )


MINUTES = dt.timedelta(minutes=1)

# --- rolled out, soaking, healthy -----------------------------------------------------------


def test_first_complete_observation_starts_the_soak():
    v = run(deployment(), healthy_pods())
    assert (v.state, v.reason) == (HealthState.SOAKING, HealthReason.SOAKING)
    assert v.healthy_since == NOW  # to be recorded by the caller
    assert v.recheck_after == 5 * MINUTES
    assert v.message == "3/3 replicas updated and available; soaking for 5m more, 0 restarts (limit 0)"


@pytest.mark.parametrize(
    ("soaked", "state", "recheck"),
    [
        (dt.timedelta(minutes=4, seconds=59), HealthState.SOAKING, dt.timedelta(seconds=1)),
        (5 * MINUTES, HealthState.HEALTHY, None),  # healthyFor is inclusive
        (60 * MINUTES, HealthState.HEALTHY, None),
    ],
)
def test_soak_ends_healthy_after_healthy_for(soaked, state, recheck):
    v = run(deployment(), healthy_pods(), healthy_since=NOW - soaked)
    assert v.state is state
    assert v.healthy_since == NOW - soaked  # never moved once recorded
    assert v.recheck_after == recheck


def test_healthy_message_and_final_flag():
    v = run(deployment(), healthy_pods(), healthy_since=NOW - 5 * MINUTES)
    assert v.message == "3/3 replicas updated and available for 5m (healthyFor 5m), 0 restarts (limit 0)"
    assert v.state.final and not v.failed


def test_zero_soak_is_healthy_at_once():
    gate = Rollout(progress_deadline_seconds=600, healthy_for=dt.timedelta(0))
    v = run(deployment(), healthy_pods(), gate=gate)
    assert (v.state, v.healthy_since) == (HealthState.HEALTHY, NOW)


def test_restarts_at_the_limit_are_tolerated():
    gate = Rollout(progress_deadline_seconds=600, healthy_for=5 * MINUTES, max_restarts=2)
    pods = [pod("web-7d9c5-abcde", running(restarts=2), running(image=SIDECAR, name="proxy")), *healthy_pods()[1:]]
    v = run(deployment(), pods, gate=gate, healthy_since=NOW - 5 * MINUTES)
    assert (v.state, v.restarts) == (HealthState.HEALTHY, 2)


# --- progressing ----------------------------------------------------------------------------


def test_mid_rollout_is_progressing_and_names_what_it_waits_for():
    pods = [
        pod("web-7d9c5-abcde"),
        pod("web-7d9c5-fghij", waiting("ContainerCreating"), waiting("ContainerCreating", name="proxy", image=SIDECAR)),
        old_pod("web-5f6b8-qqqqq"),
        old_pod("web-5f6b8-rrrrr"),
    ]
    dep = deployment(status_replicas=4, updated=2, available=3)
    v = run(dep, pods)
    assert (v.state, v.reason, v.healthy_since) == (HealthState.PROGRESSING, HealthReason.ROLLING_OUT, None)
    assert v.message == (
        "rolling out: 2/3 updated, 3/3 available, 2 old pods left;"
        " waiting for web-7d9c5-fghij/app: ContainerCreating"
    )
    assert (v.pod, v.container) == ("web-7d9c5-fghij", "app")
    # The operator's deadline is 10m after the patch, 8m from now; just past it.
    assert v.recheck_after == 8 * MINUTES + dt.timedelta(seconds=1)


def test_counts_alone_are_not_enough_until_the_generation_is_observed():
    # Status still describes generation 1 (the old template, fully rolled out).
    v = run(deployment(generation=2, observed=1), [old_pod(), old_pod("web-5f6b8-yyyyy"), old_pod("web-5f6b8-xxxxx")])
    assert v.state is HealthState.PROGRESSING
    assert "has not observed the latest generation" in v.message


def test_a_stale_deadline_condition_from_before_the_patch_is_ignored():
    stale = ("False", "ProgressDeadlineExceeded", 'ReplicaSet "web-5f6b8" has timed out progressing.')
    v = run(deployment(generation=2, observed=1, progressing=stale), [old_pod()])
    assert v.state is HealthState.PROGRESSING


def test_missing_status_is_progressing():
    dep = deployment()
    del dep["status"]
    assert run(dep, []).state is HealthState.PROGRESSING


def test_spec_replicas_defaults_to_one():
    v = run(deployment(replicas=None, status_replicas=1, updated=1, available=1), healthy_pods(1))
    assert v.state is HealthState.SOAKING


# --- fail fast on what a new pod says ------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "reason", "message"),
    [
        # kwok's crashloop stage: restartCount 4, back-off.
        (
            crashloop(4),
            HealthReason.CRASH_LOOP_BACK_OFF,
            "web-7d9c5-abcde/app: CrashLoopBackOff, 4 restarts (last exit: Error, code 1);"
            " 4 restarts across new pods, maxRestarts 0",
        ),
        (
            waiting("ImagePullBackOff", f'Back-off pulling image "{NEW}"'),
            HealthReason.IMAGE_PULL_BACK_OFF,
            f'web-7d9c5-abcde/app: ImagePullBackOff (Back-off pulling image "{NEW}")',
        ),
        (
            waiting("ErrImagePull", "failed to pull and unpack image: not found"),
            HealthReason.ERR_IMAGE_PULL,
            "web-7d9c5-abcde/app: ErrImagePull (failed to pull and unpack image: not found)",
        ),
        (
            waiting("CreateContainerConfigError", 'secret "db-credentials" not found'),
            HealthReason.CREATE_CONTAINER_CONFIG_ERROR,
            'web-7d9c5-abcde/app: CreateContainerConfigError (secret "db-credentials" not found)',
        ),
        (
            waiting("InvalidImageName", "Failed to apply default image tag"),
            HealthReason.INVALID_IMAGE_NAME,
            "web-7d9c5-abcde/app: InvalidImageName (Failed to apply default image tag)",
        ),
    ],
)
def test_a_broken_new_pod_fails_at_once(container, reason, message):
    pods = [pod("web-7d9c5-abcde", container, running(image=SIDECAR, name="proxy")), old_pod(), old_pod("web-5f6b8-yyyyy")]
    dep = deployment(status_replicas=3, updated=1, available=2)
    # 10 seconds after the patch: no deadline is anywhere near.
    v = run(dep, pods, started_at=NOW - dt.timedelta(seconds=10))
    assert (v.state, v.reason, v.message) == (HealthState.FAILED, reason, message)
    assert (v.pod, v.container) == ("web-7d9c5-abcde", "app")
    assert v.failed and v.state.final


def test_long_kubelet_messages_are_shortened():
    long = "rpc error: " + "x" * 500
    pods = [pod("web-7d9c5-abcde", waiting("ErrImagePull", long))]
    v = run(deployment(updated=1, available=0, status_replicas=1, replicas=1), pods)
    assert len(v.message) < 220 and v.message.endswith("…)")


def test_kwok_crashloop_first_restart_fails_with_the_default_limit():
    pods = [pod("web-7d9c5-abcde", crashloop(1), running(image=SIDECAR, name="proxy"))]
    v = run(deployment(updated=1, available=2), pods)
    assert v.reason is HealthReason.CRASH_LOOP_BACK_OFF
    assert v.message.startswith("web-7d9c5-abcde/app: CrashLoopBackOff, 1 restart (")


def test_crashloop_within_max_restarts_keeps_waiting_and_says_so():
    gate = Rollout(progress_deadline_seconds=600, healthy_for=5 * MINUTES, max_restarts=3)
    pods = [pod("web-7d9c5-abcde", crashloop(2), running(image=SIDECAR, name="proxy")), old_pod(), old_pod("web-5f6b8-yyyyy")]
    v = run(deployment(updated=1, available=2), pods, gate=gate)
    assert v.state is HealthState.PROGRESSING
    assert "web-7d9c5-abcde/app: CrashLoopBackOff, 2 restarts (last exit: Error, code 1) (within maxRestarts)" in v.message


def test_crashloop_over_the_limit_across_pods_fails():
    # Two pods, 2 restarts each: 4 in total > 3.
    gate = Rollout(progress_deadline_seconds=600, healthy_for=5 * MINUTES, max_restarts=3)
    pods = [
        pod("web-7d9c5-abcde", crashloop(2), running(image=SIDECAR, name="proxy")),
        pod("web-7d9c5-fghij", crashloop(2), running(image=SIDECAR, name="proxy")),
    ]
    v = run(deployment(updated=2, available=1), pods, gate=gate)
    assert (v.reason, v.pod, v.restarts) == (HealthReason.CRASH_LOOP_BACK_OFF, "web-7d9c5-abcde", 4)


def test_init_container_crashloop_fails():
    pods = [
        pod(
            "web-7d9c5-abcde",
            waiting("PodInitializing"),
            waiting("PodInitializing", name="proxy", image=SIDECAR),
            phase="Pending",
            init=(crashloop(3, name="migrate", image=NEW),),
        )
    ]
    v = run(deployment(updated=1, available=2), pods)
    assert (v.reason, v.pod, v.container) == (HealthReason.CRASH_LOOP_BACK_OFF, "web-7d9c5-abcde", "migrate")


def test_old_pods_do_not_count():
    # An old pod crashlooping or failed says nothing about the new image.
    pods = [*healthy_pods(), old_pod("web-5f6b8-zzzzz", crashloop(9, image=OLD))]
    v = run(deployment(status_replicas=4, updated=3, available=3), pods)
    assert v.state is HealthState.PROGRESSING and v.restarts == 0


def test_a_pod_being_deleted_is_ignored():
    pods = [*healthy_pods(), pod("web-7d9c5-zzzzz", waiting("ImagePullBackOff", "gone"), deleting=True)]
    assert run(deployment(), pods).state is HealthState.SOAKING


def test_image_pull_errors_win_over_crashes():
    pods = [
        pod("web-7d9c5-abcde", crashloop(5)),
        pod("web-7d9c5-fghij", waiting("ImagePullBackOff", "denied")),
    ]
    v = run(deployment(updated=2, available=1), pods)
    assert (v.reason, v.pod) == (HealthReason.IMAGE_PULL_BACK_OFF, "web-7d9c5-fghij")


# --- pod phase Failed -----------------------------------------------------------------------


def test_failed_pod_like_kwok_job_fail():
    terminated = {
        "name": "app",
        "image": NEW,
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "message": "simulated build failure",
                "startedAt": ts(NOW),
                "finishedAt": ts(NOW),
            }
        },
    }
    pods = [pod("web-7d9c5-abcde", terminated, phase="Failed")]
    v = run(deployment(updated=1, available=2), pods)
    assert (v.state, v.reason) == (HealthState.FAILED, HealthReason.POD_FAILED)
    assert v.message == "web-7d9c5-abcde/app: Failed, terminated with Error (exit code 1): simulated build failure"


def test_evicted_new_pod_fails():
    evicted = {"reason": "Evicted", "message": "The node was low on resource: memory. Threshold quantity: 100Mi."}
    pods = [pod("web-7d9c5-abcde", phase="Failed", status_extra=evicted), *healthy_pods()[1:]]
    v = run(deployment(available=2), pods)
    assert v.reason is HealthReason.POD_FAILED
    assert v.message.startswith("web-7d9c5-abcde: Failed, Evicted: The node was low on resource: memory.")
    assert (v.pod, v.container) == ("web-7d9c5-abcde", None)


@pytest.mark.parametrize("reason", ["Terminated", "Shutdown", "NodeShutdown"])
def test_pods_failed_by_node_shutdown_are_not_the_images_fault(reason):
    shutdown = {"reason": reason, "message": "Pod was terminated in response to imminent node shutdown."}
    pods = [pod("web-7d9c5-zzzzz", phase="Failed", status_extra=shutdown), *healthy_pods()]
    assert run(deployment(), pods).state is HealthState.SOAKING


# --- restarts --------------------------------------------------------------------------------


def test_too_many_restarts_while_running_names_the_worst_pod():
    gate = Rollout(progress_deadline_seconds=600, healthy_for=5 * MINUTES, max_restarts=2)
    pods = [
        pod("web-7d9c5-abcde", running(restarts=1), running(image=SIDECAR, name="proxy")),
        pod("web-7d9c5-fghij", running(restarts=2), running(image=SIDECAR, name="proxy")),
        pod("web-7d9c5-klmno"),
    ]
    v = run(deployment(), pods, gate=gate, healthy_since=NOW - MINUTES)
    assert (v.state, v.reason, v.restarts) == (HealthState.FAILED, HealthReason.TOO_MANY_RESTARTS, 3)
    assert v.message == (
        "web-7d9c5-fghij/app: Running, 2 restarts (last exit: OOMKilled, code 137);"
        " 3 restarts across new pods, maxRestarts 2"
    )


@pytest.mark.parametrize(
    ("restarts", "baseline", "state"),
    [
        (3, {"web-7d9c5-abcde": 3}, HealthState.SOAKING),  # all before the gate started
        (4, {"web-7d9c5-abcde": 3}, HealthState.FAILED),  # one new restart > 0
        (3, None, HealthState.FAILED),
        (3, {"some-other-pod": 3}, HealthState.FAILED),
    ],
)
def test_restarts_count_from_the_baseline(restarts, baseline, state):
    pods = [pod("web-7d9c5-abcde", running(restarts=restarts), running(image=SIDECAR, name="proxy")), *healthy_pods()[1:]]
    assert run(deployment(), pods, baseline=baseline).state is state


def test_restart_counts_records_a_baseline_of_new_pods_only():
    pods = [
        pod("web-7d9c5-abcde", running(restarts=2), running(image=SIDECAR, name="proxy", restarts=1)),
        old_pod("web-5f6b8-zzzzz", running(restarts=7, image=OLD)),
    ]
    assert restart_counts(pods, TARGET) == {"web-7d9c5-abcde": 3}


# --- deadlines -------------------------------------------------------------------------------


def never_ready(name: str, created: dt.datetime = STARTED + dt.timedelta(seconds=5)) -> dict:
    """The kwok ``never-ready`` stage: Running, containers started, Ready=False."""
    return pod(name, running(ready=False), running(image=SIDECAR, name="proxy"), created=created, ready=False)


def test_kubernetes_progress_deadline_fails_and_names_the_pod():
    exceeded = ("False", "ProgressDeadlineExceeded", 'ReplicaSet "web-7d9c5" has timed out progressing.')
    pods = [never_ready("web-7d9c5-abcde"), old_pod(), old_pod("web-5f6b8-yyyyy"), old_pod("web-5f6b8-xxxxx")]
    dep = deployment(status_replicas=4, updated=1, available=3, progressing=exceeded)
    v = run(dep, pods)
    assert (v.state, v.reason) == (HealthState.FAILED, HealthReason.PROGRESS_DEADLINE_EXCEEDED)
    assert v.message == (
        "web-7d9c5-abcde/app: Running, not ready; 1/3 updated, 3/3 available, 3 old pods left;"
        ' ReplicaSet "web-7d9c5" has timed out progressing.'
    )


@pytest.mark.parametrize(
    ("elapsed", "state"),
    [
        (dt.timedelta(seconds=600), HealthState.PROGRESSING),  # the deadline is strict: ">"
        (dt.timedelta(seconds=601), HealthState.FAILED),
    ],
)
def test_operator_deadline_when_the_deployments_own_is_longer(elapsed, state):
    # The Deployment's progressDeadlineSeconds is an hour, so it still says Progressing.
    started = NOW - elapsed
    pods = [never_ready("web-7d9c5-abcde", created=started + dt.timedelta(seconds=5)), old_pod(), old_pod("web-5f6b8-yyyyy"), old_pod("web-5f6b8-xxxxx")]
    v = run(deployment(status_replicas=4, updated=1, available=3), pods, started_at=started)
    assert v.state is state
    if state is HealthState.FAILED:
        assert v.reason is HealthReason.PROGRESS_DEADLINE_EXCEEDED
        assert v.message == (
            "web-7d9c5-abcde/app: Running, not ready; not rolled out within 10m;"
            " 1/3 updated, 3/3 available, 3 old pods left"
        )


def test_deadline_counts_from_the_recorded_start_after_an_operator_restart():
    # The operator restarted 9 minutes after patching; started_at comes from status.
    pods = [never_ready("web-7d9c5-abcde")]
    v = run(deployment(updated=1, available=2), pods, started_at=NOW - dt.timedelta(minutes=11))
    assert v.reason is HealthReason.PROGRESS_DEADLINE_EXCEEDED


def test_unschedulable_new_pod_is_named_at_the_deadline():
    pending = pod(
        "web-7d9c5-abcde",
        phase="Pending",
        scheduled=("Unschedulable", "0/3 nodes are available: 3 Insufficient cpu."),
    )
    v = run(deployment(updated=1, available=2), [pending, old_pod()], started_at=NOW - 11 * MINUTES)
    assert v.message.startswith(
        "web-7d9c5-abcde: Pending, Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.; not rolled out"
    )


def test_no_new_pod_at_all_reports_the_replica_failure():
    quota = 'pods "web-7d9c5-abcde" is forbidden: exceeded quota: compute, requested: cpu=1, limited: cpu=4'
    dep = deployment(updated=0, available=3, replica_failure=quota)
    v = run(dep, [old_pod(), old_pod("web-5f6b8-yyyyy"), old_pod("web-5f6b8-xxxxx")], started_at=NOW - 11 * MINUTES)
    assert v.reason is HealthReason.PROGRESS_DEADLINE_EXCEEDED
    assert v.message.startswith("no pod runs the new image; not rolled out within 10m; 0/3 updated")
    assert f"ReplicaFailure: {quota}" in v.message
    assert (v.pod, v.container) == (None, None)


# --- paused, scaled to zero, resized ---------------------------------------------------------


def test_paused_deployment_stops_the_gate_without_failing():
    pods = [pod("web-7d9c5-abcde", crashloop(4))]
    v = run(deployment(paused=True, updated=1, available=2), pods, healthy_since=None)
    assert (v.state, v.reason) == (HealthState.PAUSED, HealthReason.DEPLOYMENT_PAUSED)
    assert "shop/web is paused" in v.message and v.state.final and not v.failed


def test_scaled_to_zero_is_explicit_and_unverified():
    dep = deployment(replicas=0, status_replicas=0, updated=0, available=0)
    v = run(dep, [], healthy_since=NOW - MINUTES)
    assert (v.state, v.reason) == (HealthState.SCALED_TO_ZERO, HealthReason.SCALED_TO_ZERO)
    assert "not verified" in v.message
    assert v.healthy_since == NOW - MINUTES and not v.failed and v.state.final


def test_hpa_scale_up_before_completion_moves_the_target():
    # spec.replicas went 3 → 5 (generation 3, observed); 3 new pods are ready, 2 are not yet.
    dep = deployment(replicas=5, generation=3, observed=3, status_replicas=5, updated=5, available=3)
    pods = [*healthy_pods(3), never_ready("web-7d9c5-pqrst"), never_ready("web-7d9c5-uvwxy")]
    v = run(dep, pods)
    assert v.state is HealthState.PROGRESSING
    assert v.message.startswith("rolling out: 5/5 updated, 3/5 available; waiting for web-7d9c5-pqrst/app")


def test_hpa_scale_down_completes_at_the_new_target():
    dep = deployment(replicas=2, generation=3, observed=3, status_replicas=2, updated=2, available=2)
    v = run(dep, healthy_pods(2))
    assert (v.state, v.healthy_since) == (HealthState.SOAKING, NOW)


def test_hpa_scale_up_mid_soak_keeps_the_soak_and_waits_for_the_new_replicas():
    dep = deployment(replicas=5, generation=3, observed=3, status_replicas=5, updated=5, available=3)
    created = NOW - dt.timedelta(seconds=30)
    pods = [*healthy_pods(3), never_ready("web-7d9c5-pqrst", created), never_ready("web-7d9c5-uvwxy", created)]
    since = NOW - 6 * MINUTES  # soaked long enough, and past the operator's deadline
    v = run(dep, pods, healthy_since=since, started_at=NOW - 12 * MINUTES)
    assert (v.state, v.healthy_since) == (HealthState.SOAKING, since)  # not Failed, not restarted
    assert "waiting for the current target: 5/5 updated, 3/5 available" in v.message
    # The new pods get the deadline from when they turned not ready.
    assert v.recheck_after == dt.timedelta(seconds=600 - 30 + 1)
    # Once they are ready, the gate is healthy at the new size.
    done = deployment(replicas=5, generation=3, observed=3, status_replicas=5, updated=5, available=5)
    assert run(done, healthy_pods(5), healthy_since=since, started_at=NOW - 12 * MINUTES).state is HealthState.HEALTHY


def test_a_new_pod_never_ready_after_completion_fails_at_its_deadline():
    dep = deployment(replicas=4, generation=3, observed=3, status_replicas=4, updated=4, available=3)
    stuck = never_ready("web-7d9c5-pqrst", created=NOW - 11 * MINUTES)
    v = run(dep, [*healthy_pods(3), stuck], healthy_since=NOW - 12 * MINUTES, started_at=NOW - 15 * MINUTES)
    assert (v.state, v.reason, v.pod) == (HealthState.FAILED, HealthReason.PROGRESS_DEADLINE_EXCEEDED, "web-7d9c5-pqrst")
    assert v.message.startswith("web-7d9c5-pqrst/app: Running, not ready; not ready for more than 10m")


def test_a_brief_readiness_blip_during_the_soak_does_not_fail():
    dep = deployment(available=2)
    blip = pod("web-7d9c5-abcde", running(ready=False), running(image=SIDECAR, name="proxy"), ready=False,
               created=NOW - 30 * MINUTES, ready_since=NOW - dt.timedelta(seconds=20))
    v = run(dep, [blip, *healthy_pods()[1:]], healthy_since=NOW - 3 * MINUTES, started_at=NOW - 40 * MINUTES)
    assert v.state is HealthState.SOAKING


# --- the rollback gate reuses assess with the previous image as the target ---------------


def test_rollback_gate_targets_the_previous_image():
    dep = deployment(image=OLD)
    pods = [old_pod(f"web-5f6b8-{s}") for s in ("aaaaa", "bbbbb", "ccccc")]
    gate = Rollout(progress_deadline_seconds=600, healthy_for=dt.timedelta(0))
    v = run(dep, pods, target={"app": OLD}, gate=gate)
    assert v.state is HealthState.HEALTHY


def test_assess_checks_its_arguments():
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        run(deployment(), [], now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="target_images"):
        assess(deployment=deployment(), pods=[], target_images={}, gate=GATE, started_at=STARTED,
               healthy_since=None, baseline_restarts=None, now=NOW)


# --- drift: fingerprint and changed images ------------------------------------------------


def fp(dep: dict, managed=("app",)) -> str:
    return pod_template_fingerprint(dep, managed_containers=managed)


def test_fingerprint_is_a_sha256_and_stable_across_key_order():
    dep = deployment()
    reordered = copy.deepcopy(dep)
    reordered["spec"]["template"]["spec"] = dict(reversed(list(dep["spec"]["template"]["spec"].items())))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fp(dep))
    assert fp(dep) == fp(reordered)


def edit(path: str, value: Any):
    def apply(dep: dict) -> None:
        *parents, last = path.split(".")
        node = dep
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


@pytest.mark.parametrize(
    ("change", "same"),
    [
        # What the operator itself changes is not drift.
        (edit("spec.template.spec.containers.0.image", OLD), True),
        (edit("spec.template.metadata.annotations", {"imagepatch.dev/patch": "web-c0ff"}), True),
        # Outside the template: an HPA resize, status, metadata.
        (edit("spec.replicas", 7), True),
        (edit("status.availableReplicas", 1), True),
        (edit("metadata.resourceVersion", "50000"), True),
        # A human's change to the template is.
        (edit("spec.template.spec.containers.1.image", "registry.example.com/mesh/proxy:1.23.0"), False),
        (edit("spec.template.spec.containers.0.env", [{"name": "LOG_LEVEL", "value": "debug"}]), False),
        (edit("spec.template.metadata.annotations", {"imagepatch.dev/patch": "web-b7c1", "kubectl.kubernetes.io/restartedAt": "2026-03-10T12:01:00Z"}), False),
        (edit("spec.template.metadata.labels", {"app": "web", "track": "canary"}), False),
    ],
)
def test_fingerprint_ignores_only_what_the_operator_changes(change, same):
    dep = deployment()
    changed = copy.deepcopy(dep)
    change(changed)
    assert (fp(dep) == fp(changed)) is same


def test_fingerprint_without_managed_names_masks_every_image():
    dep = deployment()
    changed = copy.deepcopy(dep)
    changed["spec"]["template"]["spec"]["containers"][1]["image"] = "registry.example.com/mesh/proxy:1.23.0"
    assert fp(dep, None) == fp(changed, None)
    assert fp(dep, None) != fp(dep)  # a different mask, a different fingerprint


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: None, {}),
        (edit("spec.template.spec.containers.0.image", "registry.example.com/shop/web:hotfix"), {"app": "registry.example.com/shop/web:hotfix"}),
        (lambda d: d["spec"]["template"]["spec"]["containers"].pop(0), {"app": None}),
    ],
)
def test_changed_images(mutate, expected):
    dep = deployment()
    mutate(dep)
    assert changed_images(dep, {"app": NEW}) == expected


def test_a_long_gone_node_shutdown_pod_does_not_trip_the_deadline():
    # Failed pods linger until the pod garbage collector removes them.
    shutdown = {"reason": "Terminated", "message": "Pod was terminated in response to imminent node shutdown."}
    lingering = pod("web-7d9c5-zzzzz", phase="Failed", status_extra=shutdown, ready=False, created=NOW - 60 * MINUTES)
    v = run(deployment(), [lingering, *healthy_pods()], healthy_since=NOW - 5 * MINUTES, started_at=NOW - 70 * MINUTES)
    assert v.state is HealthState.HEALTHY
