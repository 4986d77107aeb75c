"""kopf wiring only: which events reach which reconcile function.

Handler ids are short and stable because kopf keys its progress annotations
by them. No decision is made here; everything goes through ``reconcile``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from imagepatch import reconcile
from imagepatch.adapters import kubeapi, malloc, metrics
from imagepatch.adapters.awsconfig import ConfigEvaluations
from imagepatch.adapters.builders import Builder
from imagepatch.adapters.builders.codebuild import CodeBuildBuilder
from imagepatch.adapters.builders.external import ExternalBuilder
from imagepatch.adapters.builders.job import DEFAULT_BUILD_NAMESPACE, JobBuilder
from imagepatch.adapters.builders.rebase import RebaseBuilder
from imagepatch.adapters.builders.reservations import TagReservations
from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.events import SqsEventSource
from imagepatch.adapters.findings import FindingsReader
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.nodes import NodeSurvey
from imagepatch.adapters.notify import Notifier, RetrySettings, Senders
from imagepatch.adapters.registry import (
    EcrCredentials,
    PolicySecrets,
    PullThroughRules,
    RegistryClient,
    RetryPolicy,
)
from imagepatch.adapters.securityhub import SecurityHubExporter
from imagepatch.adapters.signatures import Kms, SignatureVerifier, Signer
from imagepatch.adapters.store import StoredKube
from imagepatch.core import kinds_rollout
from imagepatch.core.breaker import BreakerSettings
from imagepatch.core.liveness import watch_liveness
from imagepatch.model import names
from imagepatch.reconcile import rebuilds
from imagepatch.reconcile.detection import Detector
from imagepatch.reconcile.exporters import Destination, FanOut
from imagepatch.reconcile.loops import PatchLoops
from imagepatch.reconcile.outcomes import Backoff
from imagepatch.reconcile.rollouts import RebuildTools
from imagepatch.reconcile.supervisor import Supervisor
from imagepatch.reconcile.writeback import GitWriter


@dataclass(frozen=True)
class Options:
    """Operator settings from the command line (``imagepatch run --help``)."""

    aws_region: str | None = None
    events_queue_url: str | None = None
    registry_endpoints: dict[str, str] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    # Non-public networks (CIDRs) registries, realms and redirects may resolve
    # to (--registry-allow-network); everything else must be public.
    registry_allow_networks: tuple[str, ...] = ()
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
    # --argo-rollouts: Argo Rollouts' Rollouts are targets too (core.kinds_rollout).
    argo_rollouts: bool = False
    # --flagger: a Deployment a Flagger Canary targets is gated on the Canary (core.flagger).
    flagger: bool = False
    cluster_name: str = ""
    # --namespace: the namespaces (or kopf glob patterns) to watch; empty: all.
    namespaces: tuple[str, ...] = ()
    # The liveness probe fails after this long without a watch event or an API answer.
    liveness_stale_after: float = 300.0
    # ... and while a background task died more than this many times in the window.
    task_restart_limit: int = 5
    task_restart_window: float = 600.0
    # Seconds any one Kubernetes API call may take (ours and kopf's): a hung
    # call must not hold a worker thread, and the pass waiting on it, forever.
    kube_request_timeout: float = 60.0
    # Bytes of immutable registry reads (manifests, configs) kept in memory.
    registry_cache_bytes: int = 64 * 1024 * 1024
    # Bounded time: seconds one registry operation may take, retries included;
    # operations in flight per registry host; a host's circuit breaker opens
    # after this many failed operations in a row, for this many seconds.
    registry_timeout: float = 30.0
    registry_max_in_flight: int = 4
    registry_breaker_failures: int = 5
    registry_breaker_cooldown: float = 30.0
    # Seconds one policy's detection pass may spend gathering facts.
    policy_pass_budget: float = 60.0
    # The node AMI survey (adapters.nodes): off unless asked for, since it needs
    # EC2 and SSM permissions and means nothing off EC2; how often; and the
    # root of the SSM parameters holding the recommended AMIs.
    node_survey: bool = False
    node_survey_interval: float = 6 * 3600.0
    node_ami_parameter_root: str = "/aws/service"
    # AWS Config (adapters.awsconfig): workloads' compliance as a custom rule's
    # evaluations; on when a result token is given. TestMode records nothing.
    aws_config_result_token: str = ""
    aws_config_test_mode: bool = False
    aws_config_resource_type: str = "Imagepatch::Kubernetes::Workload"
    # Seconds one notification is retried on a sink that fails transiently.
    notification_retry_timeout: float = 300.0

POLICIES = (names.GROUP, names.VERSION, names.POLICIES)
IMAGEPATCHES = (names.GROUP, names.VERSION, names.IMAGEPATCHES)
FINALIZER = f"{names.PREFIX}finalizer"
log = logging.getLogger("imagepatch.handlers")
# Level-based resync: every object is reconciled at least this often even if a
# watch event was lost (a dead watch stream leaves kopf silent: nolar/kopf#787).
RESYNC_SECONDS = 300.0
# Seconds kopf keeps an object's idle worker (and the last event body it holds).
KOPF_WORKER_IDLE_SECONDS = 0.5


@dataclass
class Heartbeat:
    """When the operator last heard from its watch streams (monotonic seconds)."""

    started: float = field(default_factory=time.monotonic)
    last_event: float | None = None

    def saw_event(self) -> None:
        self.last_event = time.monotonic()


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | kopf.AiohttpSession:
    """kopf's endpoint and credentials, from the operator's own client (``adapters.kubeapi``):
    kopf's default login would import the ``kubernetes`` package, tens of MiB (issue 21).

    kopf logs in again after a 401 or when the credential's ``expiration`` passes (an exec
    plugin's): then the token file is read and the plugin asked again.
    """
    kube = getattr(memo, "kube", None)
    api = kube.api if kube is not None else kubeapi.Client.of(None)
    if getattr(memo, "logged_in", False):
        await asyncio.to_thread(api.credentials.refresh)
    memo.logged_in = True
    info = await asyncio.to_thread(api.connection)
    if api.config.tls_server_name:
        return named_session(api, info)
    return kopf.ConnectionInfo(**info)


def named_session(api: kubeapi.Client, info: dict[str, Any]) -> kopf.AiohttpSession:
    """kopf's session for a cluster with a kubeconfig ``tls-server-name``.

    ``kopf.ConnectionInfo`` has no field for it, so the session is made here,
    with the client's own TLS context (``kubeapi.ServerNameContext``: SNI and
    the certificate checked against that name) and the same proxy and credential.
    """
    cred = api.credentials.current()
    headers = {"Authorization": f"Bearer {cred.token}"} if cred.token else {}
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=0, ssl=kubeapi.ssl_context(api.config, cred.cert_data, cred.key_data)),
        headers=headers, proxy=api.config.proxy_url,
    )
    return kopf.AiohttpSession(server=info["server"], expiration=info.get("expiration"),
                               default_namespace=info.get("default_namespace"),
                               aiohttp_session=session)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options: Options = memo.get("options") or Options()
    # Before the Kubernetes client's worker threads start: each would keep an
    # arena of its own at the peak of what it parsed (adapters.malloc).
    malloc.limit_arenas()
    # --namespace scopes every list the operator makes, as it scopes kopf's watches.
    # Reads of policies, ImagePatches and opted-in workloads are answered from
    # what those watches report (adapters.store; the handlers below feed it).
    memo.kube = StoredKube(namespaces=options.namespaces,
                           request_timeout=options.kube_request_timeout,
                           argo_rollouts=options.argo_rollouts)
    memo.kube.flagger = options.flagger
    memo.store = memo.kube.store
    secrets = PolicySecrets(options.operator_namespace)
    # No credentials of its own: each policy's workloads are read through
    # ``registry.for_policy(name)``, with that policy's Secret only.
    memo.registry = RegistryClient(
        policy_credentials=secrets,
        ecr=EcrCredentials(),
        insecure_hosts=options.insecure_registries,
        endpoints=options.registry_endpoints,
        cache_bytes=options.registry_cache_bytes,
        allow_networks=options.registry_allow_networks,
        retry=RetryPolicy(timeout=options.registry_timeout),
        max_in_flight=options.registry_max_in_flight,
        breaker=BreakerSettings(failures=options.registry_breaker_failures,
                                cooldown=options.registry_breaker_cooldown),
    )
    findings = FindingsReader(region=options.aws_region) if options.aws_region else None
    kms = Kms()  # cosign keys in KMS (spec.verification.signatures, spec.rebuild.rebase)
    builders: dict[str, Builder] = {
        "external": ExternalBuilder(memo.registry),
        "job": JobBuilder(memo.kube, memo.registry, options.build_namespace),
        "codebuild": CodeBuildBuilder(memo.registry, options.aws_region),
        "rebase": RebaseBuilder(
            memo.registry, signer=Signer(memo.kube, options.operator_namespace, kms)
        ),
    }
    exports: dict[str, Destination] = {}
    if options.securityhub:
        exports["Security Hub"] = SecurityHubExporter(options.aws_region,
                                                      cluster_name=options.cluster_name)
    if options.aws_config_result_token:
        exports["AWS Config"] = ConfigEvaluations(
            cluster_name=options.cluster_name, result_token=options.aws_config_result_token,
            region=options.aws_region, resource_type=options.aws_config_resource_type,
            test_mode=options.aws_config_test_mode)
    # Detection's one exporter hook: every destination gets each policy's results.
    securityhub = FanOut(exports) if exports else None
    if options.metrics_port:
        metrics.serve(options.metrics_port, registry_stats=memo.registry.stats,
                      registry_gate=memo.registry.gate)
    memo.rebuild_tools = RebuildTools(
        registry=memo.registry, builders=builders, findings=findings,
        signatures=SignatureVerifier(memo.kube, options.operator_namespace, kms),
        git=GitWriter(memo.kube, options.operator_namespace),
        tags=TagReservations(lambda: rebuilds.recorded_push_tags(memo.kube)),
    )
    # The operator's memory, in its own namespace (tenants cannot write it): read once here.
    memo.memory = OperatorMemory(memo.kube, options.operator_namespace)
    await memo.memory.load()
    # Notifications (spec.notifications): queued by the rollout loop and detection,
    # sent by supervised workers, the sinks' Secrets read from the operator's namespace.
    memo.notifier = Notifier(
        kube=memo.kube,
        senders=Senders(memo.kube, options.operator_namespace),
        on_status=lambda name: reconcile.refresh_policy(memo.kube, name),
        retry=RetrySettings(timeout=options.notification_retry_timeout),
    )
    memo.detector = Detector(kube=memo.kube, registry=memo.registry, findings=findings,
                             secrets=secrets, securityhub=securityhub, tick=options.detect_tick,
                             upstreams=PullThroughRules(), memory=memo.memory,
                             pass_budget=options.policy_pass_budget, notifier=memo.notifier)
    memo.heartbeat = Heartbeat()
    memo.stale_after = options.liveness_stale_after
    memo.backoff = Backoff()

    async def reconcile_one(name: str) -> float | None:
        return await reconcile.reconcile_imagepatch_guarded(
            name=name, kube=memo.kube, backoff=memo.backoff, tools=memo.rebuild_tools,
            memory=memo.memory, notifier=memo.notifier,
            logger=logging.getLogger("imagepatch.rollouts"),
        )

    # Every background task is supervised: restarted with back-off when it
    # raises, counted, and the liveness probe fails if it keeps dying.
    memo.supervisor = Supervisor(
        window=options.task_restart_window, max_restarts=options.task_restart_limit
    )
    memo.loops = PatchLoops(reconcile_one, resync=RESYNC_SECONDS, supervisor=memo.supervisor,
                            watches=memo.kube.watches)
    memo.stop = asyncio.Event()
    memo.tasks = [
        memo.supervisor.spawn("detection", lambda: memo.detector.run(memo.stop)),
        memo.supervisor.spawn("notifications", lambda: memo.notifier.run(memo.stop)),
        memo.supervisor.spawn(
            "policy-resync",
            lambda: reconcile.resync_policies(memo.kube, memo.stop, every=RESYNC_SECONDS),
        ),
    ]
    if options.node_survey:
        survey = NodeSurvey(memo.kube, namespace=options.operator_namespace,
                            region=options.aws_region, interval=options.node_survey_interval,
                            parameter_root=options.node_ami_parameter_root)
        memo.tasks.append(memo.supervisor.spawn("node-survey", lambda: survey.run(memo.stop)))
    if options.events_queue_url:
        source = SqsEventSource(options.events_queue_url, region=options.aws_region or "us-east-1")
        memo.tasks.append(memo.supervisor.spawn(
            "events", lambda: source.run(memo.detector.on_signals, stop=memo.stop)))
    # Progress lives in annotations under our own prefix, not in status.kopf:
    # our CRDs declare a structural status schema, which would prune it (kopf#527).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key=names.LAST_HANDLED_KEY
    )
    settings.persistence.finalizer = FINALIZER
    # Only warnings become Kubernetes Events; "handler succeeded" is noise.
    settings.posting.level = logging.WARNING
    # Re-establish watches periodically, so a silently dead stream heals.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = options.kube_request_timeout
    # kopf keeps one worker per object that had an event, holding that event's
    # whole body while it waits for the next one (5 s by default): a fleet's
    # burst of Deployment status changes kept every body alive at once. Our
    # handlers copy what they need (adapters.store, the detector), so a worker
    # may go sooner.
    settings.queueing.idle_timeout = KOPF_WORKER_IDLE_SECONDS


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.stop.set()
    await memo.loops.aclose()
    for task in memo.tasks:
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    await memo.registry.aclose()
    await memo.notifier.aclose()


# Event handlers run on the event loop (they are coroutines), so they never
# race the detector's pass or a patch loop, which run there too; a plain
# function would run in a worker thread and mutate the detector's cache while
# a pass iterates it.
@kopf.on.event("apps", "v1", "deployments", id="seen")
async def deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the detector's set of opted-in Deployments current (no API calls here)."""
    memo.heartbeat.saw_event()
    memo.store.observe_workload("Deployment", event.get("type"), event.get("object") or {})
    memo.detector.observe(event.get("type"), event.get("object") or {}, kind="Deployment")


