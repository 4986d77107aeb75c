"""baseImages.approveAfter through detection's hook (reconcile/approve_after.py).

A registry that gives no creation time (or fails to) leaves the first time
imagepatch saw the digest, kept in the operator's memory: the digest is held
until approveAfter has passed since then, whatever the workload's annotations
say. In-memory stand-ins for the project's adapters; the clock is injected.
"""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.adapters.errors import TransientError
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_base_memory import BASE, BASE_V2, D_APP, MovingBaseRegistry, evaluate
from tests.unit.test_detection_isolation import ECR, MemoryKube, deployment, policy

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


class NoCreationTime(MovingBaseRegistry):
    def __init__(self, *, fails: bool) -> None:
        super().__init__()
        self.fails = fails
        self.asked: list[str] = []

    async def image_created(self, image) -> dt.datetime | None:
        self.asked.append(str(image))
        if self.fails:
            raise TransientError("registry down", reason="RegistryUnavailable")
        return None


@pytest.mark.parametrize("fails", [False, True], ids=["no-creation-time", "registry-error"])
def test_without_a_creation_time_the_first_sighting_counts(fails):
    now = [T0]
    kube, registry = MemoryKube([policy("p", baseImages={"approveAfter": "2h"})]), NoCreationTime(fails=fails)
    detector = Detector(kube=kube, registry=registry, clock=lambda: now[0])
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    assert evaluate(detector, kube, dep)["state"] == "Compliant"

    registry.base = BASE_V2
    now[0] = T0 + dt.timedelta(minutes=10)
    held = evaluate(detector, kube, dep)
    [container] = held["containers"]
    assert (held["state"], container["reason"]) == ("Compliant", "BaseNotYetApproved")
    assert "first seen by imagepatch at 2026-12-05T12:10:00Z" in container["message"]
    assert "adopted from 2026-12-05T14:10:00Z" in container["message"]
    assert registry.asked == [f"{ECR}/base:1@{BASE_V2}"]
    assert kube.patches == {}
    # The first sighting is the operator's memory, not the workload's.
    record = detector.memory.get("Deployment", "ns", "web", dep["metadata"]["uid"])
    assert record.seen == {BASE_V2: T0 + dt.timedelta(minutes=10)}

    # Later passes do not move the first sighting; once 2h have passed, it is adopted.
    now[0] = T0 + dt.timedelta(hours=2)
    assert "adopted from 2026-12-05T14:10:00Z" in evaluate(detector, kube, dep)["containers"][0]["message"]
    now[0] = T0 + dt.timedelta(hours=2, minutes=10)
    adopted = evaluate(detector, kube, dep)
    assert adopted["state"] in ("BaseImageOutdated", "Patching")
    [patch] = kube.patches.values()
    assert patch["spec"]["evidence"]["baseImage"]["newDigest"] == BASE_V2


def test_no_delay_asks_the_registry_nothing():
    kube, registry = MemoryKube([policy("p")]), NoCreationTime(fails=False)
    detector = Detector(kube=kube, registry=registry, clock=lambda: T0)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    evaluate(detector, kube, dep)
    registry.base = BASE_V2
    assert evaluate(detector, kube, dep)["state"] in ("BaseImageOutdated", "Patching")
    assert registry.asked == []
