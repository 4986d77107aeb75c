"""The planner's vocabulary and its one context object.

``Context`` is what every phase module works on: the inputs of one planner
call (the patch, its policy, the clock, the target digest) and the status
being built for this step (phase, rollout entries, failed digests, message,
conditions' reasons, events). A phase helper changes the context and ends with
``ctx.finish(...)``, which turns it into the ``Step``: the status to record
(only when something changed), at most one action, and when to look again.

The step's types (``Step``, ``PatchImage``, ``WorkloadEvent``) and the
observations the reconcile loop hands in (``Workload``, ``Candidate``,
``Window``) live here too, with the planner's timing constants.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.core import kinds, reasons
from imagepatch.core.conditions import Condition, merge
from imagepatch.core.images import parse_image
from imagepatch.model.imagepatch import (
    ApprovalDecision,
    ImagePatch,
    Phase,
    RolloutEntry,
    Target,
    TargetPhase,
)
from imagepatch.model.names import FAILED_DIGESTS_ANNOTATION
from imagepatch.model.policy import ApprovalMode, OnTargetFailure, PolicySpec, Rollout
from imagepatch.model.times import format_time

HISTORY_LIMIT = 50
# How soon to look again while waiting on a gate, a soak or a window.
GATE_POLL = 2.0
# How soon a patch waiting for another patch's hold on a container looks again.
CONFLICT_POLL = 10.0
# How soon a patch of a suspended or missing policy looks again (a policy
# change does not wake an ImagePatch, so this is the resync).
POLICY_POLL = 60.0
# On the workload, a mirror for people (the operator's memory holds the real record,
# adapters.memory): the digests that failed there (bounded), newest last.
FAILED_ANNOTATION = FAILED_DIGESTS_ANNOTATION
FAILED_MEMORY = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """One observed target workload (of ``target.kind``): the object and its pods, or absent.

    ``deployment`` is the workload object of any kind (the name stayed from
    when only Deployments were patched); ``jobs`` are a CronJob's Jobs.
    """

    target: Target
    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]] = ()
    jobs: Sequence[Mapping[str, Any]] = ()
    # Digests that failed on this workload before, from the operator's memory
    # (never from the workload's imagepatch.dev/failed-digests annotation, a mirror).
    failed_digests: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """A workload container found running the image, before it is pinned as a target."""

    namespace: str
    name: str
    container: str
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "Deployment"
    image: str = ""  # as written in the pod template
    digest: str = ""  # the running digest when known (the reference's, or the pods' imageID)


@dataclass(frozen=True, kw_only=True, slots=True)
class FailedDigest:
    """A rebuild that failed its gate on a workload: remembered so it is never rolled out again."""

    digest: str
    key: str  # the patch's identity (core.compliance.patch_key); "" for a human's patch
    patch: str
    at: dt.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchImage:
    """Set one container's image, only if the workload is still at ``resource_version``."""

    target: Target
    image: str
    resource_version: str
    # Set together with the image, in the same write (the failed-digest mirror for people).
    annotations: Mapping[str, str] = field(default_factory=dict)
    # A rollback: the failed digest, recorded in the operator's memory before this write.
    failed: FailedDigest | None = None
    # False only for the documented rollback of a workload whose digest was never known.
    pinned: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class GitWrite:
    """rollout.mode GitWriteBack: commit ``image`` for ``target`` (or revert ``commit``).

    The reconciler finds the commit by the patch's trailer before it makes
    one, so asking again (a restart before the sha was recorded) pushes
    nothing new. A rollback (``revert``) names the failed digest, recorded in
    the operator's memory before the revert is pushed.
    """

    target: Target
    image: str
    previous: str
    revert: bool = False
    commit: str = ""  # the commit a revert undoes
    failed: FailedDigest | None = None
    # gitWriteBack.pullRequest: only open (or find) the request from the push
    # branch; the commit is recorded already.
    pull_request: bool = False
    # Only ask the forge what became of request ``pull_request_number`` (open,
    # merged, closed); nothing is written.
    poll_pull_request: bool = False
    pull_request_number: int = 0
    # A revert after a merged request: the commit the merge put on the branch
    # (reverted when no commit there carries the patch's trailer: a squash), and
    # the health gate's verdict, for the revert's message.
    merge_commit: str = ""
    why: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class GitResult:
    """What the reconciler's write-back (``GitWrite``) did, for the next plan to record."""

    target: Target
    revert: bool = False
    sha: str = ""  # the commit (found by its trailer, or made); "" with ``error``
    branch: str = ""
    reason: str = ""  # set when it failed: GitWriteBackFailed, NoImageDeclared, FluxOwned, ...
    message: str = ""
    transient: bool = False  # worth another try (the next pass asks again)
    # gitWriteBack.pullRequest, after the push: the request opened (or found
    # open), or why the forge did not open it (a GitForge* reason).
    pull_request_url: str = ""
    pull_request_number: int = 0
    pull_request_reason: str = ""
    pull_request_message: str = ""
    # GitWrite.poll_pull_request: what the forge said (open, merged, closed; a
    # failure is pull_request_reason), and once merged, by which commit and when.
    pull_request_state: str = ""
    merge_commit: str = ""
    merged_at: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeletePods:
    """A StatefulSet's forced rollback: delete these pods, each only if still as observed."""

    target: Target
    pods: tuple[kinds.StuckPod, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadEvent:
    target: Target
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    status: dict[str, Any]
    action: PatchImage | None = None
    events: tuple[WorkloadEvent, ...] = ()
    again: bool = False  # plan again at once (after writing status / acting)
    requeue_after: float | None = None  # look again later
    start_build: bool = False  # start (idempotently) the rebuild, then plan again
    discover: bool = False  # find the candidate targets, then plan again
    # Create this Job from the target CronJob's template (a trial run; a Job of
    # that name existing already is fine), then plan again.
    trial_job: str = ""
    # Delete these pods (recorded in the rollout entry first), then plan again.
    delete_pods: DeletePods | None = None
    # Promote this Argo Rollout paused at a manual step (core.kinds_rollout), then look later.
    promote: Target | None = None
    # rollout.mode GitWriteBack: commit (or revert) in Git, then plan again with the result.
    git: GitWrite | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """What the maintenance window allows now (from ``core.window``)."""

    can_start: bool = True
    next_start: dt.datetime | None = None


def target_digest(patch: ImagePatch) -> str:
    """A human's pinned digest wins; otherwise the verified rebuild's digest."""
    return patch.target_digest or patch.status.verified_digest


def describe(target: Target) -> str:
    return f"{target.namespace}/{target.name}/{target.container}"


def on_the_side(entry: RolloutEntry) -> bool:
    """A CronJob patched and awaiting its verdict: it holds its own container, not the rollout.

    A CronJob's gate waits for a run that may be hours away (its schedule),
    so the patch moves on to its other targets and waves meanwhile, and ends
    only once this one has its verdict too (DESIGN.md, "Blast radius is one
    team"). Its verdict is not evidence for a later wave.
    """
    return entry.target.kind == kinds.CRONJOB and entry.phase in (
        TargetPhase.GATING,
        TargetPhase.ROLLING_BACK,
    )


def next_in_line(entries: Sequence[RolloutEntry]) -> int | None:
    """The first target not done and not awaited on the side (the one in line), or None."""
    return next(
        (i for i, e in enumerate(entries) if not e.phase.done and not on_the_side(e)), None
    )


def stall_reason(failed: RolloutEntry, gate: Rollout) -> str:
    """Why a patch whose target failed needs a human (the Stalled condition's reason)."""
    if failed.reason in (reasons.EXTERNAL_CHANGE, reasons.ROLLBACK_FAILED):
        return failed.reason
    # Otherwise the gate failed and nothing rolled it back.
    return reasons.ROLLBACK_DISABLED if not gate.rollback else failed.reason


# How many targets an outcome summary names per reason before it counts the rest.
SUMMARY_NAMES = 5


def outcome_summary(entries: Sequence[RolloutEntry], *, lead: bool) -> str:
    """Which targets were not patched and healthy, and why, for the patch's final message.

    ``lead``: the message leads with a failure, so say how many did pass too.
    Empty when every target is healthy.
    """
    healthy = sum(1 for e in entries if e.phase == TargetPhase.HEALTHY)
    groups: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        if e.phase in (TargetPhase.HEALTHY, TargetPhase.FAILED, TargetPhase.ROLLED_BACK):
            continue
        groups.setdefault((str(e.phase), e.reason or str(e.phase)), []).append(describe(e.target))
    if not groups and not lead:
        return ""
    parts = [f"{healthy} of {len(entries)} targets patched and healthy"] if lead else []
    for (phase, reason), names in groups.items():
        shown = ", ".join(names[:SUMMARY_NAMES])
        more = len(names) - SUMMARY_NAMES
        extra = f" and {more} more" if more > 0 else ""
        parts.append(f"{phase.lower()} ({reason}): {shown}{extra}")
    return "; " + "; ".join(parts)


def container_of(deployment: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The pod template's container or init container called ``name``, or None (any kind)."""
    found = kinds.find_container(deployment, name)
    return found[1] if found else None


def is_pinned(image: str) -> bool:
    """Whether ``image`` is a valid reference with a digest."""
    try:
        return bool(parse_image(image).digest)
    except ValueError:
        return False


# --- approval -------------------------------------------------------------------


def approved_by(patch: ImagePatch) -> str | None:
    """Who approved the patch ('' when unnamed), or None when it is not approved."""
    if patch.approval and patch.approval.decision == ApprovalDecision.APPROVED:
        return patch.approval.by
    return None


def approval_wanted(patch: ImagePatch, policy: PolicySpec | None) -> bool:
    return bool(policy and policy.approval == ApprovalMode.MANUAL and approved_by(patch) is None)


def approval_hint(patch: ImagePatch) -> str:
    body = {"spec": {"approval": {"decision": str(ApprovalDecision.APPROVED), "by": "<you>"}}}
    return (
        f"approve with: kubectl patch imagepatch {patch.name} --type merge "
        f"-p '{json.dumps(body, separators=(',', ':'))}'"
    )


# --- the context ------------------------------------------------------------------


@dataclass(kw_only=True)
class Context:
    """One planner call: its inputs, and the status being built for this step."""

    patch: ImagePatch
    policy: PolicySpec | None
    now: dt.datetime
    digest: str  # the rollout's target digest; '' while a rebuild is needed
    phase: Phase
    entries: list[RolloutEntry]
    failed_digests: list[str]
    message: str = ""
    next_window: dt.datetime | None = None
    stalled: str = ""  # a reason when a human must act
    waiting: str = ""  # a reason for Ready/Reconciling while waiting (e.g. Conflict)
    events: list[WorkloadEvent] = field(default_factory=list)
    by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # rebuild/verification fields
    git_result: GitResult | None = None  # what this pass's write-back did (GitWrite)

    @classmethod
    def begin(cls, *, patch: ImagePatch, policy: PolicySpec | None, now: dt.datetime) -> Context:
        """The context for planning ``patch``, starting from its recorded status."""
        recorded = patch.status
        return cls(
            patch=patch,
            policy=policy,
            now=now,
            digest=target_digest(patch),
            phase=recorded.phase,
            entries=list(recorded.rollouts),
            failed_digests=list(recorded.failed_digests),
        )

    @property
    def gate(self) -> Rollout:
        """The policy's health gate (the default one once the policy is gone)."""
        return self.policy.rollout if self.policy else Rollout()

    @property
    def started(self) -> bool:
        """Whether any target left Pending: from then on the rollout runs to its end."""
        return any(e.phase != TargetPhase.PENDING for e in self.entries)

    def next_index(self) -> int | None:
        """The first target not done and not awaited on the side, or None."""
        return next_in_line(self.entries)

    def steppable(self) -> list[int]:
        """The targets a step may concern: the one in line, then the CronJobs awaited."""
        first = self.next_index()
        return ([] if first is None else [first]) + [
            i for i, e in enumerate(self.entries) if on_the_side(e)
        ]

    @property
    def on_failure(self) -> OnTargetFailure:
        return self.gate.on_target_failure

    def before_start(self, *, policy_poll: float) -> Step | None:
        """Before anything starts, the policy must exist, and approve when it wants to."""
        if self.policy is None:
            self.phase = Phase.PENDING
            self.message = f"ImagePatchPolicy {self.patch.policy!r} not found"
            self.stalled = reasons.POLICY_NOT_FOUND
            return self.finish(requeue_after=policy_poll)
        if approval_wanted(self.patch, self.policy):
            self.phase = Phase.AWAITING_APPROVAL
            self.message = approval_hint(self.patch)
            return self.finish(requeue_after=None)
        return None

    def finish(
        self,
        *,
        again: bool = False,
        requeue_after: float | None = None,
        action: PatchImage | None = None,
        start_build: bool = False,
        discover: bool = False,
        trial_job: str = "",
        delete_pods: DeletePods | None = None,
        promote: Target | None = None,
        git: GitWrite | None = None,
    ) -> Step:
        """The step: the status to record (only if it changed), the action, what next."""
        recorded = self.patch.status.to_dict()
        status = {**self.status(), **self.extra}
        changed = any(recorded.get(k) != v for k, v in status.items())
        return Step(
            status=status if changed else {},
            action=action,
            events=tuple(self.events),
            again=again or (changed and action is None and not self.phase.terminal),
            requeue_after=requeue_after,
            start_build=start_build,
            discover=discover,
            trial_job=trial_job,
            delete_pods=delete_pods,
            promote=promote,
            git=git,
        )

    def skip(self, index: int, *, reason: str, message: str) -> None:
        """This target needs nothing (more): record why, and move on."""
        self.entries[index] = replace(
            self.entries[index],
            phase=TargetPhase.SKIPPED,
            reason=reason,
            message=message,
            finished_at=format_time(self.now),
        )

    def stop_after(self, index: int, *, reason: str, why: str, gate_failed: bool) -> int:
        """Skip the targets not started yet that the failure of ``index`` stops; how many.

        ``StopAll``: every one. ``Continue`` (blast radius is one team): those
        of the failed target's namespace and, when the new image failed a
        health gate (``gate_failed``), those of every later wave: waves are the
        admin's staging order. An outside change says nothing about the image,
        so it stops only its namespace.
        """
        failed = self.entries[index].target
        stop_all = self.on_failure == OnTargetFailure.STOP_ALL
        stopped = 0
        for i, e in enumerate(self.entries):
            if e.phase != TargetPhase.PENDING:
                continue
            t = e.target
            if stop_all or t.namespace == failed.namespace:
                cause, text = reason, f"stopped: {describe(failed)} failed ({why})"
            elif gate_failed and t.wave > failed.wave:
                cause = reasons.EARLIER_WAVE_FAILED
                text = (
                    f"stopped: the new image failed its health gate on {describe(failed)}"
                    f" in wave {failed.wave} ({why}); later waves do not start"
                )
            else:
                continue
            self.entries[i] = replace(
                e, phase=TargetPhase.SKIPPED, reason=cause, message=text,
                finished_at=format_time(self.now),
            )  # fmt: skip
            stopped += 1
        return stopped

    def go_on(self) -> Step:
        """A target is done: on to the next step, or the end when no target is left."""
        return self.finish(again=True) if self.steppable() else self.conclude()

    def end_or_go_on(self) -> Step:
        """After a target failed: end the patch if nothing is left, else go on with the rest.

        ``phase``, ``stalled`` and ``message`` set by the caller are what the
        patch ends with when nothing is left; otherwise other targets (another
        namespace's, or a CronJob awaited on the side) still get their verdict.
        """
        if not self.steppable():
            return self.conclude()
        self.phase = Phase.ROLLING_OUT
        self.stalled = ""
        self.message += "; other targets go on"
        return self.finish(again=True)

    def warn(self, target: Target, *, reason: str, message: str) -> None:
        """A Warning event on the target's workload."""
        self.events.append(
            WorkloadEvent(target=target, type="Warning", reason=reason, message=message)
        )

    def conclude(self) -> Step:
        """Every target is done: the patch ends Failed, RolledBack or Succeeded."""
        entries = self.entries
        failed = next((e for e in entries if e.phase == TargetPhase.FAILED), None)
        rolled = next((e for e in entries if e.phase == TargetPhase.ROLLED_BACK), None)
        if failed is not None:
            self.phase = Phase.FAILED
            self.stalled = self.stalled or stall_reason(failed, self.gate)
            self.message = self.message or f"{describe(failed.target)}: {failed.message}"
        elif rolled is not None:
            self.phase = Phase.ROLLED_BACK
            self.message = (
                f"{describe(rolled.target)} rolled back to {rolled.restore_image}: {rolled.message}"
            )
        else:
            self.phase = Phase.SUCCEEDED
            healthy = sum(1 for e in entries if e.phase == TargetPhase.HEALTHY)
            self.message = f"{healthy} of {len(entries)} targets patched and healthy"
        self.message += outcome_summary(entries, lead=self.phase != Phase.SUCCEEDED)
        return self.finish()

    # --- the status document ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        old = self.patch.status
        history = [dict(h) for h in old.history]
        if not history or history[-1].get("phase") != str(self.phase):
            entry = {"phase": str(self.phase), "at": format_time(self.now)}
            if self.message:
                entry["message"] = self.message
            if self.by:
                entry["by"] = self.by
            history.append(entry)
        history = history[-HISTORY_LIMIT:]
        done = sum(1 for e in self.entries if e.phase in (TargetPhase.HEALTHY, TargetPhase.SKIPPED))
        gen = self.patch.generation
        desired = [self._ready(gen)]
        drop = [reasons.STALLED, reasons.RECONCILING]
        if self.stalled:
            desired.append(
                Condition(
                    type=reasons.STALLED,
                    status="True",
                    reason=self.stalled,
                    message=self.message,
                    observed_generation=gen,
                )
            )
            drop.remove(reasons.STALLED)
        if not self.phase.terminal and self.phase != Phase.PENDING:
            desired.append(
                Condition(
                    type=reasons.RECONCILING,
                    status="True",
                    reason=self.waiting or str(self.phase),
                    message=self.message,
                    observed_generation=gen,
                )
            )
            drop.remove(reasons.RECONCILING)
        status: dict[str, Any] = {
            "phase": str(self.phase),
            "observedGeneration": gen,
            "targetDigest": self.digest,
            "progress": f"{done}/{len(self.entries)}",
            "rollouts": [e.as_dict() for e in self.entries],
            "failedDigests": self.failed_digests[-100:],
            "history": history,
            "conditions": merge(old.conditions, desired, now=self.now, drop=drop),
        }
        # None clears the field in the merge patch once the wait is over.
        status["nextWindowStart"] = format_time(self.next_window) if self.next_window else None
        return status

    def _ready(self, gen: int) -> Condition:
        if self.phase == Phase.SUCCEEDED:
            return Condition(
                type=reasons.READY,
                status="True",
                reason="Succeeded",
                message=self.message or "all targets patched and healthy",
                observed_generation=gen,
            )
        if self.phase == Phase.CLOSED:
            return Condition(
                type=reasons.READY,
                status="True",
                reason=reasons.NO_LONGER_NEEDED,
                message=self.message,
                observed_generation=gen,
            )
        return Condition(
            type=reasons.READY,
            status="False",
            reason=self.waiting or str(self.phase),
            message=self.message,
            observed_generation=gen,
        )
