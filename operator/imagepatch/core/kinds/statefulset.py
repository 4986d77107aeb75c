"""StatefulSet: its RollingUpdate gated on the ordinals it updates, and the forced rollback.

``RollingUpdate``: the gate waits for the ordinals the controller updates,
those at or above ``rollingUpdate.partition``, and never fights the
partition: ordinals below it keep the current revision (that is what a
partition is for: a staged or canary rollout the owner advances by hand).
Complete means the controller observed the generation, ``updatedReplicas``
reached ``replicas - partition``, every updated ordinal is Ready, no ordinal
at or above the partition runs an old revision, and, without a partition,
``currentRevision == updateRevision``. A partition at or above ``replicas``
updates nothing: the image is set but unverified (``Partitioned``), as with a
Deployment scaled to zero. ``OnDelete``: not patched (``core.kinds``).

A rollback of an ``OrderedReady`` StatefulSet (the default
``podManagementPolicy``) needs more than the reverted template: the
controller waits for every pod to be Running and Ready before it replaces
any, so a pod of the bad revision that never gets Ready blocks it for ever.
Kubernetes documents the cure as the "forced rollback": delete the pods of
the bad revision once the template is reverted (:func:`bad_revision`,
:func:`forced_rollback`; ``Parallel`` ones too, see there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.core.health import HealthReason, HealthState, Progress
from imagepatch.core.kinds.shared import (
    Kind,
    as_int,
    as_str,
    display_name,
    find_container,
    generation_observed,
    mapping,
    on_delete_refusal,
    ordinal,
    owned_by,
    pod_image,
    pod_ready,
    progress_gate,
    revision,
)

STATEFULSET = "StatefulSet"


def statefulset_progress(
    statefulset: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> Progress:
    """A StatefulSet's RollingUpdate, gated on the ordinals at or above the partition."""
    meta = mapping(statefulset.get("metadata"))
    spec = mapping(statefulset.get("spec"))
    status = mapping(statefulset.get("status"))
    replicas = as_int(spec.get("replicas"), 1)
    rolling = mapping(mapping(spec.get("updateStrategy")).get("rollingUpdate"))
    partition = min(max(as_int(rolling.get("partition"), 0), 0), replicas)
    want = replicas - partition
    name = display_name(statefulset)
    if replicas == 0:
        return Progress(want=0, complete=False, counts="", stop=(
            HealthState.SCALED_TO_ZERO, HealthReason.SCALED_TO_ZERO,
            f"StatefulSet {name} is scaled to 0 replicas: the new image is set but no pod"
            " runs it, so it is not verified"))
    if want == 0:
        return Progress(want=0, complete=False, counts="", stop=(
            HealthState.SCALED_TO_ZERO, HealthReason.PARTITIONED,
            f"StatefulSet {name} has rollingUpdate.partition {partition} with {replicas}"
            " replicas: no ordinal is updated, so the new image is set but not verified;"
            " lower the partition to roll it out"))
    observed = as_int(status.get("observedGeneration"), 0) >= as_int(meta.get("generation"), 0)
    update_revision = as_str(status.get("updateRevision"))
    current_revision = as_str(status.get("currentRevision"))
    updated = as_int(status.get("updatedReplicas"), 0)
    gated = [
        p for p in pods
        if not mapping(p.get("metadata")).get("deletionTimestamp")
        and (ordinal(p) or 0) >= partition
    ]
    on_update = [p for p in gated if revision(p) == update_revision]
    ready = sum(1 for p in on_update if pod_ready(p))
    old = len(gated) - len(on_update)
    counts = f"{updated}/{want} updated, {ready}/{want} ready"
    if partition:
        counts += (
            f" (ordinals {partition}..{replicas - 1}; partition {partition} keeps"
            f" 0..{partition - 1} on the current revision)"
        )
    if observed and old > 0:
        counts += f", {old} old pod{'' if old == 1 else 's'} left"
    if not observed:
        counts += ", the StatefulSet controller has not observed the latest generation yet"
    complete = (
        observed
        and bool(update_revision)
        and updated >= want
        and ready >= want
        and old == 0
        and (partition > 0 or current_revision == update_revision)
    )
    what = f"{want}/{want} ordinal{'' if want == 1 else 's'}"
    if partition:
        what += f" at or above partition {partition}"
    return Progress(want=want, complete=complete, counts=counts,
                    done_text=f"{what} updated and ready")


# At most this many pods are deleted, and named in the rollout entry, by one
# target's forced rollback (a StatefulSet's pod names are fixed, so one name
# is deleted at most once in practice). Broken pods beyond it are left for a
# human; the rollback gate then fails at its deadline.
FORCED_ROLLBACK_LIMIT = 100


@dataclass(frozen=True, slots=True)
class StuckPod:
    """A pod to delete, only while it is still the very pod observed (uid, resourceVersion)."""

    name: str
    uid: str
    resource_version: str


