"""The ImagePatch reconcile path (reconcile/rollouts.py) on the in-memory Kube.

observe → plan → record → act, against tests/support/memkube.py: intent is
recorded before the Deployment is patched, a second pass never patches
again, a stale read patches nothing, and a patch that waits asks to be woken.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from imagepatch.core.rollout import GATE_POLL
from imagepatch.reconcile.rollouts import reconcile_imagepatch
from tests.support.memkube import MemoryKube

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
APP = "registry.local/app"
DIGEST = "sha256:" + "a" * 64
GATE = {"progressDeadlineSeconds": 600, "healthyFor": "30s", "maxRestarts": 0}


def reconcile(kube: MemoryKube, name: str = "p1"):
    return asyncio.run(reconcile_imagepatch(name=name, kube=kube, clock=lambda: T0))


def given_a_pinned_patch() -> MemoryKube:
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}, "rollout": GATE})
    kube.add_deployment("shop", "web", image=f"{APP}:1.4", policy="pol")
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    return kube


def test_intent_is_recorded_before_the_one_patch_and_a_second_pass_does_not_patch() -> None:
    kube = given_a_pinned_patch()
    writes: list[str] = []
    record, patch_image = kube.write_imagepatch_status, kube.set_container_image

    async def recording(name, status, *, resource_version):
        phases = [r.get("phase") for r in status.get("rollouts") or []]
        writes.append(f"status {phases}")
        return await record(name, status, resource_version=resource_version)

    async def patching(*args, **kwargs):
        writes.append("patch")
        return await patch_image(*args, **kwargs)

    kube.write_imagepatch_status, kube.set_container_image = recording, patching
    assert reconcile(kube) == GATE_POLL
    assert writes.index("status ['Patching']") < writes.index("patch")
    image = kube.deployments[("shop", "web")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{APP}:1.4@{DIGEST}"
    assert kube.patches["p1"]["status"]["rollouts"][0]["phase"] == "Gating"

    reconcile(kube)
    assert writes.count("patch") == 1


def test_a_deployment_changed_since_it_was_read_is_re_read_and_re_planned() -> None:
    kube = given_a_pinned_patch()
    patch_image = kube.set_container_image
    versions: list[str] = []

    async def someone_writes_first_once(namespace, name, **kwargs):
        versions.append(kwargs["resource_version"])
        if len(versions) == 1:  # a label change lands between our read and our patch
            kube.deployments[(namespace, name)]["metadata"]["resourceVersion"] = "elsewhere"
        return await patch_image(namespace, name, **kwargs)

    kube.set_container_image = someone_writes_first_once
    reconcile(kube)
    # The stale write was refused; the retry carried the version it had just read.
    assert len(versions) == 2 and versions[1] == "elsewhere"
    image = kube.deployments[("shop", "web")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{APP}:1.4@{DIGEST}"


def test_a_finished_or_missing_patch_asks_for_nothing() -> None:
    kube = given_a_pinned_patch()
    kube.patches["p1"]["status"] = {"phase": "Succeeded"}
    assert reconcile(kube) is None
    assert reconcile(kube, "missing") is None
    assert kube.calls["set_container_image"] == 0


def test_a_missing_policy_waits_and_says_so() -> None:
    kube = given_a_pinned_patch()
    del kube.policies["pol"]
    after = reconcile(kube)
    assert after is not None and after > 0  # it looks again (a policy may be created)
    assert kube.patches["p1"]["status"]["phase"] == "Pending"
    stalled = {c["type"]: c for c in kube.patches["p1"]["status"]["conditions"]}["Stalled"]
    assert stalled["reason"] == "PolicyNotFound"


# --- exact targets and holders, through the reconcile path ---------------------------------


def test_a_patch_without_targets_discovers_them_at_its_tag_and_digest() -> None:
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}, "rollout": GATE})
    kube.add_deployment("shop", "web", image=f"{APP}:1.4", policy="pol")
    kube.add_deployment("shop", "next", image=f"{APP}:1.5", policy="pol")
    running = "sha256:" + "0" * 64
    # The pods of the 1.4 template report the digest the patch was opened for.
    kube.pods["shop"] = [
        {"metadata": {"labels": {"app": "web"}},
         "spec": {"containers": [{"name": "app", "image": f"{APP}:1.4"}]},
         "status": {"containerStatuses": [{"name": "app", "imageID": f"{APP}@{running}"}]}},
    ]
    kube.add_patch("p1", {"image": APP, "tag": "1.4", "currentDigest": running, "policy": "pol",
                          "reason": "Manual", "targetDigest": DIGEST})
    reconcile(kube)
    rollouts = kube.patches["p1"]["status"]["rollouts"]
    assert [r["name"] for r in rollouts] == ["web"]  # 1.5 is another tag: never a target
    assert rollouts[0]["rollbackImage"] == f"{APP}:1.4@{running}"


def test_a_container_another_patch_is_changing_waits_with_conflict() -> None:
    kube = given_a_pinned_patch()
    kube.add_patch("holder", {"image": APP, "policy": "pol", "reason": "Manual",
                              "targetDigest": "sha256:" + "b" * 64})
    kube.patches["holder"]["status"] = {"phase": "RollingOut", "rollouts": [
        {"namespace": "shop", "name": "web", "container": "app", "kind": "Deployment",
         "phase": "Gating"}]}
    wait = reconcile(kube)
    status = kube.patches["p1"]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], status["rollouts"][0]["phase"]) == ("Conflict", "Pending")
    assert "holder" in ready["message"] and wait and wait > 0
    assert kube.deployments[("shop", "web")]["spec"]["template"]["spec"]["containers"][0][
        "image"] == f"{APP}:1.4"


# --- other kinds and init containers ----------------------------------------------------


def kind_patch(kube: MemoryKube, image: str = APP, **rollout) -> None:
    kube.add_policy("pol", {"namespaceSelector": {}, "rollout": {**GATE, **rollout}})
    kube.add_patch("p1", {"image": image, "policy": "pol", "reason": "Manual",
                          "targetDigest": DIGEST})


def test_a_statefulset_sidecar_is_patched_in_init_containers() -> None:
    kube = MemoryKube()
    sidecar = {"name": "proxy", "image": "registry.local/proxy:2", "restartPolicy": "Always"}
    kube.add_workload("StatefulSet", "data", "db", image=f"{APP}:1.4", policy="pol",
                      init_containers=[sidecar], spec={"replicas": 1})
    kind_patch(kube, image="registry.local/proxy")
    reconcile(kube)
    sts = kube.statefulsets[("data", "db")]
    pod = sts["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == f"registry.local/proxy:2@{DIGEST}"
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    assert pod["containers"][0]["image"] == f"{APP}:1.4"
    [entry] = kube.patches["p1"]["status"]["rollouts"]
    assert (entry["kind"], entry["container"], entry["phase"]) == ("StatefulSet", "proxy",
                                                                   "Gating")


def test_an_on_delete_daemonset_is_skipped_with_a_warning_and_not_patched() -> None:
    kube = MemoryKube()
    kube.add_workload("DaemonSet", "nodes", "agent", image=f"{APP}:1.4", policy="pol",
                      spec={"updateStrategy": {"type": "OnDelete"}})
    kind_patch(kube)
    reconcile(kube)
    assert kube.daemonsets[("nodes", "agent")]["spec"]["template"]["spec"]["containers"][0][
        "image"] == f"{APP}:1.4"
    body = kube.patches["p1"]
    [entry] = body["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "OnDeleteStrategy")
    [event] = [e for e in kube.events if e["reason"] == "OnDeleteStrategy"]
    assert event["type"] == "Warning" and event["involved"]["kind"] == "DaemonSet"
    assert event["involved"]["apiVersion"] == "apps/v1"
    assert kube.calls["set_container_image"] == 0


def test_a_cronjob_trial_run_is_named_first_then_created_once_and_judged() -> None:
    kube = MemoryKube()
    kube.add_workload("CronJob", "batch", "report", image=f"{APP}:1.4", policy="pol")
    kind_patch(kube, cronJobTrialRun=True)
    order: list[str] = []
    record, create = kube.write_imagepatch_status, kube.create_trial_job

    async def recording(name, status, *, resource_version):
        if any(r.get("trialJob") for r in status.get("rollouts") or []):
            order.append("recorded")
        return await record(name, status, resource_version=resource_version)

    async def creating(cronjob, name):
        order.append("create")
        return await create(cronjob, name)

    kube.write_imagepatch_status, kube.create_trial_job = recording, creating
    assert reconcile(kube) == GATE_POLL
    template = kube.cronjobs[("batch", "report")]["spec"]["jobTemplate"]["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == f"{APP}:1.4@{DIGEST}"
    assert order.index("recorded") < order.index("create")
    [job] = kube.jobs["batch"]
    [entry] = kube.patches["p1"]["status"]["rollouts"]
    assert entry["trialJob"] == job["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP}:1.4@{DIGEST}"

    reconcile(kube)  # the Job runs: nothing new is created
    assert order.count("create") == 1
    job["metadata"]["creationTimestamp"] = "2026-11-27T09:00:00Z"
    job["status"] = {"conditions": [{"type": "Failed", "status": "True",
                                     "reason": "BackoffLimitExceeded"}]}
    reconcile(kube)
    [entry] = kube.patches["p1"]["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("RolledBack", "JobFailed")
    assert template["spec"]["containers"][0]["image"] == f"{APP}:1.4"
    restored = kube.cronjobs[("batch", "report")]["spec"]["jobTemplate"]["spec"]["template"]
    assert restored["spec"]["containers"][0]["image"] == f"{APP}:1.4"


def test_one_pass_patches_a_cronjob_then_moves_on_to_the_next_teams_deployment() -> None:
    # Given: team A's CronJob (a run due at 09:05) sorts before team B's Deployment.
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}, "rollout": GATE})
    kube.add_workload("CronJob", "a-team", "report", image=f"{APP}:1.4", policy="pol",
                      spec={"schedule": "*/5 * * * *"})
    kube.add_deployment("b-team", "web", image=f"{APP}:1.4", policy="pol")
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    # When: one pass runs.
    after = reconcile(kube)
    # Then: both are patched; the CronJob's gate waits on the side, the Deployment's in line,
    # and the pass asks to look again at the sooner of the two.
    rollouts = {r["kind"]: r for r in kube.patches["p1"]["status"]["rollouts"]}
    assert (rollouts["CronJob"]["phase"], rollouts["CronJob"]["reason"]) == ("Gating", "AwaitingRun")
    assert rollouts["Deployment"]["phase"] == "Gating"
    image = kube.deployments[("b-team", "web")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{APP}:1.4@{DIGEST}"
    assert after == GATE_POLL
