"""The observe stage of a detection pass: what each container runs and is built on.

``FactReader`` reads the running digest of a container (pinned in the spec,
else from pod status, else by resolving the tag, and it says which), the base
it was built on (OCI annotations, config labels, then the
``imagepatch.dev/base-image`` annotation), the base tag's current digest (one
HEAD per distinct base and credentials per ``checkInterval``, however many
workloads share it), and the scan findings when the policy names a source.

What it keeps between passes is a cache of registry and scan answers, each
valid for the reading policy's ``checkInterval`` and dropped when a queue
event names its image (``forget``). What it reads within one pass is shared
through a ``PassMemo``; what one policy's pass learns (the findings it could
not read) goes into that pass's ``PolicyPass``, never onto the reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.registry import PullThroughRules, RegistryClient
from imagepatch.core import kinds, workload_ref
from imagepatch.core.compliance import ContainerFacts
from imagepatch.core.detection.lineage import (
    base_to_follow,
    override_use,
    remembered_base_digest,
)
from imagepatch.core.detection.workload import base_override, image_name, kind_of
from imagepatch.core.images import ImageRef, is_ecr_host, parse_image
from imagepatch.core.oci import INDEX_TYPES
from imagepatch.core.reasons import FINDINGS_UNAVAILABLE
from imagepatch.core.rollout import running_digest
from imagepatch.core.scans import FindingsSource, ScanReport
from imagepatch.model import memory as memory_model
from imagepatch.model.errors import SpecError
from imagepatch.model.memory import BaseMemory, WorkloadMemory
from imagepatch.model.policy import (
    LabelSelector,
    PolicySpec,
    VulnerabilitySource,
    parse_label_selector,
)
from imagepatch.model.times import Clock
from imagepatch.reconcile.approve_after import hold_new_base

log = logging.getLogger("imagepatch.detection")


@dataclass
class BaseFacts:
    digest: str = ""
    platforms: Mapping[str, str] = field(default_factory=dict)
    error_reason: str = ""
    error: str = ""


@dataclass
class PassMemo:
    """Memo for one evaluation pass: every lookup is made at most once per pass.

    A registry answer is keyed by the credential scope it was read with
    (``scope_of``) and the reference: a tag one policy resolved with its Secret
    is never reused for a policy with other credentials for that host.
    """

    # (scope, image) -> (digest, error)
    tags: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    namespace_pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bases: dict[tuple[str, str], BaseFacts] = field(default_factory=dict)  # (scope, base ref)


@dataclass
class PolicyPass:
    """One policy's pass: the value its stages hand on (never kept on the detector)."""

    policy: str
    spec: PolicySpec
    memo: PassMemo
    registry: RegistryClient  # read with this policy's credentials only
    # (reason, message) of each findings read that failed, in order: the policy
    # status says findings are unreadable, naming the first.
    findings_errors: list[tuple[str, str]] = field(default_factory=list)


def registry_for(registry: RegistryClient, policy: str) -> RegistryClient:
    """The registry as ``policy``'s workloads read it: with that policy's credentials only.

    The in-memory registries of unit tests have a single scope (no ``for_policy``).
    """
    for_policy = getattr(registry, "for_policy", None)
    return for_policy(policy) if for_policy is not None else registry


async def scope_of(registry: RegistryClient, host: str) -> str:
    """Which credentials ``registry`` reads ``host`` with: the cache-key part ("" anonymous)."""
    scope = getattr(registry, "credential_scope", None)
    return await scope(host) if scope is not None else ""


