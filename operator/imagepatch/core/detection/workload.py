"""What detection reads of a workload body, and whether its requests can be used.

Pure. A workload's annotations are written by its owner: they are requests,
bounded and validated here before anything else reads them, and the state
annotation is a mirror for people, never read back for a decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imagepatch.core import gitops, kinds, rebuild, workload_ref
from imagepatch.core.compliance import ContainerFacts
from imagepatch.core.images import parse_image
from imagepatch.core.reasons import INVALID_ANNOTATION, WORKLOAD_REF_UNRESOLVED
from imagepatch.model.names import (
    BASE_ANNOTATION,
    HOLD_ANNOTATION,
    POLICY_ANNOTATION,
    PREFIX,
    REBUILD_ANNOTATION,
    STATE_ANNOTATION,
)

# Longest value read from a workload's annotations. A reference is at most
# 255 (name) + 128 (tag) + 135 (sha512 digest) characters, a rebuild a kind
# and a 253-character name; anything longer is refused with an Event, never
# parsed or copied into an ImagePatch.
MAX_ANNOTATION_LENGTH = 1024

# The state entry of a Rollout whose spec.workloadRef cannot be followed.
WORKLOAD_REF_ENTRY: Mapping[str, Any] = {"name": "workloadRef", "image": ""}

_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation")


def clip(value: Any, limit: int = 120) -> str:
    """A bounded rendering of a value someone else wrote, for a message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_of(body: Mapping[str, Any]) -> str:
    """The workload's kind (watch events carry it; a body without one is a Deployment's)."""
    kind = body.get("kind")
    return kind if kind in kinds.KINDS else kinds.DEPLOYMENT


def identity(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name): who the workload is; never a part of it alone."""
    meta = body.get("metadata") or {}
    return (kind_of(body), meta.get("namespace", ""), meta.get("name", ""))


def containers_of(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every container detection judges: ``containers`` and ``initContainers``."""
    return [c for _, c in kinds.containers(body)]


def image_name(image: str) -> str:
    """The image's name (host/repository), or the text itself when it does not parse."""
    try:
        return parse_image(image).name
    except ValueError:
        return image


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
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
    kept = gitops.keep_claims(meta, kept)  # Flux's and Argo CD's labels (core.gitops)
    lists: dict[str, list[dict[str, Any]]] = {}
    for key, c in kinds.containers(body):
        lists.setdefault(key, []).append({"name": c.get("name"), "image": c.get("image")})
    slim_spec: dict[str, Any] = {"selector": spec.get("selector") or {},
                                 "template": {"spec": lists}}
    if isinstance(spec.get("workloadRef"), Mapping):  # a Rollout's: core.workload_ref
        slim_spec["workloadRef"] = dict(spec["workloadRef"])
    return {"kind": kind_of(body), "metadata": kept, "spec": slim_spec}


def inputs(body: Mapping[str, Any]) -> str:
    """What detection reads from a workload: its images and our annotations on it
    (a hold set or released is looked at in the next pass, not at the next interval)."""
    annotations = body["metadata"].get("annotations") or {}
    return json.dumps(
        [
            [(c.get("name"), c.get("image")) for c in containers_of(body)],
            [annotations.get(k) for k in (POLICY_ANNOTATION, BASE_ANNOTATION, REBUILD_ANNOTATION,
                                          HOLD_ANNOTATION)],
        ]
    )


def requested_rebuild(body: Mapping[str, Any]) -> str:
    """The workload's imagepatch.dev/rebuild annotation, normalised ("" when it has none)."""
    raw = (body["metadata"].get("annotations") or {}).get(REBUILD_ANNOTATION) or ""
    return rebuild.normalise_rebuild_request(raw) if isinstance(raw, str) else ""


def base_override(body: Mapping[str, Any]) -> str:
    """The ``imagepatch.dev/base-image`` annotation, stripped ("" when absent)."""
    value = (body["metadata"].get("annotations") or {}).get(BASE_ANNOTATION) or ""
    return value.strip() if isinstance(value, str) else ""


def annotation_problem(body: Mapping[str, Any]) -> str:
    """Why the workload's imagepatch.dev annotations cannot be used, or ""."""
    annotations = body["metadata"].get("annotations") or {}
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
            return f"annotation {BASE_ANNOTATION}: {clip(str(exc), 300)}"
    return ""


def unusable(body: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, why) when the workload cannot be judged as it stands, else ("", "")."""
    if why := annotation_problem(body):
        return INVALID_ANNOTATION, why
    if why := workload_ref.problem(body):
        return WORKLOAD_REF_UNRESOLVED, why
    return "", ""


def judged_containers(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The containers detection reports on. A Rollout whose workloadRef cannot be
    followed has none to read: one entry named ``workloadRef`` (never a container's
    name: those are lowercase DNS labels) carries its Unknown state."""
    found = containers_of(body)
    return found if found or not workload_ref.problem(body) else [WORKLOAD_REF_ENTRY]


def mirror(meta: Mapping[str, Any]) -> str:
    """The state annotation's value as it stands: the mirror for people, never read back
    for a decision (only to tell whether it needs writing again)."""
    value = (meta.get("annotations") or {}).get(STATE_ANNOTATION)
    return value if isinstance(value, str) else ""


def failed_facts(container: Mapping[str, Any], reason: str, message: str) -> ContainerFacts:
    """The facts of a container that could not be read: only its name, image and why."""
    image = container.get("image")
    image = image if isinstance(image, str) else ""
    return ContainerFacts(
        container=clip(container.get("name", ""), 253),
        image=clip(image, 600),
        repository=image_name(image) if len(image) <= 600 else clip(image, 600),
        error_reason=reason,
        error=message,
    )
