"""The Kubernetes adapter against the real API server: --namespace scope and Leases.

* ``--namespace`` scopes every list the adapter makes: a scoped ``Kube``
  never returns (or lists) Deployments outside its namespaces, with plain
  names and with kopf's glob patterns.
* Leader election's Lease calls: create, a stale ``resourceVersion`` refused
  with ``ConflictError``, and a second elector standing by until the first
  releases the Lease.
* A StatefulSet's forced rollback deletes a pod only while it is the very
  pod observed (uid and resourceVersion preconditions).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from imagepatch.adapters import kube as kube_module
from imagepatch.adapters.errors import ConflictError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.leader import LeaderElector

pytestmark = pytest.mark.cluster


def deployment(ns: str, name: str, policy: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {"imagepatch.dev/policy": policy}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "x:1"}]}}}}


@pytest.fixture
def two_namespaces(kube):
    tag = uuid.uuid4().hex[:6]
    names = [f"scope-a-{tag}", f"scope-b-{tag}"]
    for ns in names:
        kube.kubectl("create", "namespace", ns)
        kube.kubectl("apply", "-f", "-", input=json.dumps(deployment(ns, "web", f"pol-{tag}")))
    yield names, f"pol-{tag}"
    for ns in names:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("scope", ["name", "glob", "all"])
def test_namespace_scope_limits_the_deployment_list(kube, two_namespaces, scope) -> None:
    (a, b), policy = two_namespaces
    # Other tests' scope-a-* namespaces hold Deployments of other policies.
    namespaces = {"name": [a], "glob": ["scope-a-*"], "all": []}[scope]
    adapter = Kube(kube.api_client, namespaces=namespaces)
    found = asyncio.run(adapter.list_opted_in_deployments(policy))
    expected = {"name": {a}, "glob": {a}, "all": {a, b}}[scope]
    assert {d["metadata"]["namespace"] for d in found} == expected


@pytest.mark.parametrize("scope", ["name", "all"])
def test_a_listing_is_read_a_page_at_a_time_and_reduced_as_it_arrives(
    kube, scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five opted-in Deployments, one that is not, in pages of two: every page is
    # read (the continue token followed) and ``keep`` sees only the opted-in ones.
    tag = uuid.uuid4().hex[:6]
    ns, policy = f"pages-{tag}", f"pol-{tag}"
    kube.kubectl("create", "namespace", ns)
    try:
        items = [deployment(ns, f"web-{i}", policy) for i in range(5)]
        items.append(deployment(ns, "other", policy))
        del items[-1]["metadata"]["annotations"]
        kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": items}))
        monkeypatch.setattr(kube_module, "LIST_PAGE_SIZE", 2)
        adapter = Kube(kube.api_client, namespaces=[ns] if scope == "name" else [])
        kept = asyncio.run(adapter.list_all_opted_in(
            "Deployment", keep=lambda d: {"name": d["metadata"]["name"],
                                          "namespace": d["metadata"]["namespace"]}))
        assert sorted(k["name"] for k in kept if k["namespace"] == ns) == [
            f"web-{i}" for i in range(5)]
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_scope_patterns_follow_kopf(kube) -> None:
    adapter = Kube(kube.api_client, namespaces=["prod-*", "!prod-secret"])
    assert adapter.watches("prod-web")
    assert not adapter.watches("prod-secret")
    assert not adapter.watches("staging")
    assert Kube(kube.api_client).watches("anything")


def test_lease_writes_carry_a_resource_version_precondition(kube) -> None:
    kube.kubectl("create", "namespace", ns := f"lease-{uuid.uuid4().hex[:6]}")
    adapter = Kube(kube.api_client)
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l", "namespace": ns}, "spec": {"holderIdentity": "a"}}

    async def scenario() -> None:
        created = await adapter.create_lease(ns, body)
        with pytest.raises(ConflictError):
            await adapter.create_lease(ns, body)
        await adapter.replace_lease(ns, {**created, "spec": {"holderIdentity": "b"}})
        with pytest.raises(ConflictError):  # the stale version loses
            await adapter.replace_lease(ns, {**created, "spec": {"holderIdentity": "c"}})
        assert (await adapter.get_lease(ns, "l"))["spec"]["holderIdentity"] == "b"
        assert await adapter.get_lease(ns, "missing") is None

        first = LeaderElector(adapter, namespace=ns, name="leader", identity="first")
        second = LeaderElector(adapter, namespace=ns, name="leader", identity="second",
                               retry_period=0.2)
        await first.acquire()
        assert await second.try_acquire_or_renew() is False
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await first.release()
        await asyncio.wait_for(waiting, timeout=10)
        assert (await adapter.get_lease(ns, "leader"))["spec"]["holderIdentity"] == "second"

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_the_v0_1_finalizer_is_removed_and_others_are_kept(kube, crds) -> None:
    name = f"fin-{uuid.uuid4().hex[:6]}"
    finalizers = ["imagepatch.dev/finalizer", "example.com/keep"]
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"image": "registry.local/app", "policy": "pol", "reason": "Manual"}}))
    adapter = Kube(kube.api_client)
    try:
        asyncio.run(adapter.remove_imagepatch_finalizer(name, finalizers,
                                                        "imagepatch.dev/finalizer"))
        left = json.loads(kube.kubectl("get", "imagepatch", name, "-o", "json"))
        assert left["metadata"]["finalizers"] == ["example.com/keep"]
        # A list that changed since it was read is not touched (the JSON patch tests it).
        with pytest.raises(ConflictError):
            asyncio.run(adapter.remove_imagepatch_finalizer(name, finalizers,
                                                            "imagepatch.dev/finalizer"))
    finally:
        kube.kubectl("patch", "imagepatch", name, "--type", "merge",
                     "-p", '{"metadata":{"finalizers":null}}', check=False)
        kube.kubectl("delete", "imagepatch", name, "--wait=false", check=False)


# --- every kind, every container list ----------------------------------------------------

DIGEST = "sha256:" + "c" * 64


def kinds_namespace(kube) -> str:
    ns = f"kinds-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    return ns


def workloads(ns: str, policy: str) -> list[dict]:
    pod = {"metadata": {"labels": {"app": "w"}},
           "spec": {"containers": [{"name": "app", "image": "x:1"}],
                    "initContainers": [{"name": "proxy", "image": "p:1",
                                        "restartPolicy": "Always"}]}}
    meta = {"namespace": ns, "annotations": {"imagepatch.dev/policy": policy}}
    selector = {"matchLabels": {"app": "w"}}
    job_pod = {**pod, "spec": {**pod["spec"], "restartPolicy": "Never"}}
    return [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {**meta, "name": "sts"},
         "spec": {"replicas": 0, "serviceName": "sts", "selector": selector, "template": pod}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {**meta, "name": "ds"},
         "spec": {"selector": selector, "template": {
             **pod, "spec": {**pod["spec"], "nodeSelector": {"none": "none"}}}}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {**meta, "name": "cj"},
         "spec": {"schedule": "0 3 1 1 *", "suspend": True,
                  "jobTemplate": {"spec": {"template": job_pod}}}},
    ]


@pytest.mark.parametrize("container_list", ["containers", "initContainers"])
def test_every_kind_is_listed_and_one_container_of_either_list_is_patched(
    kube, container_list: str
) -> None:
    ns, policy = kinds_namespace(kube), f"pol-{uuid.uuid4().hex[:6]}"
    try:
        for doc in workloads(ns, policy):
            kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
        adapter = Kube(kube.api_client, namespaces=[ns])
        found = asyncio.run(adapter.list_opted_in_workloads(policy))
        assert sorted((k, o["metadata"]["name"]) for k, o in found) == [
            ("CronJob", "cj"), ("DaemonSet", "ds"), ("StatefulSet", "sts")]
        name = "proxy" if container_list == "initContainers" else "app"
        for kind, obj in found:
            image = f"{name}:1@{DIGEST}"
            asyncio.run(adapter.set_container_image(
                ns, obj["metadata"]["name"], container=name, image=image,
                resource_version=obj["metadata"]["resourceVersion"], kind=kind,
                container_list=container_list, annotations={"imagepatch.dev/x": "1"}))
            after = asyncio.run(adapter.get_workload(kind, ns, obj["metadata"]["name"]))
            spec = after["spec"]
            template = spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" \
                else spec["template"]
            pod = template["spec"]
            changed = {c["name"]: c["image"] for key in ("containers", "initContainers")
                       for c in pod[key]}
            # That one container, nothing beside it; the sidecar keeps its restartPolicy.
            assert changed == {"app": "x:1", "proxy": "p:1", name: image}, kind
            assert pod["initContainers"][0]["restartPolicy"] == "Always"
            assert after["metadata"]["annotations"]["imagepatch.dev/x"] == "1"
            # A stale resourceVersion is refused, for every kind.
            with pytest.raises(ConflictError):
                asyncio.run(adapter.set_container_image(
                    ns, obj["metadata"]["name"], container=name, image=image,
                    resource_version=obj["metadata"]["resourceVersion"], kind=kind,
                    container_list=container_list))
            asyncio.run(adapter.annotate_workload(kind, ns, obj["metadata"]["name"],
                                                  {"imagepatch.dev/x": None}))
            again = asyncio.run(adapter.get_workload(kind, ns, obj["metadata"]["name"]))
            assert "imagepatch.dev/x" not in (again["metadata"].get("annotations") or {})
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_ephemeral_containers_and_unknown_kinds_are_refused(kube) -> None:
    from imagepatch.adapters.errors import ConfigurationError

    adapter = Kube(kube.api_client)
    with pytest.raises(ConfigurationError):
        asyncio.run(adapter.set_container_image(
            "default", "x", container="debug", image=f"d:1@{DIGEST}", resource_version="1",
            container_list="ephemeralContainers"))
    with pytest.raises(ConfigurationError):
        asyncio.run(adapter.get_workload("ReplicaSet", "default", "x"))


def test_trial_job_is_created_once_from_the_cronjob_template(kube) -> None:
    ns, policy = kinds_namespace(kube), "pol"
    try:
        cronjob = workloads(ns, policy)[2]
        kube.kubectl("apply", "-f", "-", input=json.dumps(cronjob))
        adapter = Kube(kube.api_client)
        obj = asyncio.run(adapter.get_workload("CronJob", ns, "cj"))
        assert asyncio.run(adapter.create_trial_job(obj, "cj-trial")) is True
        assert asyncio.run(adapter.create_trial_job(obj, "cj-trial")) is False  # never twice
        [job] = asyncio.run(adapter.cronjob_jobs(obj))
        assert job["metadata"]["name"] == "cj-trial"
        assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
        assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "x:1"
        # The Job controller creates its pod; the CronJob's pods are its Jobs' pods.
        from tests.support.wait import wait_for

        pods = wait_for(lambda: asyncio.run(adapter.workload_pods("CronJob", obj)),
                        timeout=30, what="the trial Job's pod")
        assert {p["metadata"]["labels"]["batch.kubernetes.io/job-name"] for p in pods} == {
            "cj-trial"}
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_stuck_pod_is_deleted_only_while_it_is_the_pod_observed(kube) -> None:
    """The forced rollback's delete: uid and resourceVersion preconditions, a gone pod is fine."""
    from imagepatch.core.kinds import StuckPod

    ns = kinds_namespace(kube)
    try:
        # Never scheduled, so a delete removes it at once (no kubelet to wait for).
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-1", "namespace": ns},
                "spec": {"nodeSelector": {"imagepatch.dev/test": "never-scheduled"},
                         "containers": [{"name": "app", "image": "x:1"}]}}
        kube.kubectl("apply", "-f", "-", input=json.dumps(body))
        adapter = Kube(kube.api_client)

        def observed() -> StuckPod:
            meta = json.loads(kube.kubectl("get", "pod", "db-1", "-n", ns, "-o", "json"))["metadata"]
            return StuckPod(name="db-1", uid=meta["uid"], resource_version=meta["resourceVersion"])

        seen = observed()
        other = StuckPod(name="db-1", uid="another-pod-of-that-name",
                         resource_version=seen.resource_version)
        assert asyncio.run(adapter.delete_stuck_pods(ns, [other])) == []
        kube.kubectl("annotate", "pod", "db-1", "-n", ns, "changed=since-read")
        assert asyncio.run(adapter.delete_stuck_pods(ns, [seen])) == []  # stale resourceVersion
        assert observed().uid == seen.uid  # still there

        now = observed()
        assert asyncio.run(adapter.delete_stuck_pods(ns, [now])) == ["db-1"]
        assert asyncio.run(adapter.delete_stuck_pods(ns, [now])) == []  # gone already
        assert not kube.kubectl("get", "pod", "db-1", "-n", ns, "--ignore-not-found", "-o",
                                "name").strip()
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_rollouts_are_listed_only_when_asked_and_patched_with_a_precondition(kube) -> None:
    """Issue 23: Argo Rollouts' Rollout through the custom objects API."""
    from imagepatch.adapters.errors import NotFoundError
    from tests.support.argo import install_crds

    policy = f"pol-{uuid.uuid4().hex[:6]}"
    asked = Kube(kube.api_client, argo_rollouts=True)
    crd = kube.kubectl("get", "crd", "rollouts.argoproj.io", "--ignore-not-found", "-o", "name")
    if not crd.strip():  # --argo-rollouts without Argo's CRD: no Rollouts, no error
        assert asyncio.run(asked.list_opted_in("Rollout", policy)) == []
    install_crds(kube)
    ns = kinds_namespace(kube)
    try:
        doc = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "ro", "namespace": ns,
                            "annotations": {"imagepatch.dev/policy": policy}},
               "spec": {"selector": {"matchLabels": {"app": "ro"}},
                        "strategy": {"canary": {}},
                        "template": {"metadata": {"labels": {"app": "ro"}}, "spec": {
                            "containers": [{"name": "app", "image": "x:1", "args": ["-v"]},
                                           {"name": "side", "image": "s:1"}]}}}}
        kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
        assert asyncio.run(Kube(kube.api_client).list_opted_in("Rollout", policy)) == []
        [obj] = asyncio.run(asked.list_opted_in("Rollout", policy))
        asyncio.run(asked.set_container_image(
            ns, "ro", container="app", image=f"x:1@{DIGEST}", kind="Rollout",
            resource_version=obj["metadata"]["resourceVersion"]))
        after = asyncio.run(asked.get_workload("Rollout", ns, "ro"))
        assert after["spec"]["template"]["spec"]["containers"] == [
            {"name": "app", "image": f"x:1@{DIGEST}", "args": ["-v"]},
            {"name": "side", "image": "s:1"}]
        with pytest.raises(ConflictError):  # read at an older version
            asyncio.run(asked.set_container_image(
                ns, "ro", container="app", image=f"x:1@{DIGEST}", kind="Rollout",
                resource_version=obj["metadata"]["resourceVersion"]))
        with pytest.raises(NotFoundError):
            asyncio.run(asked.set_container_image(
                ns, "gone", container="app", image=f"x:1@{DIGEST}", kind="Rollout",
                resource_version="1"))
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
