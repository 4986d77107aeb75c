"""A StatefulSet's forced rollback: which pods to delete, when, and what is recorded first.

Kubernetes documents that an ``OrderedReady`` StatefulSet reverted from a bad
template stays stuck on its broken pod, and that the pods of the bad revision
must then be deleted. ``core.kinds.bad_revision`` and
``core.kinds.forced_rollback`` decide (tables below, objects shaped as
kube-controller-manager writes them); the planner records the revision and
the pods before it asks for the delete; the reconcile loop deletes, on the
in-memory Kube, only what is still as observed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from imagepatch.core import kinds
from imagepatch.core.conditions import format_time
from imagepatch.core.rollout import GATE_POLL, PatchImage, Workload, plan
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.reconcile.rollouts import reconcile_imagepatch
from tests.support.memkube import MemoryKube
from tests.unit.test_rollout_plan import GATE, OPEN, T0, policy

REPO = "registry.local/db/pg"
OLD = f"{REPO}:16"
DIGEST = "sha256:" + "b" * 64
NEW = f"{REPO}:16@{DIGEST}"
UID = "u-sts"
DB = Target(namespace="data", name="db", container="app", kind="StatefulSet")


def sts(image: str = OLD, *, generation: int = 3, observed: int = 3, update: str = "db-old",
        current: str = "db-old", management: str | None = None, strategy: str = "RollingUpdate",
        partition: int = 0, replicas: int = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "db"}},
        "updateStrategy": {"type": strategy, "rollingUpdate": {"partition": partition}},
        "template": {"metadata": {"labels": {"app": "db"}},
                     "spec": {"containers": [{"name": "app", "image": image}]}},
    }
    if management:
        spec["podManagementPolicy"] = management
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "data", "uid": UID, "generation": generation,
                     "resourceVersion": f"rv{generation}"},
        "spec": spec,
        "status": {"observedGeneration": observed, "replicas": replicas, "readyReplicas": 1,
                   "updatedReplicas": 1, "currentRevision": current, "updateRevision": update},
    }


def pod(ordinal: int, *, revision: str, image: str, ready: bool, phase: str = "Running",
        owner: str = UID, uid: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"db-{ordinal}", "namespace": "data", "uid": uid if uid is not None else
        f"pod-{ordinal}-{revision}", "resourceVersion": f"p{ordinal}",
        "labels": {"app": "db", "controller-revision-hash": revision,
                   "apps.kubernetes.io/pod-index": str(ordinal)},
        "ownerReferences": [{"kind": "StatefulSet", "name": "db", "uid": owner,
                             "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T09:00:00Z"
    state = {"running": {}} if ready else {"waiting": {"reason": "CrashLoopBackOff"}}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": phase,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "app", "image": image, "ready": ready,
                                          "restartCount": 0 if ready else 3, "state": state}]},
    }


def good(ordinal: int, **kw: Any) -> dict[str, Any]:
    return pod(ordinal, revision="db-old", image=OLD, ready=True, **kw)


def broken(ordinal: int, **kw: Any) -> dict[str, Any]:
    kw.setdefault("ready", False)
    return pod(ordinal, revision="db-bad", image=NEW, **kw)


def names(found: tuple[kinds.StuckPod, ...]) -> list[str]:
    return [p.name for p in found]


# --- which pods: core.kinds.forced_rollback ----------------------------------------------


@pytest.mark.parametrize(("case", "workload", "pods", "deleted"), [
    ("the default policy: the broken pod of the bad revision",
     sts(), [good(0), broken(1)], ["db-1"]),
    ("OrderedReady named", sts(management="OrderedReady"), [good(0), broken(1)], ["db-1"]),
    ("a Ready pod of the bad revision is the controller's to replace",
     sts(), [broken(0, ready=True), broken(1)], ["db-1"]),
    ("every blocking pod, by ordinal", sts(), [broken(1), broken(0)], ["db-0", "db-1"]),
    ("a Pending pod (an image that never pulls) blocks too",
     sts(), [good(0), broken(1, phase="Pending")], ["db-1"]),
    ("Ready but not Running does not count as Ready",
     sts(), [good(0), broken(1, ready=True, phase="Pending")], ["db-1"]),
    ("Parallel: its controller may wait on it too (MaxUnavailableStatefulSet)",
     sts(management="Parallel"), [good(0), broken(1)], ["db-1"]),
    ("Parallel, the controller deleting it already",
     sts(management="Parallel"), [good(0), broken(1, deleting=True)], []),
    ("OnDelete is never patched", sts(strategy="OnDelete"), [good(0), broken(1)], []),
    ("the controller has not observed the restored template yet",
     sts(observed=2), [good(0), broken(1)], []),
    ("the update revision is still the bad one",
     sts(update="db-bad"), [good(0), broken(1)], []),
    ("no update revision reported", sts(update=""), [good(0), broken(1)], []),
    ("a pod another owner holds", sts(), [good(0), broken(1, owner="u-other")], []),
    ("a pod already terminating", sts(), [good(0), broken(1, deleting=True)], []),
    ("a pod the controller replaces itself (Failed)",
     sts(), [good(0), broken(1, phase="Failed")], []),
    ("a pod the controller replaces itself (Succeeded)",
     sts(), [good(0), broken(1, phase="Succeeded")], []),
    ("below the partition: the owner's, never ours",
     sts(partition=1), [broken(0), broken(1)], ["db-1"]),
    ("a pod with no uid cannot carry its precondition",
     sts(), [good(0), broken(1, uid="")], []),
    ("a pod of another, older revision", sts(),
     [good(0), pod(1, revision="db-older", image=OLD, ready=False)], []),
])
def test_forced_rollback_deletes_only_the_blocking_pods_of_the_bad_revision(
    case: str, workload: dict, pods: list, deleted: list[str]
) -> None:
    assert names(kinds.forced_rollback(workload, pods, bad_revision="db-bad")) == deleted, case


def test_forced_rollback_needs_a_bad_revision_and_carries_the_preconditions() -> None:
    assert kinds.forced_rollback(sts(), [broken(1)], bad_revision="") == ()
    [stuck] = kinds.forced_rollback(sts(), [broken(1)], bad_revision="db-bad")
    assert stuck == kinds.StuckPod(name="db-1", uid="pod-1-db-bad", resource_version="p1")


# --- which revision: core.kinds.bad_revision ---------------------------------------------


@pytest.mark.parametrize(("case", "workload", "pods", "revision"), [
    ("the bad template, observed: the controller's updateRevision",
     sts(NEW, update="db-bad"), [], "db-bad"),
    ("the bad template, not observed yet: the pods that run it",
     sts(NEW, observed=2, update="db-old"), [good(0), broken(1)], "db-bad"),
    ("restored: the pods that still run the bad image", sts(), [good(0), broken(1)], "db-bad"),
    ("restored, no pod runs it any more", sts(), [good(0), good(1)], ""),
    ("pods of another owner do not count", sts(), [good(0), broken(1, owner="u-other")], ""),
    ("two revisions run the image: none is certain",
     sts(), [broken(0), pod(1, revision="db-bad2", image=NEW, ready=False)], ""),
    ("a pod without the revision label", sts(),
     [{**broken(1), "metadata": {**broken(1)["metadata"], "labels": {}}}], ""),
])
def test_bad_revision_is_the_controllers_record_or_the_pods_that_run_the_image(
    case: str, workload: dict, pods: list, revision: str
) -> None:
    assert kinds.bad_revision(workload, pods, container="app", image=NEW) == revision, case


def test_bad_revision_reads_init_containers_of_pods_too() -> None:
    sidecar = broken(1)
    sidecar["spec"] = {"containers": [{"name": "db", "image": OLD}],
                       "initContainers": [{"name": "app", "image": NEW}]}
    assert kinds.bad_revision(sts(), [sidecar], container="app", image=NEW) == "db-bad"
    assert kinds.bad_revision(sts(), [sidecar], container="gone", image=NEW) == ""


# --- the planner: record first, then delete -----------------------------------------------


def entry(phase: str = "RollingBack", **extra: Any) -> dict[str, Any]:
    return {"namespace": "data", "name": "db", "container": "app", "kind": "StatefulSet",
            "wave": 0, "phase": phase, "previousImage": OLD, "targetImage": NEW,
            "startedAt": format_time(T0), "rollbackStartedAt": format_time(T0),
            "reason": "CrashLoopBackOff", "message": "db-1/app: CrashLoopBackOff", **extra}


def step_for(rollout: dict[str, Any], workload: dict, pods: list, *, now: dt.datetime = T0,
             status: dict[str, Any] | None = None):
    """The planner's step for a patch whose one entry is ``rollout`` (or whose status is ``status``)."""
    patch = parse_imagepatch({
        "metadata": {"name": "p1", "generation": 1},
        "spec": {"image": REPO, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST},
        "status": status or {"phase": "RollingOut", "failedDigests": [DIGEST],
                             "rollouts": [rollout]},
    })
    return plan(patch=patch, policy=policy(rollout=GATE), candidates=None,
                workload=Workload(target=DB, deployment=workload, pods=tuple(pods)),
                window=OPEN, now=now)


