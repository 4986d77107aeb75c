"""Two tags of one repository on one base are two builds, each rolled out to its own tag.

Given ``app:1`` and ``app:2``, both built ``FROM base:1`` and each run by its
own Deployment (two teams' workloads, one repository), when the base moves,
then detection opens one ImagePatch per tag, and each starts **its own**
build Job (distinct ``buildId``s, each Job recording its own key, tag and
target). Each Job's work (done here by buildah, as in
``test_immutable_tags.py``: build on ``BASE_IMAGE``, push ``TARGET_IMAGE``)
pushes that tag's rebuild, and each Deployment ends on
``repo:<its tag>-patch.<day>.1@<its own rebuild's digest>``.

Before the build key named the tag (v0.2: ``<image>|<new base digest>``), the
two patches had one key, so the second adopted the first's Job (same
``buildId``) and never got a build of its own; with CodeBuild it took the
other tag's exported digest and rolled it out to the wrong tag's workloads.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.support.images import ImageRef, make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
BUILD_NAMESPACE = "imagepatch-builds"
BUILD_GATE = "imagepatch.dev/test-tenancy-build-gate"  # a node label the build pods wait for
NODE = "kwok-node-0"


@pytest.fixture(scope="module")
def tenancy_operator(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("tenancy-builds")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}=http://{registry.host}", "--detect-tick", "1"],
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, tenancy_operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def build_template(name: str, gate: str) -> dict:
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never",
        # The pod is scheduled (and kwok completes it) once the test has done its work.
        "nodeSelector": {BUILD_GATE: gate},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "build", "image": "quay.io/buildah/stable:v1.38",
            "env": [{"name": "BASE_IMAGE", "value": "${BASE_IMAGE}"},
                    {"name": "TARGET_IMAGE", "value": "${TARGET_IMAGE}"},
                    {"name": "IMAGEPATCH_KEY", "value": "${KEY}"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
    }}}}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": BUILD_NAMESPACE},
            "data": {"job.yaml": yaml.safe_dump(job)}}


def test_two_tags_on_one_base_build_separately_and_each_workload_gets_its_own_rebuild(
    given, registry, buildah, kube
) -> None:
    began = time.monotonic()
    template, gate = unique("build"), uuid.uuid4().hex[:10]
    given.apply(build_template(template, gate))
    base_repo, repo = unique("tbase"), unique("tapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    # Given app:1 and app:2, both FROM base:1 (followed by tag), each run by its own Deployment.
    running = {tag: buildah.build_app(base_v1, repo, tag, pinned=False) for tag in ("1", "2")}
    assert running["1"].digest != running["2"].digest
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"},
                 rebuild={"strategy": "job", "job": {"template": template}},
                 rollout={"progressDeadlineSeconds": 60, "healthyFor": "2s", "maxRestarts": 0})
    ns = given.namespace()
    for tag in running:
        given.deployment(ns, f"web-{tag}", image=f"{ECR}/{repo}:{tag}", policy=policy, replicas=1)

    # When the base moves.
    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                 f"imagepatch.dev/requestedAt={dt.datetime.now(dt.UTC).isoformat()}")

    def one_patch_per_tag():
        items = json.loads(kube.kubectl(
            "get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}", "-o", "json"))["items"]
        by_tag = {p["spec"].get("tag"): p["metadata"]["name"] for p in items}
        return by_tag if set(by_tag) == set(running) else None
    patches = wait_for(one_patch_per_tag, timeout=90, what="one ImagePatch per tag")

    def build_of(name: str):
        rebuild = (given.get("imagepatch", name).get("status") or {}).get("rebuild") or {}
        return rebuild if rebuild.get("buildId") and rebuild.get("tag") else None
    builds = {tag: wait_for(lambda n=name: build_of(n), timeout=60, what=f"{name}'s build Job")
              for tag, name in patches.items()}
    print(f"both builds recorded after {time.monotonic() - began:.1f}s")

    # Then each patch has a build of its own: two Jobs, each made for its own tag.
    assert builds["1"]["buildId"] != builds["2"]["buildId"], builds
    built: dict[str, ImageRef] = {}
    try:
        for tag, rebuild in builds.items():
            assert re.fullmatch(rf"{tag}-patch\.\d{{8}}\.1", rebuild["tag"]), rebuild
            job = json.loads(kube.kubectl(
                "get", "job", rebuild["buildId"], "-n", BUILD_NAMESPACE, "-o", "json"))
            env = {e["name"]: e["value"]
                   for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
            target = f"{ECR}/{repo}:{rebuild['tag']}"
            assert env["TARGET_IMAGE"] == target
            assert env["BASE_IMAGE"] == f"{base_v2.repository}@{base_v2.digest}"
            key = given.get("imagepatch", patches[tag])["status"]["idempotencyKey"]
            assert key == (
                f"v2|{ECR}/{repo}:{tag}|{running[tag].digest}|{base_v2.digest}|job:{template}")
            assert env["IMAGEPATCH_KEY"] == key
            annotations = job["metadata"]["annotations"]
            assert annotations["imagepatch.dev/build-key"] == key
            assert annotations["imagepatch.dev/build-tag"] == tag
            assert annotations["imagepatch.dev/build-target"] == target
            # The Job's work: this tag's source, built on the new base, pushed to its target.
            built[tag] = buildah.build_app(
                ImageRef(base_v2.repository, None, base_v2.digest), repo, rebuild["tag"])
        assert built["1"].digest != built["2"].digest
        kube.kubectl("label", "node", NODE, f"{BUILD_GATE}={gate}", "--overwrite")

        # And each workload ends on its own tag's rebuild, never the other's.
        for tag, name in patches.items():
            done = given.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=120)
            assert done["status"]["phase"] == "Succeeded", done["status"]
            assert done["status"]["rebuild"]["buildId"] == builds[tag]["buildId"]
            assert done["status"]["rebuild"]["digest"] == built[tag].digest
            assert given.image_of(ns, f"web-{tag}") == (
                f"{ECR}/{repo}:{builds[tag]['tag']}@{built[tag].digest}")
            assert registry.head_digest(repo, tag) == running[tag].digest  # never overwritten
        print(f"both workloads on their own rebuilds after {time.monotonic() - began:.1f}s")
    finally:
        kube.kubectl("label", "node", NODE, f"{BUILD_GATE}-", check=False)
        for rebuild in builds.values():
            kube.kubectl("delete", "job", rebuild["buildId"], "-n", BUILD_NAMESPACE,
                         "--wait=false", "--ignore-not-found", check=False)
