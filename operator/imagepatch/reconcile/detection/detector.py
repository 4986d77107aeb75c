"""The detector: which opted-in workloads are due, and one policy's pass over them.

``Detector`` keeps the opted-in workloads (fed by kopf watches, ``observe``)
and what it must carry from one pass to the next (when each policy was last
evaluated, what each workload was evaluated from and its last result, the
images it follows). Each tick ``evaluate_all`` clears the state of workloads
that opted out, reports workloads whose policy is missing, and starts a pass
for each due policy; ``evaluate_policy`` is that pass, in stage order:

    observe (``facts``) → assess → plan → act (``act``) → record (``record``)

The pure decisions of each stage are ``core.detection``'s. What one pass
learns is handed from stage to stage as values (``PolicyPass``,
``Observation``, ``PassPlan``, outcomes), never kept on the detector.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagepatch.adapters import metrics
from imagepatch.adapters.errors import AdapterError, TransientError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.notify import Notifier
from imagepatch.adapters.registry import PolicySecrets, PullThroughRules, RegistryClient
from imagepatch.adapters.registry.gate import HostTimes, timed_hosts
from imagepatch.core import compliance
from imagepatch.core.compliance import ContainerFacts, KnownPatch, State
from imagepatch.core.detection.assess import Observation, assess_workload
from imagepatch.core.detection.lineage import named
from imagepatch.core.detection.plan import PassPlan, Settled, known_patch, plan_pass, settle
from imagepatch.core.detection.report import (
    WorkloadResult,
    policy_status,
    report_pass,
)
from imagepatch.core.detection.workload import (
    clip,
    containers_of,
    failed_facts,
    identity,
    image_name,
    inputs,
    judged_containers,
    slim,
    unusable,
)
from imagepatch.core.events import ImageSignal
from imagepatch.core.policy import REQUESTED_AT_ANNOTATION
from imagepatch.core.reasons import EVALUATION_FAILED, PASS_BUDGET_EXCEEDED
from imagepatch.core.retention import retention
from imagepatch.core.scans import FindingsSource
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import parse_imagepatch
from imagepatch.model.names import POLICY_ANNOTATION, STATE_ANNOTATION
from imagepatch.model.policy import PolicySpec, parse_policy
from imagepatch.model.times import Clock, utcnow
from imagepatch.model.workload_state import ContainerState
from imagepatch.reconcile import user_rollbacks
from imagepatch.reconcile.detection.act import act
from imagepatch.reconcile.detection.facts import FactReader, PassMemo, PolicyPass, registry_for
from imagepatch.reconcile.detection.record import NOT_ADMITTED, POLICY_NOT_FOUND, StateRecorder

log = logging.getLogger("imagepatch.detection")

# A workload's state write the API server refused (an admission webhook) is
# tried again after this long, or at once when the workload changes.
REFUSED_WRITE_RETRY = 300.0
# Seconds a policy's pass may spend gathering facts before what is left is Unknown.
DEFAULT_PASS_BUDGET = 60.0
# Seconds the pass waits on one policy before starting the next beside it.
SLOW_POLICY_AFTER = 2.0


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


@dataclass(frozen=True, kw_only=True, slots=True)
class Due:
    """A policy due in this tick, and which of its workloads its pass evaluates."""

    name: str
    spec: PolicySpec
    workloads: list[dict[str, Any]]  # all of the policy's
    chosen: list[dict[str, Any]]  # evaluated: all unless only events are due
    full: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    """What the observe stage saw: the admitted workloads' facts, and the others."""

    facts: list[tuple[Mapping[str, Any], list[ContainerFacts]]] = field(default_factory=list)
    not_admitted: list[Mapping[str, Any]] = field(default_factory=list)


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
        patience: float = SLOW_POLICY_AFTER,
        notifier: Notifier | None = None,
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.secrets = secrets
        self.securityhub = securityhub
        # What detection decides from (base digests it saw, failed rebuilds, states):
        # kept in the operator's namespace, never read back from a workload's annotations.
        self.memory = memory if memory is not None else OperatorMemory()
        self.clock = clock
        self.monotonic = monotonic
        # The clocks are read through the detector, so a test that moves them moves all.
        self.facts = FactReader(
            kube=kube, registry=registry, memory=self.memory, findings=findings,
            upstreams=upstreams, clock=lambda: self.clock(), monotonic=lambda: self.monotonic(),
        )  # fmt: skip
        self.states = StateRecorder(
            kube=kube, memory=self.memory, clock=lambda: self.clock(),
            remembered=self.facts.remembered, notifier=notifier,
        )  # fmt: skip
        # (kind, ns, name) of workloads seen to opt out: Security Hub archives their
        # findings saying so, never as resolved.
        self.opted_out: set[tuple[str, str, str]] = set()
        self.tick = tick
        # Seconds one policy's pass may spend gathering facts (--policy-pass-budget).
        self.pass_budget = pass_budget
        # A policy still running after this long goes on in the background while
        # the next one starts: a slow registry delays other policies by this much.
        self.patience = patience
        self.workloads: dict[str, dict[str, Any]] = {}  # uid -> workload (slim, with its kind)
        # uid -> (kind, ns, name): a workload that opted out with our annotation left on it
        self.orphans: dict[str, tuple[str, str, str]] = {}
        self.wake = asyncio.Event()
        # Queued between passes (``on_signals``), taken by the next pass:
        self.forced: set[str] = set()  # image names (host/repo) a queue event named
        # name -> the tags the events named ("" when one named none: any tag)
        self.forced_tags: dict[str, set[str]] = {}
        self.last_evaluated: dict[str, float] = {}  # policy -> monotonic time
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
        self.passes = 0

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
        who = identity(body)
        if event_type == "DELETED":
            self.memory.forget(*who)  # pruned at the next flush
            self.opted_out.discard(who)
        elif POLICY_ANNOTATION not in annotations and (
            uid in self.workloads or self.memory.get(*who, uid).state
        ):
            self.opted_out.add(who)
        else:
            self.opted_out.discard(who)
        if event_type == "DELETED" or POLICY_ANNOTATION not in annotations:
            self.workloads.pop(uid, None)
            if event_type != "DELETED" and STATE_ANNOTATION in annotations:
                self.orphans[uid] = who
            return
        self.orphans.pop(uid, None)
        self.workloads[uid] = slim(body)

    async def on_signals(self, signals: Sequence[ImageSignal]) -> None:
        """Queue events: re-evaluate the named images now, not at the next interval."""
        for signal in signals:
            self.forced.add(signal.name)
            self.forced_tags.setdefault(signal.name, set()).add(signal.tag or "")
        # A push moves tags and a scan changes findings: forget what we knew of them.
        self.facts.forget({s.name for s in signals})
        self.wake.set()

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
        """One tick: housekeeping, then a pass for each due policy, each in its own task."""
        self.passes += 1
        pass_started = self.monotonic()
        log.debug("detection pass %d: %d opted-in workloads", self.passes, len(self.workloads))
        policies: dict[str, dict[str, Any]] = {
            p["metadata"]["name"]: p for p in await self.kube.list_policies()
        }
        patches = [p for p in await self.kube.list_imagepatches()]
        metrics.record_patches(patches)
        await self._load_credentials(policies)
        by_policy: dict[str, list[dict[str, Any]]] = {}
        for dep in self.workloads.values():
            by_policy.setdefault(dep["metadata"]["annotations"][POLICY_ANNOTATION], []).append(dep)
        self._forget_gone(policies)
        forced, self.forced = self.forced, set()
        forced_tags, self.forced_tags = self.forced_tags, {}
        await self._clear_orphans()
        await self._report_missing_policies(policies, by_policy)
        memo = PassMemo()
        lanes: list[asyncio.Task[None]] = []
        for due in self._due(policies, by_policy, forced, forced_tags):
            started = self.monotonic()
            if due.full:
                self.last_evaluated[due.name] = started
            # Each policy in its own task: one that is still running after
            # ``patience`` seconds (a slow registry) goes on beside the next.
            lane = asyncio.create_task(
                self._evaluate_due(due, patches, memo, started, pass_started=pass_started,
                                   forced=forced),
                name=f"detection-{due.name}",
            )  # fmt: skip
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

    async def _load_credentials(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        """Each policy's registry Secret, so a workload is read with its own policy's only."""
        if self.secrets is not None:
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

    async def _clear_orphans(self) -> None:
        """Remove our state annotation from workloads that opted out.

        Each write is one workload's: one the API server refuses (an admission
        webhook, a 4xx) is logged and the others, and the pass, go on.
        """
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

    async def _report_missing_policies(
        self,
        policies: Mapping[str, Any],
        by_policy: Mapping[str, list[dict[str, Any]]],
    ) -> None:
        """Workloads opted in to a policy that does not exist are PolicyNotFound."""
        for name, workloads in sorted(by_policy.items()):
            if name in policies:
                continue
            for dep in workloads:
                uid, now = dep["metadata"]["uid"], self.monotonic()
                seen, at = self.refused_writes.get(uid, ("", -1e18))
                if seen == inputs(dep) and now - at < REFUSED_WRITE_RETRY:
                    continue  # refused before, unchanged since: not asked again every tick
                try:
                    await self.states.report(
                        dep,
                        POLICY_NOT_FOUND,
                        f"ImagePatchPolicy {clip(name)!r} does not exist; "
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
                    self.refused_writes[uid] = (inputs(dep), now)
                else:
                    self.refused_writes.pop(uid, None)

    def _due(
        self,
        policies: Mapping[str, Mapping[str, Any]],
        by_policy: Mapping[str, list[dict[str, Any]]],
        forced: set[str],
        forced_tags: Mapping[str, set[str]],
    ) -> Iterable[Due]:
        """The policies due now, in name order, each with the workloads its pass evaluates.

        Lazy: each is taken (and its request marked handled) as its pass starts.
        """
        for name, body in sorted(policies.items()):
            try:
                spec = parse_policy(body).spec
            except SpecError:
                continue  # the policy is Stalled with the reason; nothing to evaluate against
            workloads = by_policy.get(name, [])
            images = {image_name(c["image"]) for d in workloads for c in containers_of(d)}
            images |= self.bases_of.get(name, set())
            requested = (body["metadata"].get("annotations") or {}).get(REQUESTED_AT_ANNOTATION, "")
            age = self.monotonic() - self.last_evaluated.get(name, -1e18)
            # A workload that is new, or whose images or annotations changed, is looked at now.
            changed = any(self.evaluated.get(d["metadata"]["uid"]) != inputs(d) for d in workloads)
            full = (
                age >= spec.base_images.check_interval.total_seconds()
                or changed
                or requested != self.handled_request.get(name, "")
            )
            # Only events due: a targeted pass over the workloads that run or follow
            # an image the events named; every other fact is still valid.
            chosen = workloads if full else [
                d for d in workloads
                if named(self.follows.get(d["metadata"]["uid"], frozenset()), forced, forced_tags)
            ]  # fmt: skip
            if not (full or chosen):
                continue
            if requested != self.handled_request.get(name, ""):
                # A human asked for a check now: what we know may be stale, look again.
                self.facts.forget(self.bases_of.get(name, set()) | images)
            self.handled_request[name] = requested
            yield Due(name=name, spec=spec, workloads=workloads, chosen=chosen, full=full)

    async def _evaluate_due(
        self,
        due: Due,
        patches: Sequence[Mapping[str, Any]],
        memo: PassMemo,
        started: float,
        *,
        pass_started: float,
        forced: set[str],
    ) -> None:
        """Evaluate one due policy, then export, prune and log it (a task of ``evaluate_all``).

        The results exported and counted are every workload's last ones, also when
        the pass is targeted (``due.full`` false: only events are due).
        """
        name, workloads, chosen = due.name, due.workloads, due.chosen
        try:
            await self.evaluate_policy(
                name, due.spec, chosen, patches, memo, everyone=None if due.full else workloads
            )
            results = self._merged(workloads)
        except Exception:  # one policy must never stop the ones sorted after it
            log.exception("policy %s: evaluation failed; the next policy goes on", name)
            for dep in workloads:
                self.evaluated[dep["metadata"]["uid"]] = inputs(dep)
            return
        self._record_metrics(name, results)
        if self.securityhub is not None:
            try:
                await self.securityhub.export(
                    {name: results}, now=self.clock(), opted_out=frozenset(self.opted_out),
                )  # fmt: skip
            except AdapterError as exc:
                log.warning(
                    "Security Hub export for policy %s failed: %s: %s", name, exc.reason, exc
                )
        await self._prune(name, due.spec, patches)
        log.info(
            "policy %s: %d workloads evaluated in %.2fs in pass %d, started %.2fs into it%s (%s)",
            name,
            len(chosen),
            self.monotonic() - started,
            self.passes,
            started - pass_started,
            "" if due.full else f", targeted: {len(chosen)} of {len(workloads)} follow "
            f"{clip(', '.join(sorted(forced)), 300)}",
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
        self.facts.expire(max(intervals, default=0.0))

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
            since = self.facts.remembered(self.workloads.get(r.uid, {})).since
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

    # -- one policy's pass ---------------------------------------------------------------

    async def evaluate_policy(
        self,
        policy: str,
        spec: PolicySpec,
        workloads: Sequence[Mapping[str, Any]],
        patches: Sequence[Mapping[str, Any]],
        memo: PassMemo,
        *,
        everyone: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[WorkloadResult]:
        """Evaluate ``workloads`` of ``policy``: observe → assess → plan → act → record.

        ``everyone``: a targeted pass, where ``workloads`` are only some of the
        policy's workloads (``everyone``). It closes no patch that has a target
        it did not evaluate, adds to ``bases_of`` rather than replacing it, and
        writes the counts of every workload's last result, not of its own.
        """
        run = PolicyPass(
            policy=policy, spec=spec, memo=memo, registry=registry_for(self.registry, policy)
        )
        known = _known_patches(policy, patches)
        observed = await self._observe(run, workloads)
        # A rollback a person made by hand is remembered (the digest rejected for
        # that container) before the assessment reads the memory.
        user_rollbacks.remember(self.memory, workloads, patches, self.clock())
        # The base digests remembered while observing are written before any patch
        # is opened or closed.
        await self.memory.flush()
        observations = await self._assess(run, observed)
        plan = plan_pass(observations, spec, known, targeted=everyone is not None, policy=policy,
                         now=self.clock())
        # Recorded before any side effect: a create that fails below must not
        # make this policy due again on every tick.
        self._remember_evaluated(policy, workloads, plan, targeted=everyone is not None)
        outcomes = await act(
            self.kube, policy, spec, plan, {p["metadata"]["name"]: p for p in patches}
        )
        return await self._record(run, observed, observations, plan, settle(known, outcomes),
                                  everyone=everyone)  # fmt: skip

    async def _observe(self, run: PolicyPass, workloads: Sequence[Mapping[str, Any]]) -> Observed:
        """The observe stage: each admitted workload's container facts, within the budget.

        The pass budget: facts are gathered until it runs out; what is left is
        Unknown, naming the host the time went to, and the pass goes on.
        """
        observed = Observed()
        deadline = self.monotonic() + self.pass_budget
        out_of_budget = ""
        for listed in workloads:
            dep = await self.facts.workload(listed)  # hook (issue 23): a Rollout's workloadRef
            ns = dep["metadata"]["namespace"]
            if not run.spec.namespace_selector.matches(
                await self.facts.namespace_labels(ns, run.memo)
            ):
                observed.not_admitted.append(dep)
                continue
            facts = []
            reason, problem = unusable(dep)  # hook (issue 23): or an unresolved workloadRef
            for container in judged_containers(dep):
                if problem:
                    facts.append(failed_facts(container, reason, problem))
                elif out_of_budget:
                    facts.append(failed_facts(container, PASS_BUDGET_EXCEEDED, out_of_budget))
                else:
                    one, out_of_budget = await self._container(run, dep, container, deadline)
                    facts.append(one)
            observed.facts.append((dep, facts))
        return observed

    async def _container(
        self,
        run: PolicyPass,
        dep: Mapping[str, Any],
        container: Mapping[str, Any],
        deadline: float,
    ) -> tuple[ContainerFacts, str]:
        """One container's facts, and why the budget ran out ("" while it lasts).

        Whatever goes wrong (a classified ``AdapterError`` or any other
        exception) makes this container Unknown, naming the image and the problem.
        """
        try:
            with timed_hosts() as times:
                async with asyncio.timeout(max(deadline - self.monotonic(), 0)):
                    return await self.facts.container_facts(run, dep, container), ""
        except TimeoutError:
            out_of_budget = self._budget_message(times)
            log.warning("policy %s: %s", run.policy, out_of_budget)
            return failed_facts(container, PASS_BUDGET_EXCEEDED, out_of_budget), out_of_budget
        except Exception as exc:  # noqa: BLE001 - isolation: see the package docstring
            log.warning(
                "%s/%s: evaluating image %r failed", dep["metadata"]["namespace"],
                dep["metadata"].get("name"), container.get("image"), exc_info=True,
            )  # fmt: skip
            return failed_facts(
                container,
                EVALUATION_FAILED,
                f"image {clip(container.get('image'))}: {type(exc).__name__}: "
                f"{clip(str(exc), 300)}",
            ), ""

    async def _assess(self, run: PolicyPass, observed: Observed) -> list[Observation]:
        """The assess stage: each admitted workload's containers judged (pure), with the
        namespace labels and the operator's memory the plan reads."""
        return [
            assess_workload(
                dep, facts, run.spec,
                namespace_labels=await self.facts.namespace_labels(
                    dep["metadata"]["namespace"], run.memo
                ),
                memory=self.facts.remembered(dep),
            )
            for dep, facts in observed.facts
        ]  # fmt: skip

    def _remember_evaluated(
        self,
        policy: str,
        workloads: Sequence[Mapping[str, Any]],
        plan: PassPlan,
        *,
        targeted: bool,
    ) -> None:
        """What the next ticks decide from: the images each workload follows, the bases
        the policy's workloads follow, and what each workload was evaluated from."""
        self.follows.update(plan.follows)
        self.bases_of[policy] = set(plan.bases) | (
            self.bases_of.get(policy, set()) if targeted else set()
        )
        for dep in workloads:
            self.evaluated[dep["metadata"]["uid"]] = inputs(dep)

    async def _record(
        self,
        run: PolicyPass,
        observed: Observed,
        observations: Sequence[Observation],
        plan: PassPlan,
        settled: Settled,
        *,
        everyone: Sequence[Mapping[str, Any]] | None,
    ) -> list[WorkloadResult]:
        """The record stage: each workload's state, then the policy's counts.

        Each write is one workload's: one the API server refuses is logged and
        the others go on.
        """
        writes: list[tuple[Mapping[str, Any], str, str, Sequence[ContainerState]]] = [
            (dep, NOT_ADMITTED,
             f"namespace {dep['metadata']['namespace']} is not admitted by ImagePatchPolicy "
             f"{run.policy!r} (spec.namespaceSelector); this workload is left alone", ())
            for dep in observed.not_admitted
        ]  # fmt: skip
        for dep in observed.not_admitted:
            self.results.pop(dep["metadata"]["uid"], None)
        reports = report_pass(
            observations, settled, refused=plan.refused, skipped=plan.skipped,
            memory={o.uid: self.facts.remembered(o.workload) for o in observations},
        )  # fmt: skip
        writes += [(r.workload, r.state, r.message, r.containers) for r in reports]
        for dep, state, message, containers in writes:
            try:
                await self.states.report(dep, state, message, containers, run.policy)
            except AdapterError as exc:  # one workload's write must not stop the others
                log.warning(
                    "could not record state of %s/%s: %s: %s",
                    dep["metadata"]["namespace"], dep["metadata"]["name"], exc.reason, exc,
                )  # fmt: skip
        out = [r.result for r in reports]
        self.results.update((r.uid, r) for r in out)
        # A targeted pass counts every workload's last result, never only its own.
        counted = out if everyone is None else self._merged(everyone)
        await self.kube.write_policy_status(
            run.policy,
            policy_status(counted, source=run.spec.vulnerabilities.source,
                          findings_errors=run.findings_errors),
        )  # fmt: skip
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


def _known_patches(policy: str, patches: Sequence[Mapping[str, Any]]) -> list[KnownPatch]:
    """The policy's ImagePatches as detection sees them (``model.parse_imagepatch``).

    One the model cannot parse (the CRD admits none) is left out and logged:
    detection neither closes nor counts what it cannot read.
    """
    known = []
    for body in patches:
        if (body.get("spec") or {}).get("policy") != policy:
            continue
        try:
            known.append(known_patch(parse_imagepatch(body)))
        except SpecError as exc:
            log.warning("ImagePatch %s: %s; left out of detection",
                        (body.get("metadata") or {}).get("name"), exc)  # fmt: skip
    return known