def test_the_bad_revision_is_recorded_with_the_rollback_write() -> None:
    # The bad template is live and observed: its updateRevision is the bad revision.
    step = step_for(entry(), sts(NEW, update="db-bad"), [good(0), broken(1)])
    assert isinstance(step.action, PatchImage) and step.action.image == OLD
    assert step.status["rollouts"][0]["badRevision"] == "db-bad"  # written before the action
    assert step.delete_pods is None


def test_a_deployment_rollback_records_no_revision() -> None:
    dep = sts(NEW, update="db-bad")
    target = Target(namespace="data", name="db", container="app")
    patch = parse_imagepatch({
        "metadata": {"name": "p1", "generation": 1},
        "spec": {"image": REPO, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST},
        "status": {"phase": "RollingOut", "rollouts": [{**entry(), "kind": "Deployment"}]},
    })
    step = plan(patch=patch, policy=policy(rollout=GATE), candidates=None,
                workload=Workload(target=target, deployment=dep, pods=()), window=OPEN, now=T0)
    assert isinstance(step.action, PatchImage)
    assert "badRevision" not in step.status["rollouts"][0]


def test_the_blocking_pods_are_named_in_the_entry_then_deleted() -> None:
    step = step_for(entry(badRevision="db-bad"), sts(), [good(0), broken(1)],
                    now=T0 + dt.timedelta(seconds=4))
    [recorded] = step.status["rollouts"]
    assert recorded["deletedPods"] == ["db-1"]
    assert recorded["message"].startswith("db-1/app: CrashLoopBackOff; forced rollback: deleted"
                                          " pod db-1 of the bad revision db-bad")
    assert step.delete_pods is not None and step.delete_pods.target == DB
    assert names(step.delete_pods.pods) == ["db-1"]
    [event] = step.events
    assert (event.type, event.reason) == ("Warning", "ForcedRollback")
    assert "db-1" in event.message and OLD in event.message
    assert step.action is None and step.again


