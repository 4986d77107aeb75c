"""The read store (adapters.store.StoredKube) against the real API server.

* Before a full listing is in, a read goes to the API server; the listing
  primes the store, and later reads are answered from it (an object created
  behind the store's back is not seen until its watch event arrives).
* Read-your-writes: the operator's own write is visible to its next read at
  once, and the older watch event that arrives after it changes nothing.
* Target discovery's listing of opted-in workloads is answered slim from the
  store once primed, and honours the policy it is asked for.

The watch events are handed in as kopf would (``handlers.py`` does it in the
operator); tests/e2e/test_api_load.py shows the operator's idle passes list
nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from imagepatch.adapters.store import StoredKube
from imagepatch.model.names import GROUP, VERSION

pytestmark = pytest.mark.cluster


def patch_doc(name: str, policy: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePatch", "metadata": {"name": name},
            "spec": {"image": "registry.local/team/app", "policy": policy, "reason": "Manual",
                     "targetDigest": "sha256:" + "1" * 64}}


def test_reads_fall_back_until_primed_then_come_from_the_store(kube, crds) -> None:
    tag = uuid.uuid4().hex[:6]
    first, behind = f"store-a-{tag}", f"store-b-{tag}"
    kube.kubectl("apply", "-f", "-", input=json.dumps(patch_doc(first, f"pol-{tag}")))
    adapter = StoredKube(kube.api_client)

    async def scenario() -> None:
        assert await adapter.get_imagepatch(first) is not None  # not primed: the API answers
        assert not adapter.store.imagepatches.primed
        listed = {p["metadata"]["name"] for p in await adapter.list_imagepatches()}
        assert first in listed and adapter.store.imagepatches.primed
        kube.kubectl("apply", "-f", "-", input=json.dumps(patch_doc(behind, f"pol-{tag}")))
        # Primed: answered from the store, which has not heard of it yet.
        assert await adapter.get_imagepatch(behind) is None
        assert behind not in {p["metadata"]["name"] for p in await adapter.list_imagepatches()}
        event = json.loads(kube.kubectl("get", "imagepatch", behind, "-o", "json"))
        adapter.store.observe_imagepatch("ADDED", event)
        assert await adapter.get_imagepatch(behind) is not None
        # A label selector is the API server's to apply.
        assert await adapter.list_imagepatches(label_selector=f"nothing-{tag}=x") == []

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl("delete", "imagepatch", first, behind, "--ignore-not-found")


def test_the_operators_own_write_is_read_back_at_once(kube, crds) -> None:
    tag = uuid.uuid4().hex[:6]
    name = f"store-rw-{tag}"
    adapter = StoredKube(kube.api_client)

    async def scenario() -> None:
        await adapter.list_imagepatches()  # primed
        created = await adapter.create_imagepatch(patch_doc(name, f"pol-{tag}"))
        assert created is not None
        assert await adapter.get_imagepatch(name) is not None  # no watch event yet
        written = await adapter.write_imagepatch_status(
            name, {"phase": "AwaitingApproval"},
            resource_version=created["metadata"]["resourceVersion"])
        assert written["status"]["phase"] == "AwaitingApproval"
        # The watch's event for the create comes after the status write: it is older.
        adapter.store.observe_imagepatch("ADDED", created)
        got = await adapter.get_imagepatch(name)
        assert got is not None and (got.get("status") or {}).get("phase") == "AwaitingApproval"
        annotated = await adapter.annotate_imagepatch(name, {f"{GROUP}/note": "x"})
        assert annotated is not None
        got = await adapter.get_imagepatch(name)
        assert got is not None and got["metadata"]["annotations"][f"{GROUP}/note"] == "x"
        assert await adapter.delete_imagepatch(
            name, resource_version=annotated["metadata"]["resourceVersion"])
        adapter.store.observe_imagepatch("MODIFIED", annotated)  # a late event: still gone
        assert await adapter.get_imagepatch(name) is None

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl("delete", "imagepatch", name, "--ignore-not-found")


def test_policy_status_writes_are_read_back(kube, crds) -> None:
    tag = uuid.uuid4().hex[:6]
    name = f"store-pol-{tag}"
    doc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePatchPolicy",
           "metadata": {"name": name},
           "spec": {"namespaceSelector": {"matchLabels": {"imagepatch-test": "true"}}}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
    adapter = StoredKube(kube.api_client)

    async def scenario() -> None:
        assert name in {p["metadata"]["name"] for p in await adapter.list_policies()}
        await adapter.write_policy_status(name, {"observedGeneration": 7})
        got = await adapter.get_policy(name)
        assert got is not None and got["status"]["observedGeneration"] == 7
        assert "managedFields" not in got["metadata"]

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl("delete", "imagepatchpolicy", name, "--ignore-not-found")


def test_target_discovery_reads_slim_workloads_from_the_store(kube) -> None:
    tag = uuid.uuid4().hex[:6]
    ns, policy = f"store-ns-{tag}", f"pol-{tag}"
    kube.kubectl("create", "namespace", ns)

    def deployment(name: str, policy: str) -> dict:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns,
                             "annotations": {"imagepatch.dev/policy": policy}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app",
                                                               "image": "r/app:1"}]}}}}

    kube.kubectl("apply", "-f", "-", input=json.dumps(deployment("web", policy)))
    kube.kubectl("apply", "-f", "-", input=json.dumps(deployment("other", f"x-{tag}")))
    adapter = StoredKube(kube.api_client, namespaces=[ns])

    async def scenario() -> None:
        found = await adapter.list_opted_in_workloads(policy)  # primes each kind
        assert [(k, d["metadata"]["name"]) for k, d in found] == [("Deployment", "web")]
        assert "status" not in found[0][1] and "managedFields" not in found[0][1]["metadata"]
        # Our own write (a rollout's image change) is what the next discovery sees.
        current = await adapter.get_workload("Deployment", ns, "web")
        assert current is not None
        await adapter.set_container_image(
            ns, "web", container="app", image="r/app:2@sha256:" + "2" * 64,
            resource_version=current["metadata"]["resourceVersion"])
        found = await adapter.list_opted_in_workloads(policy)
        images = [c["image"] for c in found[0][1]["spec"]["template"]["spec"]["containers"]]
        assert images == ["r/app:2@sha256:" + "2" * 64]
        # Opting out through our own annotation write removes it.
        await adapter.annotate_workload("Deployment", ns, "web",
                                        {"imagepatch.dev/policy": None})
        assert await adapter.list_opted_in_workloads(policy) == []

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_an_old_listing_is_made_again_and_drops_what_the_watch_missed(kube, crds) -> None:
    tag = uuid.uuid4().hex[:6]
    gone, new = f"store-gone-{tag}", f"store-new-{tag}"
    kube.kubectl("apply", "-f", "-", input=json.dumps(patch_doc(gone, f"pol-{tag}")))
    clock = [0.0]
    adapter = StoredKube(kube.api_client, relist_after=300.0, monotonic=lambda: clock[0])

    async def names() -> set[str]:
        return {p["metadata"]["name"] for p in await adapter.list_imagepatches()}

    async def scenario() -> None:
        assert gone in await names()
        # Behind the store's back (a watch that died without a word).
        kube.kubectl("delete", "imagepatch", gone)
        kube.kubectl("apply", "-f", "-", input=json.dumps(patch_doc(new, f"pol-{tag}")))
        clock[0] = 299.0
        listed = await names()
        assert gone in listed and new not in listed  # still the store's answer
        clock[0] = 300.0
        listed = await names()
        assert gone not in listed and new in listed  # listed again through the API

    try:
        asyncio.run(scenario())
    finally:
        kube.kubectl("delete", "imagepatch", gone, new, "--ignore-not-found")
