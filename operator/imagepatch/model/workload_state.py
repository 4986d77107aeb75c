"""The workload-state annotation (``imagepatch.dev/state``): one schema, one writer, two readers.

Detection (``reconcile.detection``) records each opted-in workload's
compliance state on the workload as JSON; ``imagepatch report``
(``core.report``) reads it back, and Security Hub (``core.securityhub``) reads
the same per-container records from detection's results. This module is the
schema all three share::

    {"schemaVersion": 1, "policy": "critical", "state": "Vulnerable",
     "message": "app: ...", "since": "2026-11-27T12:00:00Z",
     "containers": [{"name": "app", "image": "...", "digest": "sha256:...",
                     "digestSource": "pod", "base": "...", "baseDigest": "...",
                     "baseCurrent": "...", "lineage": "oci-annotation",
                     "state": "Vulnerable", "reason": "Vulnerable", "message": "...",
                     "findingsOverBaseline": 2, "findingsBySeverity": {"HIGH": 2}}]}

A container record leaves out the text fields that are empty, and the
findings fields when no scan was read.

**Reading is tolerant**: the annotation is on an object anyone may edit.
Anything that is not a JSON object, or carries a ``schemaVersion`` other
than the current one (a newer operator wrote it), reads as ``None``: no
record, which detection and the report treat as "not evaluated yet", never
as a crash. An annotation without ``schemaVersion`` (written before it
existed) is read as version 1. Inside a record, a field of the wrong type
reads as empty and a container entry that is not an object is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.model.times import format_time, parse_time

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "ContainerState", "WorkloadState", "from_annotation", "to_annotation"]

# JSON key <- attribute, for the container record's text fields (in the order written).
_TEXT_FIELDS = (
    ("name", "name"),
    ("image", "image"),
    ("digest", "digest"),
    ("digestSource", "digest_source"),
    ("base", "base"),
    ("baseDigest", "base_digest"),
    ("baseCurrent", "base_current"),
    ("lineage", "lineage"),
    ("state", "state"),
    ("reason", "reason"),
    ("message", "message"),
)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerState:
    """What detection found for one container of the workload."""

    name: str = ""
    image: str = ""
    digest: str = ""
    digest_source: str = ""  # where the digest came from: spec, pod, tag
    base: str = ""  # the base image's name as recorded in the image
    base_digest: str = ""  # the base digest the image was built on
    base_current: str = ""  # the base tag's digest now
    lineage: str = ""  # how the base was found (e.g. ``workload-annotation``)
    state: str = ""
    reason: str = ""
    message: str = ""
    findings_over_baseline: int | None = None  # None: no scan was read
    findings_by_severity: Mapping[str, int] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The container's JSON object (empty text fields left out)."""
        record: dict[str, Any] = {
            key: getattr(self, attr) for key, attr in _TEXT_FIELDS if getattr(self, attr)
        }
        if self.findings_over_baseline is not None:
            record["findingsOverBaseline"] = self.findings_over_baseline
        if self.findings_by_severity:
            record["findingsBySeverity"] = dict(self.findings_by_severity)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ContainerState:
        """A container record as written by :meth:`to_record`; wrong types read as empty."""
        findings = record.get("findingsOverBaseline")
        by_severity = record.get("findingsBySeverity")
        return cls(
            **{attr: _text(record.get(key)) for key, attr in _TEXT_FIELDS},
            findings_over_baseline=findings if isinstance(findings, int) else None,
            findings_by_severity=(
                {
                    k: v
                    for k, v in by_severity.items()
                    if isinstance(k, str) and isinstance(v, int)
                }
                if isinstance(by_severity, Mapping)
                else {}
            ),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadState:
    """A workload's recorded state under a policy.

    ``policy`` is None when the record does not name one (read as "the
    workload's current policy"). ``since`` is when the workload entered
    ``state``; None when unknown.
    """

    policy: str | None
    state: str
    message: str = ""
    containers: tuple[ContainerState, ...] = ()
    since: dt.datetime | None = None

    def same_as(self, other: WorkloadState) -> bool:
        """The same record but for ``since``: nothing new to write."""
        return replace(self, since=None) == replace(other, since=None)

    def to_annotation(self) -> str:
        return to_annotation(self)


def to_annotation(record: WorkloadState) -> str:
    """The annotation's value: JSON with sorted keys, the schema version included."""
    body: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "state": record.state,
        "message": record.message,
        "containers": [c.to_record() for c in record.containers],
    }
    if record.policy is not None:
        body["policy"] = record.policy
    if record.since is not None:
        body["since"] = format_time(record.since)
    return json.dumps(body, sort_keys=True)


def from_annotation(raw: object) -> WorkloadState | None:
    """The record in an annotation's value, or None for none, a bad one, or another version."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    version = body.get("schemaVersion", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return None
    policy = body.get("policy")
    containers = body.get("containers")
    return WorkloadState(
        policy=policy if isinstance(policy, str) else None,
        state=_text(body.get("state")),
        message=_text(body.get("message")),
        containers=tuple(
            ContainerState.from_record(c)
            for c in (containers if isinstance(containers, list) else ())
            if isinstance(c, dict)
        ),
        since=parse_time(body.get("since")),
    )
