"""History retention: which finished ImagePatches a policy's ``spec.history`` lets go.

Pure. Detection (``reconcile.detection``) calls :func:`retention` once per
policy and pass, and deletes what it chose with a resourceVersion
precondition (``adapters.report_source.delete_imagepatches`` does the same
for other callers). When a patch ended is read by ``core.patch_timeline``,
the same reading the report uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from imagepatch.core.patch_timeline import PatchTimeline, read_patch

__all__ = ["retention"]


def retention(
    patches: Iterable[Mapping[str, Any]],
    *,
    keep_count: int | None,
    max_age: dt.timedelta | None,
    now: dt.datetime,
) -> list[str]:
    """The names of the ImagePatches to delete under a policy's history retention.

    Only terminal patches (Succeeded, RolledBack, Failed, Closed) are ever
    chosen: an active one is the operator's memory of work in progress. Per
    ``spec.policy``, terminal patches are ranked newest first by when they
    ended; one is chosen when it ranks beyond ``keep_count`` **or** ended more
    than ``max_age`` ago. ``None`` turns either limit off. Patches already
    being deleted, and patches that do not parse, are left out. The names
    come back sorted.
    """
    if keep_count is not None and keep_count < 0:
        raise ValueError("keep_count must be >= 0")
    by_policy: dict[str, list[PatchTimeline]] = {}
    for body in patches:
        patch = read_patch(body)
        if patch is None or patch.deleting or patch.active:
            continue
        by_policy.setdefault(patch.policy, []).append(patch)
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    doomed: set[str] = set()
    for group in by_policy.values():
        # Newest first; a patch with no time at all counts as the oldest.
        group.sort(key=lambda p: (p.ended or p.created or epoch, p.name), reverse=True)
        for rank, patch in enumerate(group):
            ended = patch.ended or patch.created
            too_many = keep_count is not None and rank >= keep_count
            too_old = max_age is not None and (ended is None or now - ended > max_age)
            if too_many or too_old:
                doomed.add(patch.name)
    return sorted(doomed)
