"""Detection's hook for ``spec.baseImages.approveAfter``: hold a new base until approved.

Detection gathers a container's facts; when its base tag has moved to a new
digest and the policy asks for an approve-after delay, this module reads the
new base's creation time from the registry, records in the operator's memory
when the digest was first seen (never in a workload annotation: a tenant could
forge an old time), and asks :func:`imagepatch.core.approval.base_approval`
whether the digest may be adopted. If not, the facts carry why and until when
(``base_pending``), and ``core.compliance`` reports the container
``Compliant`` with reason ``BaseNotYetApproved`` instead of
``BaseImageOutdated``, so no patch is opened for it yet. Detection evaluates
each policy every ``checkInterval``; the first pass after the digest becomes
eligible adopts it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.memory import OperatorMemory
from imagepatch.adapters.registry import RegistryClient
from imagepatch.core.approval import base_approval
from imagepatch.core.compliance import ContainerFacts, outdated
from imagepatch.core.images import ImageRef
from imagepatch.model import memory as memory_model
from imagepatch.model.memory import WorkloadMemory
from imagepatch.model.policy import PolicySpec

log = logging.getLogger("imagepatch.detection")


async def hold_new_base(
    facts: ContainerFacts,
    *,
    base: ImageRef | None,
    spec: PolicySpec,
    registry: RegistryClient,
    memory: OperatorMemory,
    record: WorkloadMemory,
    now: dt.datetime,
) -> ContainerFacts:
    """``facts``, with ``base_pending`` set when the moved base is not approved yet."""
    approve_after = spec.base_images.approve_after
    if not approve_after or base is None or facts.error_reason or not outdated(facts):
        return facts
    new = facts.base_current
    seen = memory_model.with_seen(record, new, now)
    memory.stage(seen)  # written with the pass's other memory, before any patch is opened
    try:
        created = await registry.image_created(base.with_digest(new))
    except AdapterError as exc:
        # No creation time to be had: counted from our own first sighting.
        log.info("base %s@%s: creation time unreadable (%s): %s", base.name, new, exc.reason, exc)
        created = None
    decision = base_approval(
        approve_after=approve_after,
        created=created,
        first_seen=seen.seen[new],
        now=now,
        fixes_finding=bool(facts.findings and facts.findings.violations),
    )
    if decision.approved:
        return facts
    return dataclasses.replace(facts, base_pending=decision.message(facts.base_name))
