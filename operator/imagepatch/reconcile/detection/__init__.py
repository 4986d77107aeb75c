"""Detection: which running images need a patch, and why (a package: one module per stage).

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

1. **observe** (``facts``): the running digest of each container (pinned in
   the spec, else from pod status, else by resolving the tag, and it says
   which), the base it was built on (OCI annotations, config labels, then the
   ``imagepatch.dev/base-image`` annotation), the base tag's current digest
   (one HEAD per distinct base per interval, however many workloads share it),
   and the scan findings when the policy names a source;
2. **assess** (``core.detection.assess``): ``core.compliance`` gives each
   container a state;
3. **plan** (``core.detection.plan``): the ImagePatches that are needed
   (deterministic names, so never twice), each with ``spec.targets`` set to
   exactly the containers judged to need it (same repository, tag and digest)
   and ``spec.rebuild`` from what exactly those targets asked for (a workload
   whose rebuild is refused is never a target; targets asking for different
   rebuilds get different patches, since the rebuilt image goes only to the
   workloads that asked for that rebuild); the open ones that no longer are
   needed; none for a container another open patch is changing, nor for a
   rebuild that already failed on the workload;
4. **act** (``act``): create those patches, ask the planner to close the
   others (it is the one writer of ImagePatch status), add targets; each write
   returns an outcome;
5. **record** (``core.detection.report`` computes, ``record`` writes): each
   workload's state from the observations and the outcomes, mirrored on the
   workload in the ``imagepatch.dev/state`` annotation, an Event when it
   changes, and the states counted in the policy status.

``detector.Detector.evaluate_policy`` reads these five steps in order. The
modules: ``detector`` (the watch cache, the loop, which policies are due, and
one policy's pass), ``facts`` (observe), ``act`` (act), ``record`` (the
record stage's writes); the pure decisions are ``core.detection``'s.

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

from imagepatch.core.detection.report import WorkloadResult
from imagepatch.reconcile.detection.detector import (
    DEFAULT_PASS_BUDGET,
    REFUSED_WRITE_RETRY,
    SLOW_POLICY_AFTER,
    Detector,
    FindingsExporter,
)

__all__ = [
    "DEFAULT_PASS_BUDGET",
    "REFUSED_WRITE_RETRY",
    "SLOW_POLICY_AFTER",
    "Detector",
    "FindingsExporter",
    "WorkloadResult",
]
