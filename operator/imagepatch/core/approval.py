"""Approve-after for base images: is a new base digest old enough to adopt?

Systems Manager patch baselines approve a patch a set number of days after
its release ("auto-approval delay"). ``spec.baseImages.approveAfter`` does
the same for base digests: when a workload's base tag moves to a new digest,
the new digest is adopted (the workload counts as ``BaseImageOutdated`` and is
rebuilt) only once it has been published for ``approveAfter``.

When it was published is read, in order of trust:

1. the registry's creation time of the new base (its image config's
   ``created``, or the ``org.opencontainers.image.created`` annotation),
   when present and not in the future (a clock ahead of ours, or a forged
   time, cannot make a digest old: it counts from when we first saw it);
2. otherwise the first time imagepatch saw that digest, kept in the
   operator's memory (``model.memory``), never in anything a tenant writes.

A base that fixes a finding at or over the policy's baseline is adopted at
once: a workload whose image has violations is ``Vulnerable``, which
``core.compliance`` assesses before staleness, so the wait never holds back
a security fix. :func:`base_approval` takes that as ``fixes_finding``.

Pure: the caller passes the clock, the registry's time and the memory's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from imagepatch.model.times import format_time

__all__ = ["BaseApproval", "base_approval"]

REGISTRY = "registry"  # counted from the registry's creation time
FIRST_SEEN = "first-seen"  # counted from when imagepatch first saw the digest


@dataclass(frozen=True, kw_only=True, slots=True)
class BaseApproval:
    """Whether a new base digest may be adopted now, and if not, from when."""

    approved: bool
    eligible_at: dt.datetime | None = None  # when it becomes eligible (None: no wait applies)
    published_at: dt.datetime | None = None  # the time the wait counts from
    counted_from: str = ""  # REGISTRY | FIRST_SEEN

    def message(self, base: str) -> str:
        """Why ``base``'s new digest is not adopted yet (for a workload's state)."""
        assert self.eligible_at is not None and self.published_at is not None
        source = (
            "created in the registry" if self.counted_from == REGISTRY
            else "first seen by imagepatch"
        )
        return (
            f"base {base} has a new digest, {source} at {format_time(self.published_at)};"
            f" it is adopted from {format_time(self.eligible_at)}"
            " (spec.baseImages.approveAfter)"
        )


def base_approval(
    *,
    approve_after: dt.timedelta,
    created: dt.datetime | None,
    first_seen: dt.datetime,
    now: dt.datetime,
    fixes_finding: bool = False,
) -> BaseApproval:
    """Whether a base digest created at ``created`` (registry), first seen at
    ``first_seen`` (memory), may be adopted at ``now`` under ``approve_after``.

    All times are aware. A zero ``approve_after`` or ``fixes_finding`` approves
    at once; eligibility is inclusive (approved exactly at ``eligible_at``).
    """
    if approve_after <= dt.timedelta(0) or fixes_finding:
        return BaseApproval(approved=True)
    if created is not None and created <= now:
        published, source = created, REGISTRY
    else:
        # Absent, or in the future (skewed or forged): our own first sighting.
        published, source = min(first_seen, now), FIRST_SEEN
    eligible = published + approve_after
    return BaseApproval(
        approved=now >= eligible, eligible_at=eligible, published_at=published,
        counted_from=source,
    )
