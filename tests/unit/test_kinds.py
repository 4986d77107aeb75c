"""Workload kinds: containers of every list, OnDelete, and each kind's own health gate.

Objects are shaped as kube-controller-manager writes them: a StatefulSet's
``updateRevision``/``currentRevision`` and its pods' ``controller-revision-hash``
and ``apps.kubernetes.io/pod-index`` labels; a DaemonSet's
``desiredNumberScheduled``/``updatedNumberScheduled``/``numberAvailable``;
a CronJob's Jobs with ownerReferences and ``Complete``/``Failed`` conditions.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagepatch.core import kinds
from imagepatch.core.health import HealthReason, HealthState, pod_template_fingerprint
from imagepatch.model.policy import Rollout

OLD = "registry.example.com/db/pg:16@sha256:" + "a" * 64
NEW = "registry.example.com/db/pg:16@sha256:" + "b" * 64
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
STARTED = NOW - dt.timedelta(minutes=2)
GATE = Rollout(progress_deadline_seconds=600, healthy_for=dt.timedelta(minutes=5), max_restarts=0)
TARGET = {"app": NEW}


def ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str, *, image: str, revision: str = "", ready: bool = True,
        waiting: str | None = None, ordinal: int | None = None) -> dict[str, Any]:
    labels = {"app": "db"}
    if revision:
        labels["controller-revision-hash"] = revision
    if ordinal is not None:
        labels["apps.kubernetes.io/pod-index"] = str(ordinal)
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": ts(STARTED)}}
    return {
        "metadata": {"name": name, "labels": labels, "creationTimestamp": ts(STARTED)},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "lastTransitionTime": ts(STARTED)}],
            "containerStatuses": [{"name": "app", "image": image, "ready": ready,
                                   "restartCount": 0, "state": state}],
        },
    }


def statefulset(*, replicas: int = 3, partition: int = 0, updated: int = 3,
                current: str = "db-new", update: str = "db-new", observed: int = 2,
                strategy: str = "RollingUpdate") -> dict[str, Any]:
    update_strategy: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate":
        update_strategy["rollingUpdate"] = {"partition": partition}
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "data", "generation": 2, "uid": "u-sts"},
        "spec": {"replicas": replicas, "updateStrategy": update_strategy,
                 "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}},
        "status": {"observedGeneration": observed, "replicas": replicas,
                   "updatedReplicas": updated, "readyReplicas": replicas,
                   "availableReplicas": replicas, "currentRevision": current,
                   "updateRevision": update},
    }


def sts_pods(replicas: int, *, updated_from: int, ready: bool = True) -> list[dict[str, Any]]:
    """Ordinals >= updated_from run NEW at db-new; below run OLD at db-old."""
    return [
        pod(f"db-{i}", image=NEW if i >= updated_from else OLD,
            revision="db-new" if i >= updated_from else "db-old", ordinal=i,
            ready=ready if i >= updated_from else True)
        for i in range(replicas)
    ]


def gate(kind: str, obj: dict[str, Any], pods: list[dict[str, Any]], **kw: Any):
    args: dict[str, Any] = dict(kind=kind, workload=obj, pods=pods, target_images=TARGET,
                                gate=GATE, started_at=STARTED, healthy_since=None, now=NOW)
    args.update(kw)
    return kinds.assess(**args)


# --- containers -----------------------------------------------------------------------


def test_every_container_list_counts_but_ephemeral_containers_never_do() -> None:
    workload = {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "a"}],
        "initContainers": [{"name": "migrate", "image": "m"},
                           {"name": "proxy", "image": "p", "restartPolicy": "Always"}],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
    }}}}
    assert [(k, c["name"]) for k, c in kinds.containers(workload)] == [
        ("containers", "app"), ("initContainers", "migrate"), ("initContainers", "proxy")]
    assert kinds.find_container(workload, "proxy")[0] == "initContainers"
    assert kinds.is_native_sidecar(kinds.find_container(workload, "proxy")[1])
    assert not kinds.is_native_sidecar(kinds.find_container(workload, "migrate")[1])
    assert kinds.find_container(workload, "debugger") is None
    assert kinds.find_container(None, "app") is None


def test_a_cronjobs_containers_are_in_its_job_template() -> None:
    cronjob = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "report", "image": OLD}]}}}}}}
    assert kinds.find_container(cronjob, "report") == ("containers", {"name": "report",
                                                                      "image": OLD})
    # The drift fingerprint reads the same template.
    changed = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "report", "image": OLD, "env": [{"name": "X"}]}]}}}}}}
    assert pod_template_fingerprint(cronjob) != pod_template_fingerprint(changed)
    assert kinds.api_version("CronJob") == "batch/v1"
    assert kinds.api_version("StatefulSet") == "apps/v1"


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_on_delete_is_not_patched_and_says_what_to_change(kind: str) -> None:
    obj = {"metadata": {"name": "db", "namespace": "data"},
           "spec": {"updateStrategy": {"type": "OnDelete"}}}
    reason, message = kinds.not_patchable(kind, obj)
    assert reason == "OnDeleteStrategy"
    assert "RollingUpdate" in message and f"{kind} data/db" in message
    rolling = {"spec": {"updateStrategy": {"type": "RollingUpdate"}}}
    assert kinds.not_patchable(kind, rolling) is None
    assert kinds.not_patchable("Deployment", obj) is None


# --- StatefulSet ----------------------------------------------------------------------


def test_statefulset_rolled_out_and_ready_soaks_then_is_healthy() -> None:
    verdict = gate("StatefulSet", statefulset(), sts_pods(3, updated_from=0))
    assert (verdict.state, verdict.reason) == (HealthState.SOAKING, HealthReason.SOAKING)
    assert "3/3 ordinals updated and ready" in verdict.message
    later = gate("StatefulSet", statefulset(), sts_pods(3, updated_from=0),
                 healthy_since=NOW - dt.timedelta(minutes=6))
    assert later.state is HealthState.HEALTHY


def test_statefulset_waits_until_current_revision_catches_up() -> None:
    # Every pod updated, but the controller has not yet moved currentRevision.
    obj = statefulset(current="db-old")
    verdict = gate("StatefulSet", obj, sts_pods(3, updated_from=0))
    assert verdict.state is HealthState.PROGRESSING


def test_statefulset_waits_for_the_controller_to_observe_the_generation() -> None:
    verdict = gate("StatefulSet", statefulset(observed=1), sts_pods(3, updated_from=0))
    assert verdict.state is HealthState.PROGRESSING
    assert "has not observed the latest generation" in verdict.message


def test_statefulset_with_an_old_ordinal_left_is_not_complete() -> None:
    obj = statefulset(updated=2, current="db-old")
    verdict = gate("StatefulSet", obj, sts_pods(3, updated_from=1))
    assert verdict.state is HealthState.PROGRESSING
    assert "2/3 updated" in verdict.message and "1 old pod left" in verdict.message


def test_statefulset_partition_gates_only_the_ordinals_it_updates() -> None:
    # partition 2 of 3: only db-2 is updated; db-0 and db-1 stay, and the
    # currentRevision stays old, as the controller leaves it.
    obj = statefulset(partition=2, updated=1, current="db-old")
    verdict = gate("StatefulSet", obj, sts_pods(3, updated_from=2))
    assert verdict.state is HealthState.SOAKING, verdict.message
    assert "partition 2" in verdict.message
    # An updated ordinal that is not ready holds the gate.
    waiting = gate("StatefulSet", obj, sts_pods(3, updated_from=2, ready=False))
    assert waiting.state is HealthState.PROGRESSING
    assert "db-2/app" in waiting.message


def test_statefulset_partition_at_or_above_replicas_is_applied_but_unverified() -> None:
    verdict = gate("StatefulSet", statefulset(partition=3, updated=0, current="db-old"),
                   sts_pods(3, updated_from=3))
    assert (verdict.state, verdict.reason) == (HealthState.SCALED_TO_ZERO,
                                               HealthReason.PARTITIONED)
    assert "lower the partition" in verdict.message


def test_statefulset_scaled_to_zero_is_unverified() -> None:
    verdict = gate("StatefulSet", statefulset(replicas=0, updated=0), [])
    assert verdict.reason is HealthReason.SCALED_TO_ZERO


def test_statefulset_crashloop_on_an_updated_ordinal_fails_at_once() -> None:
    pods = sts_pods(3, updated_from=2)
    pods[2] = pod("db-2", image=NEW, revision="db-new", ordinal=2, ready=False,
                  waiting="CrashLoopBackOff")
    pods[2]["status"]["containerStatuses"][0]["restartCount"] = 2
    verdict = gate("StatefulSet", statefulset(updated=1, current="db-old"), pods)
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.CRASH_LOOP_BACK_OFF)
    assert verdict.pod == "db-2" and verdict.container == "app"


def test_statefulset_ordinal_from_the_pod_name_when_the_label_is_missing() -> None:
    pods = sts_pods(3, updated_from=2)
    for p in pods:
        del p["metadata"]["labels"]["apps.kubernetes.io/pod-index"]
    obj = statefulset(partition=2, updated=1, current="db-old")
    assert gate("StatefulSet", obj, pods).state is HealthState.SOAKING


def test_statefulset_not_rolled_out_within_the_deadline_fails() -> None:
    obj = statefulset(updated=2, current="db-old")
    verdict = gate("StatefulSet", obj, sts_pods(3, updated_from=1),
                   started_at=NOW - dt.timedelta(minutes=11))
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.PROGRESS_DEADLINE_EXCEEDED)


# --- DaemonSet ------------------------------------------------------------------------


def daemonset(*, desired: int = 2, updated: int = 2, available: int = 2, unavailable: int = 0,
              observed: int = 2, max_unavailable: Any = 1) -> dict[str, Any]:
    return {
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system", "generation": 2},
        "spec": {"updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": max_unavailable}},
                 "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}},
        "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                   "currentNumberScheduled": desired, "updatedNumberScheduled": updated,
                   "numberAvailable": available, "numberUnavailable": unavailable,
                   "numberReady": available},
    }


def test_daemonset_every_node_updated_and_available_soaks() -> None:
    pods = [pod("agent-x", image=NEW), pod("agent-y", image=NEW)]
    verdict = gate("DaemonSet", daemonset(), pods)
    assert verdict.state is HealthState.SOAKING
    assert "2/2 nodes updated and available" in verdict.message


def test_daemonset_rollout_held_at_its_max_unavailable_budget_says_so() -> None:
    pods = [pod("agent-x", image=NEW, ready=False), pod("agent-y", image=OLD)]
    verdict = gate("DaemonSet", daemonset(updated=1, available=1, unavailable=1), pods)
    assert verdict.state is HealthState.PROGRESSING
    assert "1 unavailable (maxUnavailable 1)" in verdict.message
    assert "waits for these before updating more nodes" in verdict.message
    assert "agent-x/app" in verdict.message


@pytest.mark.parametrize(("budget", "unavailable", "used"), [
    ("50%", 1, False),  # 50% of 4 nodes is 2
    ("50%", 2, True),
    ("10%", 1, True),  # rounded up to 1 node
    (2, 1, False),
    ("not-a-budget", 3, False),
])
def test_daemonset_budget_in_nodes_or_percent_rounded_up(
    budget: Any, unavailable: int, used: bool
) -> None:
    obj = daemonset(desired=4, updated=4 - unavailable, available=4 - unavailable,
                    unavailable=unavailable, max_unavailable=budget)
    verdict = gate("DaemonSet", obj, [pod("agent-x", image=NEW)])
    assert f"maxUnavailable {budget}" in verdict.message
    assert ("waits for these" in verdict.message) is used


def test_daemonset_not_observed_yet_is_progressing() -> None:
    verdict = gate("DaemonSet", daemonset(observed=1), [pod("agent-x", image=NEW)])
    assert verdict.state is HealthState.PROGRESSING
    assert "DaemonSet controller has not observed" in verdict.message


def test_daemonset_on_no_node_is_unverified() -> None:
    verdict = gate("DaemonSet", daemonset(desired=0, updated=0, available=0), [])
    assert (verdict.state, verdict.reason) == (HealthState.SCALED_TO_ZERO,
                                               HealthReason.NO_PODS_SCHEDULED)


def test_daemonset_image_pull_failure_fails_at_once() -> None:
    pods = [pod("agent-x", image=NEW, ready=False, waiting="ImagePullBackOff")]
    verdict = gate("DaemonSet", daemonset(updated=1, available=1, unavailable=1), pods)
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.IMAGE_PULL_BACK_OFF)


# --- CronJob --------------------------------------------------------------------------


def cronjob(*, suspend: bool = False) -> dict[str, Any]:
    return {
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "batch", "uid": "u-cj"},
        "spec": {"schedule": "0 3 * * *", "suspend": suspend, "jobTemplate": {"spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}}}},
        "status": {"lastScheduleTime": ts(NOW - dt.timedelta(days=1))},
    }


def job(name: str, *, created: dt.datetime, image: str = NEW, condition: str | None = None,
        reason: str = "", owner: str = "u-cj", started: dt.datetime | None = None) -> dict:
    status: dict[str, Any] = {"startTime": ts(started or created)}
    if condition:
        status["conditions"] = [{"type": condition, "status": "True", "reason": reason,
                                 "message": "Job has reached the specified backoff limit"
                                 if condition == "Failed" else ""}]
    return {
        "metadata": {"name": name, "namespace": "batch", "creationTimestamp": ts(created),
                     "ownerReferences": [{"kind": "CronJob", "uid": owner}]},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": status,
    }


def cron_gate(jobs: list[dict], **kw: Any):
    return gate("CronJob", kw.pop("cronjob", cronjob()), [], jobs=jobs, **kw)


def test_cronjob_waits_for_its_next_run_without_a_deadline() -> None:
    old_run = job("report-1", created=STARTED - dt.timedelta(hours=20), image=OLD,
                  condition="Complete")
    verdict = cron_gate([old_run], started_at=NOW - dt.timedelta(hours=5))
    assert verdict.state is HealthState.PROGRESSING
    assert "waiting for the next run of CronJob batch/report" in verdict.message
    assert "schedule 0 3 * * *" in verdict.message


def test_cronjob_passes_when_the_first_run_on_the_new_image_completes() -> None:
    verdict = cron_gate([job("report-2", created=NOW, condition="Complete")])
    assert (verdict.state, verdict.reason) == (HealthState.HEALTHY, HealthReason.HEALTHY)
    assert "Job report-2" in verdict.message


def test_cronjob_fails_with_the_jobs_reason() -> None:
    verdict = cron_gate([job("report-2", created=NOW, condition="Failed",
                             reason="BackoffLimitExceeded")])
    assert (verdict.state, verdict.reason) == (HealthState.FAILED, HealthReason.JOB_FAILED)
    assert "Job report-2 of CronJob batch/report failed (BackoffLimitExceeded" in verdict.message


def test_cronjob_ignores_other_owners_older_runs_and_other_templates() -> None:
    jobs = [
        job("other", created=NOW, condition="Failed", owner="someone-else"),
        job("before", created=STARTED - dt.timedelta(seconds=5), condition="Failed"),
        job("old-template", created=NOW, image=OLD, condition="Failed"),
    ]
    assert cron_gate(jobs).state is HealthState.PROGRESSING


def test_cronjob_run_that_does_not_finish_within_the_deadline_fails() -> None:
    running = job("report-2", created=NOW - dt.timedelta(minutes=11),
                  started=NOW - dt.timedelta(minutes=11))
    verdict = cron_gate([running], started_at=NOW - dt.timedelta(minutes=12))
    assert (verdict.state, verdict.reason) == (HealthState.FAILED,
                                               HealthReason.PROGRESS_DEADLINE_EXCEEDED)
    soon = cron_gate([job("report-2", created=NOW)])
    assert soon.state is HealthState.PROGRESSING and "Job report-2" in soon.message
    assert soon.recheck_after is not None


def test_suspended_cronjob_is_applied_but_unverified() -> None:
    verdict = cron_gate([], cronjob=cronjob(suspend=True))
    assert (verdict.state, verdict.reason) == (HealthState.SCALED_TO_ZERO,
                                               HealthReason.CRONJOB_SUSPENDED)


def test_cronjob_rollback_needs_no_run() -> None:
    verdict = cron_gate([], rollback=True)
    assert verdict.state is HealthState.HEALTHY
    assert "restored template" in verdict.message


def test_deployment_goes_through_the_deployment_gate() -> None:
    dep = {"metadata": {"name": "web", "namespace": "shop", "generation": 1},
           "spec": {"replicas": 1, "paused": True}, "status": {}}
    verdict = gate("Deployment", dep, [])
    assert verdict.reason is HealthReason.DEPLOYMENT_PAUSED


def test_trial_job_names_are_deterministic_bounded_and_new_per_rollout() -> None:
    name = kinds.trial_job_name("report", patch="p1", started_at="2026-03-10T12:00:00Z")
    assert name == kinds.trial_job_name("report", patch="p1", started_at="2026-03-10T12:00:00Z")
    assert name.startswith("report-imagepatch-") and len(name) == len("report-imagepatch-") + 10
    assert name != kinds.trial_job_name("report", patch="p1", started_at="2026-03-10T12:05:00Z")
    long = kinds.trial_job_name("x" * 52, patch="p", started_at="t")
    assert len(long) <= 63


def test_a_trial_run_only_for_a_cronjob_that_asks_and_is_not_suspended() -> None:
    trial = Rollout(cron_job_trial_run=True)
    assert kinds.trial_run_wanted("CronJob", cronjob(), trial)
    assert not kinds.trial_run_wanted("CronJob", cronjob(suspend=True), trial)
    assert not kinds.trial_run_wanted("CronJob", cronjob(), GATE)
    assert not kinds.trial_run_wanted("StatefulSet", statefulset(), trial)


# -- the registry: one module per kind, dispatched by name --------------------------------


def test_the_registry_lists_each_kind_once_in_watch_order():
    assert kinds.KINDS == ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Rollout")
    assert {k: kinds.api_version(k) for k in kinds.KINDS} == {
        "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
        "Rollout": "argoproj.io/v1alpha1",
        "CronJob": "batch/v1"}
    assert kinds.api_version("Unknown") == "apps/v1"


def test_an_unknown_kind_is_patchable_and_gated_as_a_deployment():
    assert kinds.registered("Unknown") is kinds.REGISTRY["Deployment"]
    assert kinds.not_patchable("Unknown", {"spec": {"updateStrategy": {"type": "OnDelete"}}}) is None


def test_a_kind_is_one_entry_whose_gate_judges_its_controllers_report():
    # Given: a kind that reports every rollout complete, registered with progress_gate.
    from imagepatch.core.health import Progress
    from imagepatch.core.kinds.shared import Kind, progress_gate

    done = Kind(name="Example", api_version="example/v1", gate=progress_gate(
        lambda workload, pods: Progress(want=0, complete=True, counts="", done_text="done")))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # Then: the shared gate soaks it like any other kind.
    verdict = done.gate(workload={}, pods=[], jobs=[], target_images={"app": "x"},
                        gate=Rollout(progress_deadline_seconds=60, healthy_for=dt.timedelta(0)),
                        started_at=now, healthy_since=None, now=now, rollback=False)
    assert verdict.state == HealthState.HEALTHY
    assert done.not_patchable({}) is None
