"""The operator's memory (adapters/memory.py) against the real API server.

* Records are written to ``imagepatch-memory-NN`` ConfigMaps in the operator's
  namespace and read back by a fresh store with one LIST.
* Two stores writing the same shard (an old leader's stale copy) conflict on
  ``resourceVersion``; the loser reads the shard again and writes its record
  without dropping the other's.
* A forgotten workload's record is removed from its ConfigMap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest

from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.model import memory as model

pytestmark = pytest.mark.cluster

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def namespace(kube):
    ns = f"memory-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    yield ns
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def stored(kube, ns: str) -> dict[str, dict]:
    out = json.loads(kube.kubectl("get", "configmaps", "-n", ns, "-l", "imagepatch.dev/memory=v1",
                                  "-o", "json"))
    return {k: json.loads(v) for cm in out["items"] for k, v in (cm.get("data") or {}).items()}


def test_records_are_written_through_and_read_back_by_a_fresh_store(kube, namespace) -> None:
    async def scenario() -> OperatorMemory:
        store = OperatorMemory(Kube(kube.api_client), namespace, shards=2)
        await store.load()
        for i in range(6):
            record = store.get("Deployment", "team-a", f"web-{i}", f"uid-{i}")
            await store.put(model.with_failed(record, digest="sha256:" + f"{i:064x}", key="k",
                                              patch=f"p{i}", now=T0))
        store.stage(model.with_state(store.get("Deployment", "team-a", "web-0", "uid-0"),
                                     state="Failed", now=T0))
        await store.flush()
        fresh = OperatorMemory(Kube(kube.api_client), namespace, shards=2)
        assert await fresh.load() == 6
        return fresh

    fresh = asyncio.run(scenario())
    assert fresh.get("Deployment", "team-a", "web-0", "uid-0").state == "Failed"
    assert fresh.get("Deployment", "team-a", "web-3", "uid-3").failed[0]["patch"] == "p3"
    # Another uid under the same name is another workload.
    assert fresh.get("Deployment", "team-a", "web-3", "uid-new").empty
    assert len(stored(kube, namespace)) == 6


def test_a_conflicting_write_reads_the_shard_again_and_keeps_both_records(kube, namespace) -> None:
    async def scenario() -> None:
        one = OperatorMemory(Kube(kube.api_client), namespace, shards=1)
        two = OperatorMemory(Kube(kube.api_client), namespace, shards=1)
        await one.put(model.with_state(one.get("Deployment", "a", "x", "u1"), state="Compliant",
                                       now=T0))
        await two.load()
        await one.put(model.with_state(one.get("Deployment", "a", "y", "u2"), state="Failed",
                                       now=T0))
        # two's copy is stale now: its write conflicts, is re-read, and goes through.
        await two.put(model.with_state(two.get("Deployment", "a", "z", "u3"), state="Vulnerable",
                                       now=T0))
        assert two.get("Deployment", "a", "y", "u2").state == "Failed"

    asyncio.run(scenario())
    assert {k: v["state"] for k, v in stored(kube, namespace).items()} == {
        "Deployment.a.x": "Compliant", "Deployment.a.y": "Failed", "Deployment.a.z": "Vulnerable"}


def test_a_forgotten_workloads_record_is_removed(kube, namespace) -> None:
    async def scenario() -> None:
        store = OperatorMemory(Kube(kube.api_client), namespace, shards=1)
        await store.put(model.with_state(store.get("Deployment", "a", "x", "u1"), state="Compliant",
                                         now=T0))
        store.forget("Deployment", "a", "x")
        store.forget("Deployment", "a", "never-seen")  # nothing to do
        await store.flush()

    asyncio.run(scenario())
    assert stored(kube, namespace) == {}


def test_a_shard_deleted_by_an_admin_is_created_again_with_what_the_operator_holds(
    kube, namespace
) -> None:
    async def scenario() -> None:
        store = OperatorMemory(Kube(kube.api_client), namespace, shards=1)
        await store.put(model.with_state(store.get("Deployment", "a", "x", "u1"), state="Failed",
                                         now=T0))
        kube.kubectl("delete", "configmap", "-n", namespace, model.shard_of("Deployment", "a", "x",
                                                                            shards=1))
        await store.put(model.with_state(store.get("Deployment", "a", "y", "u2"), state="Compliant",
                                         now=T0))

    asyncio.run(scenario())
    assert {k: v["state"] for k, v in stored(kube, namespace).items()} == {
        "Deployment.a.x": "Failed", "Deployment.a.y": "Compliant"}
