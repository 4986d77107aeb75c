"""DaemonSet: its RollingUpdate, node by node within ``maxUnavailable``.

``updatedNumberScheduled`` and ``numberAvailable`` equal
``desiredNumberScheduled`` once the controller observed the generation. The
controller itself keeps no more than ``maxUnavailable`` nodes unavailable, so
a broken image stalls the rollout at that budget: the gate says so in its
message and fails on the first broken new pod or at the deadline, whichever
comes first. No node to run on (``desiredNumberScheduled`` 0): unverified
(``NoPodsScheduled``). ``OnDelete``: not patched (``core.kinds``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from imagepatch.core.health import HealthReason, HealthState, Progress
from imagepatch.core.kinds.shared import (
    Kind,
    as_int,
    display_name,
    mapping,
    on_delete_refusal,
    progress_gate,
)

DAEMONSET = "DaemonSet"


def daemonset_progress(daemonset: Mapping[str, Any]) -> Progress:
    """A DaemonSet's RollingUpdate: every scheduled node updated and available."""
    meta = mapping(daemonset.get("metadata"))
    spec = mapping(daemonset.get("spec"))
    status = mapping(daemonset.get("status"))
    observed = as_int(status.get("observedGeneration"), 0) >= as_int(meta.get("generation"), 0)
    want = as_int(status.get("desiredNumberScheduled"), 0)
    if observed and want == 0:
        return Progress(want=0, complete=False, counts="", stop=(
            HealthState.SCALED_TO_ZERO, HealthReason.NO_PODS_SCHEDULED,
            f"DaemonSet {display_name(daemonset)} runs on no node (desiredNumberScheduled 0):"
            " the new image is set but no pod runs it, so it is not verified"))
    updated = as_int(status.get("updatedNumberScheduled"), 0)
    available = as_int(status.get("numberAvailable"), 0)
    unavailable = as_int(status.get("numberUnavailable"), 0)
    rolling = mapping(mapping(spec.get("updateStrategy")).get("rollingUpdate"))
    budget = rolling.get("maxUnavailable", 1)
    counts = f"{updated}/{want} nodes updated, {available}/{want} available"
    if unavailable:
        counts += f", {unavailable} unavailable (maxUnavailable {budget})"
        if _budget_used(unavailable, budget, want):
            counts += ": the controller waits for these before updating more nodes"
    if not observed:
        counts += ", the DaemonSet controller has not observed the latest generation yet"
    complete = observed and updated == want and available == want
    return Progress(want=want, complete=complete, counts=counts,
                    done_text=f"{want}/{want} nodes updated and available")


def _budget_used(unavailable: int, budget: Any, want: int) -> bool:
    if isinstance(budget, int) and not isinstance(budget, bool):
        return unavailable >= budget
    if isinstance(budget, str) and budget.endswith("%") and budget[:-1].isdigit():
        # Kubernetes rounds a percentage of maxUnavailable up (at least 1).
        allowed = max(1, -(-want * int(budget[:-1]) // 100))
        return unavailable >= allowed
    return False


def _progress(daemonset: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Progress:
    return daemonset_progress(daemonset)


def _not_patchable(daemonset: Mapping[str, Any]) -> tuple[str, str] | None:
    return on_delete_refusal(DAEMONSET, daemonset)


KIND = Kind(name=DAEMONSET, api_version="apps/v1", gate=progress_gate(_progress),
            not_patchable=_not_patchable)