def test_a_pod_named_before_and_still_there_is_deleted_again_without_a_new_record() -> None:
    before = step_for(entry(badRevision="db-bad"), sts(), [good(0), broken(1)])
    again = step_for({}, sts(), [good(0), broken(1)], status=before.status)
    assert again.status == {}  # nothing new to record
    assert again.delete_pods is not None and names(again.delete_pods.pods) == ["db-1"]
    assert again.events == ()


def test_a_later_blocking_pod_is_added_to_the_note_not_appended_twice() -> None:
    first = step_for(entry(badRevision="db-bad"), sts(), [broken(0, ready=True), broken(1)])
    recorded = first.status["rollouts"][0]
    # db-1 is back on the restored revision; db-0 has since crashed too.
    later = step_for(recorded, sts(), [broken(0), good(1)])
    [entry_now] = later.status["rollouts"]
    assert entry_now["deletedPods"] == ["db-1", "db-0"]
    assert entry_now["message"].count("forced rollback") == 1
    assert "deleted pods db-1, db-0 of the bad revision db-bad" in entry_now["message"]
    assert names(later.delete_pods.pods) == ["db-0"]


def test_no_more_than_the_limit_are_deleted_and_the_rest_are_left_for_a_human(monkeypatch) -> None:
    monkeypatch.setattr(kinds, "FORCED_ROLLBACK_LIMIT", 1)
    step = step_for(entry(badRevision="db-bad"), sts(), [broken(0), broken(1)])
    [recorded] = step.status["rollouts"]
    assert recorded["deletedPods"] == ["db-0"]
    assert names(step.delete_pods.pods) == ["db-0"]
    assert "1 more such pod left for a human (at most 1 are deleted)" in recorded["message"]
    full = step_for(recorded, sts(), [good(0), broken(1)])
    assert full.delete_pods is None  # the record is full: nothing beyond it is deleted
    assert full.requeue_after == GATE_POLL


def test_a_revision_not_known_at_the_rollback_write_is_learned_from_the_pods() -> None:
    # The controller had not observed the bad template when it was reverted.
    step = step_for(entry(), sts(NEW, observed=2), [good(0), good(1)])
    assert isinstance(step.action, PatchImage)
    assert "badRevision" not in step.status.get("rollouts", [{}])[0]
    # Restored: a pod still runs the bad image, so its revision is the bad one.
    later = step_for(entry(), sts(), [good(0), broken(1)])
    [recorded] = later.status["rollouts"]
    assert (recorded["badRevision"], recorded["deletedPods"]) == ("db-bad", ["db-1"])


