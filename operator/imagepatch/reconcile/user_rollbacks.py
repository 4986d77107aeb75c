"""Detection's hook for rollbacks people make by hand (``core.user_rollback``).

Called once per policy pass with the workloads it evaluated and the
ImagePatches it read, before the memory is flushed and before patches are
planned: a rollback noticed here is remembered in the operator's memory in
the same pass that would otherwise open a patch to undo it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from imagepatch.adapters.memory import OperatorMemory
from imagepatch.core import kinds
from imagepatch.core.user_rollback import remembered, rollbacks
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import ImagePatch, Phase, parse_imagepatch

log = logging.getLogger(__name__)


def remember(memory: OperatorMemory, workloads: Iterable[Mapping[str, Any]],
             patches: Iterable[Mapping[str, Any]], now: dt.datetime) -> None:
    """Stage, for each workload a person rolled back, its rejected digests (flushed by the pass)."""
    succeeded: list[ImagePatch] = []
    for body in patches:
        if ((body.get("status") or {}).get("phase")) != Phase.SUCCEEDED:
            continue
        try:
            succeeded.append(parse_imagepatch(body))
        except SpecError:
            continue  # its own planner reports it; nothing to learn from it here
    if not succeeded:
        return
    for dep in workloads:
        found = rollbacks(dep, succeeded)
        if not found:
            continue
        meta = dep.get("metadata") or {}
        kind = dep.get("kind") if dep.get("kind") in kinds.KINDS else kinds.DEPLOYMENT
        record = memory.get(str(kind), meta.get("namespace", ""), meta.get("name", ""),
                            meta.get("uid", ""))
        updated = remembered(record, found, now)
        if updated is record:
            continue
        memory.stage(updated)
        for r in found:
            log.info("%s %s/%s container %s was rolled back by hand from %s (ImagePatch %s) "
                     "to %s: %s is not rolled out there again", kind, meta.get("namespace"),
                     meta.get("name"), r.container, r.digest, r.patch, r.image, r.digest)
