"""What every workload kind shares: the container lists of its pod template, and small readers.

Pure: plain dicts as the API serves them. A reader returns a safe default
for a field that is missing or of the wrong type (a status a controller has
not written yet, a field a tenant set oddly), so the per-kind modules never
fail on a body the API server accepted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imagepatch.core import health, reasons
from imagepatch.core.health import HealthVerdict, Progress
from imagepatch.model.policy import Rollout

# The container lists of a pod template that imagepatch changes, in the order
# it looks (ephemeralContainers never: see ``core.kinds``).
CONTAINER_LISTS = ("containers", "initContainers")

_ORDINAL = re.compile(r"-(\d+)$")


class Gate(Protocol):
    """A kind's own health gate, for a kind whose controller reports no rollout to
    judge pods against (a CronJob: its Jobs are the verdict)."""

    def __call__(
        self,
        *,
        workload: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        jobs: Sequence[Mapping[str, Any]],
        target_images: Mapping[str, str],
        gate: Rollout,
        started_at: dt.datetime,
        healthy_since: dt.datetime | None,
        now: dt.datetime,
        rollback: bool,
    ) -> HealthVerdict: ...


def progress_gate(
    progress: Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], Progress],
) -> Gate:
    """The gate of a kind whose controller reports its rollout (``progress``): judged by
    ``health.assess_progress`` like every other such kind."""

    def gate_of(
        *,
        workload: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        jobs: Sequence[Mapping[str, Any]],
        target_images: Mapping[str, str],
        gate: Rollout,
        started_at: dt.datetime,
        healthy_since: dt.datetime | None,
        now: dt.datetime,
        rollback: bool,
    ) -> HealthVerdict:
        return health.assess_progress(
            progress=progress(workload, pods),
            pods=pods,
            target_images=target_images,
            gate=gate,
            started_at=started_at,
            healthy_since=healthy_since,
            baseline_restarts=None,
            now=now,
        )

    return gate_of


def always_patchable(workload: Mapping[str, Any]) -> tuple[str, str] | None:
    """A kind whose template change always reaches its pods."""
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Kind:
    """One workload kind: its entry in the registry (``core.kinds.REGISTRY``).

    ``gate`` is its health gate: for most kinds :func:`progress_gate` of what
    its controller reports of a rollout, so the same pod rules, deadlines and
    soak apply to every kind; a CronJob has a gate of its own.
    """

    name: str
    api_version: str
    gate: Gate
    # (reason, message) when patching its template would change no pod, else None.
    not_patchable: Callable[[Mapping[str, Any]], tuple[str, str] | None] = always_patchable




def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template of any kind (``spec.template`` or the CronJob's job template's)."""
    return health.workload_template(workload)


def containers(workload: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every (list, container) of the template: ``containers``, then ``initContainers``."""
    spec = mapping(pod_template(workload).get("spec"))
    return [
        (key, c)
        for key in CONTAINER_LISTS
        for c in spec.get(key) or ()
        if isinstance(c, Mapping) and isinstance(c.get("name"), str)
    ]


def find_container(
    workload: Mapping[str, Any] | None, name: str
) -> tuple[str, Mapping[str, Any]] | None:
    """The list (``containers`` or ``initContainers``) holding ``name``, and the container."""
    return next(((k, c) for k, c in containers(workload or {}) if c["name"] == name), None)


def is_native_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container that keeps running beside the app (``restartPolicy: Always``)."""
    return container.get("restartPolicy") == "Always"


def on_delete_refusal(kind: str, workload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a StatefulSet or DaemonSet updates its pods only on delete."""
    strategy = mapping(mapping(workload.get("spec")).get("updateStrategy"))
    if strategy.get("type") != "OnDelete":
        return None
    return (
        reasons.ON_DELETE_STRATEGY,
        f"{kind} {display_name(workload)} uses updateStrategy OnDelete: its pods change only when"
        " someone deletes them, so imagepatch does not patch it; set"
        " spec.updateStrategy.type to RollingUpdate to have it patched",
    )


def generation_observed(workload: Mapping[str, Any]) -> bool:
    """Whether the workload's controller has observed its latest generation."""
    status = mapping(workload.get("status"))
    generation = as_int(mapping(workload.get("metadata")).get("generation"), 0)
    return as_int(status.get("observedGeneration"), 0) >= generation


def pod_image(pod: Mapping[str, Any], container: str) -> str | None:
    """The image ``container`` of ``pod`` runs (its spec; init containers too)."""
    spec = mapping(pod.get("spec"))
    for key in CONTAINER_LISTS:
        for c in spec.get(key) or ():
            if mapping(c).get("name") == container:
                return as_str(c.get("image"))
    return None


def owned_by(obj: Mapping[str, Any], uid: Any) -> bool:
    refs = mapping(obj.get("metadata")).get("ownerReferences") or ()
    return bool(uid) and any(mapping(r).get("uid") == uid for r in refs)


def ordinal(pod: Mapping[str, Any]) -> int | None:
    meta = mapping(pod.get("metadata"))
    label = mapping(meta.get("labels")).get("apps.kubernetes.io/pod-index")
    if isinstance(label, str) and label.isdigit():
        return int(label)
    match = _ORDINAL.search(as_str(meta.get("name")) or "")
    return int(match.group(1)) if match else None


def revision(pod: Mapping[str, Any]) -> str | None:
    return as_str(mapping(mapping(pod.get("metadata")).get("labels")).get(
        "controller-revision-hash"))


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        mapping(c).get("type") == "Ready" and c.get("status") == "True"
        for c in mapping(pod.get("status")).get("conditions") or ()
    )


def display_name(obj: Mapping[str, Any]) -> str:
    meta = mapping(obj.get("metadata"))
    name = as_str(meta.get("name")) or "<unnamed>"
    namespace = as_str(meta.get("namespace"))
    return f"{namespace}/{name}" if namespace else name


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
