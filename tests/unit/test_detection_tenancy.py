"""Detection trusts no state a tenant can write (issue 20, item 4), with in-memory adapters.

* A workload seen to remove its policy annotation is remembered as opted out,
  and Security Hub is told so (its finding is archived saying it opted out);
  one that is deleted is forgotten, memory included.
* A ``imagepatch.dev/base-image`` annotation never overrides a base the image
  records; it may only name the tag to follow of a base recorded by digest.
* A state annotation the owner deletes does not re-post the state's Event:
  the operator's memory says the state did not change.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imagepatch.adapters.registry import Lineage
from imagepatch.core.detection.lineage import override_use as _override_use
from imagepatch.model.memory import with_state
from imagepatch.model.times import utcnow
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_isolation import (
    D_APP,
    D_BASE,
    ECR,
    MemoryKube,
    MemoryRegistry,
    deployment,
    policy,
)

BASE = f"{ECR}/base:1"


class Hub:
    """A FindingsExporter that keeps what it was asked to export."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def export(self, results_by_policy, *, now, opted_out=()) -> None:
        self.calls.append({"policies": sorted(results_by_policy), "opted_out": set(opted_out)})


def test_a_workload_that_removes_its_policy_is_remembered_as_opted_out_until_deleted() -> None:
    hub = Hub()
    kube = MemoryKube([policy("p")])
    detector = Detector(kube=kube, registry=MemoryRegistry(), securityhub=hub)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p")
    detector.observe("ADDED", dep)
    asyncio.run(detector.evaluate_all())
    assert detector.memory.get("Deployment", "ns", "web", "uid-web").state

    opted_out = {**dep, "metadata": {**dep["metadata"], "annotations": {}}}
    detector.observe("MODIFIED", opted_out)
    assert detector.opted_out == {("Deployment", "ns", "web")}
    detector.last_evaluated.clear()
    asyncio.run(detector.evaluate_all())
    assert hub.calls[-1]["opted_out"] == {("Deployment", "ns", "web")}

    detector.observe("MODIFIED", dep)  # opted in again
    assert detector.opted_out == set()
    detector.observe("MODIFIED", opted_out)
    detector.observe("DELETED", opted_out)
    assert detector.opted_out == set()
    assert detector.memory.get("Deployment", "ns", "web", "uid-web").empty


def test_after_a_restart_the_operators_memory_tells_an_opt_out_from_a_stranger() -> None:
    detector = Detector(kube=MemoryKube([]), registry=MemoryRegistry())
    stranger = {"kind": "Deployment",
                "metadata": {"name": "other", "namespace": "ns", "uid": "u2", "annotations": {}}}
    detector.observe("ADDED", stranger)
    assert detector.opted_out == set()
    # Evaluated before the restart (the memory has its state): it opted out meanwhile.
    known = detector.memory.get("Deployment", "ns", "other", "u2")
    detector.memory.stage(with_state(known, state="Vulnerable", now=utcnow()))
    detector.observe("ADDED", stranger)
    assert detector.opted_out == {("Deployment", "ns", "other")}


@pytest.mark.parametrize(
    ("recorded", "annotation", "follow", "noted"),
    [
        (f"{ECR}/base:1", f"{ECR}/pinned:1", "", True),  # another repository: not followed
        (f"{ECR}/base:1", f"{ECR}/base:2", "", True),  # another tag of it: not followed
        (f"{ECR}/base:1", f"{ECR}/base:1", "", False),  # the same: nothing to say
        (f"{ECR}/base@{D_BASE}", f"{ECR}/base:1", f"{ECR}/base:1", False),  # names the tag
        (f"{ECR}/base:1", "", "", False),
        ("", f"{ECR}/base:1", "", False),
        ("not a reference!", f"{ECR}/base:1", "", False),
    ],
)
def test_a_base_annotation_never_overrides_the_base_the_image_records(
    recorded, annotation, follow, noted
) -> None:
    used, note = _override_use(recorded, annotation, same_registry=lambda a, b: False)
    assert used == follow
    assert bool(note) == noted
    if noted:
        assert "the image's base is followed" in note and annotation in note


def test_the_recorded_base_under_another_name_of_the_same_registry_is_followed_by_that_name():
    # The admin maps the ECR host to the registry the image was built against
    # (--registry-endpoint): the same base, so events naming the ECR host match.
    endpoints = {ECR: "http://127.0.0.1:5000", "127.0.0.1:5000": "http://127.0.0.1:5000"}
    def same(a, b) -> bool:
        return endpoints.get(a.host, a.host) == endpoints.get(b.host, b.host)
    assert _override_use("127.0.0.1:5000/base:1", f"{ECR}/base:1", same_registry=same) == (
        f"{ECR}/base:1", "")
    # Another tag, or a registry the admin did not map there, is another base.
    assert _override_use("127.0.0.1:5000/base:1", f"{ECR}/base:2", same_registry=same)[1]
    assert _override_use("127.0.0.1:5000/base:1", "evil.example/base:1", same_registry=same)[1]


class RecordingRegistry(MemoryRegistry):
    """An image that records its base, so an annotation naming another must not be followed."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[str] = []

    async def image_lineage(self, image: Any) -> Lineage:
        return Lineage(BASE, D_BASE, "manifest-annotations")

    def endpoint(self, image: Any) -> str:
        return f"https://{image.host}"

    async def head_manifest(self, image: Any, ref: str | None = None):
        self.heads.append(str(image))
        return await super().head_manifest(image, ref)


def test_the_image_records_base_is_followed_and_the_state_says_the_annotation_was_not() -> None:
    kube, registry = MemoryKube([policy("p")]), RecordingRegistry()
    detector = Detector(kube=kube, registry=registry)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p",
                     **{"imagepatch.dev/base-image": f"{ECR}/frozen:1"})
    detector.observe("ADDED", dep)
    asyncio.run(detector.evaluate_all())
    state = kube.state("web")
    assert state["state"] == "Compliant"
    assert state["containers"][0]["base"] == BASE
    assert registry.heads == [BASE]
    assert f"{ECR}/frozen:1" in state["message"] and "the image's base is followed" in state["message"]


def test_deleting_the_state_annotation_rewrites_the_mirror_without_a_new_event() -> None:
    kube = MemoryKube([policy("p")])
    detector = Detector(kube=kube, registry=MemoryRegistry())
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p")
    detector.observe("ADDED", dep)
    asyncio.run(detector.evaluate_all())
    events = len(kube.events)
    written = kube.annotations[("ns", "web")]["imagepatch.dev/state"]

    detector.workloads["uid-web"]["metadata"]["annotations"].pop("imagepatch.dev/state")
    kube.annotations[("ns", "web")].clear()
    detector.last_evaluated.clear()
    asyncio.run(detector.evaluate_all())
    assert kube.annotations[("ns", "web")]["imagepatch.dev/state"] == written
    assert len(kube.events) == events
