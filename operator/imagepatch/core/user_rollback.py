"""A rollback a person makes by hand is respected: the digest they undid is not rolled out again.

Peers' users give "the updater undoes my rollback" as a reason to stop using
them (issue 22). When imagepatch's patch of a container succeeded and a
person then sets the container's image back (to the image it replaced, or to
any image of the digest it ran before), that is a decision about the
patched digest on that workload: detection remembers it in the operator's
memory, in the same bounded list as the digests that failed their health
gate there (``model.memory``; an entry with ``reason: RejectedByUser``), so
no new ImagePatch is made for the same key and no rollout writes the digest
to that workload again (``reconcile.rollouts`` refuses a remembered digest).
The workload then reads ``Failed``/``RejectedByUser``, naming the digest and
how to move on. A newer base or image is a new patch and is rolled out as
usual: the rejection is of one digest, not of patching.

What counts as a person's rollback, per target of a ``Succeeded`` patch
whose rollout entry for it ended ``Healthy``:

* the workload's ``metadata.generation`` is past the generation imagepatch's
  own patch made (``patchedGeneration``): someone wrote its spec since, so a
  stale read of the workload from before the patch never counts;
* the container's image is no longer the one imagepatch wrote, and it is the
  image imagepatch replaced, or names the digest the patch started from.

The workload's annotations play no part: the template the person wrote is
the evidence, the ImagePatch (status written only by the operator) says what
imagepatch did. This module is pure; detection calls :func:`rollbacks` and
stages :func:`remembered` records (``reconcile.user_rollbacks``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.core import kinds
from imagepatch.core.images import InvalidImageReference, parse_image
from imagepatch.model.imagepatch import ImagePatch, Phase, TargetPhase
from imagepatch.model.memory import WorkloadMemory, with_failed

REJECTED_BY_USER = "RejectedByUser"


@dataclass(frozen=True, kw_only=True, slots=True)
class UserRollback:
    """One container a person rolled back from a digest imagepatch rolled out."""

    container: str
    digest: str  # the digest imagepatch rolled out, now rejected here
    key: str  # the patch's key: detection makes no new patch for it
    patch: str
    image: str  # what the person set


def _digest(image: str) -> str:
    try:
        return parse_image(image).digest or ""
    except InvalidImageReference:
        return ""


def rollbacks(workload: Mapping[str, Any], patches: Iterable[ImagePatch]) -> list[UserRollback]:
    """The containers of ``workload`` a person rolled back after a patch of them succeeded.

    A patch without detection's key (``imagepatch.dev/key``: one made by hand)
    is never re-opened by detection, so it is not looked at.
    """
    meta = workload.get("metadata") or {}
    kind = workload.get("kind") or kinds.DEPLOYMENT
    generation = int(meta.get("generation") or 0)
    images = {c.get("name", ""): c.get("image", "") for _, c in kinds.containers(workload)}
    found: dict[str, UserRollback] = {}
    for patch in patches:
        key = patch.key
        digest = patch.status.target_digest or patch.target_digest
        if patch.status.phase != Phase.SUCCEEDED or not key or not digest:
            continue
        for entry in patch.status.rollouts:
            t = entry.target
            if ((t.kind, t.namespace, t.name) != (kind, meta.get("namespace"), meta.get("name"))
                    or entry.phase != TargetPhase.HEALTHY
                    or not entry.patched_generation or generation <= entry.patched_generation):
                continue
            image = images.get(t.container, "")
            if not image or image == entry.target_image or _digest(image) == digest:
                continue
            if image == entry.previous_image or (
                    patch.current_digest and _digest(image) == patch.current_digest):
                found[t.container] = UserRollback(container=t.container, digest=digest, key=key,
                                                  patch=patch.name, image=image)
    return list(found.values())


def remembered(record: WorkloadMemory, found: Sequence[UserRollback],
               now: dt.datetime) -> WorkloadMemory:
    """``record`` with each rollback remembered, once (a digest already remembered stays put)."""
    known = {e.get("digest") for e in record.failed}
    for r in found:
        if r.digest in known:
            continue
        record = with_failed(record, digest=r.digest, key=r.key, patch=r.patch, now=now,
                             reason=REJECTED_BY_USER)
    return record


def rejection_message(entry: Mapping[str, str]) -> str:
    """What the workload's state says of a digest a person rolled back."""
    return (f"rolled back by hand from {entry.get('digest', '?')} (rolled out by ImagePatch "
            f"{entry.get('patch', '?')}; noticed {entry.get('at', '')}): that digest is not "
            "rolled out here again; a newer base or image is patched as usual")