class FactReader:
    """Reads containers' facts for detection; caches answers across passes."""

    def __init__(
        self,
        *,
        kube: Kube,
        registry: RegistryClient,
        memory: OperatorMemory,
        findings: FindingsSource | None,
        upstreams: PullThroughRules | None,
        clock: Clock,
        monotonic: Callable[[], float],
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.memory = memory
        self.findings = findings
        self.upstreams = upstreams
        self.clock = clock
        self.monotonic = monotonic
        # (credential scope, base tag ref) -> (at, facts)
        self.bases: dict[tuple[str, str], tuple[float, BaseFacts]] = {}
        # (credential scope, app tag ref) -> (at, digest): a tag resolved within the
        # policy's checkInterval is not asked again (an event naming it drops it).
        self.tags: dict[tuple[str, str], tuple[float, str]] = {}
        # (repo, digest, source) -> (monotonic time read, report)
        self.scans: dict[tuple[str, str, str], tuple[float, ScanReport]] = {}

    async def workload(self, dep: Mapping[str, Any]) -> Mapping[str, Any]:
        """The workload as detection judges it: an Argo Rollout with ``spec.workloadRef``
        carries the referenced Deployment's template (``core.workload_ref``)."""
        if workload_ref.reference(dep) is None:
            return dep
        return await self.kube.resolve_workload_ref(kind_of(dep), dep)

    def forget(self, names: set[str]) -> None:
        """Drop cached base digests, tag digests and scan reports for these image names."""
        for base in [k for k in self.bases if image_name(k[1]) in names]:
            del self.bases[base]
        for tag in [k for k in self.tags if image_name(k[1]) in names]:
            del self.tags[tag]
        for scan in [k for k in self.scans if k[0] in names]:
            del self.scans[scan]

    def expire(self, longest: float) -> None:
        """Drop answers older than ``longest`` seconds (the longest checkInterval of any
        policy): no policy would read them again."""
        now = self.monotonic()
        for ref in [r for r, (at, _) in self.bases.items() if now - at >= longest]:
            del self.bases[ref]
        for key in [k for k, (at, _) in self.scans.items() if now - at >= longest]:
            del self.scans[key]
        for tag in [k for k, (at, _) in self.tags.items() if now - at >= longest]:
            del self.tags[tag]

    def remembered(self, workload: Mapping[str, Any]) -> WorkloadMemory:
        """The operator's memory of this workload (fresh for a new uid)."""
        meta = workload.get("metadata") or {}
        return self.memory.get(
            kind_of(workload), meta.get("namespace", ""), meta.get("name", ""),
            meta.get("uid", ""),
        )  # fmt: skip

    async def namespace_labels(self, ns: str, memo: PassMemo) -> dict[str, str]:
        if ns not in memo.namespace_labels:
            memo.namespace_labels[ns] = await self.kube.namespace_labels(ns)
        return memo.namespace_labels[ns]

    def same_registry(self, a: ImageRef, b: ImageRef) -> bool:
        """Two names served by one registry endpoint (the admin's --registry-endpoint)."""
        return self.registry.endpoint(a) == self.registry.endpoint(b)

    async def container_facts(
        self, run: PolicyPass, workload: Mapping[str, Any], container: Mapping[str, Any]
    ) -> ContainerFacts:
        """What one container runs and is built on, read with the policy's registry."""
        spec, registry = run.spec, run.registry
        image = container.get("image", "")
        name = container.get("name", "")
        try:
            ref = parse_image(image)
        except ValueError as exc:
            return ContainerFacts(
                container=name,
                image=image,
                repository=image,
                error_reason="InvalidImageReference",
                error=str(exc),
            )
        facts = ContainerFacts(container=name, image=image, repository=ref.name)
        try:
            digest, source = await self.running_digest(
                workload, name, ref, run.memo, registry,
                max_age=spec.base_images.check_interval.total_seconds(),
            )  # fmt: skip
            facts = replace(facts, digest=digest, digest_source=source)
            lineage = await registry.image_lineage(ref.with_digest(digest))
            base_name, base_digest = lineage.base_name or "", lineage.base_digest or ""
            lineage_source = lineage.source or ""
            override = base_override(workload)
            if not base_name and override:
                base_name, lineage_source = override, "workload-annotation"
                follow_override = override
            else:
                follow_override, note = override_use(
                    base_name, override, same_registry=self.same_registry
                )
                facts = replace(facts, note=note)
            facts = replace(
                facts, base_name=base_name, base_digest=base_digest, lineage_source=lineage_source
            )
            follow = base_to_follow(base_name, follow_override)
            if follow is not None:
                base = await self.base(follow, spec, run.memo, registry)
                if base.error_reason:
                    return replace(facts, error_reason=base.error_reason, error=base.error)
                facts = replace(facts, base_current=base.digest, base_platforms=base.platforms)
                if not base_digest and override:
                    # The image records no base digest: the annotation names the base,
                    # so what runs is taken to be built on the base as it was when this
                    # digest was first seen (the operator's memory, never the workload's
                    # annotations), else on the base as it is now. Without the memory a
                    # base push could never make such a workload outdated.
                    record = self.remembered(workload)
                    remembered = remembered_base_digest(record, name, digest, base_name)
                    facts = replace(facts, base_digest=remembered or base.digest)
                    if not remembered:
                        self.memory.stage(memory_model.with_base(record, name, BaseMemory(
                            digest=digest, base=base_name, base_digest=base.digest)))
        except AdapterError as exc:
            return replace(facts, error_reason=exc.reason, error=str(exc))
        facts = await self.with_findings(run, facts, ref)
        # spec.baseImages.approveAfter: a moved base is held until it has been
        # published long enough (reconcile/approve_after.py).
        return await hold_new_base(
            facts, base=follow, spec=spec, registry=registry, memory=self.memory,
            record=self.remembered(workload), now=self.clock(),
        )  # fmt: skip

    async def running_digest(
        self,
        workload: Mapping[str, Any],
        container: str,
        ref: ImageRef,
        memo: PassMemo,
        registry: RegistryClient | None = None,
        *,
        max_age: float = 0.0,
    ) -> tuple[str, str]:
        """The container's running digest and where it came from.

        A tag resolved by the registry is kept for ``max_age`` seconds (the
        policy's checkInterval) unless an event names its image, so a pass
        that an event about another image started asks nothing about it.
        """
        registry = registry or self.registry
        if ref.digest:
            return ref.digest, "spec"
        from_pods = await self.pod_digest(workload, container, str(ref), memo)
        if from_pods:
            return from_pods, "pod-status"
        key = (await scope_of(registry, ref.host), str(ref))
        cached = self.tags.get(key)
        if key not in memo.tags and cached and self.monotonic() - cached[0] < max_age:
            memo.tags[key] = (cached[1], "")  # resolved within checkInterval, no event since
        if key not in memo.tags:
            try:
                memo.tags[key] = (await registry.resolve_digest(ref), "")
                self.tags[key] = (self.monotonic(), memo.tags[key][0])
            except AdapterError as exc:
                memo.tags[key] = ("", f"{exc.reason}\0{exc}")
                raise
        digest, error = memo.tags[key]
        if error:
            reason, message = error.split("\0", 1)
            raise AdapterError(message, reason=reason)
        return digest, "tag-resolved"

    async def pod_digest(
        self, workload: Mapping[str, Any], container: str, image: str, memo: PassMemo
    ) -> str:
        """The digest every current pod reports for the container, if they agree."""
        if kind_of(workload) == kinds.CRONJOB:
            # Its Jobs' pods come and go with each run and may run an older
            # template; the tag is resolved instead.
            return ""
        ns = workload["metadata"]["namespace"]
        if ns not in memo.namespace_pods:
            memo.namespace_pods[ns] = await self.kube.list_namespace_pods(ns)
        selector = (workload.get("spec") or {}).get("selector") or {}
        try:
            match: LabelSelector = parse_label_selector(selector, "spec.selector")
        except SpecError:
            return ""
        pods = [
            pod
            for pod in memo.namespace_pods[ns]
            if match.matches((pod.get("metadata") or {}).get("labels") or {})
        ]
        return running_digest(pods, container, image)

    async def base(
        self,
        ref: ImageRef,
        spec: PolicySpec,
        memo: PassMemo,
        registry: RegistryClient | None = None,
    ) -> BaseFacts:
        """The base tag's current digest: one HEAD per distinct base and credentials per
        checkInterval, however many workloads and policies share them."""
        registry = registry or self.registry
        try:
            # A base in an ECR pull-through cache is watched upstream: the cache
            # only fetches a moved tag when someone pulls it (core/pullthrough.py).
            upstream = await self.upstreams.upstream_of(ref) if self.upstreams else None
            target = upstream or ref
            # Keyed by the credentials the tag is resolved with: another
            # policy's Secret must not answer for this one.
            key = (await scope_of(registry, target.host), str(ref))
        except AdapterError as exc:
            return BaseFacts(error_reason=exc.reason, error=f"base {ref}: {exc}")
        if key in memo.bases:
            return memo.bases[key]
        cached = self.bases.get(key)
        if (
            cached
            and self.monotonic() - cached[0] < spec.base_images.check_interval.total_seconds()
        ):
            memo.bases[key] = cached[1]
            return cached[1]
        try:
            info = await registry.head_manifest(target)
            platforms: Mapping[str, str] = {}
            if info.media_type in INDEX_TYPES:
                # By digest: read once, then cached for good by the client.
                platforms = await registry.platform_digests(target.with_digest(info.digest))
            facts = BaseFacts(digest=info.digest, platforms=platforms)
            self.bases[key] = (self.monotonic(), facts)
        except AdapterError as exc:
            facts = BaseFacts(error_reason=exc.reason, error=f"base {key[1]}: {exc}")
        memo.bases[key] = facts
        return facts

    async def with_findings(
        self, run: PolicyPass, facts: ContainerFacts, ref: ImageRef
    ) -> ContainerFacts:
        """The facts with the scan's verdict, when the policy names a findings source."""
        spec = run.spec
        source = spec.vulnerabilities.source
        if source == VulnerabilitySource.NONE or not facts.digest:
            return facts
        ecr = is_ecr_host(ref.host)
        if ecr is None:
            return facts  # only ECR images have ECR/Inspector findings
        if self.findings is None:
            # Never a silent Compliant: the policy asks for findings we cannot read.
            message = (
                f"image {ref.name}: vulnerabilities.source is {source.value} but the operator "
                "has no AWS region configured (--aws-region), so findings cannot be read"
            )
            run.findings_errors.append((FINDINGS_UNAVAILABLE, message))
            return replace(facts, error_reason=FINDINGS_UNAVAILABLE, error=message)
        key = (ref.name, facts.digest, str(source))
        cached = self.scans.get(key)
        if (
            cached
            and self.monotonic() - cached[0] < spec.base_images.check_interval.total_seconds()
        ):
            report = cached[1]
        else:
            try:
                report = await self.findings.read_async(
                    repository=ref.repository,
                    digest=facts.digest,
                    source=source,
                    registry_id=ecr.account,
                    region=ecr.region,
                )
            except AdapterError as exc:
                # No credentials, AccessDenied, a throttled API: Unknown, and the
                # policy says findings could not be read.
                message = f"image {ref.name}: findings unreadable: {exc}"
                run.findings_errors.append((exc.reason, message))
                return replace(facts, error_reason=exc.reason, error=message)
            self.scans[key] = (self.monotonic(), report)
        verdict = report.verdict(spec.vulnerabilities, now=self.clock())
        return replace(facts, findings=verdict, scan=report.status_outcome)
