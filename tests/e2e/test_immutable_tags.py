"""Immutable tags, as ECR enforces them: each rebuild strategy pushes a new tag.

Given an ECR repository with immutable tags (Security Hub control ECR.2),
emulated by the fault proxy in front of the real registry (a manifest PUT on
a tag that exists answers 400 ``TAG_INVALID``, "The image tag '1' already
exists in the '…' repository and cannot be overwritten because the
repository is immutable."), when the base of a running app moves, then the
rebuild of each strategy (external CI, the build Job, the buildless rebase)
lands under a new tag from the policy's default template
``{tag}-patch.{yyyymmdd}.{n}``, the running tag is never overwritten, and the
Deployment is rolled to ``repo:<new tag>@<digest>``.

The operator reaches "ECR" (``123456789012.dkr.ecr.us-east-1.amazonaws.com``)
through the proxy (``--registry-endpoint``). CI and the build Job's work are
done by the test: buildah builds into the registry under a scratch tag, and
the manifest is PUT through the proxy under the tag the patch names, as a
``docker push`` to ECR would.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.support.faultproxy import FaultProxy
from tests.support.images import ImageRef, make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import RegistryError
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
BUILD_NAMESPACE = "imagepatch-builds"
BUILD_GATE = "imagepatch.dev/test-build-gate"  # a node label the build Job's pod waits for
NEW_TAG = re.compile(r"1-patch\.\d{8}\.1")


@pytest.fixture(scope="module")
def ecr(registry) -> Iterator[FaultProxy]:
    with FaultProxy.start(registry.host) as proxy:
        proxy.immutable_tags()
        yield proxy


@pytest.fixture(scope="module")
def immutable_operator(kube, crds, ecr, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("immutable")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}={ecr.url}", "--detect-tick", "1"],
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, immutable_operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def put_through_ecr(ecr: FaultProxy, registry, repo: str, digest: str, tag: str) -> httpx.Response:
    """PUT ``repo@digest``'s manifest under ``tag`` through the immutable-tag proxy."""
    body, media_type, _ = registry.get_manifest(repo, digest)
    return httpx.put(f"{ecr.url}/v2/{repo}/manifests/{tag}", content=body,
                     headers={"Content-Type": media_type}, timeout=30)


def ci_push(ecr: FaultProxy, registry, buildah, base: ImageRef, repo: str, tag: str) -> ImageRef:
    """CI: build on ``base`` (scratch tag in the registry), push under ``tag`` through "ECR"."""
    built = buildah.build_app(base, repo, f"ci-{uuid.uuid4().hex[:6]}")
    pushed = put_through_ecr(ecr, registry, repo, built.digest, tag)
    assert pushed.status_code == 201, pushed.text
    return ImageRef(built.repository, tag, built.digest)


def a_patch_for_a_moved_base(given: Scenario, registry, buildah, rebuild: dict) -> tuple:
    """Given an app on base v1 running as ECR/app:1, when base v2 is pushed: the patch.

    Returns (patch name, namespace, app repository, the running app, base v2).
    """
    base_repo, repo = unique("ibase"), unique("iapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    running = buildah.build_app(base_v1, repo, "1", pinned=False)  # FROM base:1, followed by tag
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, rebuild=rebuild,
                 rollout={"progressDeadlineSeconds": 90, "healthyFor": "2s", "maxRestarts": 0})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{repo}:1", policy=policy, replicas=1)
    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={dt.datetime.now(dt.UTC).isoformat()}")

    def the_patch():
        items = json.loads(given.kube.kubectl(
            "get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}", "-o", "json"))["items"]
        return items[0]["metadata"]["name"] if items else None
    name = wait_for(the_patch, timeout=90, what="the ImagePatch for the moved base")
    return name, ns, repo, running, base_v2


def rolled_to_the_new_tag(given: Scenario, ecr: FaultProxy, registry, name: str, ns: str,
                          repo: str, running: ImageRef, tag: str) -> dict:
    done = given.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    digest = done["status"]["rebuild"]["digest"]
    assert done["status"]["rebuild"]["tag"] == tag
    assert given.image_of(ns, "web") == f"{ECR}/{repo}:{tag}@{digest}"
    assert registry.head_digest(repo, tag) == digest
    assert registry.head_digest(repo, "1") == running.digest  # never overwritten
    # Nothing asked "ECR" to overwrite a tag of this repository...
    assert not [r for r in ecr.requests if r.outcome == "immutable" and f"/{repo}/" in r.path]
    # ...which it would have refused: the running tag is immutable.
    refused = put_through_ecr(ecr, registry, repo, digest, "1")
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["code"] == "TAG_INVALID"
    assert "cannot be overwritten because the repository is immutable" in refused.text
    return done