def test_a_learned_revision_is_recorded_even_with_nothing_to_delete_yet() -> None:
    # Observed restored template, but the broken pod is Ready at this moment.
    step = step_for(entry(), sts(), [good(0), broken(1, ready=True)])
    assert step.status["rollouts"][0]["badRevision"] == "db-bad"
    assert step.delete_pods is None and step.requeue_after == GATE_POLL


def test_a_pod_the_controller_is_deleting_already_is_waited_for() -> None:
    step = step_for(entry(badRevision="db-bad"), sts(management="Parallel"),
                    [good(0), broken(1, deleting=True)])
    assert step.delete_pods is None and step.requeue_after == GATE_POLL
    assert "deletedPods" not in (step.status.get("rollouts") or [{}])[0]


def test_once_the_restored_pods_are_ready_the_target_is_rolled_back() -> None:
    done = sts(current="db-old")
    done["status"].update(readyReplicas=2, updatedReplicas=2)
    step = step_for(entry(badRevision="db-bad", deletedPods=["db-1"]), done, [good(0), good(1)])
    [recorded] = step.status["rollouts"]
    assert recorded["phase"] == "RolledBack" and recorded["deletedPods"] == ["db-1"]
    assert step.status["phase"] == "RolledBack"


# --- the reconcile loop: record, then delete what is still as observed -------------------------


def given_a_reverted_statefulset() -> MemoryKube:
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}, "rollout": GATE})
    kube.add_workload("StatefulSet", "data", "db", image=OLD, policy="pol",
                      spec={"replicas": 2})
    obj = kube.statefulsets[("data", "db")]
    obj["metadata"]["uid"] = UID
    obj["status"] = sts()["status"]
    obj["status"]["observedGeneration"] = obj["metadata"]["generation"]
    kube.pods["data"] = [good(0), broken(1)]
    kube.add_patch("p1", {"image": REPO, "policy": "pol", "reason": "Manual",
                          "targetDigest": DIGEST})
    kube.patches["p1"]["status"] = {"phase": "RollingOut", "failedDigests": [DIGEST],
                                    "rollouts": [entry(badRevision="db-bad")]}
    return kube


def reconcile(kube: MemoryKube):
    return asyncio.run(reconcile_imagepatch(name="p1", kube=kube, clock=lambda: T0))


def test_the_reconcile_loop_records_the_pods_then_deletes_them_once() -> None:
    kube = given_a_reverted_statefulset()
    order: list[str] = []
    record, delete = kube.write_imagepatch_status, kube.delete_stuck_pods

    async def recording(name, status, *, resource_version):
        order.append(f"record {status['rollouts'][0].get('deletedPods')}")
        return await record(name, status, resource_version=resource_version)

    async def deleting(namespace, pods):
        order.append(f"delete {[p.name for p in pods]}")
        return await delete(namespace, pods)

    kube.write_imagepatch_status, kube.delete_stuck_pods = recording, deleting
    assert reconcile(kube) == GATE_POLL
    assert order[:2] == ["record ['db-1']", "delete ['db-1']"]
    assert [p["metadata"]["name"] for p in kube.pods["data"]] == ["db-0"]
    reconcile(kube)
    assert kube.calls["delete_stuck_pods"] == 1  # gone: nothing to delete again


def test_a_pod_changed_since_it_was_read_is_not_deleted() -> None:
    kube = given_a_reverted_statefulset()
    delete = kube.delete_stuck_pods

    async def it_gets_ready_first(namespace, pods):
        # db-1 turned Ready between the read and the delete (a new resourceVersion).
        kube.pods["data"][1] = broken(1, ready=True)
        kube.pods["data"][1]["metadata"]["resourceVersion"] = "p1-ready"
        return await delete(namespace, pods)

    kube.delete_stuck_pods = it_gets_ready_first
    assert reconcile(kube) == GATE_POLL
    # Not deleted: the delete's precondition failed, and the next plan saw it Ready.
    assert [p["metadata"]["name"] for p in kube.pods["data"]] == ["db-0", "db-1"]
    assert kube.calls["delete_stuck_pods"] == 1
    assert kube.patches["p1"]["status"]["rollouts"][0]["deletedPods"] == ["db-1"]