@kopf.on.event("apps", "v1", "statefulsets", id="seen-statefulsets")
async def statefulset_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The same for StatefulSets."""
    memo.heartbeat.saw_event()
    memo.store.observe_workload("StatefulSet", event.get("type"), event.get("object") or {})
    memo.detector.observe(event.get("type"), event.get("object") or {}, kind="StatefulSet")


@kopf.on.event("apps", "v1", "daemonsets", id="seen-daemonsets")
async def daemonset_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The same for DaemonSets."""
    memo.heartbeat.saw_event()
    memo.store.observe_workload("DaemonSet", event.get("type"), event.get("object") or {})
    memo.detector.observe(event.get("type"), event.get("object") or {}, kind="DaemonSet")


@kopf.on.event("batch", "v1", "cronjobs", id="seen-cronjobs")
async def cronjob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The same for CronJobs."""
    memo.heartbeat.saw_event()
    memo.store.observe_workload("CronJob", event.get("type"), event.get("object") or {})
    memo.detector.observe(event.get("type"), event.get("object") or {}, kind="CronJob")


async def rollout_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The same for Argo Rollouts' Rollouts (registered by ``watch_argo_rollouts``)."""
    memo.heartbeat.saw_event()
    memo.store.observe_workload(kinds_rollout.ROLLOUT, event.get("type"),
                                event.get("object") or {})
    memo.detector.observe(event.get("type"), event.get("object") or {},
                          kind=kinds_rollout.ROLLOUT)