def test_external_ci_pushes_the_tag_the_patch_names_and_it_is_rolled_out(
    given, ecr, registry, buildah
) -> None:
    name, ns, repo, running, base_v2 = a_patch_for_a_moved_base(
        given, registry, buildah, {"strategy": "external"})
    tag = given.pushed_tag(name)  # the payload CI reads: status.rebuild.tag
    assert NEW_TAG.fullmatch(tag), tag
    status = given.get("imagepatch", name)["status"]["rebuild"]
    assert status["baseImage"] == f"{base_v2.repository}@{base_v2.digest}"
    assert status["revision"] and status["sourcePinned"] is True  # buildah's revision label

    ci_push(ecr, registry, buildah, base_v2, repo, tag)

    rolled_to_the_new_tag(given, ecr, registry, name, ns, repo, running, tag)


def build_template(name: str, gate: str) -> dict:
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never",
        # The pod is scheduled (and kwok completes it) once the test has pushed.
        "nodeSelector": {BUILD_GATE: gate},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "build", "image": "quay.io/buildah/stable:v1.38",
            "env": [{"name": "BASE_IMAGE", "value": "${BASE_IMAGE}"},
                    {"name": "TARGET_IMAGE", "value": "${TARGET_IMAGE}"},
                    {"name": "REVISION", "value": "${REVISION}"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
    }}}}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": BUILD_NAMESPACE},
            "data": {"job.yaml": yaml.safe_dump(job)}}


def test_the_build_job_pushes_a_new_tag_of_the_running_revision_and_it_is_rolled_out(
    given, ecr, registry, buildah, kube
) -> None:
    template, gate = unique("build"), uuid.uuid4().hex[:10]
    given.apply(build_template(template, gate))
    name, ns, repo, running, base_v2 = a_patch_for_a_moved_base(
        given, registry, buildah, {"strategy": "job", "job": {"template": template}})

    def build_id():
        return (given.get("imagepatch", name).get("status") or {}).get("rebuild", {}).get("buildId")
    job_name = wait_for(build_id, timeout=60, what="the build Job")
    tag = given.pushed_tag(name)
    assert NEW_TAG.fullmatch(tag), tag
    job = json.loads(kube.kubectl("get", "job", job_name, "-n", BUILD_NAMESPACE, "-o", "json"))
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TARGET_IMAGE"] == f"{ECR}/{repo}:{tag}"
    assert env["BASE_IMAGE"] == f"{base_v2.repository}@{base_v2.digest}"
    revision = json.loads(registry.get_blob(repo, json.loads(
        registry.get_manifest(repo, running.digest)[0])["config"]["digest"]))["config"]["Labels"][
            "org.opencontainers.image.revision"]
    assert env["REVISION"] == revision  # the code that runs, not the branch head

    try:
        # The Job's work: build on BASE_IMAGE and push TARGET_IMAGE; then let it finish.
        ci_push(ecr, registry, buildah, ImageRef(base_v2.repository, None, base_v2.digest), repo, tag)
        kube.kubectl("label", "node", "kwok-node-0", f"{BUILD_GATE}={gate}", "--overwrite")
        rolled_to_the_new_tag(given, ecr, registry, name, ns, repo, running, tag)
    finally:
        kube.kubectl("label", "node", "kwok-node-0", f"{BUILD_GATE}-", check=False)
        kube.kubectl("delete", "job", job_name, "-n", BUILD_NAMESPACE, "--wait=false",
                     "--ignore-not-found", check=False)


def test_the_rebase_pushes_a_new_tag_and_it_is_rolled_out(given, ecr, registry, buildah) -> None:
    name, ns, repo, running, _ = a_patch_for_a_moved_base(
        given, registry, buildah, {"strategy": "rebase"})
    tag = given.pushed_tag(name)
    assert NEW_TAG.fullmatch(tag), tag

    done = rolled_to_the_new_tag(given, ecr, registry, name, ns, repo, running, tag)

    assert "sourcePinned" not in done["status"]["rebuild"]  # a rebase builds no source
    # The operator pushed the rebased manifest itself, through "ECR", under the new tag.
    assert ecr.count("PUT", path_contains=f"/v2/{repo}/manifests/{tag}") == 1


def test_two_patches_of_one_image_never_get_the_same_push_tag(given, ecr, registry, buildah) -> None:
    # Given detection's patch for the moved base, and a second ImagePatch of the same
    # image and tag made by hand (another team's request, from the same evidence)
    name, ns, repo, running, base_v2 = a_patch_for_a_moved_base(
        given, registry, buildah, {"strategy": "external"})
    spec = given.get("imagepatch", name)["spec"]
    second = unique("twin")
    given.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
                 "metadata": {"name": second}, "spec": spec})

    # Then each build is told its own tag, though neither has been pushed yet
    first_tag, second_tag = given.pushed_tag(name), given.pushed_tag(second)
    print(f"\n[tags] {name}: {first_tag}; {second}: {second_tag}")
    assert first_tag != second_tag
    assert {first_tag, second_tag} == {first_tag.rsplit(".", 1)[0] + ".1",
                                       first_tag.rsplit(".", 1)[0] + ".2"}
    with pytest.raises(RegistryError, match="HTTP 404"):  # nothing pushed yet
        registry.head_digest(repo, second_tag)
