"""Rebuilds driven by the operator: one build per key, even across a SIGKILL.

Given an ImagePatch that needs a rebuild with the ``job`` strategy, the
operator records its intent, creates the build Job from the template, and
records the Job as the build. Killed while the build is in flight and
restarted, it goes on waiting for the **same** Job: there is still exactly
one build.
"""

from __future__ import annotations

import json
import re
import uuid

from tests.support.images import make_base_image
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

BUILD_NAMESPACE = "imagepatch-builds"  # the default --build-namespace, where deploy/rbac.yaml lets it build


def job_template(name: str) -> dict:
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            # No node has this label: the build stays in flight until the test is done.
            "nodeSelector": {"imagepatch.dev/test": "never-scheduled"},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "build", "image": "quay.io/buildah/stable:v1.38",
                "env": [{"name": "BASE_IMAGE", "value": "${BASE_IMAGE}"},
                        {"name": "TARGET_IMAGE", "value": "${TARGET_IMAGE}"}],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        }}},
    }
    import yaml

    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": BUILD_NAMESPACE},
            "data": {"job.yaml": yaml.safe_dump(job)}}


def test_sigkill_while_a_build_is_in_flight_leaves_exactly_one_build(kube, registry, operator_factory) -> None:
    given = Scenario(kube)
    base_repo, app_repo = unique("kbase"), unique("kapp")
    old_base = make_base_image(registry, base_repo, "1", marker="v1")
    new_base = make_base_image(registry, base_repo, "1", marker="v2")
    app = make_base_image(registry, app_repo, "1", marker="app")  # any image will do as "current"
    template = f"build-{uuid.uuid4().hex[:6]}"
    given.apply(job_template(template))
    policy, patch = unique("pol"), unique("patch")
    given.policy(policy, rebuild={"strategy": "job", "job": {"template": template}})
    first = operator_factory()
    given.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
                 "metadata": {"name": patch},
                 "spec": {"image": f"{registry.host}/{app_repo}", "tag": "1", "policy": policy,
                          "reason": "BaseImageOutdated", "currentDigest": app.digest,
                          "evidence": {"baseImage": {"name": f"{registry.host}/{base_repo}:1",
                                                     "oldDigest": old_base.digest,
                                                     "newDigest": new_base.digest}},
                          "rebuild": {"strategy": "job", "jobTemplate": template}}})

    def build_recorded():
        rebuild = given.get("imagepatch", patch).get("status", {}).get("rebuild", {})
        return rebuild.get("buildId") and rebuild
    recorded = wait_for(build_recorded, timeout=60, what="the build id to be recorded")

    def jobs_for_this_build():
        items = json.loads(kube.kubectl("get", "jobs", "-n", BUILD_NAMESPACE, "-o", "json"))["items"]
        return [j for j in items if j["metadata"]["name"] == recorded["buildId"]
                or (j["metadata"].get("annotations") or {}).get("imagepatch.dev/build-tag") == "1"
                and f"|{registry.host}/{app_repo}:1|" in j["metadata"]["annotations"].get(
                    "imagepatch.dev/build-key", "")]
    [job] = jobs_for_this_build()
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BASE_IMAGE"] == f"{registry.host}/{base_repo}@{new_base.digest}"
    # A new tag (the policy's default tagPolicy New), and the source is not pinned:
    # the running image records no revision, so the build builds its branch, and says so.
    assert re.fullmatch(r"1-patch\.\d{8}\.1", recorded["tag"]), recorded
    assert env["TARGET_IMAGE"] == f"{registry.host}/{app_repo}:{recorded['tag']}"
    assert recorded["sourcePinned"] is False
    assert "has no org.opencontainers.image.revision label" in recorded["sourceMessage"]
    [event] = [e for e in given.events("default", patch) if e["reason"] == "SourceNotPinned"]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "ImagePatch"
    assert "builds its configured branch, not the revision that runs" in event["message"]

    first.kill()
    second = operator_factory()
    # It stands by until the killed leader's Lease expires, then leads.
    wait_for(lambda: second.log().count("became the leader") >= 2, timeout=90,
             what="the restarted operator to take the Lease")
    # Let it reconcile the patch several times (5 s build polls): the new
    # process counts from zero, and this patch is the only unfinished one.
    second.wait_passes(3, counter="imagepatch_patch_reconciles_total", after=0, timeout=60)
    status = given.get("imagepatch", patch)["status"]
    assert status["phase"] == "Building"
    assert status["rebuild"]["buildId"] == recorded["buildId"]
    assert status["rebuild"]["startedAt"] == recorded["startedAt"]
    assert len(jobs_for_this_build()) == 1
    kube.kubectl("delete", "job", recorded["buildId"], "-n", BUILD_NAMESPACE, "--wait=false", check=False)
    given.cleanup()
