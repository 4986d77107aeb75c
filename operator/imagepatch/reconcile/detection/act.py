"""The act stage of a detection pass: create, close and retarget ImagePatches.

Each write carries out one item of the plan (``core.detection.plan``) and
returns an ``Outcome``; nothing here changes what the pass knows, ``settle``
does that from the outcomes. Detection never writes an ImagePatch's status:
it asks the patch's planner to close it (``imagepatch.dev/close``), the one
writer of that status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from imagepatch.adapters.errors import AdapterError, ConflictError, TransientError
from imagepatch.adapters.kube import Kube
from imagepatch.core.compliance import KnownPatch, PatchIntent
from imagepatch.core.detection.plan import (
    CloseRequested,
    Created,
    Outcome,
    PassPlan,
    Refused,
    Retargeted,
    known_patch,
    patch_body,
    targets_field,
)
from imagepatch.core.detection.workload import clip
from imagepatch.model.imagepatch import CLOSE_ANNOTATION, parse_imagepatch
from imagepatch.model.policy import PolicySpec

log = logging.getLogger("imagepatch.detection")


async def act(
    kube: Kube,
    policy: str,
    spec: PolicySpec,
    plan: PassPlan,
    patches: Mapping[str, Mapping[str, Any]],
) -> list[Outcome]:
    """Carry out ``plan``; one outcome per write, in order (``patches``: by name)."""
    outcomes: list[Outcome] = [
        await create(kube, policy, spec, intent) for intent in plan.patches.create
    ]
    outcomes += [await request_close(kube, stale) for stale in plan.patches.close]
    outcomes += [
        await retarget(kube, patches[existing.name], intent)
        for existing, intent in plan.patches.retarget
    ]
    return outcomes


async def create(kube: Kube, policy: str, spec: PolicySpec, intent: PatchIntent) -> Outcome:
    """Create the ImagePatch of ``intent``; a 4xx refuses this patch only."""
    try:
        created = await kube.create_imagepatch(patch_body(policy, spec, intent))
    except AdapterError as exc:
        if isinstance(exc, TransientError):
            raise
        # The API server refused this one patch (a 4xx): its workloads are
        # Unknown with the reason; every other patch is still created.
        log.warning("ImagePatch %s refused: %s: %s", intent.name, exc.reason, exc)
        return Refused(
            image=intent.image,
            digest=intent.current_digest,
            message=f"ImagePatch for {intent.image}@{intent.current_digest} was refused by the "
            f"API server ({exc.reason}): {clip(str(exc), 500)}",
        )
    if created is None:
        return Created(known=None)
    log.info("ImagePatch %s created: %s %s", intent.name, intent.image, intent.reason)
    return Created(known=known_patch(parse_imagepatch(created)))


async def request_close(kube: Kube, stale: KnownPatch) -> Outcome:
    """Ask the patch's planner to close it: it is no longer needed."""
    await kube.annotate_imagepatch(
        stale.name,
        {CLOSE_ANNOTATION: "no longer needed: the image no longer breaks the policy"},
    )
    log.info("ImagePatch %s no longer needed: asked its planner to close it", stale.name)
    return CloseRequested(name=stale.name)


async def retarget(kube: Kube, body: Mapping[str, Any], intent: PatchIntent) -> Outcome:
    """Add the containers judged since to an open patch, if it has not changed meanwhile."""
    name = body["metadata"]["name"]
    try:
        await kube.set_imagepatch_targets(
            name,
            targets_field(intent.targets, parse_imagepatch(body).targets),
            resource_version=body["metadata"]["resourceVersion"],
        )
    except ConflictError:
        # It changed since this pass read it (perhaps it started): next pass decides.
        log.info("ImagePatch %s changed while retargeting; left for the next pass", name)
        return Retargeted(name=name)
    return Retargeted(name=name, added=frozenset(t.key for t in intent.targets))