def bad_revision(
    statefulset: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    container: str,
    image: str,
) -> str:
    """The revision of ``statefulset`` whose ``container`` runs ``image`` (the bad one), or ''.

    While the bad template is live and the controller has observed it, that is
    the controller's own record, ``status.updateRevision`` (a status tenants
    do not write). Otherwise (the template is restored already, or the
    controller has not caught up) it is the ``controller-revision-hash`` of
    the StatefulSet's own pods (ownerReferences) whose ``container`` runs
    ``image``, when they all carry the same one; '' when no pod does.
    """
    found = find_container(statefulset, container)
    update_revision = as_str(mapping(statefulset.get("status")).get("updateRevision"))
    if found is not None and found[1].get("image") == image and generation_observed(statefulset) \
            and update_revision:
        return update_revision
    uid = mapping(statefulset.get("metadata")).get("uid")
    revisions = {
        revision(p) or ""
        for p in pods
        if owned_by(p, uid) and pod_image(p, container) == image
    }
    revisions.discard("")
    return revisions.pop() if len(revisions) == 1 else ""


def forced_rollback(
    statefulset: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    bad_revision: str,
) -> tuple[StuckPod, ...]:
    """The pods of ``bad_revision`` that the reverted StatefulSet's controller never replaces.

    Kubernetes' "forced rollback" (concepts/workloads/controllers/statefulset):
    with ``podManagementPolicy: OrderedReady`` (the default) the controller
    stops at the first pod that is not Running and Ready, before it replaces
    any pod of an old revision, so a broken pod of the bad revision stays for
    ever after the template is reverted. These are the pods to delete; the
    controller then recreates them from the restored template. Only pods that
    block:

    * of the bad revision (``controller-revision-hash``), owned by this
      StatefulSet (ownerReferences uid), at or above the partition (the
      ordinals its rollout changed), not already terminating;
    * not Running and Ready. A Ready pod of the bad revision does not block:
      the controller replaces it itself, one at a time in ordinal order, once
      the blocking ones are back, which keeps the availability a rolling
      update promises; a forced delete of it would only cost a serving pod.
      A ``Failed`` or ``Succeeded`` pod the controller deletes itself.

    ``Parallel`` StatefulSets too. Their controller's default update loop
    deletes a pod of an old revision before it waits for readiness, so the
    pod is usually terminating already when this looks, and nothing is left
    to do. But behind the ``MaxUnavailableStatefulSet`` feature gate (alpha
    in 1.34, beta from 1.35) the loop first counts unavailable pods against
    ``maxUnavailable`` (1 by default) and stops when they reach it (read in
    the 1.34 source), so the broken pod blocks it as well. Deleting a pod
    that serves nothing costs nothing, and the preconditions make a race
    with the controller harmless.

    Empty until the controller has observed the restored template
    (``observedGeneration``, and an ``updateRevision`` that is not the bad
    one; a pod deleted before that would be recreated on the bad revision);
    empty for ``OnDelete`` (never patched). Sorted by ordinal.
    """
    spec = mapping(statefulset.get("spec"))
    status = mapping(statefulset.get("status"))
    strategy = mapping(spec.get("updateStrategy"))
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return ()
    update_revision = as_str(status.get("updateRevision"))
    if not bad_revision or not generation_observed(statefulset) or not update_revision \
            or update_revision == bad_revision:
        return ()
    uid = mapping(statefulset.get("metadata")).get("uid")
    replicas = as_int(spec.get("replicas"), 1)
    partition = min(max(as_int(mapping(strategy.get("rollingUpdate")).get("partition"), 0), 0),
                    replicas)
    stuck = [
        p for p in pods
        if owned_by(p, uid)
        and revision(p) == bad_revision
        and not mapping(p.get("metadata")).get("deletionTimestamp")
        and (ordinal(p) or 0) >= partition
        and mapping(p.get("status")).get("phase") not in ("Failed", "Succeeded")
        and not (mapping(p.get("status")).get("phase") == "Running" and pod_ready(p))
    ]
    stuck.sort(key=lambda p: (ordinal(p) or 0, as_str(mapping(p.get("metadata")).get("name"))))
    metas = [mapping(p.get("metadata")) for p in stuck]
    # Every pod the API serves has a name and a uid; without them no delete
    # could carry its precondition.
    return tuple(
        StuckPod(name=meta["name"], uid=meta["uid"],
                 resource_version=as_str(meta.get("resourceVersion")) or "")
        for meta in metas
        if as_str(meta.get("name")) and as_str(meta.get("uid"))
    )


def _not_patchable(statefulset: Mapping[str, Any]) -> tuple[str, str] | None:
    return on_delete_refusal(STATEFULSET, statefulset)


KIND = Kind(
    name=STATEFULSET,
    api_version="apps/v1",
    gate=progress_gate(statefulset_progress),
    not_patchable=_not_patchable,
)
