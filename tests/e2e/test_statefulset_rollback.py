"""A StatefulSet whose new pod crash-loops is really restored, under both pod management policies.

Given the operator under its shipped RBAC on the local cluster (the real
StatefulSet controller; kwok plays the kubelet), a two-replica StatefulSet
whose pods crash-loop once they run the patch's digest (the kwok
crash-loop-by-digest stage), and an ImagePatch to that digest.

With ``podManagementPolicy: OrderedReady`` (the Kubernetes default) the
controller replaces the highest ordinal first and then waits for it to be
Running and Ready before it does anything else, so after the template is
reverted the crash-looping pod would stay forever: Kubernetes' documented
"forced rollback" is to delete the pods of the bad revision
(https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/#forced-rollback).
The operator records that revision in the rollout entry, deletes only the
broken pods of it, and the patch ends ``RolledBack`` with every pod Ready on
the restored revision. With ``Parallel`` the controller (1.34, default
features) deletes the broken pod itself, before the operator sees the restored
template observed; either way every pod ends Ready on the restored revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok

APP = "registry.local/sts/app"
OLD = f"{APP}:3.1"
# A short deadline: on a build without forced rollback, the OrderedReady case
# ends Failed when it expires (the broken pod never goes away).
FAST_GATE = {"progressDeadlineSeconds": 45, "healthyFor": "2s", "maxRestarts": 0}


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def pods_of(given: Scenario, ns: str) -> dict[str, dict]:
    items = json.loads(given.kube.kubectl("get", "pods", "-n", ns, "-o", "json"))["items"]
    return {p["metadata"]["name"]: p for p in items}


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions") or [])


@pytest.mark.parametrize("management", ["OrderedReady", "Parallel"])
def test_crash_looping_statefulset_is_rolled_back_onto_ready_pods(
    given: Scenario, management: str
) -> None:
    policy, patch = unique("pol"), unique("patch")
    digest = fake_digest(f"sts-bad-{management}-{patch}")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload("StatefulSet", ns, "db", image=OLD, policy=policy, replicas=2,
                   crashloop_on=digest, pod_management=management)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    status = done["status"]
    assert status["phase"] == "RolledBack", json.dumps(status, indent=1)
    [entry] = status["rollouts"]
    assert entry["reason"] == "CrashLoopBackOff"
    assert given.template_image("StatefulSet", ns, "db") == OLD
    # Every pod is back on the restored revision, Ready, running the old image.
    sts = given.wait_rolled_out("StatefulSet", ns, "db")
    restored = sts["status"]["updateRevision"]
    assert sts["status"]["currentRevision"] == restored
    pods = pods_of(given, ns)
    assert sorted(pods) == ["db-0", "db-1"]
    for pod in pods.values():
        assert pod["metadata"]["labels"]["controller-revision-hash"] == restored
        assert pod["spec"]["containers"][0]["image"] == OLD
        assert ready(pod), json.dumps(pod["status"])
    # The revision that ran the bad digest was recorded before any pod was deleted.
    bad = entry["badRevision"]
    assert bad.startswith("db-") and bad != restored
    if management == "OrderedReady":
        # The controller replaces db-1 (the highest ordinal) first and waits
        # on it; that broken pod, and only it, was deleted.
        assert entry["deletedPods"] == ["db-1"]
        assert f"deleted pod db-1 of the bad revision {bad}" in entry["message"]
    else:
        # The Parallel controller deletes a broken pod of an old revision itself,
        # usually first; a delete of ours would have been of that pod only.
        assert entry.get("deletedPods", ["db-1"]) == ["db-1"]
    print(f"{management}: rolled back; deleted by the operator: {entry.get('deletedPods')};"
          f" entry message: {entry['message']}")