def watch_argo_rollouts() -> None:
    """Watch Argo Rollouts' Rollouts too (``--argo-rollouts``): registered only when asked,
    since without the CRD, or the access the chart grants with argoRollouts.enabled, the
    watch could never start."""
    kopf.on.event(kinds_rollout.GROUP, kinds_rollout.VERSION, kinds_rollout.PLURAL,
                  id="seen-rollouts")(rollout_event)


@kopf.on.probe(id="watch")
def liveness(memo: kopf.Memo, **_: Any) -> str:
    """Fail (HTTP 500) when the operator has heard nothing from the API server for too long,
    or a background task keeps dying."""
    state = watch_liveness(
        now=time.monotonic(), started=memo.heartbeat.started,
        last_event=memo.heartbeat.last_event, last_answer=memo.kube.last_answer,
        stale_after=memo.stale_after,
    )
    if not state.alive:
        raise kopf.PermanentError(state.message)
    tasks = memo.supervisor.liveness()
    if not tasks.alive:
        raise kopf.PermanentError(tasks.message)
    return f"{state.message}; {tasks.message}"


# No kopf timer here: a timer makes kopf put its finalizer on every policy
# (nolar/kopf#1074), and a policy could then not be deleted while the operator
# is down. The resync is reconcile.resync_policies, started in configure().
@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES)
def policy(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile.reconcile_policy_guarded(body=body, patch=patch)


@kopf.on.event(*POLICIES, id="policy-seen")
async def policy_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A policy's spec change (suspend, approval, window) wakes its waiting patches; the
    notifier learns which reasons its sinks want."""
    memo.heartbeat.saw_event()
    memo.store.observe_policy(event.get("type"), event.get("object") or {})
    memo.loops.observe_policy(event.get("type"), event.get("object") or {})
    memo.notifier.observe_policy(event.get("type"), event.get("object") or {})


# Each unfinished ImagePatch has one loop (reconcile.loops): it reconciles,
# sleeps until the plan's requeue time (or the resync), and is woken at once
# by this watch event when a person changes the spec or the annotations. Its
# own status writes arrive here too, and change nothing.
@kopf.on.event(*IMAGEPATCHES, id="wake")
async def imagepatch_event(
    event: kopf.RawEvent, memo: kopf.Memo, logger: Any = log, **_: Any
) -> None:
    memo.heartbeat.saw_event()
    body = event.get("object") or {}
    memo.store.observe_imagepatch(event.get("type"), body)  # before a loop reads it
    memo.loops.observe(event.get("type"), body)
    if event.get("type") == "DELETED":
        # Its back-off is not needed any more: per-object memory goes with the object.
        memo.backoff.reset(str((body.get("metadata") or {}).get("name") or ""))
    # Until v0.1 a kopf timer drove ImagePatches, and kopf gave each one its
    # finalizer. Nothing removes it now (kopf does so only for resources with
    # changing or spawning handlers), so a pruned patch would never go away.
    meta = body.get("metadata") or {}
    finalizers = meta.get("finalizers") or []
    if FINALIZER in finalizers and event.get("type") != "DELETED":
        try:
            await memo.kube.remove_imagepatch_finalizer(meta["name"], finalizers, FINALIZER)
        except AdapterError as exc:  # the next event tries again
            logger.warning("could not remove the v0.1 finalizer of %s: %s", meta["name"], exc)
