"""Event-targeted re-evaluation: a queue event re-evaluates only what it names.

Given a fleet deployed by tag (no digest in the workloads, no ``imageID`` on
pods), 20 workloads running 4 apps built on 2 bases; when one base is pushed
and its event arrives; then only that base is asked of the registry again (one
HEAD), no app tag is resolved again (each is kept for the policy's
``checkInterval``), only the workloads on that base are evaluated, and the
policy's counts still cover all 20. An app push re-resolves that app's tag
only. A targeted pass never closes a patch that has a target it did not
evaluate. In-memory stand-ins for the project's adapters; the real API server
and registry version is ``tests/e2e/test_event_targeted.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

from imagepatch.adapters.registry import Lineage, ManifestInfo
from imagepatch.core.events import ImageSignal
from imagepatch.core.oci import OCI_MANIFEST
from imagepatch.model.imagepatch import CLOSE_ANNOTATION, KEY_ANNOTATION
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_isolation import ECR, MemoryKube, deployment, policy

APPS, BASES, WORKLOADS = 4, 2, 20


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Kube(MemoryKube):
    """MemoryKube, plus the close request a pass may make."""

    async def annotate_imagepatch(self, name: str, annotations: Mapping[str, Any]) -> None:
        meta = self.patches[name]["metadata"]
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}


class FleetRegistry:
    """App ``app-i:1`` records base ``base-(i % 2):1``; ``requests`` lists what would
    leave the process (an image's lineage is read once per digest, as the real
    client caches it)."""

    def __init__(self) -> None:
        self.apps = {f"{ECR}/app-{i}": digest(f"app-{i}-v1") for i in range(APPS)}
        self.built_on = {f"{ECR}/base-{k}": digest(f"base-{k}-v1") for k in range(BASES)}
        self.bases = dict(self.built_on)
        self.requests: list[tuple[str, str]] = []
        self._lineages: set[str] = set()

    async def resolve_digest(self, image: Any) -> str:
        self.requests.append(("resolve", str(image)))
        return self.apps[image.name]

    async def image_lineage(self, image: Any) -> Lineage:
        if str(image) not in self._lineages:
            self._lineages.add(str(image))
            self.requests.append(("lineage", str(image)))
        index = int(image.name.rsplit("-", 1)[1])
        base = f"{ECR}/base-{index % BASES}"
        return Lineage(f"{base}:1", self.built_on[base], "manifest-annotations")

    async def head_manifest(self, image: Any, ref: str | None = None) -> ManifestInfo:
        self.requests.append(("head", str(image)))
        return ManifestInfo(self.bases[image.name], OCI_MANIFEST, 100)

    async def platform_digests(self, image: Any) -> dict[str, str]:
        return {}


class Fleet:
    def __init__(self) -> None:
        self.now = 1000.0
        self.kube = Kube([policy("p")])
        self.registry = FleetRegistry()
        self.detector = Detector(kube=self.kube, registry=self.registry,  # type: ignore[arg-type]
                                 monotonic=lambda: self.now)
        self.evaluated: list[list[str]] = []  # the workloads of each evaluate_policy call
        original = self.detector.evaluate_policy

        async def spy(policy_name, spec, workloads, patches, memo, **kw):
            self.evaluated.append(sorted(d["metadata"]["name"] for d in workloads))
            return await original(policy_name, spec, workloads, patches, memo, **kw)

        self.detector.evaluate_policy = spy  # type: ignore[method-assign]
        for w in range(WORKLOADS):
            self.detector.observe("ADDED", deployment(f"w{w}", f"{ECR}/app-{w % APPS}:1", "p"))

    def run(self, *signals: ImageSignal) -> list[tuple[str, str]]:
        """One pass after ``signals``; the registry requests it made."""
        self.registry.requests.clear()
        self.evaluated.clear()
        if signals:
            asyncio.run(self.detector.on_signals(signals))
        asyncio.run(self.detector.evaluate_all())
        return list(self.registry.requests)

    def on_base(self, k: int) -> list[str]:
        return sorted(f"w{w}" for w in range(WORKLOADS) if (w % APPS) % BASES == k)

    def on_app(self, i: int) -> list[str]:
        return sorted(f"w{w}" for w in range(WORKLOADS) if w % APPS == i)


def push(repository: str, tag: str | None = "1") -> ImageSignal:
    return ImageSignal(kind="push", registry_host=ECR, repository=repository,
                       digest=digest(f"{repository}-pushed"), tag=tag)


def test_a_base_push_asks_the_registry_only_for_that_base_and_evaluates_only_its_workloads():
    fleet = Fleet()
    first = fleet.run()
    # The first pass: each app tag resolved once, each lineage read once, each base HEADed once.
    assert sorted(op for op, _ in first) == ["head"] * BASES + ["lineage"] * APPS + ["resolve"] * APPS
    assert fleet.kube.statuses["p"]["workloads"]["compliant"] == WORKLOADS

    fleet.registry.bases[f"{ECR}/base-0"] = digest("base-0-v2")
    after = fleet.run(push("base-0"))
    print(f"\nregistry requests after one base push event ({WORKLOADS} workloads by tag): "
          f"{len(after)} {after}")
    assert after == [("head", f"{ECR}/base-0:1")]  # no app tag resolved again
    assert fleet.evaluated == [fleet.on_base(0)]
    # One patch per app on that base, targeting exactly its workloads.
    patches = {p["spec"]["image"]: p for p in fleet.kube.patches.values()}
    assert sorted(patches) == [f"{ECR}/app-0", f"{ECR}/app-2"]
    assert sorted(t["name"] for p in patches.values() for t in p["spec"]["targets"]) == fleet.on_base(0)
    # The counts are of every workload: the others' last results merged in.
    counts = fleet.kube.statuses["p"]["workloads"]
    assert counts["total"] == WORKLOADS
    assert counts["compliant"] == len(fleet.on_base(1))
    assert fleet.kube.state("w1")["state"] == "Compliant"
    assert fleet.kube.state("w0")["state"] in ("BaseImageOutdated", "Patching")


def test_an_app_push_re_resolves_only_that_apps_tag_for_its_workloads():
    fleet = Fleet()
    fleet.run()
    fleet.registry.apps[f"{ECR}/app-1"] = digest("app-1-v2")
    after = fleet.run(push("app-1"))
    assert after == [("resolve", f"{ECR}/app-1:1"), ("lineage", f"{ECR}/app-1:1@{digest('app-1-v2')}")]
    assert fleet.evaluated == [fleet.on_app(1)]
    assert fleet.kube.state("w1")["containers"][0]["digest"] == digest("app-1-v2")
    assert fleet.kube.statuses["p"]["workloads"]["total"] == WORKLOADS


def test_an_event_for_another_tag_or_image_starts_no_pass():
    fleet = Fleet()
    fleet.run()
    assert fleet.run(push("base-0", tag="2")) == []  # the fleet follows base-0:1
    assert fleet.run(push("unrelated")) == []
    assert fleet.evaluated == []
    # An event naming no tag reaches every workload on that base.
    assert fleet.run(push("base-1", tag=None)) == [("head", f"{ECR}/base-1:1")]
    assert fleet.evaluated == [fleet.on_base(1)]


def test_tags_are_resolved_again_once_the_check_interval_has_passed():
    fleet = Fleet()
    fleet.run()
    assert fleet.run() == []  # nothing due
    fleet.now += 3600  # the default checkInterval, 1h
    after = fleet.run()
    assert sorted(op for op, _ in after) == ["head"] * BASES + ["resolve"] * APPS
    assert fleet.evaluated == [sorted(f"w{w}" for w in range(WORKLOADS))]


def test_a_targeted_pass_closes_no_patch_that_has_a_target_it_did_not_evaluate():
    fleet = Fleet()
    fleet.run()
    # An open patch for app-0, no longer wanted, targeting a workload on base 0 (w0) and
    # one not evaluated by a base-0 pass (w1, on base 1).
    fleet.kube.patches["stale"] = {
        "metadata": {"name": "stale", "resourceVersion": "1",
                     "annotations": {KEY_ANNOTATION: "k-stale"}},
        "spec": {"image": f"{ECR}/app-0", "currentDigest": fleet.registry.apps[f"{ECR}/app-0"],
                 "tag": "1", "policy": "p",
                 "targets": [{"kind": "Deployment", "namespace": "ns", "name": n, "container": "app"}
                             for n in ("w0", "w1")]},
        "status": {"phase": "AwaitingApproval"},
    }
    fleet.run(push("base-0"))
    assert fleet.evaluated == [fleet.on_base(0)]
    assert CLOSE_ANNOTATION not in fleet.kube.patches["stale"]["metadata"]["annotations"]
    # A full pass, which evaluates both targets, closes it.
    fleet.now += 3600
    fleet.run()
    assert CLOSE_ANNOTATION in fleet.kube.patches["stale"]["metadata"]["annotations"]


def test_what_a_workload_follows_and_which_events_name_it():
    from imagepatch.core.compliance import Assessment, ContainerFacts, State
    from imagepatch.core.detection.lineage import follows as _follows
    from imagepatch.core.detection.lineage import named as _named

    ok = Assessment(state=State.COMPLIANT, reason="", message="")
    recorded = ContainerFacts(container="a", image=f"{ECR}/app:1", repository=f"{ECR}/app",
                              base_name=f"{ECR}/base@{digest('b')}")  # by digest: no tag to follow
    untagged = ContainerFacts(container="b", image=f"{ECR}/app2:1", repository=f"{ECR}/app2",
                              base_name=f"{ECR}/plain")  # followed as :latest
    follows = _follows([(recorded, ok), (untagged, ok)], f" {ECR}/annotated:2 ")
    assert follows == {(f"{ECR}/app", ""), (f"{ECR}/app2", ""), (f"{ECR}/base", ""),
                       (f"{ECR}/plain", "latest"), (f"{ECR}/annotated", "2")}
    # A reference that does not parse is left out (the annotation is refused elsewhere).
    assert _follows([(recorded, ok)], "Not An Image!") == {(f"{ECR}/app", ""), (f"{ECR}/base", "")}
    assert _named(follows, {f"{ECR}/annotated"}, {f"{ECR}/annotated": {"2"}})
    assert not _named(follows, {f"{ECR}/annotated"}, {f"{ECR}/annotated": {"3"}})
    assert _named(follows, {f"{ECR}/annotated"}, {})  # no tag recorded for the name: any
    assert _named(follows, {f"{ECR}/app"}, {f"{ECR}/app": {"9"}})  # a running image: any tag
    assert not _named(follows, {f"{ECR}/other"}, {})


def test_a_base_named_only_by_the_workload_annotation_is_followed_by_its_events():
    from tests.unit.test_detection_base_memory import BASE, BASE_V2, MovingBaseRegistry
    from tests.unit.test_detection_isolation import D_APP

    kube, registry = Kube([policy("p")]), MovingBaseRegistry()
    detector = Detector(kube=kube, registry=registry)  # type: ignore[arg-type]
    on_base = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    elsewhere = deployment("api", f"{ECR}/app:1@{D_APP}", "p",
                           **{"imagepatch.dev/base-image": f"{ECR}/other:1"})
    for dep in (on_base, elsewhere):
        detector.observe("ADDED", dep)
    asyncio.run(detector.evaluate_all())
    registry.base = BASE_V2
    asyncio.run(detector.on_signals([push("base")]))
    asyncio.run(detector.evaluate_all())
    assert kube.state("web")["state"] in ("BaseImageOutdated", "Patching")
    assert kube.state("api")["state"] == "Compliant"
    assert [t["name"] for p in kube.patches.values() for t in p["spec"]["targets"]] == ["web"]
