"""A workload whose image records no base: the base digest it was built on is remembered.

The ``imagepatch.dev/base-image`` annotation names only a base *tag*. The first
evaluation takes the image to be built on that tag's digest as it is then, and
records it in the operator's memory (never the workload's state annotation,
which its owner can edit); a later pass must compare the moved tag with that
remembered digest, or a base push could never make such a workload
``BaseImageOutdated``. In-memory stand-ins for the project's adapters.
"""

from __future__ import annotations

import asyncio
import json

from imagepatch.adapters.registry import Lineage, ManifestInfo
from imagepatch.model.memory import BaseMemory, with_base
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_isolation import ECR, OCI_MANIFEST, MemoryKube, deployment, policy

D_APP = "sha256:" + "a" * 64
BASE_V1 = "sha256:" + "1" * 64
BASE_V2 = "sha256:" + "2" * 64
BASE = f"{ECR}/base:1"


class MovingBaseRegistry:
    """An app image that records no base; the base tag's digest is whatever ``base`` says."""

    def __init__(self) -> None:
        self.base = BASE_V1

    async def resolve_digest(self, image) -> str:
        return D_APP

    async def image_lineage(self, image) -> Lineage:
        return Lineage(None, None, None)

    async def head_manifest(self, image, ref=None) -> ManifestInfo:
        return ManifestInfo(self.base, OCI_MANIFEST, 100)

    async def platform_digests(self, image) -> dict[str, str]:
        return {}


def evaluate(detector: Detector, kube: MemoryKube, dep: dict) -> dict:
    """One forced pass over ``dep``; our state annotation is written back onto it."""
    detector.observe("MODIFIED", dep)
    detector.forced.add(f"{ECR}/app")
    detector.facts.forget({f"{ECR}/base"})
    asyncio.run(detector.evaluate_all())
    state = kube.annotations[("ns", dep["metadata"]["name"])]["imagepatch.dev/state"]
    dep["metadata"]["annotations"]["imagepatch.dev/state"] = state
    return json.loads(state)


def test_a_base_push_makes_an_annotation_only_workload_outdated():
    kube, registry = MemoryKube([policy("p")]), MovingBaseRegistry()
    detector = Detector(kube=kube, registry=registry)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})

    first = evaluate(detector, kube, dep)
    assert first["state"] == "Compliant"
    assert first["containers"][0]["baseDigest"] == BASE_V1
    assert first["containers"][0]["lineage"] == "workload-annotation"

    registry.base = BASE_V2
    second = evaluate(detector, kube, dep)
    assert second["state"] in ("BaseImageOutdated", "Patching")
    assert second["containers"][0]["baseDigest"] == BASE_V1
    assert second["containers"][0]["baseCurrent"] == BASE_V2
    [patch] = kube.patches.values()
    assert patch["spec"]["evidence"]["baseImage"]["oldDigest"] == BASE_V1
    assert patch["spec"]["evidence"]["baseImage"]["newDigest"] == BASE_V2


def test_the_memory_is_dropped_when_the_image_or_base_changes_or_is_not_a_digest():
    kube, registry = MemoryKube([policy("p")]), MovingBaseRegistry()
    detector = Detector(kube=kube, registry=registry)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    evaluate(detector, kube, dep)

    # Another base named: what was remembered for the old one does not apply.
    registry.base = BASE_V2
    dep["metadata"]["annotations"]["imagepatch.dev/base-image"] = f"{ECR}/other:1"
    assert evaluate(detector, kube, dep)["containers"][0]["baseDigest"] == BASE_V2

    # A remembered baseDigest that is not a digest is ignored.
    record = detector.memory.get("Deployment", "ns", "web", dep["metadata"]["uid"])
    detector.memory.stage(with_base(record, "app", BaseMemory(
        digest=D_APP, base=BASE, base_digest="not-a-digest")))
    dep["metadata"]["annotations"]["imagepatch.dev/base-image"] = BASE
    assert evaluate(detector, kube, dep)["containers"][0]["baseDigest"] == BASE_V2
    assert kube.patches == {}


def test_a_tenant_deleting_or_editing_the_state_annotation_changes_no_decision():
    kube, registry = MemoryKube([policy("p")]), MovingBaseRegistry()
    detector = Detector(kube=kube, registry=registry)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    evaluate(detector, kube, dep)
    registry.base = BASE_V2

    # Deleted after the base push: what the operator remembers still says BASE_V1.
    del dep["metadata"]["annotations"]["imagepatch.dev/state"]
    second = evaluate(detector, kube, dep)
    assert second["state"] in ("BaseImageOutdated", "Patching")
    assert second["containers"][0]["baseDigest"] == BASE_V1

    # Forged to say the image was built on the new base: the patch stays wanted.
    forged = json.loads(dep["metadata"]["annotations"]["imagepatch.dev/state"])
    forged["containers"][0]["baseDigest"] = BASE_V2
    dep["metadata"]["annotations"]["imagepatch.dev/state"] = json.dumps(forged)
    third = evaluate(detector, kube, dep)
    assert third["containers"][0]["baseDigest"] == BASE_V1
    assert len(kube.patches) == 1
    assert not any(
        "imagepatch.dev/close" in (p["metadata"].get("annotations") or {})
        for p in kube.patches.values()
    )


def test_a_workload_created_again_under_the_same_name_starts_fresh():
    kube, registry = MemoryKube([policy("p")]), MovingBaseRegistry()
    detector = Detector(kube=kube, registry=registry)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    evaluate(detector, kube, dep)
    registry.base = BASE_V2
    again = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    again["metadata"]["uid"] = "another-uid"
    detector.observe("DELETED", dep)
    assert evaluate(detector, kube, again)["containers"][0]["baseDigest"] == BASE_V2
