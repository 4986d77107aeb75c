"""Detection isolation, with in-memory stand-ins for the project's own adapters.

Given policies whose workloads include one whose evaluation raises (any
exception, not only a classified one), one whose findings cannot be read, and
a policy whose own evaluation fails; when a pass runs; then each bad case
makes only its workload ``Unknown`` with a reason naming the image, and every
other workload and policy is evaluated in that same pass. The cluster-level
version of this is ``tests/e2e/test_hostile_detection.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.adapters.registry import Lineage, ManifestInfo
from imagepatch.core.oci import OCI_MANIFEST
from imagepatch.reconcile.detection import Detector

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
D_APP = "sha256:" + "a" * 64
D_BASE = "sha256:" + "b" * 64


class MemoryKube:
    """The calls Detector makes on adapters.kube.Kube, kept in memory."""

    def __init__(self, policies: list[dict], *, refuse_create: Exception | None = None,
                 failing_status: set[str] = frozenset()) -> None:  # fmt: skip
        self.policies = policies
        self.patches: dict[str, dict] = {}
        self.annotations: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict] = []
        self.kinds: dict[tuple[str, str], str] = {}  # the kind each annotation went to
        self.statuses: dict[str, dict] = {}
        self.refuse_create = refuse_create
        self.failing_status = failing_status

    async def list_policies(self) -> list[dict]:
        return self.policies

    async def list_imagepatches(self) -> list[dict]:
        return list(self.patches.values())

    async def namespace_labels(self, ns: str) -> dict[str, str]:
        return {}

    async def list_namespace_pods(self, ns: str) -> list[dict]:
        return []

    async def annotate_workload(
        self, kind: str, ns: str, name: str, annotations: Mapping[str, Any]
    ) -> None:
        self.annotations.setdefault((ns, name), {}).update(annotations)
        self.kinds[(ns, name)] = kind

    async def emit_event(self, *, involved: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append({"name": involved["name"], "type": type, "reason": reason, "message": message,
                            "kind": involved["kind"], "apiVersion": involved["apiVersion"]})

    async def create_imagepatch(self, body: Mapping[str, Any]) -> dict | None:
        if self.refuse_create is not None:
            raise self.refuse_create
        created = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        self.patches[body["metadata"]["name"]] = created
        return created

    async def write_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        if name in self.failing_status:
            raise RuntimeError(f"status of {name} cannot be written")
        self.statuses[name] = dict(status)

    async def delete_imagepatch(self, name: str, *, resource_version: str) -> bool:
        return False

    def state(self, name: str) -> dict:
        return json.loads(self.annotations[("ns", name)]["imagepatch.dev/state"])


class MemoryRegistry:
    """The calls Detector makes on adapters.registry.RegistryClient; ``broken`` images raise."""

    def __init__(self, broken: dict[str, Exception] | None = None) -> None:
        self.broken = broken or {}

    def _check(self, image: Any) -> None:
        for name, exc in self.broken.items():
            if name in str(image):
                raise exc

    async def resolve_digest(self, image: Any) -> str:
        self._check(image)
        return D_APP

    async def image_lineage(self, image: Any) -> Lineage:
        self._check(image)
        return Lineage(f"{ECR}/base:1", D_BASE, "manifest-annotations")

    async def head_manifest(self, image: Any, ref: str | None = None) -> ManifestInfo:
        return ManifestInfo(D_BASE, OCI_MANIFEST, 100)

    async def platform_digests(self, image: Any) -> dict[str, str]:
        return {}


class DeniedFindings:
    async def read_async(self, **_: Any) -> Any:
        raise ConfigurationError("inspector2:ListFindings: AccessDeniedException", reason="AccessDenied")


def policy(name: str, **spec: Any) -> dict:
    return {"metadata": {"name": name, "generation": 1, "annotations": {}},
            "spec": {"namespaceSelector": {}, **spec}}


def deployment(name: str, image: str, policy_name: str, **annotations: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                     "annotations": {"imagepatch.dev/policy": policy_name, **annotations}},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def run_pass(detector: Detector, *deployments: dict) -> None:
    for dep in deployments:
        detector.observe("ADDED", dep)
    asyncio.run(detector.evaluate_all())


def test_any_exception_for_one_image_makes_only_that_workload_unknown():
    kube = MemoryKube([policy("a"), policy("b")])
    registry = MemoryRegistry({"weird": KeyError("mediaType")})
    detector = Detector(kube=kube, registry=registry)
    run_pass(detector,
             deployment("bad", f"{ECR}/weird:1", "a"), deployment("good", f"{ECR}/app:1", "a"),
             deployment("other", f"{ECR}/app:1", "b"))  # fmt: skip

    bad = kube.state("bad")
    assert bad["state"] == "Unknown"
    assert bad["containers"][0]["reason"] == "EvaluationFailed"
    assert f"{ECR}/weird:1" in bad["containers"][0]["message"] and "KeyError" in bad["containers"][0]["message"]
    assert kube.state("good")["state"] == "Compliant"
    assert kube.state("other")["state"] == "Compliant"
    assert [e["name"] for e in kube.events if e["type"] == "Warning"] == ["bad"]
    assert set(kube.statuses) == {"a", "b"}


def test_a_policy_whose_evaluation_fails_does_not_stop_the_next_and_is_not_retried_every_tick():
    kube = MemoryKube([policy("a"), policy("b")], failing_status={"a"})
    detector = Detector(kube=kube, registry=MemoryRegistry())
    run_pass(detector, deployment("one", f"{ECR}/app:1", "a"), deployment("two", f"{ECR}/app:1", "b"))
    assert "b" in kube.statuses  # evaluated in the same pass, after "a" failed
    assert kube.state("two")["state"] == "Compliant"
    # Recorded as evaluated: the next tick does not redo "a" (nothing changed).
    kube.statuses.clear()
    asyncio.run(detector.evaluate_all())
    assert kube.statuses == {}


def detection_passes() -> float:
    from imagepatch.adapters.metrics import REGISTRY

    return REGISTRY.get_sample_value("imagepatch_detection_passes_total") or 0.0


def test_each_completed_pass_is_counted_once_whether_or_not_a_policy_was_due():
    kube = MemoryKube([policy("a"), policy("b")])
    detector = Detector(kube=kube, registry=MemoryRegistry())
    before = detection_passes()
    run_pass(detector, deployment("one", f"{ECR}/app:1", "a"), deployment("two", f"{ECR}/app:1", "b"))
    assert detection_passes() - before == 1  # one pass over two policies
    kube.statuses.clear()
    asyncio.run(detector.evaluate_all())  # nothing due: still a pass that looked
    assert kube.statuses == {}
    assert detection_passes() - before == 2


def test_a_pass_that_fails_is_not_counted():
    class Unreachable(MemoryKube):
        async def list_policies(self) -> list[dict]:
            raise TransientError("the API server is unavailable", reason="APIUnavailable")

    detector = Detector(kube=Unreachable([]), registry=MemoryRegistry())
    before = detection_passes()
    with pytest.raises(TransientError):
        asyncio.run(detector.evaluate_all())
    assert detection_passes() == before


@pytest.mark.parametrize(
    ("annotation", "value", "problem"),
    [
        ("imagepatch.dev/base-image", f"{ECR}/" + "x" * 2000 + ":1", "at most 1024 are read"),
        ("imagepatch.dev/rebuild", "codebuild:" + "p" * 1100, "at most 1024 are read"),
        ("imagepatch.dev/base-image", "Not A Reference", "invalid image reference"),
        ("imagepatch.dev/base-image", "base:1\x00", "control characters"),
        ("imagepatch.dev/rebuild", "   ", "is blank"),
        ("imagepatch.dev/rebuild", "codebuild:my project", "whitespace inside a name"),
        ("imagepatch.dev/rebuild", "codebuild:" + "p" * 600, "at most 512 are admitted"),
    ],
)
def test_bad_annotations_are_refused_with_one_warning(annotation, value, problem):
    kube = MemoryKube([policy("a")])
    detector = Detector(kube=kube, registry=MemoryRegistry())
    run_pass(detector, deployment("bad", f"{ECR}/app:1", "a", **{annotation: value}),
             deployment("good", f"{ECR}/app:1", "a"))  # fmt: skip
    bad = kube.state("bad")
    assert (bad["state"], bad["containers"][0]["reason"]) == ("Unknown", "InvalidAnnotation")
    assert problem in bad["containers"][0]["message"] and annotation in bad["containers"][0]["message"]
    assert len(bad["message"]) <= 1000
    assert kube.state("good")["state"] == "Compliant"
    assert [(e["name"], e["reason"]) for e in kube.events if e["type"] == "Warning"] == [("bad", "Unknown")]
    assert all(len(e["message"]) <= 1024 for e in kube.events)


def outdated_registry() -> MemoryRegistry:
    registry = MemoryRegistry()

    async def moved(image: Any, ref: str | None = None) -> ManifestInfo:
        return ManifestInfo("sha256:" + "c" * 64, OCI_MANIFEST, 100)  # the base tag moved

    registry.head_manifest = moved  # type: ignore[method-assign]
    return registry


def test_a_blank_rebuild_annotation_never_blocks_the_patch_of_its_siblings():
    # Given two workloads of one outdated image, one with a rebuild annotation of spaces.
    kube = MemoryKube([policy("a", rebuild={"strategy": "external"})])
    detector = Detector(kube=kube, registry=outdated_registry())
    run_pass(detector, deployment("bad", f"{ECR}/app:1", "a", **{"imagepatch.dev/rebuild": "   "}),
             deployment("good", f"{ECR}/app:1", "a"))  # fmt: skip
    # Then the sibling's patch is created with a rebuild the CRD admits, targeting it alone.
    [patch] = kube.patches.values()
    assert patch["spec"]["rebuild"] == {"strategy": "external"}
    assert [t["name"] for t in patch["spec"]["targets"]] == ["good"]
    assert kube.state("good")["state"] == "Patching"
    bad = kube.state("bad")
    assert (bad["state"], bad["containers"][0]["reason"]) == ("Unknown", "InvalidAnnotation")
    assert "imagepatch.dev/rebuild is blank" in bad["containers"][0]["message"]


def test_a_padded_rebuild_annotation_is_read_as_its_normal_form():
    kube = MemoryKube([policy("a", rebuild={"strategy": "external",
                                            "allowed": {"strategies": ["external", "rebase"]}})])
    detector = Detector(kube=kube, registry=outdated_registry())
    run_pass(detector, deployment("web", f"{ECR}/app:1", "a", **{"imagepatch.dev/rebuild": " rebase "}))
    [patch] = kube.patches.values()
    assert patch["spec"]["rebuild"] == {"strategy": "rebase"}
    assert patch["metadata"]["annotations"]["imagepatch.dev/key"].endswith("|rebuild=rebase")


def test_a_refused_imagepatch_marks_its_workloads_unknown_and_a_transient_error_is_not_swallowed():
    outdated = MemoryRegistry()

    async def moved(image: Any, ref: str | None = None) -> ManifestInfo:
        return ManifestInfo("sha256:" + "c" * 64, OCI_MANIFEST, 100)  # the base tag moved

    outdated.head_manifest = moved  # type: ignore[method-assign]
    refused = ConfigurationError("create ImagePatch: HTTP 422 spec.rebuild.strategy: Unsupported value",
                                 reason="Invalid")  # fmt: skip
    kube = MemoryKube([policy("a")], refuse_create=refused)
    detector = Detector(kube=kube, registry=outdated)
    # (A rebuild annotation the policy does not allow never gets this far: RebuildNotAllowed.)
    run_pass(detector, deployment("web", f"{ECR}/app:1", "a"))
    web = kube.state("web")
    assert (web["state"], web["containers"][0]["reason"]) == ("Unknown", "ImagePatchRejected")
    assert f"{ECR}/app" in web["containers"][0]["message"] and "422" in web["containers"][0]["message"]
    assert kube.patches == {}

    # A transient failure is not a refusal: the policy's evaluation fails and is logged,
    # the workload's state is left as it was.
    kube.refuse_create = TransientError("API server unavailable")
    detector.observe("MODIFIED", deployment("web", f"{ECR}/app:2", "a"))
    asyncio.run(detector.evaluate_all())
    assert kube.state("web")["containers"][0]["reason"] == "ImagePatchRejected"


@pytest.mark.parametrize(
    ("findings", "reason", "text"),
    [
        (None, "FindingsUnavailable", "no AWS region configured"),
        (DeniedFindings(), "AccessDenied", "AccessDeniedException"),
    ],
    ids=["no-region", "access-denied"],
)
def test_unreadable_findings_are_unknown_never_compliant_and_the_policy_says_so(findings, reason, text):
    kube = MemoryKube([policy("a", vulnerabilities={"source": "ecr"})])
    detector = Detector(kube=kube, registry=MemoryRegistry(), findings=findings)
    run_pass(detector, deployment("web", f"{ECR}/app:1", "a"))
    web = kube.state("web")
    assert (web["state"], web["containers"][0]["reason"]) == ("Unknown", reason)
    assert text in web["containers"][0]["message"]
    status = kube.statuses["a"]["findings"]
    assert status["readable"] is False and status["reason"] == reason and text in status["message"]


def test_findings_status_is_readable_when_nothing_failed_and_absent_without_a_source():
    kube = MemoryKube([policy("a", vulnerabilities={"source": "ecr"}), policy("b")])
    detector = Detector(kube=kube, registry=MemoryRegistry(), findings=DeniedFindings())
    run_pass(detector, deployment("web", "ghcr.io/o/app:1", "a"), deployment("x", "ghcr.io/o/app:1", "b"))
    assert kube.statuses["a"]["findings"]["readable"] is True  # not an ECR image: nothing to read
    assert "findings" not in kube.statuses["b"]


def test_every_kind_and_init_container_is_judged_and_patched_with_its_kind():
    outdated = MemoryRegistry()

    async def moved(image: Any, ref: str | None = None) -> ManifestInfo:
        return ManifestInfo("sha256:" + "c" * 64, OCI_MANIFEST, 100)  # the base tag moved

    outdated.head_manifest = moved  # type: ignore[method-assign]
    kube = MemoryKube([policy("a")])
    detector = Detector(kube=kube, registry=outdated)
    sidecar = {"name": "proxy", "image": f"{ECR}/proxy:1", "restartPolicy": "Always"}
    sts = deployment("db", f"{ECR}/app:1", "a")
    sts["spec"]["template"]["spec"]["initContainers"] = [sidecar]
    sts["spec"]["template"]["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": f"{ECR}/debug:1"}]
    cron = deployment("nightly", f"{ECR}/app:1", "a")
    cron["spec"] = {"jobTemplate": {"spec": cron["spec"]}}
    detector.observe("ADDED", sts, kind="StatefulSet")
    detector.observe("ADDED", cron, kind="CronJob")
    asyncio.run(detector.evaluate_all())

    targets = sorted((t["kind"], t["name"], t["container"])
                     for p in kube.patches.values() for t in p["spec"]["targets"])
    assert targets == [("CronJob", "nightly", "app"), ("StatefulSet", "db", "app"),
                       ("StatefulSet", "db", "proxy")]
    assert kube.kinds == {("ns", "db"): "StatefulSet", ("ns", "nightly"): "CronJob"}
    assert {(e["kind"], e["apiVersion"]) for e in kube.events} == {
        ("StatefulSet", "apps/v1"), ("CronJob", "batch/v1")}
    # The state lists every judged container, never the ephemeral one.
    assert [c["name"] for c in kube.state("db")["containers"]] == ["app", "proxy"]

    # Opting out removes our state annotation from the workload of that kind.
    del cron["metadata"]["annotations"]["imagepatch.dev/policy"]
    cron["metadata"]["annotations"]["imagepatch.dev/state"] = "{}"
    detector.observe("MODIFIED", cron, kind="CronJob")
    kube.kinds.clear()
    asyncio.run(detector.evaluate_all())
    assert kube.kinds[("ns", "nightly")] == "CronJob"
    assert kube.annotations[("ns", "nightly")]["imagepatch.dev/state"] is None


class RefusingKube(MemoryKube):
    """The API server refuses annotation writes on some workloads (an admission webhook)."""

    def __init__(self, policies: list[dict], refuse: Mapping[str, Exception]) -> None:
        super().__init__(policies)
        self.refuse = dict(refuse)
        self.refused: list[str] = []

    async def annotate_workload(self, kind: str, ns: str, name: str,
                                annotations: Mapping[str, Any]) -> None:
        if name in self.refuse:
            self.refused.append(name)
            raise self.refuse[name]
        await super().annotate_workload(kind, ns, name, annotations)


def test_refused_writes_for_an_orphan_and_a_missing_policy_do_not_stop_the_pass():
    denied = ConfigurationError("annotate Deployment: HTTP 403: denied by admission policy",
                                reason="Forbidden")
    kube = RefusingKube([policy("a")], {
        "orphan": denied, "lost": denied,
        "flaky-orphan": TransientError("annotate: HTTP 503", reason="APIUnavailable")})
    detector = Detector(kube=kube, registry=outdated_registry())
    for name in ("orphan", "flaky-orphan"):  # opted out, our state annotation left on them
        gone = deployment(name, f"{ECR}/app:1", "a", **{"imagepatch.dev/state": "{}"})
        del gone["metadata"]["annotations"]["imagepatch.dev/policy"]
        detector.observe("MODIFIED", gone)
    run_pass(detector, deployment("lost", f"{ECR}/app:1", "no-such-policy"),
             deployment("web", f"{ECR}/app:1", "a"))

    # Then: the other workload was evaluated and its patch created in the same pass.
    assert kube.state("web")["state"] == "Patching"
    assert [p["spec"]["targets"][0]["name"] for p in kube.patches.values()] == ["web"]
    assert sorted(kube.refused) == ["flaky-orphan", "lost", "orphan"]
    # A refused clean-up waits for the workload's next watch event; a transient one is retried.
    assert set(detector.orphans.values()) == {("Deployment", "ns", "flaky-orphan")}
    # The refused PolicyNotFound record is not asked for again on every tick, but later.
    kube.refused.clear()
    asyncio.run(detector.evaluate_all())
    assert kube.refused == ["flaky-orphan"]
    later = detector.monotonic() + 301
    detector.monotonic = lambda: later
    kube.refused.clear()
    asyncio.run(detector.evaluate_all())
    assert sorted(kube.refused) == ["flaky-orphan", "lost"]
    # Once the write goes through, nothing about the refusal is kept.
    del kube.refuse["lost"]
    detector.monotonic = lambda: later + 301
    asyncio.run(detector.evaluate_all())
    assert kube.state("lost")["state"] == "PolicyNotFound"
    assert detector.refused_writes == {}


def test_a_refused_history_prune_does_not_stop_the_other_deletes():
    class PruneKube(MemoryKube):
        deleted: list[str] = []

        async def delete_imagepatch(self, name: str, *, resource_version: str) -> bool:
            if name == "old-0":
                raise ConfigurationError("delete ImagePatch old-0: HTTP 403", reason="Forbidden")
            self.deleted.append(name)
            return True

    kube = PruneKube([policy("a", history={"keepCount": 0})])
    for i in range(3):
        kube.patches[f"old-{i}"] = {
            "metadata": {"name": f"old-{i}", "resourceVersion": "1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"policy": "a", "image": f"{ECR}/app"},
            "status": {"phase": "Succeeded", "completedAt": f"2026-01-0{i + 1}T00:00:00Z"}}
    detector = Detector(kube=kube, registry=MemoryRegistry())
    run_pass(detector, deployment("web", f"{ECR}/app:1", "a"))
    assert sorted(kube.deleted) == ["old-1", "old-2"]
    assert "a" in kube.statuses


def test_what_is_kept_per_workload_and_policy_goes_when_they_do():
    from imagepatch.adapters.metrics import REGISTRY

    kube = MemoryKube([policy("a"), policy("b")])
    detector = Detector(kube=kube, registry=MemoryRegistry())
    one, two = deployment("one", f"{ECR}/app:1", "a"), deployment("two", f"{ECR}/app:1", "b")
    run_pass(detector, one, two)
    assert set(detector.evaluated) == {"uid-one", "uid-two"}
    assert set(detector.last_evaluated) == set(detector.bases_of) == {"a", "b"}
    assert detector.facts.bases  # the base digest is cached for the checkInterval
    assert REGISTRY.get_sample_value("imagepatch_workloads", {"policy": "b", "state": "compliant"}) == 1

    # When: workload "one" is deleted, policy "b" is deleted, and time passes the checkInterval.
    detector.observe("DELETED", one)
    kube.policies = [policy("a")]
    later = detector.monotonic() + 25 * 3600
    detector.monotonic = lambda: later
    asyncio.run(detector.evaluate_all())

    assert set(detector.evaluated) == {"uid-two"}  # still opted in, to a policy now missing
    assert set(detector.last_evaluated) == set(detector.bases_of) == set(detector.handled_request) == {"a"}
    assert detector.facts.bases == {} and detector.facts.scans == {}
    assert REGISTRY.get_sample_value("imagepatch_workloads", {"policy": "b", "state": "compliant"}) is None
    assert REGISTRY.get_sample_value("imagepatch_last_pass_timestamp_seconds", {"policy": "b"}) is None
    assert REGISTRY.get_sample_value("imagepatch_last_pass_timestamp_seconds", {"policy": "a"}) is not None
