"""Detection: which running images need a patch, and why.

The ``Detector`` keeps an in-memory set of opted-in workloads (Deployments,
StatefulSets, DaemonSets and CronJobs, fed by kopf watches; every container of
the pod template counts, init containers and native sidecars included, never
ephemeral containers) and evaluates each policy's workloads every ``checkInterval``, or at
once when a workload changes or a queue event names one of their images. An event's pass
is *targeted*: the same steps below over only the workloads that run the named image or
follow it as their base (repository and tag, as last evaluated: ``follows``), every other
fact reused (an app tag resolved within ``checkInterval`` is not asked again unless an
event names that app). It closes no ImagePatch with a target it did not evaluate, and the
policy's counts merge its results with every other workload's last one (``results``):

1. **observe**: the running digest of each container (pinned in the spec,
   else from pod status, else by resolving the tag, and it says which), the
   base it was built on (OCI annotations, config labels, then the
   ``imagepatch.dev/base-image`` annotation), the base tag's current digest
   (one HEAD per distinct base per interval, however many workloads share it),
   and the scan findings when the policy names a source;
2. **assess**: ``core.compliance`` gives each container and workload a state;
3. **act**: create the ImagePatches that are needed (deterministic names, so
   never twice), each with ``spec.targets`` set to exactly the containers
   judged to need it (same repository, tag and digest) and ``spec.rebuild``
   from what exactly those targets asked for (a workload whose rebuild is
   refused is never a target; targets asking for different rebuilds get
   different patches, since the rebuilt image goes only to the workloads that
   asked for that rebuild); ask the planner to
   close open ones that no longer are (it is the one writer of ImagePatch
   status); open none for a container another open patch is changing, nor for
   a rebuild that already failed on the workload; post an Event when a
   workload's state changes, mirror the state on the workload in the
   ``imagepatch.dev/state`` annotation, and count states in the policy status.

Memory: what detection decides from (the base digest it saw for an image
whose base is known only from the ``imagepatch.dev/base-image`` annotation,
the rebuilds that failed on a workload, its last state and since when) is the
operator's own (``adapters.memory``: ConfigMaps in its namespace). The
workload's annotations are written by its owner: they are requests, and the
state annotation a mirror for people, never read back for a decision. A base
the image records itself always wins over the ``imagepatch.dev/base-image``
annotation (the state says so when they differ).

A registry or AWS failure makes the affected workloads ``Unknown`` with the
error's reason; it never creates or closes an ImagePatch by mistake.

Bounded time: each policy's pass gathers facts within ``pass_budget``
seconds (``--policy-pass-budget``); containers left when it runs out are
``Unknown`` (``PassBudgetExceeded``, naming the registry host the time went
to) and the pass goes on. Each due policy runs in its own task; one still
running after ``patience`` seconds goes on beside the next, so a slow
registry delays other policies by that much, not by its budget.

Isolation: registries, image manifests, workload annotations and queue events
are input that other people control. Whatever goes wrong while one container
is evaluated (a classified ``AdapterError`` or any other exception) makes that
workload ``Unknown`` with a reason naming the image and the problem, posts one
Warning Event, and the pass goes on. An ImagePatch the API server refuses
(a 4xx, e.g. a rebuild annotation the CRD rejects) marks the workloads it was
for ``Unknown`` the same way. A policy whose evaluation still fails is logged
and recorded as evaluated, so it is not retried on every tick and the policies
sorted after it are evaluated in the same pass.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from imagepatch.adapters import metrics
from imagepatch.adapters.errors import AdapterError, ConflictError, TransientError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.notify import Notifier  # i22-notify hook
from imagepatch.adapters.registry import PolicySecrets, PullThroughRules, RegistryClient
from imagepatch.adapters.registry.gate import HostTimes, timed_hosts
from imagepatch.core import compliance, kinds, reasons, rebuild
from imagepatch.core.compliance import Assessment, ContainerFacts, KnownPatch, State
from imagepatch.core.events import ImageSignal
from imagepatch.core.images import ImageRef, is_digest, is_ecr_host, parse_image
from imagepatch.core.oci import INDEX_TYPES
from imagepatch.core.policy import REQUESTED_AT_ANNOTATION
from imagepatch.core.reasons import (
    EVALUATION_FAILED,
    FINDINGS_UNAVAILABLE,
    INVALID_ANNOTATION,
    PASS_BUDGET_EXCEEDED,
    PATCH_REJECTED,
)
from imagepatch.core.retention import retention
from imagepatch.core.rollout import running_digest, wave_for
from imagepatch.core.scans import FindingsSource, ScanReport
from imagepatch.model import memory as memory_model
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import CLOSE_ANNOTATION, KEY_ANNOTATION, Target, TargetPhase
from imagepatch.model.memory import BaseMemory, WorkloadMemory
from imagepatch.model.names import (
    BASE_ANNOTATION,
    GROUP,
    POLICY_ANNOTATION,
    POLICY_LABEL,
    PREFIX,
    REBUILD_ANNOTATION,
    STATE_ANNOTATION,
    VERSION,
)
from imagepatch.model.policy import (
    LabelSelector,
    PolicySpec,
    VulnerabilitySource,
    parse_label_selector,
    parse_policy,
)
from imagepatch.model.times import Clock, utcnow
from imagepatch.model.workload_state import ContainerState, WorkloadState
from imagepatch.reconcile import (
    gitops,  # i22-gitops hook
    notifications,  # i22-notify hook
)
from imagepatch.reconcile.approve_after import hold_new_base

log = logging.getLogger("imagepatch.detection")

# Longest value read from a workload's annotations. A reference is at most
# 255 (name) + 128 (tag) + 135 (sha512 digest) characters, a rebuild a kind
# and a 253-character name; anything longer is refused with an Event, never
# parsed or copied into an ImagePatch.
MAX_ANNOTATION_LENGTH = 1024
MANAGED_BY = ("app.kubernetes.io/managed-by", "imagepatch")
# A workload's state write the API server refused (an admission webhook) is
# tried again after this long, or at once when the workload changes.
REFUSED_WRITE_RETRY = 300.0
# Seconds a policy's pass may spend gathering facts before what is left is Unknown.
DEFAULT_PASS_BUDGET = 60.0
# Seconds the pass waits on one policy before starting the next beside it.
SLOW_POLICY_AFTER = 2.0

# Workload states that are not compliance states: reported, never counted.
NOT_ADMITTED = reasons.NOT_ADMITTED
POLICY_NOT_FOUND = reasons.POLICY_NOT_FOUND
_WARNING_STATES = {
    str(State.BASE_IMAGE_OUTDATED),
    str(State.VULNERABLE),
    str(State.UNTRUSTED_BASE),
    str(State.FAILED),
    str(State.UNKNOWN),
    NOT_ADMITTED,
    POLICY_NOT_FOUND,
    reasons.REBUILD_NOT_ALLOWED,
}


_FINDINGS_ERRORS: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "imagepatch_findings_errors", default=None
)


@dataclass
class _BaseFacts:
    digest: str = ""
    platforms: Mapping[str, str] = field(default_factory=dict)
    error_reason: str = ""
    error: str = ""


@dataclass
class _Pass:
    """Memo for one evaluation pass: every lookup is made at most once per pass.

    A registry answer is keyed by the credential scope it was read with
    (``_scope``) and the reference: a tag one policy resolved with its Secret
    is never reused for a policy with other credentials for that host.
    """

    # (scope, image) -> (digest, error)
    tags: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    namespace_pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bases: dict[tuple[str, str], _BaseFacts] = field(default_factory=dict)  # (scope, base ref)


def _registry_for(registry: RegistryClient, policy: str) -> RegistryClient:
    """The registry as ``policy``'s workloads read it: with that policy's credentials only.

    The in-memory registries of unit tests have a single scope (no ``for_policy``).
    """
    for_policy = getattr(registry, "for_policy", None)
    return for_policy(policy) if for_policy is not None else registry


async def _scope(registry: RegistryClient, host: str) -> str:
    """Which credentials ``registry`` reads ``host`` with: the cache-key part ("" anonymous)."""
    scope = getattr(registry, "credential_scope", None)
    return await scope(host) if scope is not None else ""


@dataclass
class WorkloadResult:
    namespace: str
    name: str
    uid: str
    state: str
    message: str
    containers: Sequence[Mapping[str, Any]]
    kind: str = kinds.DEPLOYMENT  # with namespace and name, the workload's identity


class FindingsExporter(Protocol):
    """Where each evaluated policy's results go as findings (Security Hub).

    ``adapters.securityhub.SecurityHubExporter`` implements it; it raises a
    classified ``AdapterError`` when the hub cannot be reached.
    """

    async def export(
        self,
        results_by_policy: Mapping[str, Iterable[WorkloadResult]],
        *,
        now: dt.datetime,
        opted_out: Collection[tuple[str, str, str]] = (),
    ) -> object: ...


class Detector:
    """Evaluates opted-in workloads against their policies; one instance per operator."""

    def __init__(
        self,
        *,
        kube: Kube,
        registry: RegistryClient,
        findings: FindingsSource | None = None,
        secrets: PolicySecrets | None = None,
        securityhub: FindingsExporter | None = None,
        upstreams: PullThroughRules | None = None,
        memory: OperatorMemory | None = None,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        tick: float = 5.0,
        pass_budget: float = DEFAULT_PASS_BUDGET,
        notifier: Notifier | None = None,  # i22-notify hook (see _report)
        patience: float = SLOW_POLICY_AFTER,
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.findings = findings
        self.secrets = secrets
        self.securityhub = securityhub
        self.upstreams = upstreams
        # What detection decides from (base digests it saw, failed rebuilds, states):
        # kept in the operator's namespace, never read back from a workload's annotations.
        self.memory = memory if memory is not None else OperatorMemory()
        # (kind, ns, name) of workloads seen to opt out: Security Hub archives their
        # findings saying so, never as resolved.
        self.opted_out: set[tuple[str, str, str]] = set()
        self.clock = clock
        self.monotonic = monotonic
        self.tick = tick
        # Seconds one policy's pass may spend gathering facts (--policy-pass-budget).
        self.pass_budget = pass_budget
        self.notifier = notifier  # i22-notify hook
        # A policy still running after this long goes on in the background while
        # the next one starts: a slow registry delays other policies by this much.
        self.patience = patience
        self.workloads: dict[str, dict[str, Any]] = {}  # uid -> workload (slim, with its kind)
        # uid -> (kind, ns, name): a workload that opted out with our annotation left on it
        self.orphans: dict[str, tuple[str, str, str]] = {}
        self.wake = asyncio.Event()
        self.forced: set[str] = set()  # image names (host/repo) a queue event named
        # name -> the tags the events named ("" when one named none: any tag)
        self.forced_tags: dict[str, set[str]] = {}
        self.last_evaluated: dict[str, float] = {}  # policy -> monotonic time
        # (credential scope, base tag ref) -> (at, facts)
        self._bases: dict[tuple[str, str], tuple[float, _BaseFacts]] = {}
        # (credential scope, app tag ref) -> (at, digest): a tag resolved within the
        # policy's checkInterval is not asked again (an event naming it drops it).
        self._tags: dict[tuple[str, str], tuple[float, str]] = {}
        # (repo, digest, source) -> (monotonic time read, report)
        self._scans: dict[tuple[str, str, str], tuple[float, ScanReport]] = {}
        self.bases_of: dict[str, set[str]] = {}  # policy -> base names its workloads follow
        self.handled_request: dict[str, str] = {}  # policy -> requestedAt value handled
        self.evaluated: dict[str, str] = {}  # workload uid -> the inputs last evaluated
        # uid -> (image name, tag) of each image the workload runs or follows as its base,
        # as last evaluated: what an event must name for a targeted pass to include it.
        self.follows: dict[str, frozenset[tuple[str, str]]] = {}
        # uid -> its last result: a targeted pass merges its results with these, so the
        # policy's counts and findings always cover every workload.
        self.results: dict[str, WorkloadResult] = {}
        # uid -> (inputs, monotonic time) of a PolicyNotFound record the API server refused
        self.refused_writes: dict[str, tuple[str, float]] = {}
        self._findings_errors = []  # this policy's, this pass
        self.passes = 0

    @property
    def _findings_errors(self) -> list[tuple[str, str]]:
        """This policy's findings errors in this pass: per task, since slow policies run
        beside others (``_evaluate_due``)."""
        errors = _FINDINGS_ERRORS.get()
        if errors is None:
            errors = []
            _FINDINGS_ERRORS.set(errors)
        return errors

    @_findings_errors.setter
    def _findings_errors(self, value: list[tuple[str, str]]) -> None:
        _FINDINGS_ERRORS.set(value)

    # -- inputs ------------------------------------------------------------------------

    def observe(
        self, event_type: str | None, body: Mapping[str, Any], *, kind: str = ""
    ) -> None:
        """A watch event on a workload of any kind (from kopf, which names the kind)."""
        if kind and body.get("kind") != kind:
            body = {**body, "kind": kind}
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        annotations = meta.get("annotations") or {}
        identity = (_kind(body), meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.memory.forget(*identity)  # pruned at the next flush
            self.opted_out.discard(identity)
        elif POLICY_ANNOTATION not in annotations and (
            uid in self.workloads or self.memory.get(*identity, uid).state
        ):
            self.opted_out.add(identity)
        else:
            self.opted_out.discard(identity)
        if event_type == "DELETED" or POLICY_ANNOTATION not in annotations:
            self.workloads.pop(uid, None)
            if event_type != "DELETED" and STATE_ANNOTATION in annotations:
                self.orphans[uid] = (
                    _kind(body), meta.get("namespace", ""), meta.get("name", "")
                )
            return
        self.orphans.pop(uid, None)
        self.workloads[uid] = _slim(body)

    async def on_signals(self, signals: Sequence[ImageSignal]) -> None:
        """Queue events: re-evaluate the named images now, not at the next interval."""
        for signal in signals:
            self.forced.add(signal.name)
            self.forced_tags.setdefault(signal.name, set()).add(signal.tag or "")
        # A push moves tags and a scan changes findings: forget what we knew of them.
        self._forget({s.name for s in signals})
        self.wake.set()

    def _forget(self, names: set[str]) -> None:
        """Drop cached base digests, tag digests and scan reports for these image names."""
        for base in [k for k in self._bases if _image_name(k[1]) in names]:
            del self._bases[base]
        for tag in [k for k in self._tags if _image_name(k[1]) in names]:
            del self._tags[tag]
        for scan in [k for k in self._scans if k[0] in names]:
            del self._scans[scan]

    # -- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("detection started: checking for due policies every %.0fs", self.tick)
        while not stop.is_set():
            try:
                await self.evaluate_all()
            except AdapterError as exc:
                log.warning("detection pass failed: %s: %s", exc.reason, exc)
            # Anything else is a bug: it ends this run, and the supervisor
            # (reconcile.supervisor) logs it, counts it and restarts the loop.
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.tick)
            except TimeoutError:
                pass
            self.wake.clear()

    async def evaluate_all(self) -> None:
        self.passes += 1
        pass_started = self.monotonic()
        log.debug("detection pass %d: %d opted-in workloads", self.passes, len(self.workloads))
        policies: dict[str, dict[str, Any]] = {
            p["metadata"]["name"]: p for p in await self.kube.list_policies()
        }
        patches = [p for p in await self.kube.list_imagepatches()]
        metrics.record_patches(patches)
        if self.secrets is not None:
            # Per policy: a workload is read with its own policy's Secret only.
            secret_of = {
                name: secret
                for name, p in policies.items()
                if isinstance(
                    secret := ((p.get("spec") or {}).get("registryCredentials") or {}).get(
                        "secretName"
                    ),
                    str,
                )
                and secret
            }
            await self.secrets.load(self.kube, secret_of)
        retain = getattr(self.registry, "retain_policies", None)
        if retain is not None:
            retain(policies)
        by_policy: dict[str, list[dict[str, Any]]] = {}
        for dep in self.workloads.values():
            name = dep["metadata"]["annotations"][POLICY_ANNOTATION]
            by_policy.setdefault(name, []).append(dep)
        self._forget_gone(policies)
        memo = _Pass()
        forced, self.forced = self.forced, set()
        forced_tags, self.forced_tags = self.forced_tags, {}
        # Each write below is one workload's: one the API server refuses (an
        # admission webhook, a 4xx) is logged and the others, and the pass, go on.
        for uid, (kind, ns, name) in list(self.orphans.items()):
            try:
                await self.kube.annotate_workload(kind, ns, name, {STATE_ANNOTATION: None})
            except TransientError as exc:  # kept: the next pass tries again
                log.warning("could not clear the state of %s %s/%s (opted out): %s: %s",
                            kind, ns, name, exc.reason, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - isolation: one workload's write
                # Refused: forgotten until its next watch event, not retried every tick.
                log.warning("could not clear the state of %s %s/%s (opted out): %s", kind, ns,
                            name, exc, exc_info=not isinstance(exc, AdapterError))
            self.orphans.pop(uid, None)
        for name, workloads in sorted(by_policy.items()):
            if name not in policies:
                for dep in workloads:
                    uid, now = dep["metadata"]["uid"], self.monotonic()
                    inputs, at = self.refused_writes.get(uid, ("", -1e18))
                    if inputs == _inputs(dep) and now - at < REFUSED_WRITE_RETRY:
                        continue  # refused before, unchanged since: not asked again every tick
                    try:
                        await self._report(
                            dep,
                            POLICY_NOT_FOUND,
                            f"ImagePatchPolicy {_clip(name)!r} does not exist; "
                            "this workload is left alone",
                            [],
                            name,
                        )
                    except Exception as exc:  # noqa: BLE001 - isolation: one workload's write
                        log.warning(
                            "could not record state of %s/%s (retried in %.0fs or when it "
                            "changes): %s",
                            dep["metadata"]["namespace"], dep["metadata"]["name"],
                            REFUSED_WRITE_RETRY, exc, exc_info=not isinstance(exc, AdapterError),
                        )  # fmt: skip
                        self.refused_writes[uid] = (_inputs(dep), now)
                    else:
                        self.refused_writes.pop(uid, None)
                continue
        lanes: list[asyncio.Task[None]] = []
        for name, body in sorted(policies.items()):
            try:
                spec = parse_policy(body).spec
            except SpecError:
                continue  # the policy is Stalled with the reason; nothing to evaluate against
            workloads = by_policy.get(name, [])
            images = {_image_name(c["image"]) for d in workloads for c in _containers(d)}
            images |= self.bases_of.get(name, set())
            requested = (body["metadata"].get("annotations") or {}).get(REQUESTED_AT_ANNOTATION, "")
            age = self.monotonic() - self.last_evaluated.get(name, -1e18)
            # A workload that is new, or whose images or annotations changed, is looked at now.
            changed = any(self.evaluated.get(d["metadata"]["uid"]) != _inputs(d) for d in workloads)
            full = (
                age >= spec.base_images.check_interval.total_seconds()
                or changed
                or requested != self.handled_request.get(name, "")
            )
            # Only events due: a targeted pass over the workloads that run or follow
            # an image the events named; every other fact is still valid.
            chosen = workloads if full else [
                d for d in workloads
                if _named(self.follows.get(d["metadata"]["uid"], frozenset()), forced,
                          forced_tags)
            ]
            if not (full or chosen):
                continue
            if requested != self.handled_request.get(name, ""):
                # A human asked for a check now: what we know may be stale, look again.
                self._forget(self.bases_of.get(name, set()) | images)
            started = self.monotonic()
            if full:
                self.last_evaluated[name] = started
            self.handled_request[name] = requested
            # Each policy in its own task: one that is still running after
            # ``patience`` seconds (a slow registry) goes on beside the next.
            lane = asyncio.create_task(
                self._evaluate_due(name, spec, workloads, patches, memo, started,
                                   pass_started=pass_started, chosen=chosen, full=full,
                                   forced=forced),
                name=f"detection-{name}",
            )
            lanes.append(lane)
            try:
                await asyncio.wait({lane}, timeout=self.patience)
            except asyncio.CancelledError:  # shutting down: no lane outlives the pass
                for started_lane in lanes:
                    started_lane.cancel()
                raise
        try:
            outcomes = await asyncio.gather(*lanes, return_exceptions=True)
        finally:
            for lane in lanes:
                lane.cancel()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # a bug past the per-policy isolation: the supervisor's
        await self.memory.flush()  # states recorded in this pass; a record that fails is kept
        metrics.record_detection_pass()

    async def _evaluate_due(
        self,
        name: str,
        spec: PolicySpec,
        workloads: list[dict[str, Any]],
        patches: Sequence[Mapping[str, Any]],
        memo: _Pass,
        started: float,
        *,
        pass_started: float,
        chosen: list[dict[str, Any]],
        full: bool,
        forced: set[str],
    ) -> None:
        """Evaluate one due policy, then export, prune and log it (a task of ``evaluate_all``).

        ``chosen``: the workloads to evaluate, all of ``workloads`` unless the pass
        is targeted (``full`` false: only events are due); the results exported and
        counted are every workload's last ones all the same.
        """
        try:
            await self.evaluate_policy(
                name, spec, chosen, patches, memo, everyone=None if full else workloads
            )
            results = self._merged(workloads)
        except Exception:  # one policy must never stop the ones sorted after it
            log.exception("policy %s: evaluation failed; the next policy goes on", name)
            for dep in workloads:
                self.evaluated[dep["metadata"]["uid"]] = _inputs(dep)
            return
        self._record_metrics(name, results)
        if self.securityhub is not None:
            try:
                await self.securityhub.export(
                    {name: results}, now=self.clock(),
                    opted_out=frozenset(self.opted_out),
                )
            except AdapterError as exc:
                log.warning(
                    "Security Hub export for policy %s failed: %s: %s", name, exc.reason, exc
                )
        await self._prune(name, spec, patches)
        log.info(
            "policy %s: %d workloads evaluated in %.2fs in pass %d, started %.2fs into it%s (%s)",
            name,
            len(chosen),
            self.monotonic() - started,
            self.passes,
            started - pass_started,
            "" if full else f", targeted: {len(chosen)} of {len(workloads)} follow "
            f"{_clip(', '.join(sorted(forced)), 300)}",
            ", ".join(
                f"{k}={v}"
                for k, v in compliance.counts(State(r.state) for r in results).items()
                if v
            ),
        )

    def _forget_gone(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        """Drop what is kept per workload or policy once it is gone, and stale cache entries.

        So memory is bounded by the fleet as it is, not by every object ever
        seen. ``self.workloads`` itself follows the watch (deleted: dropped).
        """
        by_workload: tuple[dict[str, Any], ...] = (
            self.evaluated, self.refused_writes, self.follows, self.results)
        for table in by_workload:
            for uid in table.keys() - self.workloads.keys():
                del table[uid]
        by_policy: tuple[dict[str, Any], ...] = (
            self.last_evaluated, self.bases_of, self.handled_request)
        for table in by_policy:
            for name in table.keys() - policies.keys():
                del table[name]
        metrics.keep_policies(policies.keys())
        # A cached base digest or scan report is read only within the
        # checkInterval of the policy reading it: older than the longest
        # interval of any policy, it would never be read again.
        intervals = []
        for body in policies.values():
            try:
                intervals.append(parse_policy(body).spec.base_images.check_interval.total_seconds())
            except SpecError:
                continue
        longest, now = max(intervals, default=0.0), self.monotonic()
        for ref in [r for r, (at, _) in self._bases.items() if now - at >= longest]:
            del self._bases[ref]
        for key in [k for k, (at, _) in self._scans.items() if now - at >= longest]:
            del self._scans[key]
        for tag in [k for k, (at, _) in self._tags.items() if now - at >= longest]:
            del self._tags[tag]

    def _merged(self, workloads: Sequence[Mapping[str, Any]]) -> list[WorkloadResult]:
        """The last result of each of ``workloads`` (a policy's): what its counts are of."""
        return [
            r for d in workloads if (r := self.results.get(d["metadata"]["uid"])) is not None
        ]

    def _record_metrics(self, policy: str, results: Sequence[WorkloadResult]) -> None:
        counts = compliance.counts(
            State(r.state) for r in results if r.state in {str(x) for x in State}
        )
        findings: dict[str, int] = {}
        oldest = None
        now = self.clock()
        for r in results:
            for c in r.containers:
                for severity, n in (c.get("findingsBySeverity") or {}).items():
                    findings[severity] = findings.get(severity, 0) + n
            since = self._remembered(self.workloads.get(r.uid, {})).since
            if r.state != str(State.COMPLIANT) and since:
                age = (now - since).total_seconds()
                oldest = max(oldest or 0.0, age)
        metrics.record_policy(policy, counts, findings, oldest)

    async def _prune(
        self, policy: str, spec: PolicySpec, patches: Sequence[Mapping[str, Any]]
    ) -> None:
        """Retention of finished ImagePatches (spec.history); never an active one."""
        mine = [p for p in patches if (p.get("spec") or {}).get("policy") == policy]
        names = retention(
            mine, keep_count=spec.history.keep_count, max_age=spec.history.max_age, now=self.clock()
        )
        versions = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in mine}
        for name in names:
            try:
                deleted = await self.kube.delete_imagepatch(name, resource_version=versions[name])
            except AdapterError as exc:  # one refused delete must not stop the others
                log.warning("could not prune ImagePatch %s: %s: %s", name, exc.reason, exc)
                continue
            if deleted:
                log.info("ImagePatch %s pruned (policy %s history retention)", name, policy)

    # -- one policy ----------------------------------------------------------------------

    async def evaluate_policy(
        self,
        policy: str,
        spec: PolicySpec,
        workloads: Sequence[Mapping[str, Any]],
        patches: Sequence[Mapping[str, Any]],
        memo: _Pass,
        *,
        everyone: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[WorkloadResult]:
        """Evaluate ``workloads`` of ``policy``; their results.

        ``everyone``: a targeted pass, where ``workloads`` are only some of the
        policy's workloads (``everyone``). It closes no patch that has a target
        it did not evaluate, adds to ``bases_of`` rather than replacing it, and
        writes the counts of every workload's last result, not of its own.
        """
        known = [_known(p) for p in patches if (p.get("spec") or {}).get("policy") == policy]
        self._findings_errors = []
        registry = _registry_for(self.registry, policy)
        results: list[tuple[Mapping[str, Any], list[tuple[ContainerFacts, Assessment]]]] = []
        # The pass budget: facts are gathered until it runs out; what is left is
        # Unknown, naming the host the time went to, and the pass goes on.
        deadline = self.monotonic() + self.pass_budget
        out_of_budget = ""
        for dep in workloads:
            ns = dep["metadata"]["namespace"]
            labels = await self._namespace_labels(ns, memo)
            if not spec.namespace_selector.matches(labels):
                self.results.pop(dep["metadata"]["uid"], None)
                await self._report(
                    dep,
                    NOT_ADMITTED,
                    f"namespace {ns} is not admitted by ImagePatchPolicy {policy!r} "
                    "(spec.namespaceSelector); this workload is left alone",
                    [],
                    policy,
                )
                continue
            assessed = []
            problem = _annotation_problem(dep)
            for container in _containers(dep):
                if problem:
                    facts = _failed_facts(container, INVALID_ANNOTATION, problem)
                elif out_of_budget:
                    facts = _failed_facts(container, PASS_BUDGET_EXCEEDED, out_of_budget)
                else:
                    try:
                        with timed_hosts() as times:
                            async with asyncio.timeout(max(deadline - self.monotonic(), 0)):
                                facts = await self.container_facts(
                                    dep, container, spec, memo, registry=registry
                                )
                    except TimeoutError:
                        out_of_budget = self._budget_message(times)
                        log.warning("policy %s: %s", policy, out_of_budget)
                        facts = _failed_facts(container, PASS_BUDGET_EXCEEDED, out_of_budget)
                    except Exception as exc:  # noqa: BLE001 - isolation: see the module docstring
                        log.warning(
                            "%s/%s: evaluating image %r failed",
                            ns, dep["metadata"].get("name"), container.get("image"), exc_info=True,
                        )  # fmt: skip
                        facts = _failed_facts(
                            container,
                            EVALUATION_FAILED,
                            f"image {_clip(container.get('image'))}: {type(exc).__name__}: "
                            f"{_clip(str(exc), 300)}",
                        )
                assessment = compliance.assess_container(facts, spec)
                if facts.note:
                    assessment = replace(assessment, message=f"{assessment.message} ({facts.note})")
                assessed.append((facts, assessment))
            results.append((dep, assessed))
        # The base digests remembered above are written before any patch is opened or closed.
        await self.memory.flush()

        intents: dict[str, compliance.PatchIntent] = {}
        failed_keys: set[str] = set()
        # Workloads whose imagepatch.dev/rebuild is outside spec.rebuild.allowed: uid -> why.
        refused: dict[str, str] = {}
        gitops_skips: dict[str, gitops.Skip] = {}  # i22-gitops hook: uid -> why not patched
        for dep, assessed in results:
            meta = dep["metadata"]
            labels = await self._namespace_labels(meta["namespace"], memo)
            remembered = {m.get("key") for m in self._remembered(dep).failed}
            requested = _requested_rebuild(dep)
            refusal = spec.rebuild.refusal(requested) if requested else None
            if refusal:
                refused[meta["uid"]] = refusal
                continue  # no build on its behalf; reported below
            if skipped := gitops.skip(dep, spec, policy):  # i22-gitops hook: no patch for it
                gitops_skips[meta["uid"]] = skipped
                continue
            for facts, assessment in assessed:
                intent = compliance.intent_for(facts, assessment)
                if intent is None:
                    continue
                intent = compliance.with_rebuild_override(intent, requested)
                if intent.key in remembered:
                    failed_keys.add(intent.key)
                target = Target(
                    kind=_kind(dep),
                    namespace=meta["namespace"],
                    name=meta["name"],
                    container=facts.container,
                    wave=wave_for(labels, spec.rollout.waves),
                )
                before = intents.get(intent.key, intent)
                intents[intent.key] = replace(before, targets=(*before.targets, target))
        evaluated = {f.repository for _, a in results for f, _ in a if not f.error_reason}
        bases = {_image_name(f.base_name) for _, a in results for f, _ in a if f.base_name}
        for dep, assessed in results:
            override = (dep["metadata"].get("annotations") or {}).get(BASE_ANNOTATION)
            if override:
                bases.add(_image_name(override))
            self.follows[dep["metadata"]["uid"]] = _follows(assessed, override)
        self.bases_of[policy] = bases | (
            self.bases_of.get(policy, set()) if everyone is not None else set())
        # Recorded before any side effect: a create that fails below must not
        # make this policy due again on every tick.
        for dep in workloads:
            self.evaluated[dep["metadata"]["uid"]] = _inputs(dep)
        plan = compliance.plan_patches(
            list(intents.values()), known, evaluated_images=evaluated, failed_keys=failed_keys,
            evaluated_targets=None if everyone is None else {
                (_kind(dep), dep["metadata"]["namespace"], dep["metadata"]["name"], f.container)
                for dep, assessed in results for f, _ in assessed
            },
        )
        rejected: dict[tuple[str, str], str] = {}  # (image, digest) -> why its patch was refused
        for intent in plan.create:
            try:
                created = await self.kube.create_imagepatch(
                    self._patch_body(policy, spec, intent)
                )
            except AdapterError as exc:
                if isinstance(exc, TransientError):
                    raise
                # The API server refused this one patch (a 4xx): its workloads are
                # Unknown with the reason; every other patch is still created.
                log.warning("ImagePatch %s refused: %s: %s", intent.name, exc.reason, exc)
                rejected[(intent.image, intent.current_digest)] = (
                    f"ImagePatch for {intent.image}@{intent.current_digest} was refused by the "
                    f"API server ({exc.reason}): {_clip(str(exc), 500)}"
                )
                continue
            if created is not None:
                log.info("ImagePatch %s created: %s %s", intent.name, intent.image, intent.reason)
                known.append(_known(created))
        if rejected:
            results = [
                (
                    dep,
                    [
                        (f, a)
                        if (f.repository, f.digest) not in rejected
                        else (
                            replace(f, error_reason=PATCH_REJECTED,
                                    error=rejected[(f.repository, f.digest)]),
                            compliance.Assessment(
                                state=State.UNKNOWN, reason=PATCH_REJECTED,
                                message=rejected[(f.repository, f.digest)],
                            ),
                        )
                        for f, a in assessed
                    ],
                )
                for dep, assessed in results
            ]  # fmt: skip
        for stale in plan.close:
            await self.kube.annotate_imagepatch(
                stale.name,
                {CLOSE_ANNOTATION: "no longer needed: the image no longer breaks the policy"},
            )
            log.info("ImagePatch %s no longer needed: asked its planner to close it", stale.name)
            known = [replace(k, close_requested=True) if k.name == stale.name else k for k in known]
        for existing, intent in plan.retarget:
            body = next(p for p in patches if p["metadata"]["name"] == existing.name)
            try:
                await self.kube.set_imagepatch_targets(
                    existing.name,
                    _targets_field(intent.targets, (body.get("spec") or {}).get("targets") or []),
                    resource_version=body["metadata"]["resourceVersion"],
                )
            except ConflictError:
                # It changed since this pass read it (perhaps it started): next pass decides.
                log.info("ImagePatch %s changed while retargeting; left for the next pass",
                         existing.name)
                continue
            added = frozenset(t.key for t in intent.targets)
            known = [replace(k, targets=k.targets | added) if k.name == existing.name else k
                     for k in known]

        out: list[WorkloadResult] = []
        for dep, assessed in results:
            assessed = _with_failed_memory(assessed, dep, self._remembered(dep))
            states = [
                a.state
                if a.state == State.FAILED
                else compliance.overlay(
                    a.state, f.repository, f.digest, known, compliance.image_tag(f.image),
                    target=(_kind(dep), dep["metadata"]["namespace"], dep["metadata"]["name"],
                            f.container),
                )
                for f, a in assessed
            ]
            state = compliance.worst(states)
            container_states = [
                _container_state(f, a, s) for (f, a), s in zip(assessed, states, strict=True)
            ]
            containers = [c.to_record() for c in container_states]
            message = "; ".join(
                f"{c['name']}: {c['message']}" for c in containers if c["state"] == str(state)
            ) or str(state)
            reported = str(state)
            refusal = refused.get(dep["metadata"]["uid"])
            if refusal and state in (State.VULNERABLE, State.BASE_IMAGE_OUTDATED):
                reported = reasons.REBUILD_NOT_ALLOWED
                message = f"{state}, but no rebuild is started: {refusal}"
            reported, message = gitops.reported(  # i22-gitops hook
                gitops_skips.get(dep["metadata"]["uid"]), state, (reported, message))
            try:
                await self._report(dep, reported, message, container_states, policy)
            except AdapterError as exc:  # one workload's write must not stop the others
                log.warning(
                    "could not record state of %s/%s: %s: %s",
                    dep["metadata"]["namespace"], dep["metadata"]["name"], exc.reason, exc,
                )  # fmt: skip
            out.append(
                WorkloadResult(
                    kind=_kind(dep),
                    namespace=dep["metadata"]["namespace"],
                    name=dep["metadata"]["name"],
                    uid=dep["metadata"]["uid"],
                    state=str(state),
                    message=message,
                    containers=containers,
                )
            )
        for r in out:
            self.results[r.uid] = r
        # A targeted pass counts every workload's last result, never only its own.
        counted = out if everyone is None else self._merged(everyone)
        counts = compliance.counts(State(r.state) for r in counted)
        status: dict[str, Any] = {"workloads": counts}
        if spec.vulnerabilities.source != VulnerabilitySource.NONE:
            # Read by core/policy.py into the FindingsReadable condition.
            status["findings"] = (
                {"readable": False, "reason": self._findings_errors[0][0],
                 "message": _clip(self._findings_errors[0][1], 1000)}
                if self._findings_errors
                else {"readable": True, "reason": "FindingsRead", "message": ""}
            )  # fmt: skip
        await self.kube.write_policy_status(policy, status)
        return out

    def _budget_message(self, times: HostTimes) -> str:
        slow = times.slowest()
        where = (
            f": registry {slow} was slow ({times.seconds[slow]:.1f}s in this container's calls)"
            if slow
            else ""
        )
        return (
            f"not evaluated: the policy's pass budget of {self.pass_budget:g}s "
            f"(--policy-pass-budget) ran out{where}"
        )

    # -- facts ---------------------------------------------------------------------------

    async def container_facts(
        self,
        dep: Mapping[str, Any],
        container: Mapping[str, Any],
        spec: PolicySpec,
        memo: _Pass,
        *,
        registry: RegistryClient | None = None,
    ) -> ContainerFacts:
        """What one container runs and is built on, read with ``registry`` (the policy's)."""
        registry = registry or self.registry
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
            digest, source = await self._running_digest(
                dep, name, ref, memo, registry,
                max_age=spec.base_images.check_interval.total_seconds(),
            )
            facts = replace(facts, digest=digest, digest_source=source)
            lineage = await registry.image_lineage(ref.with_digest(digest))
            base_name, base_digest = lineage.base_name or "", lineage.base_digest or ""
            lineage_source = lineage.source or ""
            override = (
                (dep["metadata"].get("annotations") or {}).get(BASE_ANNOTATION) or ""
            ).strip()
            if not base_name and override:
                base_name, lineage_source = override, "workload-annotation"
                follow_override = override
            else:
                follow_override, note = _override_use(
                    base_name, override, same_registry=self._same_registry
                )
                facts = replace(facts, note=note)
            facts = replace(
                facts, base_name=base_name, base_digest=base_digest, lineage_source=lineage_source
            )
            follow = _base_to_follow(base_name, follow_override)
            if follow is not None:
                base = await self._base(follow, spec, memo, registry)
                if base.error_reason:
                    return replace(facts, error_reason=base.error_reason, error=base.error)
                facts = replace(facts, base_current=base.digest, base_platforms=base.platforms)
                if not base_digest and override:
                    # The image records no base digest: the annotation names the base,
                    # so what runs is taken to be built on the base as it was when this
                    # digest was first seen (the operator's memory, never the workload's
                    # annotations), else on the base as it is now. Without the memory a
                    # base push could never make such a workload outdated.
                    record = self._remembered(dep)
                    remembered = _remembered_base_digest(record, name, digest, base_name)
                    facts = replace(facts, base_digest=remembered or base.digest)
                    if not remembered:
                        self.memory.stage(memory_model.with_base(record, name, BaseMemory(
                            digest=digest, base=base_name, base_digest=base.digest)))
        except AdapterError as exc:
            return replace(facts, error_reason=exc.reason, error=str(exc))
        facts = await self._with_findings(facts, ref, spec)
        # Hook (issue 24, i24-windows): baseImages.approveAfter, see reconcile/approve_after.py.
        return await hold_new_base(
            facts, base=follow, spec=spec, registry=registry, memory=self.memory,
            record=self._remembered(dep), now=self.clock(),
        )

    async def _running_digest(
        self,
        dep: Mapping[str, Any],
        container: str,
        ref: ImageRef,
        memo: _Pass,
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
        from_pods = await self._pod_digest(dep, container, str(ref), memo)
        if from_pods:
            return from_pods, "pod-status"
        key = (await _scope(registry, ref.host), str(ref))
        cached = self._tags.get(key)
        if key not in memo.tags and cached and self.monotonic() - cached[0] < max_age:
            memo.tags[key] = (cached[1], "")  # resolved within checkInterval, no event since
        if key not in memo.tags:
            try:
                memo.tags[key] = (await registry.resolve_digest(ref), "")
                self._tags[key] = (self.monotonic(), memo.tags[key][0])
            except AdapterError as exc:
                memo.tags[key] = ("", f"{exc.reason}\0{exc}")
                raise
        digest, error = memo.tags[key]
        if error:
            reason, message = error.split("\0", 1)
            raise AdapterError(message, reason=reason)
        return digest, "tag-resolved"

    async def _pod_digest(
        self, dep: Mapping[str, Any], container: str, image: str, memo: _Pass
    ) -> str:
        """The digest every current pod reports for the container, if they agree."""
        if _kind(dep) == kinds.CRONJOB:
            # Its Jobs' pods come and go with each run and may run an older
            # template; the tag is resolved instead.
            return ""
        ns = dep["metadata"]["namespace"]
        if ns not in memo.namespace_pods:
            memo.namespace_pods[ns] = await self.kube.list_namespace_pods(ns)
        selector = (dep.get("spec") or {}).get("selector") or {}
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

    async def _base(
        self,
        ref: ImageRef,
        spec: PolicySpec,
        memo: _Pass,
        registry: RegistryClient | None = None,
    ) -> _BaseFacts:
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
            key = (await _scope(registry, target.host), str(ref))
        except AdapterError as exc:
            return _BaseFacts(error_reason=exc.reason, error=f"base {ref}: {exc}")
        if key in memo.bases:
            return memo.bases[key]
        cached = self._bases.get(key)
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
            facts = _BaseFacts(digest=info.digest, platforms=platforms)
            self._bases[key] = (self.monotonic(), facts)
        except AdapterError as exc:
            facts = _BaseFacts(error_reason=exc.reason, error=f"base {key[1]}: {exc}")
        memo.bases[key] = facts
        return facts

    async def _with_findings(
        self, facts: ContainerFacts, ref: ImageRef, spec: PolicySpec
    ) -> ContainerFacts:
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
            self._findings_errors.append((FINDINGS_UNAVAILABLE, message))
            return replace(facts, error_reason=FINDINGS_UNAVAILABLE, error=message)
        key = (ref.name, facts.digest, str(source))
        cached = self._scans.get(key)
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
                self._findings_errors.append((exc.reason, message))
                return replace(facts, error_reason=exc.reason, error=message)
            self._scans[key] = (self.monotonic(), report)
        verdict = report.verdict(spec.vulnerabilities, now=self.clock())
        return replace(facts, findings=verdict, scan=report.status_outcome)

    async def _namespace_labels(self, ns: str, memo: _Pass) -> dict[str, str]:
        if ns not in memo.namespace_labels:
            memo.namespace_labels[ns] = await self.kube.namespace_labels(ns)
        return memo.namespace_labels[ns]

    # -- outputs -------------------------------------------------------------------------

    def _same_registry(self, a: ImageRef, b: ImageRef) -> bool:
        """Two names served by one registry endpoint (the admin's --registry-endpoint)."""
        return self.registry.endpoint(a) == self.registry.endpoint(b)

    def _remembered(self, dep: Mapping[str, Any]) -> WorkloadMemory:
        """The operator's memory of this workload (fresh for a new uid)."""
        meta = dep.get("metadata") or {}
        return self.memory.get(
            _kind(dep), meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
        )

    def _patch_body(
        self, policy: str, spec: PolicySpec, intent: compliance.PatchIntent
    ) -> dict[str, Any]:
        """The ImagePatch for ``intent``; its ``spec.rebuild`` is decided here, once.

        It comes from the intent alone: the normalised ``imagepatch.dev/rebuild``
        that its targets (kind, namespace, name) asked for, which is part of
        its key, over the policy's default. A workload whose request is refused
        is never a target, so its request reaches no patch, including a patch
        for another kind of workload with the same namespace and name.
        """
        tag = intent.tag
        requested = rebuild.requested_rebuild(intent.rebuild) if intent.rebuild else {}
        choice = rebuild.choose_rebuild(spec.rebuild, **requested)
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImagePatch",
            "metadata": {
                "name": intent.name,
                "labels": {POLICY_LABEL: policy, MANAGED_BY[0]: MANAGED_BY[1]},
                "annotations": {KEY_ANNOTATION: intent.key},
            },
            "spec": {
                "image": intent.image,
                "currentDigest": intent.current_digest,
                **({"tag": tag} if tag else {}),
                "policy": policy,
                "targets": _targets_field(intent.targets, []),
                "reason": intent.reason,
                "evidence": dict(intent.evidence),
                "rebuild": choice.as_spec(),
            },
        }

    async def _report(
        self,
        dep: Mapping[str, Any],
        state: str,
        message: str,
        containers: Sequence[ContainerState],
        policy: str,
    ) -> None:
        """Record the workload's state on it; post an Event when the state changed."""
        meta = dep["metadata"]
        # The operator's memory says what changed; the annotation is only its mirror.
        remembered = self._remembered(dep)
        changed = remembered.state != state
        kept = memory_model.with_state(remembered, state=state, now=self.clock())
        record = WorkloadState(
            policy=policy, state=state, message=message[:1000], containers=tuple(containers),
            since=kept.since,
        )
        value = record.to_annotation()
        if _mirror(meta) != value:
            await self.kube.annotate_workload(
                _kind(dep), meta["namespace"], meta["name"], {STATE_ANNOTATION: value}
            )
            # Keep our copy in step, so the next pass compares with what we wrote.
            meta.setdefault("annotations", {})[STATE_ANNOTATION] = value
        if changed:
            await self._event(dep, state, message)
            # i22-notify hook: a state worth a message (Vulnerable, ...) is queued, never awaited.
            notifications.workload_state_changed(
                self.notifier, policy=policy, kind=_kind(dep), workload=dep, state=state,
                message=message, containers=containers, now=self.clock())
        self.memory.stage(kept)  # written at the end of the pass

    async def _event(self, dep: Mapping[str, Any], state: str, message: str) -> None:
        meta = dep["metadata"]
        try:
            await self.kube.emit_event(
                involved={
                    "apiVersion": kinds.api_version(_kind(dep)),
                    "kind": _kind(dep),
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta.get("uid", ""),
                },
                type="Warning" if state in _WARNING_STATES else "Normal",
                reason=state,
                message=_clip(message, 1024),
            )
        except AdapterError as exc:
            log.warning("could not post event %s: %s", state, exc)


# --- helpers ------------------------------------------------------------------------------


def _clip(value: Any, limit: int = 120) -> str:
    """A bounded rendering of a value someone else wrote, for a message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failed_facts(container: Mapping[str, Any], reason: str, message: str) -> ContainerFacts:
    image = container.get("image")
    image = image if isinstance(image, str) else ""
    return ContainerFacts(
        container=_clip(container.get("name", ""), 253),
        image=_clip(image, 600),
        repository=_image_name(image) if len(image) <= 600 else _clip(image, 600),
        error_reason=reason,
        error=message,
    )


def _annotation_problem(dep: Mapping[str, Any]) -> str:
    """Why the workload's imagepatch.dev annotations cannot be used, or ""."""
    annotations = dep["metadata"].get("annotations") or {}
    for key in (POLICY_ANNOTATION, BASE_ANNOTATION, REBUILD_ANNOTATION):
        value = annotations.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"annotation {key} is not a string"
        if len(value) > MAX_ANNOTATION_LENGTH:
            return (
                f"annotation {key} is {len(value)} characters long; at most "
                f"{MAX_ANNOTATION_LENGTH} are read"
            )
        if any(ord(c) < 0x20 for c in value):
            return f"annotation {key} contains control characters"
    requested = annotations.get(REBUILD_ANNOTATION)
    if requested is not None and (why := rebuild.rebuild_request_problem(requested)):
        # Refused here, for this workload only: never written into an
        # ImagePatch that the API server would refuse for every workload.
        return f"annotation {REBUILD_ANNOTATION} {why}"
    override = (annotations.get(BASE_ANNOTATION) or "").strip()
    if override:
        try:
            parse_image(override)
        except ValueError as exc:
            return f"annotation {BASE_ANNOTATION}: {_clip(str(exc), 300)}"
    return ""


_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation")


def _slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What detection reads of a workload, and nothing else.

    The cache holds every opted-in workload; a whole body (managedFields,
    status, the full pod template) costs ~50 KiB, so 1,000 workloads cost
    ~50 MiB of RSS for fields nothing reads. Kept: the kind, identity, our own
    ``imagepatch.dev/*`` annotations, the selector, and the name and image of
    each container and init container (a CronJob's job template is kept in
    the same place, ``spec.template``: detection reads only the images).
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    kept = {k: meta[k] for k in _KEPT_METADATA if k in meta}
    kept["annotations"] = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(PREFIX)
    }
    kept = gitops.keep_claims(meta, kept)  # i22-gitops hook: Flux/Argo CD labels
    lists: dict[str, list[dict[str, Any]]] = {}
    for key, c in kinds.containers(body):
        lists.setdefault(key, []).append({"name": c.get("name"), "image": c.get("image")})
    return {
        "kind": _kind(body),
        "metadata": kept,
        "spec": {"selector": spec.get("selector") or {}, "template": {"spec": lists}},
    }


def _kind(body: Mapping[str, Any]) -> str:
    """The workload's kind (watch events carry it; a body without one is a Deployment's)."""
    kind = body.get("kind")
    return kind if kind in kinds.KINDS else kinds.DEPLOYMENT


def _containers(dep: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every container detection judges: ``containers`` and ``initContainers``."""
    return [c for _, c in kinds.containers(dep)]


def _follows(
    assessed: Sequence[tuple[ContainerFacts, Assessment]], override: object
) -> frozenset[tuple[str, str]]:
    """(name, tag) of every image a workload runs or follows as a base ("": any tag).

    An event about the running image's repository reaches the workload whatever
    tag it names (a scan, a push that moved the digest); one about a base only
    when it names the tag followed, or none.
    """
    out = {(f.repository, "") for f, _ in assessed}
    bases = [f.base_name for f, _ in assessed if f.base_name]
    if isinstance(override, str) and override.strip():
        bases.append(override.strip())
    for base in bases:
        try:
            ref = parse_image(base)
        except ValueError:
            continue
        out.add((ref.name, ref.tag or ("" if ref.digest else "latest")))
    return frozenset(out)


def _named(
    follows: frozenset[tuple[str, str]], names: set[str], tags: Mapping[str, set[str]]
) -> bool:
    """Whether an event named an image the workload runs or follows (see ``_follows``).

    A workload never evaluated has nothing recorded; it is new, and its pass
    is a full one anyway.
    """
    for name, tag in follows:
        if name not in names:
            continue
        named = tags.get(name, {""})
        if not tag or "" in named or tag in named:
            return True
    return False


def _image_name(image: str) -> str:
    try:
        return parse_image(image).name
    except ValueError:
        return image


def _inputs(dep: Mapping[str, Any]) -> str:
    """What detection reads from a workload: its images and our annotations on it."""
    annotations = dep["metadata"].get("annotations") or {}
    return json.dumps(
        [
            [(c.get("name"), c.get("image")) for c in _containers(dep)],
            [annotations.get(k) for k in (POLICY_ANNOTATION, BASE_ANNOTATION, REBUILD_ANNOTATION)],
        ]
    )


def _requested_rebuild(dep: Mapping[str, Any]) -> str:
    """The workload's imagepatch.dev/rebuild annotation, normalised ("" when it has none)."""
    raw = (dep["metadata"].get("annotations") or {}).get(REBUILD_ANNOTATION) or ""
    return rebuild.normalise_rebuild_request(raw) if isinstance(raw, str) else ""


def _override_use(
    base_name: str,
    override: str,
    *,
    same_registry: Callable[[ImageRef, ImageRef], bool] = lambda a, b: a.host == b.host,
) -> tuple[str, str]:
    """When the image records its base: what of the annotation is used, and a note if nothing.

    The image's own record wins: an annotation could otherwise pin a base tag
    that never moves and keep the workload from ever being outdated. The uses
    left: naming the tag to follow of a base the image records only by digest
    (``FROM base@sha256:…``), in the same repository; and naming the recorded
    base under another host that the operator's own configuration serves from
    the same registry (``same_registry``: the ``--registry-endpoint`` mapping,
    an admin's, never a tenant's), so events naming that host match.
    """
    if not (base_name and override):
        return "", ""
    try:
        recorded, asked = parse_image(base_name), parse_image(override)
    except ValueError:
        return "", ""
    same_base = recorded.repository == asked.repository and (
        recorded.host == asked.host or same_registry(recorded, asked)
    )
    if same_base and (not recorded.tag or recorded.tag == asked.tag):
        return (override if not recorded.tag or recorded.host != asked.host else ""), ""
    return "", (
        f"the {BASE_ANNOTATION} annotation names {_clip(override)}, but the image records its "
        f"base as {_clip(base_name)}: the image's base is followed"
    )


def _base_to_follow(base_name: str, override: str) -> ImageRef | None:
    """The base tag to watch: the annotation's if given, else the recorded name if it has a tag.

    A base recorded only by digest (``FROM base@sha256:…``) names no tag that
    could move, so there is nothing to follow without the annotation.
    """
    for candidate in (override, base_name):
        if not candidate:
            continue
        try:
            ref = parse_image(candidate)
        except ValueError:
            continue
        if ref.tag:
            return ImageRef(host=ref.host, repository=ref.repository, tag=ref.tag)
        if not ref.digest:
            return ImageRef(host=ref.host, repository=ref.repository, tag="latest")
    return None


def _remembered_base_digest(
    record: WorkloadMemory, container: str, digest: str, base_name: str
) -> str:
    """The base digest the operator remembered for this container at this digest.

    Only lineage taken from the workload annotation is remembered, for the same
    image digest and base name; anything else (or a value that is not a digest)
    is "". The memory is the operator's (``adapters.memory``), never the
    workload's ``imagepatch.dev/state`` annotation, which its owner can edit.
    """
    remembered = record.bases.get(container)
    if remembered is not None and remembered.digest == digest and remembered.base == base_name:
        return remembered.base_digest if is_digest(remembered.base_digest) else ""
    return ""


def _mirror(meta: Mapping[str, Any]) -> str:
    """The state annotation's value as it stands: the mirror for people, never read back
    for a decision (only to tell whether it needs writing again)."""
    value = (meta.get("annotations") or {}).get(STATE_ANNOTATION)
    return value if isinstance(value, str) else ""


def _with_failed_memory(
    assessed: Sequence[tuple[ContainerFacts, Assessment]],
    dep: Mapping[str, Any],
    record: WorkloadMemory,
) -> list[tuple[ContainerFacts, Assessment]]:
    """Containers whose patch already failed here read ``Failed``, saying which rebuild.

    The memory is the operator's (``adapters.memory``: it outlives history
    retention of the failed ImagePatch); the workload's
    ``imagepatch.dev/failed-digests`` annotation is only its mirror.
    """
    memory = {m.get("key"): m for m in record.failed if m.get("key")}
    out = []
    for facts, assessment in assessed:
        intent = compliance.intent_for(facts, assessment)
        if intent is not None:
            intent = compliance.with_rebuild_override(intent, _requested_rebuild(dep))
        failed = memory.get(intent.key) if intent is not None else None
        if failed:
            assessment = Assessment(
                state=State.FAILED,
                reason=reasons.REBUILD_FAILED_BEFORE,
                message=f"the rebuild {failed['digest']} failed here (ImagePatch "
                f"{failed.get('patch', '?')}, {failed.get('at', '')}); waiting for a newer "
                "base or image",
            )
        out.append((facts, assessment))
    return out


_HOLDING = {str(p) for p in (TargetPhase.PATCHING, TargetPhase.GATING, TargetPhase.ROLLING_BACK)}


def _target_key(raw: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (
        raw.get("kind") or "Deployment",
        raw.get("namespace", ""),
        raw.get("name", ""),
        raw.get("container", ""),
    )


def _known(body: Mapping[str, Any]) -> KnownPatch:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    rollouts = status.get("rollouts") or []
    return KnownPatch(
        name=meta.get("name", ""),
        key=annotations.get(KEY_ANNOTATION, ""),
        image=_image_name(spec.get("image", "")),
        current_digest=spec.get("currentDigest", ""),
        phase=status.get("phase") or "Pending",
        started=any(r.get("phase") not in (None, "Pending") for r in rollouts),
        tag=spec.get("tag") or "",
        targets=frozenset(_target_key(t) for t in spec.get("targets") or []),
        held=frozenset(_target_key(r) for r in rollouts if r.get("phase") in _HOLDING),
        close_requested=bool(annotations.get(CLOSE_ANNOTATION)),
    )


def _targets_field(
    targets: Iterable[Target], existing: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``spec.targets``: the existing entries, then the new ones, each container once."""
    out = {_target_key(t): dict(t) for t in existing}
    for t in targets:
        out.setdefault(
            t.key,
            {
                "kind": t.kind,
                "namespace": t.namespace,
                "name": t.name,
                "container": t.container,
                "wave": t.wave,
            },
        )
    return list(out.values())


def _container_state(
    facts: ContainerFacts, assessment: Assessment, state: State
) -> ContainerState:
    findings = facts.findings
    return ContainerState(
        name=facts.container,
        image=facts.image,
        digest=facts.digest,
        digest_source=facts.digest_source,
        base=facts.base_name,
        base_digest=facts.base_digest,
        base_current=facts.base_current,
        lineage=facts.lineage_source,
        state=str(state),
        reason=assessment.reason,
        message=assessment.message,
        findings_over_baseline=None if findings is None else len(findings.violations),
        findings_by_severity={}
        if findings is None
        else {
            k.upper(): v
            for k, v in findings.violation_counts.as_dict().items()
            if v and k != "total"
        },
    )
