"""The rollout planner: from an ImagePatch's record and what is observed, the next step.

This is a pure function of (ImagePatch spec + recorded status, policy,
observed workload, window, clock). It returns one ``Step``: the status to
record, and at most one side effect (an image patch) to perform **after**
that status is written. The reconcile loop writes, acts, observes again and
asks for the next step. Because intent is always recorded first, a restart at
any point resumes correctly:

* killed after recording ``Patching`` but before patching: the next pass sees
  the old image and patches exactly once;
* killed after patching but before recording ``Gating``: the next pass sees
  the target image already live and records ``Gating`` without patching again;
* killed during the gate: the deadline runs from the recorded ``startedAt``;
* killed mid-rollback: ``RollingBack`` is recorded, so it finishes the
  rollback and never rolls forward again.

Targets are exact: a container is a target only when it runs the patch's
image at its tag, and at its current digest when that is known (detection
writes them into ``spec.targets``; a human's patch without targets is matched
by the same rule). Only digest-pinned references are written: forward
``repo:tag@<new digest>``, back ``repo:tag@<the digest that ran>``. A
container that another open patch is changing is not started (``Conflict``,
naming the holder). A digest that failed on a workload is remembered in the
operator's memory (``adapters.memory``; the workload's
``imagepatch.dev/failed-digests`` is only its mirror), so history pruning
cannot make the same bad rebuild be rolled out there again.

Targets go one at a time, wave by wave; a wave's ``soak`` must pass after its
last target turned healthy before the next wave starts. New targets start
only while the maintenance window allows it (before its cutoff); a target
already in its gate finishes the gate. A CronJob's gate, which waits for a
scheduled run, is awaited on the side: the patch moves on meanwhile and ends
only once every target has its verdict. A failure rolls that target back,
records the digest as failed, and stops what ``rollout.onTargetFailure``
says: with ``Continue`` (the default) the rest of its namespace, plus every
later wave when the new image failed a health gate; with ``StopAll``,
every target not started yet.

The package, by phase, around one ``Context`` (the inputs of a planner call
and the status being built):

* ``context``: the context, the step and observation types, timing constants;
* ``plan``: the entry point, a dispatcher to the phase modules;
* ``rebuild``: no target digest yet: approval, build, verification;
* ``targets``: exact targets, pinning, waves, window, conflicts, the first write;
* ``gate``: the health gate's seam (``assess``) and the ``Gating`` phase;
* ``rollback``: ``RollingBack``, the failed-digest memory on the workload, and
  a StatefulSet's forced rollback (its broken pods of the bad revision
  deleted once the template is restored);
* ``drift``: a target gone, or changed by someone else.

This module re-exports the names the reconcile loop and the tests use.
"""

from imagepatch.core.rollout.context import (
    CONFLICT_POLL,
    FAILED_ANNOTATION,
    FAILED_MEMORY,
    GATE_POLL,
    HISTORY_LIMIT,
    POLICY_POLL,
    Candidate,
    Context,
    FailedDigest,
    GitResult,
    GitWrite,
    PatchImage,
    Step,
    Window,
    Workload,
    WorkloadEvent,
    is_pinned,
    next_in_line,
    on_the_side,
    target_digest,
)
from imagepatch.core.rollout.plan import plan
from imagepatch.core.rollout.targets import (
    active_target,
    pin_targets,
    pinned_image,
    running_digest,
    runs_patch_image,
    wave_for,
)

__all__ = [
    "CONFLICT_POLL",
    "FAILED_ANNOTATION",
    "FAILED_MEMORY",
    "GATE_POLL",
    "HISTORY_LIMIT",
    "POLICY_POLL",
    "Candidate",
    "Context",
    "FailedDigest",
    "GitResult",
    "GitWrite",
    "PatchImage",
    "Step",
    "Window",
    "Workload",
    "WorkloadEvent",
    "active_target",
    "is_pinned",
    "next_in_line",
    "on_the_side",
    "pin_targets",
    "pinned_image",
    "plan",
    "running_digest",
    "runs_patch_image",
    "target_digest",
    "wave_for",
]
