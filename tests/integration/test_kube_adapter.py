"""The Kubernetes adapter against the real API server: --namespace scope and Leases.

* ``--namespace`` scopes every list the adapter makes: a scoped ``Kube``
  never returns (or lists) Deployments outside its namespaces, with plain
  names and with kopf's glob patterns.
* Leader election's Lease calls: create, a stale ``resourceVersion`` refused
  with ``ConflictError``, and a second elector standing by until the first
  releases the Lease.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

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
