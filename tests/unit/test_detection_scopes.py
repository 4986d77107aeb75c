"""Detection reads each policy's images with that policy's credentials only.

Given team P's policy, whose credentials read ``private.example``, and team
Q's, which has none; when one pass evaluates both, with Q's workloads naming
P's private image and a public image built on P's private base; then Q's
lookups go to the registry as Q (none is answered from what P's lookups found
earlier in the pass or in an earlier pass), and Q's workloads are
``Unknown``. The in-memory registry stands in for ``RegistryClient.for_policy``
(tests/integration/test_registry_reach.py tests the real one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from imagepatch.adapters.errors import ConfigurationError
from imagepatch.adapters.registry import Lineage, ManifestInfo
from imagepatch.core.oci import OCI_MANIFEST
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_isolation import D_APP, D_BASE, MemoryKube, deployment, policy

PRIVATE = "private.example"


class TeamView:
    """One policy's view: only policy ``p`` holds credentials for ``private.example``."""

    def __init__(self, policy: str, calls: list[tuple[str, str, str]]) -> None:
        self.policy = policy
        self.calls = calls

    def _read(self, op: str, image: Any) -> None:
        self.calls.append((self.policy, op, str(image)))
        if str(image).startswith(PRIVATE) and self.policy != "p":
            raise ConfigurationError(f"{op} {image}: HTTP 401", reason="RegistryAuthFailed")

    async def credential_scope(self, host: str) -> str:
        return "p-login" if host == PRIVATE and self.policy == "p" else ""

    async def resolve_digest(self, image: Any) -> str:
        self._read("resolve_digest", image)
        return D_APP

    async def image_lineage(self, image: Any) -> Lineage:
        self._read("image_lineage", image)
        return Lineage(f"{PRIVATE}/base:1", D_BASE, "manifest-annotations")

    async def head_manifest(self, image: Any, ref: str | None = None) -> ManifestInfo:
        self._read("head_manifest", image)
        return ManifestInfo(D_BASE, OCI_MANIFEST, 100)

    async def platform_digests(self, image: Any) -> dict[str, str]:
        return {}


class TeamRegistry:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.retained: list[str] = []

    def for_policy(self, policy: str) -> TeamView:
        return TeamView(policy, self.calls)

    def retain_policies(self, policies: Any) -> None:
        self.retained = sorted(policies)


def test_one_policys_registry_answers_are_never_reused_for_another() -> None:
    kube = MemoryKube([policy("p"), policy("q")])
    registry = TeamRegistry()
    detector = Detector(kube=kube, registry=registry)  # type: ignore[arg-type]
    for dep in (
        deployment("mine", f"{PRIVATE}/app:1", "p"),
        deployment("borrowed", f"{PRIVATE}/app:1", "q"),
        deployment("on-their-base", "public.example/app:1", "q"),
    ):
        detector.observe("ADDED", dep)

    asyncio.run(detector.evaluate_all())

    assert kube.state("mine")["state"] == "Compliant"
    for name in ("borrowed", "on-their-base"):
        state = kube.state(name)
        assert state["state"] == "Unknown", state
        assert state["containers"][0]["reason"] == "RegistryAuthFailed"
    # Q's tag and Q's base were asked of the registry as Q, after P had them.
    assert ("q", "resolve_digest", f"{PRIVATE}/app:1") in registry.calls
    assert ("q", "head_manifest", f"{PRIVATE}/base:1") in registry.calls
    assert registry.retained == ["p", "q"]

    # A later pass: P's base digest, kept across passes, is still P's alone.
    detector.evaluated.clear()
    before = len(registry.calls)
    asyncio.run(detector.evaluate_all())
    assert ("q", "head_manifest", f"{PRIVATE}/base:1") in registry.calls[before:]
    assert ("p", "head_manifest", f"{PRIVATE}/base:1") not in registry.calls[before:]
    assert kube.state("on-their-base")["state"] == "Unknown"
