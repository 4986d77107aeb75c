"""An ImagePatch's life as a timeline: when it began, its phases, when and how it ended.

Pure. The report (``core.report``) and history retention (``core.retention``)
read each ImagePatch once, with ``model.imagepatch.parse_imagepatch``, and
place it in time with :func:`read_patch`. The object as the API serves it is
untrusted here too: a patch that does not parse is returned as None, which
the report lists as a warning and retention never deletes.

When things happened comes from ``metadata.creationTimestamp`` and
``status.history``; a restored (e.g. Velero) object gets a new
``creationTimestamp`` but keeps its history, so the earlier of the two is
when the patch began. A terminal patch with no history entry saying when it
ended (an older writer, or history trimmed to its last 50) ended when its
``Ready`` condition last changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.core.images import parse_image
from imagepatch.model.imagepatch import TERMINAL_PHASES, ImagePatch, Phase, parse_imagepatch
from imagepatch.model.times import parse_time

__all__ = ["PatchTimeline", "read_patch", "repository", "ready_condition"]


def repository(image: str) -> str:
    """``host/repository`` of an image reference; the text itself when it does not parse."""
    try:
        return parse_image(image).name
    except ValueError:
        return image


def ready_condition(conditions: tuple[Mapping[str, Any], ...]) -> Mapping[str, Any]:
    """The ``Ready`` condition among ``conditions``; empty when there is none."""
    return next(
        (c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Ready"), {}
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchTimeline:
    """One ImagePatch, parsed, and placed in time."""

    patch: ImagePatch
    created: dt.datetime | None
    deleting: bool  # metadata.deletionTimestamp is set
    timeline: tuple[tuple[dt.datetime, str], ...]  # (when, phase), oldest first
    ended: dt.datetime | None  # when it reached a terminal phase
    result: str  # that terminal phase; "" while active
    finding_ids: tuple[str, ...]  # spec.evidence.findings[].id

    @property
    def name(self) -> str:
        return self.patch.name

    @property
    def policy(self) -> str:
        return self.patch.policy

    @property
    def image(self) -> str:
        """The patch's image as ``host/repository``."""
        return repository(self.patch.image)

    @property
    def current_digest(self) -> str:
        return self.patch.current_digest

    @property
    def target_digest(self) -> str:
        return self.patch.status.target_digest or self.patch.target_digest

    @property
    def reason(self) -> str:
        return self.patch.reason

    @property
    def phase(self) -> str:
        return str(self.patch.status.phase)

    @property
    def active(self) -> bool:
        return self.phase not in TERMINAL_PHASES

    @property
    def last_activity(self) -> dt.datetime | None:
        return self.timeline[-1][0] if self.timeline else self.created

    def targets(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of every workload it targets or rolled out to."""
        return {(t.kind, t.namespace, t.name) for t in self.patch.targets} | {
            (e.target.kind, e.target.namespace, e.target.name) for e in self.patch.status.rollouts
        }


def read_patch(body: Mapping[str, Any]) -> PatchTimeline | None:
    """The patch in ``body`` on its timeline; None when it does not parse."""
    try:
        patch = parse_imagepatch(body)
        history = sorted(
            (
                (at, str(h.get("phase") or ""))
                for h in patch.status.history
                if (at := parse_time(h.get("at"))) is not None
            ),
            key=lambda e: e[0],
        )
        evidence = (body.get("spec") or {}).get("evidence") or {}
        findings = evidence.get("findings") or []
        finding_ids = tuple(str(f["id"]) for f in findings if isinstance(f, dict) and f.get("id"))
    except (ValueError, TypeError, AttributeError):
        # SpecError (a ValueError), or a field of another shape than the CRD's.
        return None
    meta = body.get("metadata") or {}
    created = min(
        [
            t
            for t in (parse_time(meta.get("creationTimestamp")), history[0][0] if history else None)
            if t is not None
        ],
        default=None,
    )
    timeline = list(history)
    if created is not None and (not timeline or timeline[0][0] > created):
        timeline.insert(0, (created, str(Phase.PENDING)))
    ended, result = next(((at, p) for at, p in timeline if p in TERMINAL_PHASES), (None, ""))
    phase = str(patch.status.phase)
    if phase in TERMINAL_PHASES and ended is None:
        ready = ready_condition(patch.status.conditions)
        ended = parse_time(ready.get("lastTransitionTime")) or created
        result = phase
        if ended is not None:
            timeline.append((ended, phase))
            timeline.sort(key=lambda e: e[0])
    return PatchTimeline(
        patch=patch,
        created=created,
        deleting=bool(meta.get("deletionTimestamp")),
        timeline=tuple(timeline),
        ended=ended,
        result=result,
        finding_ids=finding_ids,
    )
