"""kopf wiring only: which events reach which reconcile function.

Handler ids are short and stable because kopf keys its progress annotations
by them. No decision is made here; everything goes through ``reconcile``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from imagepatch import reconcile
from imagepatch.adapters import metrics
from imagepatch.adapters.builders.codebuild import CodeBuildBuilder
from imagepatch.adapters.builders.external import ExternalBuilder
from imagepatch.adapters.builders.job import DEFAULT_BUILD_NAMESPACE, JobBuilder
from imagepatch.adapters.builders.rebase import RebaseBuilder
from imagepatch.adapters.errors import ConfigurationError, ConflictError, TransientError
from imagepatch.adapters.events import SqsEventSource
from imagepatch.adapters.findings import FindingsReader
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.registry import EcrCredentials, RegistryClient
from imagepatch.adapters.securityhub import SecurityHubExporter
from imagepatch.model.imagepatch import Phase
from imagepatch.reconcile.detection import Detector, PolicySecrets
from imagepatch.reconcile.rollouts import RebuildTools


@dataclass(frozen=True)
class Options:
    """Operator settings from the command line (``imagepatch run --help``)."""

    aws_region: str | None = None
    events_queue_url: str | None = None
    registry_endpoints: dict[str, str] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    detect_tick: float = 5.0
    # Where the operator runs: the only namespace it reads Secrets from.
    operator_namespace: str = "imagepatch-system"
    # Where build Jobs run and their templates (ConfigMaps) are read: never the
    # operator's own namespace by default, so a build pod (which needs more than
    # the restricted Pod Security level) never shares a namespace with the
    # operator's Secrets and ServiceAccount token.
    build_namespace: str = DEFAULT_BUILD_NAMESPACE
    metrics_port: int | None = None
    securityhub: bool = False
    cluster_name: str = ""

GROUP = "imagepatch.dev"
POLICIES = (GROUP, "v1alpha1", "imagepatchpolicies")
IMAGEPATCHES = (GROUP, "v1alpha1", "imagepatches")
TERMINAL_PHASES = tuple(str(p) for p in Phase if p.terminal)
# How often an unfinished ImagePatch is looked at: the health gate's resolution.
PATCH_INTERVAL = 2.0
# Level-based resync: a timer re-runs the reconcile even if a watch event was
# lost (a dead watch stream leaves kopf silent otherwise: nolar/kopf#787).
RESYNC_SECONDS = 300.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.kube = Kube()
    options: Options = memo.get("options") or Options()
    secrets = PolicySecrets(options.operator_namespace)
    memo.registry = RegistryClient(
        credentials=secrets,
        ecr=EcrCredentials(),
        insecure_hosts=options.insecure_registries,
        endpoints=options.registry_endpoints,
    )
    findings = FindingsReader(region=options.aws_region) if options.aws_region else None
    builders = {
        "external": ExternalBuilder(memo.registry),
        "job": JobBuilder(memo.kube, memo.registry, options.build_namespace),
        "codebuild": CodeBuildBuilder(memo.registry, options.aws_region),
        "rebase": RebaseBuilder(memo.registry),
    }
    securityhub = None
    if options.securityhub:
        securityhub = SecurityHubExporter(options.aws_region, cluster_name=options.cluster_name)
    if options.metrics_port:
        metrics.serve(options.metrics_port, registry_stats=memo.registry.stats)
    memo.rebuild_tools = RebuildTools(registry=memo.registry, builders=builders,
                                      findings=findings)
    memo.detector = Detector(kube=memo.kube, registry=memo.registry, findings=findings,
                             secrets=secrets, securityhub=securityhub, tick=options.detect_tick)
    memo.stop = asyncio.Event()
    memo.tasks = [asyncio.create_task(memo.detector.run(memo.stop), name="detection")]
    if options.events_queue_url:
        source = SqsEventSource(options.events_queue_url, region=options.aws_region or "us-east-1")
        memo.tasks.append(asyncio.create_task(
            source.run(memo.detector.on_signals, stop=memo.stop), name="events"))
    # Progress lives in annotations under our own prefix, not in status.kopf:
    # our CRDs declare a structural status schema, which would prune it (kopf#527).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Only warnings become Kubernetes Events; "handler succeeded" is noise.
    settings.posting.level = logging.WARNING
    # Re-establish watches periodically, so a silently dead stream heals.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.stop.set()
    for task in memo.tasks:
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    await memo.registry.aclose()


@kopf.on.event("apps", "v1", "deployments")
def deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the detector's set of opted-in Deployments current (no API calls here)."""
    memo.detector.observe(event.get("type"), event.get("object") or {})


@kopf.on.probe(id="ok")
def liveness(**_: Any) -> bool:
    return True


@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES)
@kopf.timer(*POLICIES, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def policy(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile.reconcile_policy(body=body, patch=patch)


# ImagePatches advance on a timer only: kopf never runs one object's timer
# twice at once, so there is exactly one actor per ImagePatch, and a timer
# is level-based by nature (it re-reads everything each time).
def _unfinished(body: kopf.Body, **_: Any) -> bool:
    return (body.get("status") or {}).get("phase") not in TERMINAL_PHASES


@kopf.timer(*IMAGEPATCHES, interval=PATCH_INTERVAL, sharp=False, when=_unfinished)
async def imagepatch(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    try:
        await reconcile.reconcile_imagepatch(
            name=body["metadata"]["name"], kube=memo.kube, logger=logger,
            tools=memo.get("rebuild_tools"),
        )
    except ConflictError:
        return  # someone wrote in between: the next tick re-reads and re-plans
    except TransientError as exc:
        raise kopf.TemporaryError(f"{exc.reason}: {exc}", delay=exc.retry_after or 10) from None
    except ConfigurationError as exc:
        # A permission or a bad reference: retrying soon will not help.
        raise kopf.TemporaryError(f"{exc.reason}: {exc}", delay=60) from None
