"""Every workload kind and every container: roll forward, and roll back with the reason.

Given the operator under its shipped RBAC on the local cluster (the real
kube-controller-manager runs the StatefulSet, DaemonSet, CronJob and Job
controllers; kwok plays the kubelet on two nodes), an opted-in workload of
each kind and an ImagePatch with a pinned digest, these scenarios check what
a user sees: the pod template's image, the ImagePatch's phase and reasons,
and the Events on the workload. A workload labelled with a ``*-digest`` label
turns bad (crash loop, never ready, a failing Job) only once a container runs
that digest (tests/cluster/stages/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/kinds/app"
OLD = f"{APP}:2.0"
PROXY = "registry.local/mesh/proxy"
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def warnings(given: Scenario, ns: str, name: str) -> dict[str, dict]:
    return {e["reason"]: e for e in given.events(ns, name) if e["type"] == "Warning"}


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_rolls_forward_to_the_digest(given: Scenario, kind: str) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest(f"good-{kind}")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload(kind, ns, "agent", image=OLD, policy=policy)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    assert given.template_image(kind, ns, "agent") == f"{APP}:2.0@{digest}"
    [entry] = done["status"]["rollouts"]
    assert (entry["kind"], entry["phase"], entry["previousImage"]) == (kind, "Healthy", OLD)
    # The controller really rolled every pod onto it.
    given.wait_rolled_out(kind, ns, "agent")
    patched = given.events(ns, "agent")
    assert "Patched" in [e["reason"] for e in patched]
    assert {e["involvedObject"]["kind"] for e in patched} == {kind}


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_unhealthy_digest_is_rolled_back_with_the_reason(given: Scenario, kind: str) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest(f"bad-{kind}")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload(kind, ns, "agent", image=OLD, policy=policy, crashloop_on=digest)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert entry["reason"] == "CrashLoopBackOff"
    # The reason names the pod and the container.
    assert "agent-" in entry["message"] and "/app: CrashLoopBackOff" in entry["message"]
    assert given.template_image(kind, ns, "agent") == OLD
    given.wait_rolled_out(kind, ns, "agent")
    assert digest in done["status"]["failedDigests"]
    # RolledBack is posted after the phase is written: wait for it.
    assert {"RollingBack", "RolledBack"} <= {e["reason"] for e in given.wait_events(
        ns, "agent", "RollingBack", "RolledBack", type="Warning")}


def test_statefulset_partition_is_respected(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("partition")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload("StatefulSet", ns, "db", image=OLD, policy=policy, replicas=3, partition=2)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert "partition 2" in entry["message"]
    pods = json.loads(given.kube.kubectl("get", "pods", "-n", ns, "-o", "json"))["items"]
    images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in pods}
    # Ordinals below the partition were left for their owner to advance.
    assert images == {"db-0": OLD, "db-1": OLD, "db-2": f"{APP}:2.0@{digest}"}


def test_on_delete_workload_is_not_patched_and_says_why(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("ondelete")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload("StatefulSet", ns, "db", image=OLD, policy=policy, strategy="OnDelete")

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    [entry] = done["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "OnDeleteStrategy")
    assert given.template_image("StatefulSet", ns, "db") == OLD
    # The skip's Warning is posted after the phase is written: wait for it.
    given.wait_events(ns, "db", "OnDeleteStrategy", type="Warning")
    assert "RollingUpdate" in warnings(given, ns, "db")["OnDeleteStrategy"]["message"]


@pytest.mark.parametrize("sidecar", [True, False], ids=["native-sidecar", "init-container"])
def test_init_containers_and_native_sidecars_are_patched(given: Scenario, sidecar: bool) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest(f"init-{sidecar}")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    init = {"name": "proxy", "image": f"{PROXY}:1.0"}
    if sidecar:
        init["restartPolicy"] = "Always"
    given.workload("Deployment", ns, "web", image=OLD, policy=policy, init_containers=[init])

    given.imagepatch(patch, image=PROXY, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert entry["container"] == "proxy"
    assert given.template_image("Deployment", ns, "web", "proxy") == f"{PROXY}:1.0@{digest}"
    # Only the init container changed.
    assert given.template_image("Deployment", ns, "web", "app") == OLD


def test_bad_native_sidecar_is_rolled_back(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("bad-sidecar")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    sidecar = {"name": "proxy", "image": f"{PROXY}:1.0", "restartPolicy": "Always"}
    given.workload("StatefulSet", ns, "db", image=OLD, policy=policy, init_containers=[sidecar],
                   crashloop_on=digest)

    given.imagepatch(patch, image=PROXY, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert (entry["container"], entry["reason"]) == ("proxy", "CrashLoopBackOff")
    assert given.template_image("StatefulSet", ns, "db", "proxy") == f"{PROXY}:1.0"


def test_cronjob_trial_run_passes_and_the_template_is_patched(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("cron-good")
    given.policy(policy, rollout={**FAST_GATE, "cronJobTrialRun": True})
    ns = given.namespace()
    # A schedule that does not fire during the test: the trial run is the gate.
    given.workload("CronJob", ns, "report", image=OLD, policy=policy, schedule="0 3 1 1 *")

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert given.template_image("CronJob", ns, "report") == f"{APP}:2.0@{digest}"
    job = given.get("job", entry["trialJob"], ns)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert "completed on the new image" in entry["message"]


def test_cronjob_failing_trial_run_is_rolled_back(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("cron-bad")
    given.policy(policy, rollout={**FAST_GATE, "cronJobTrialRun": True})
    ns = given.namespace()
    given.workload("CronJob", ns, "report", image=OLD, policy=policy, schedule="0 3 1 1 *",
                   job_fail_on=digest)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert entry["reason"] == "JobFailed"
    assert entry["trialJob"] in entry["message"]
    assert given.template_image("CronJob", ns, "report") == OLD
    # RolledBack is posted after the phase is written: wait for it.
    assert {"RollingBack", "RolledBack"} <= {e["reason"] for e in given.wait_events(
        ns, "report", "RollingBack", "RolledBack", type="Warning")}


def test_cronjob_gate_is_its_next_scheduled_run(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("cron-scheduled")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload("CronJob", ns, "report", image=OLD, policy=policy, schedule="*/1 * * * *")

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    def gating():
        rollouts = given.get("imagepatch", patch).get("status", {}).get("rollouts", [])
        return rollouts and rollouts[0]["phase"] == "Gating" and rollouts[0]

    wait_for(gating, timeout=60, what="the gate to start")
    assert given.template_image("CronJob", ns, "report") == f"{APP}:2.0@{digest}"
    # The CronJob controller starts a run within the minute; it completes on kwok.
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=150)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    assert "completed on the new image" in done["status"]["rollouts"][0]["message"]
