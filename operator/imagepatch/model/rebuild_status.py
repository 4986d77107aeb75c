"""An ImagePatch's recorded rebuild and verification (``status.rebuild``, ``status.verification``).

The planner records a rebuild's progress here, intent first, and resumes
from it after a restart; the reconcile loop reads it to know whether to poll
the builder or verify the result. ``stage`` is the one reading of where a
rebuild stands, for both. Each class parses leniently (an older operator may
have written fewer fields) and writes back the same wire format the CRD
defines: ``to_dict`` leaves out what is not set.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class RebuildStage(enum.StrEnum):
    """Where a rebuild stands, by what is recorded."""

    NOT_STARTED = "NotStarted"  # no intent recorded yet
    STARTING = "Starting"  # intent recorded; the builder's id is not known yet
    RUNNING = "Running"  # the builder's id is recorded; not finished
    FINISHED = "Finished"  # the build ended (its digest is verified next)


@dataclass(frozen=True, kw_only=True, slots=True)
class RebuildStatus:
    """``status.rebuild``: one build of the patch's image, as recorded."""

    strategy: str = ""
    started_at: str = ""
    build_id: str = ""
    build_status: str = ""  # the builder's own status, e.g. IN_PROGRESS
    logs_url: str = ""
    message: str = ""
    finished_at: str = ""
    digest: str = ""  # what the build produced
    # What the build was told, recorded with its id (issue #14): the base
    # pinned by digest, the tag it pushes under, the source revision it checks
    # out, or whether the source is not pinned (it builds its branch) and why.
    base_image: str = ""
    tag: str = ""
    revision: str = ""
    source_pinned: bool | None = None  # None: not recorded (a rebase builds no source)
    source_message: str = ""

    @property
    def stage(self) -> RebuildStage:
        if not self.started_at:
            return RebuildStage.NOT_STARTED
        if not self.build_id:
            return RebuildStage.STARTING
        if not self.finished_at:
            return RebuildStage.RUNNING
        return RebuildStage.FINISHED

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> RebuildStatus:
        raw = raw or {}
        pinned = raw.get("sourcePinned")
        return cls(
            **{name: _text(raw, key) for name, key in _REBUILD_FIELDS.items()},
            source_pinned=pinned if isinstance(pinned, bool) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            key: getattr(self, name) for name, key in _REBUILD_FIELDS.items() if getattr(self, name)
        }
        if self.source_pinned is not None:
            out["sourcePinned"] = self.source_pinned
        return out


_REBUILD_FIELDS = {
    "strategy": "strategy",
    "started_at": "startedAt",
    "build_id": "buildId",
    "build_status": "buildStatus",
    "logs_url": "logsUrl",
    "message": "message",
    "finished_at": "finishedAt",
    "digest": "digest",
    "base_image": "baseImage",
    "tag": "tag",
    "revision": "revision",
    "source_message": "sourceMessage",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class VerificationStatus:
    """``status.verification``: the checks of the rebuilt image, as recorded."""

    result: str = ""  # Passed | Failed | Pending; '' when never checked
    message: str = ""
    base_digest: str = ""
    platforms: tuple[str, ...] = ()
    findings_before: int | None = None
    findings_after: int | None = None
    checked_at: str = ""
    # spec.verification.signatures: result, key, keysTried, source, message
    # (core.signatures.SignatureCheck.to_dict), when the policy asks for them.
    signature: Mapping[str, Any] | None = None
    # spec.verification.provenance: result, builderId, key, message.
    provenance: Mapping[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.result == "Passed"

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> VerificationStatus:
        raw = raw or {}
        return cls(
            result=_text(raw, "result"),
            message=_text(raw, "message"),
            base_digest=_text(raw, "baseDigest"),
            platforms=tuple(p for p in raw.get("platforms") or () if isinstance(p, str)),
            findings_before=_count(raw, "findingsBefore"),
            findings_after=_count(raw, "findingsAfter"),
            checked_at=_text(raw, "checkedAt"),
            signature=dict(raw["signature"]) if isinstance(raw.get("signature"), Mapping) else None,
            provenance=(
                dict(raw["provenance"]) if isinstance(raw.get("provenance"), Mapping) else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form, {} when never checked; the platforms are always listed once checked."""
        if not self.result:
            return {}
        out: dict[str, Any] = {
            "result": self.result,
            "message": self.message,
            "baseDigest": self.base_digest,
            "platforms": list(self.platforms),
            "findingsBefore": self.findings_before,
            "findingsAfter": self.findings_after,
            "checkedAt": self.checked_at,
            "signature": dict(self.signature) if self.signature else None,
            "provenance": dict(self.provenance) if self.provenance else None,
        }
        return {k: v for k, v in out.items() if v not in (None, "")}


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _count(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
