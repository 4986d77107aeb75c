"""The reconcile paths: observe → plan → act → record.

Every kopf handler, timer and queue event calls into here. Each call
recomputes the outcome from the objects as they are now and from what was
recorded in their status, never from a diff alone, so a missed or merged
event does no harm and a restarted operator resumes where it stopped.

* ``policies``: an ImagePatchPolicy's own status;
* ``detection``: which running images need a patch, and why;
* ``rollouts``: an ImagePatch's digest-pinned rollout, gate and rollback;
* ``outcomes``: every error of a reconcile as a condition and a requeue time;
* ``loops``: one loop per unfinished ImagePatch, sleeping until due or woken.
"""

from imagepatch.reconcile.outcomes import (
    reconcile_imagepatch_guarded,
    reconcile_policy_guarded,
    refresh_policy,
    resync_policies,
)
from imagepatch.reconcile.policies import reconcile_policy
from imagepatch.reconcile.rollouts import reconcile_imagepatch

__all__ = [
    "reconcile_imagepatch",
    "reconcile_imagepatch_guarded",
    "reconcile_policy",
    "reconcile_policy_guarded",
    "refresh_policy",
    "resync_policies",
]
