"""Detection follows a base in an ECR pull-through cache to its upstream tag, and reads
an image's findings in its own registry's region.

The cache only fetches a moved tag from upstream when someone pulls it, so
detection HEADs the upstream tag: the workload is outdated as soon as upstream
moves, while the cache still serves the old digest. In-memory stand-ins for
the project's adapters (``PullThroughRules`` answers default prefixes without AWS).
"""

from __future__ import annotations

import asyncio
from typing import Any

from imagepatch.adapters.errors import ConfigurationError
from imagepatch.adapters.registry import Lineage, ManifestInfo, PullThroughRules
from imagepatch.core.oci import OCI_MANIFEST
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_isolation import MemoryKube, deployment, policy, run_pass

CACHE = "222222222222.dkr.ecr.eu-west-1.amazonaws.com"
D_APP = "sha256:" + "a" * 64
BASE_OLD = "sha256:" + "1" * 64
BASE_NEW = "sha256:" + "2" * 64


class CacheAndUpstream:
    """An app built on the cached python:3.12; upstream has moved, the cache has not."""

    def __init__(self) -> None:
        self.heads: list[str] = []

    async def resolve_digest(self, image: Any) -> str:
        return D_APP

    async def image_lineage(self, image: Any) -> Lineage:
        return Lineage(f"{CACHE}/docker-hub/library/python:3.12", BASE_OLD, "manifest-annotations")

    async def head_manifest(self, image: Any, ref: str | None = None) -> ManifestInfo:
        self.heads.append(str(image))
        digest = BASE_NEW if image.host == "docker.io" else BASE_OLD
        return ManifestInfo(digest, OCI_MANIFEST, 100)

    async def platform_digests(self, image: Any) -> dict[str, str]:
        return {}


def test_a_base_in_a_pull_through_cache_is_watched_upstream():
    kube, registry = MemoryKube([policy("p")]), CacheAndUpstream()
    detector = Detector(kube=kube, registry=registry, upstreams=PullThroughRules())
    run_pass(detector, deployment("web", f"{CACHE}/app:1@{D_APP}", "p"))

    assert registry.heads == ["docker.io/library/python:3.12"]
    web = kube.state("web")
    assert web["state"] in ("BaseImageOutdated", "Patching")
    assert web["containers"][0]["baseCurrent"] == BASE_NEW


def test_without_upstreams_the_cache_itself_is_watched():
    kube, registry = MemoryKube([policy("p")]), CacheAndUpstream()
    run_pass(Detector(kube=kube, registry=registry), deployment("web", f"{CACHE}/app:1@{D_APP}", "p"))
    assert registry.heads == [f"{CACHE}/docker-hub/library/python:3.12"]
    assert kube.state("web")["state"] == "Compliant"


class RecordingFindings:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def read_async(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        raise ConfigurationError("ecr:DescribeImageScanFindings: AccessDeniedException", reason="AccessDenied")


def test_findings_are_asked_of_the_image_registry_in_its_region():
    kube, findings = MemoryKube([policy("p", vulnerabilities={"source": "ecr"})]), RecordingFindings()
    detector = Detector(kube=kube, registry=CacheAndUpstream(), findings=findings)
    run_pass(detector, deployment("web", f"{CACHE}/app:1@{D_APP}", "p"))
    [call] = findings.calls
    assert (call["registry_id"], call["region"], call["repository"]) == ("222222222222", "eu-west-1", "app")


class RebuiltImage:
    """The registry calls ``rebuilds.verify`` makes: the rebuilt image records the new base."""

    async def image_lineage(self, image: Any) -> Lineage:
        return Lineage(f"{CACHE}/docker-hub/library/python:3.12", BASE_NEW, "manifest-annotations")

    async def platform_digests(self, image: Any) -> dict[str, str]:
        return {}


def test_verification_reads_findings_in_the_image_registry_and_region():
    import datetime as dt

    from imagepatch.model.imagepatch import parse_imagepatch
    from imagepatch.model.policy import parse_policy_spec
    from imagepatch.reconcile import rebuilds

    patch = parse_imagepatch({
        "metadata": {"name": "p1", "generation": 1},
        "spec": {"image": f"{CACHE}/app", "policy": "p", "reason": "BaseImageOutdated",
                 "currentDigest": D_APP, "tag": "1",
                 "evidence": {"baseImage": {"name": f"{CACHE}/docker-hub/library/python:3.12",
                                            "oldDigest": BASE_OLD, "newDigest": BASE_NEW}}},
        "status": {"rebuild": {"digest": "sha256:" + "b" * 64}},
    })
    findings = RecordingFindings()
    result = asyncio.run(rebuilds.verify(
        registry=RebuiltImage(), findings=findings, patch=patch,
        policy=parse_policy_spec({"namespaceSelector": {}, "vulnerabilities": {"source": "ecr"}}),
        now=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
    ))
    assert result is None  # findings unreadable this time: verification waits
    [call] = findings.calls
    assert (call["registry_id"], call["region"]) == ("222222222222", "eu-west-1")
