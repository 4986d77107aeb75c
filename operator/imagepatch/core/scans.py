"""What an image's scan status means for the baseline: use the findings, wait, or say why not.

ECR's ``imageScanStatus.status`` (DescribeImageScanFindings) has a dozen
values, and only two of them mean the findings are complete. Each other one
gets its own outcome here, with a CamelCase reason for conditions and Events,
whether it is an error, and when to look again, so nothing above the adapter
crashes on a status or mistakes "not scanned" for "clean" (reliability.md
item 9). The adapter maps the status; this module decides. Pure.

An image whose findings are not usable is *not compliant-proven*: the
reconciler reports it, and never treats it as compliant nor as vulnerable.
:class:`ScanReport` is what the findings adapter returns for one image; it
lives here, not in the adapter, so the planner can take it as an input.
:class:`FindingsSource` is the port detection and verification read it
through (``adapters.findings.FindingsReader`` implements it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from imagepatch.core.baseline import BaselineVerdict, Finding, evaluate
from imagepatch.core.reasons import (
    FINDINGS_UNAVAILABLE,
    NO_SCAN,
    SCAN_COMPLETE,
    SCAN_ELIGIBILITY_EXPIRED,
    SCAN_FAILED,
    SCAN_IMAGE_ARCHIVED,
    SCAN_IMAGE_TOO_LARGE,
    SCAN_IN_PROGRESS,
    SCAN_LIMIT_EXCEEDED,
    SCAN_STATUS_UNKNOWN,
    SCAN_UNSUPPORTED,
)
from imagepatch.model.policy import Vulnerabilities, VulnerabilitySource

__all__ = [
    "FINDINGS_RECHECK_AFTER",
    "FINDINGS_UNAVAILABLE",
    "NO_SCAN",
    "NO_SCAN_STATUS",
    "SCAN_COMPLETE",
    "SCAN_ELIGIBILITY_EXPIRED",
    "SCAN_FAILED",
    "SCAN_IMAGE_ARCHIVED",
    "SCAN_IMAGE_TOO_LARGE",
    "SCAN_IN_PROGRESS",
    "SCAN_LIMIT_EXCEEDED",
    "SCAN_LIMIT_RETRY_AFTER",
    "SCAN_POLL_AFTER",
    "SCAN_STATUS_UNKNOWN",
    "SCAN_UNSUPPORTED",
    "ScanOutcome",
    "ScanReport",
    "scan_outcome",
]


# A basic scan takes a minute or two, an enhanced initial scan a few minutes;
# polling once a minute finds the result soon without many calls. An
# "ECR Image Scan" event, when the SQS consumer runs, triggers sooner anyway.
SCAN_POLL_AFTER = dt.timedelta(minutes=1)
# Basic scanning allows one scan per image per 24 hours; asking sooner only
# gets LIMIT_EXCEEDED again.
SCAN_LIMIT_RETRY_AFTER = dt.timedelta(hours=24)
# States that only change when something outside us acts (a rescan, Inspector
# catching up): look again now and then, not in a tight loop.
FINDINGS_RECHECK_AFTER = dt.timedelta(hours=1)


@dataclass(frozen=True, kw_only=True, slots=True)
class ScanOutcome:
    """The meaning of one scan status."""

    status: str  # ECR's status, or "NO_SCAN" when there is no scan at all
    reason: str  # CamelCase, for conditions and Events
    message: str  # for humans; never holds anything from a credential
    findings_usable: bool  # True only when the findings are complete and current
    error: bool  # a Warning-worthy failure, as opposed to a state that will pass or is by design
    # When to look again; None: no sooner than the regular check interval or
    # the next scan event, because waiting will not change this status.
    retry_after: dt.timedelta | None

    @property
    def retry(self) -> bool:
        return self.retry_after is not None


NO_SCAN_STATUS = "NO_SCAN"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Meaning:
    reason: str
    message: str
    findings_usable: bool = False
    error: bool = False
    retry_after: dt.timedelta | None = None


_MEANINGS: dict[str, _Meaning] = {
    # Basic scanning finished, or enhanced (continuous) scanning watches the image.
    "COMPLETE": _Meaning(
        reason=SCAN_COMPLETE, message="the scan is complete", findings_usable=True
    ),
    "ACTIVE": _Meaning(
        reason=SCAN_COMPLETE, message="continuous scanning is active", findings_usable=True
    ),
    "IN_PROGRESS": _Meaning(
        reason=SCAN_IN_PROGRESS, message="the scan is in progress", retry_after=SCAN_POLL_AFTER
    ),
    "PENDING": _Meaning(
        reason=SCAN_IN_PROGRESS,
        message="the scan has not started yet",
        retry_after=SCAN_POLL_AFTER,
    ),
    # A failed scan stays failed until someone (or a new push) scans again.
    "FAILED": _Meaning(
        reason=SCAN_FAILED,
        message="the scan failed; start a new scan of the image",
        error=True,
        retry_after=FINDINGS_RECHECK_AFTER,
    ),
    # The scanner does not know the image's OS or package manager: not an
    # error, and nothing will change for this digest.
    "UNSUPPORTED_IMAGE": _Meaning(
        reason=SCAN_UNSUPPORTED,
        message="the scanner does not support this image's operating system or package manager",
    ),
    # Enhanced scanning stopped rescanning the image (too long since its push
    # or last pull), so the findings it has are stale.
    "SCAN_ELIGIBILITY_EXPIRED": _Meaning(
        reason=SCAN_ELIGIBILITY_EXPIRED,
        message="continuous scanning has stopped for this image (scan duration expired); "
        "extend the registry's scan duration or push the image again",
    ),
    "FINDINGS_UNAVAILABLE": _Meaning(
        reason=FINDINGS_UNAVAILABLE,
        message="the scanner has no findings for this image right now",
        error=True,
        retry_after=FINDINGS_RECHECK_AFTER,
    ),
    "LIMIT_EXCEEDED": _Meaning(
        reason=SCAN_LIMIT_EXCEEDED,
        message="basic scanning allows one scan per image per 24 hours",
        retry_after=SCAN_LIMIT_RETRY_AFTER,
    ),
    "IMAGE_ARCHIVED": _Meaning(
        reason=SCAN_IMAGE_ARCHIVED,
        message="the image is archived, and archived images are not scanned",
    ),
    "IMAGE_SIZE_EXCEEDED": _Meaning(
        reason=SCAN_IMAGE_TOO_LARGE, message="the image is larger than the scanner accepts"
    ),
    NO_SCAN_STATUS: _Meaning(
        reason=NO_SCAN,
        message="the image has never been scanned; turn on scan on push or start a scan",
    ),
}

# A status added to the API after this was written: say so, keep running, and
# look again later rather than guess that it means "clean".
_UNKNOWN = _Meaning(
    reason=SCAN_STATUS_UNKNOWN,
    message="unknown scan status",
    error=True,
    retry_after=FINDINGS_RECHECK_AFTER,
)


def scan_outcome(status: str | None, *, description: str | None = None) -> ScanOutcome:
    """The outcome of ECR's ``imageScanStatus`` (``status`` None: there is no scan).

    ``description`` is ECR's ``imageScanStatus.description``; when present it
    is added to the message, because it often says why (for example which OS
    is unsupported).
    """
    status = (status or NO_SCAN_STATUS).upper()
    meaning = _MEANINGS.get(status)
    message = meaning.message if meaning else f"unknown scan status {status!r}"
    meaning = meaning or _UNKNOWN
    if description:
        message = f"{message}: {description}"
    return ScanOutcome(
        status=status,
        reason=meaning.reason,
        message=message,
        findings_usable=meaning.findings_usable,
        error=meaning.error,
        retry_after=meaning.retry_after,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ScanReport:
    """One image's scan: what its status means, and its findings when they are usable."""

    repository: str
    digest: str
    source: VulnerabilitySource  # ecr or inspector: where the findings came from
    status_outcome: ScanOutcome
    # Empty unless ``status_outcome.findings_usable``: the partial or stale
    # findings of an unfinished or expired scan must not pass for a result.
    findings: tuple[Finding, ...]
    scanned_at: dt.datetime | None  # when the scan completed, if the scanner says

    def verdict(self, baseline: Vulnerabilities, *, now: dt.datetime) -> BaselineVerdict | None:
        """The baseline's verdict, or None when the scan proves nothing either way."""
        if not self.status_outcome.findings_usable:
            return None
        return evaluate(self.findings, baseline, now=now)


class FindingsSource(Protocol):
    """Reads one image's scan report (``adapters.findings.FindingsReader``).

    Raises a classified ``AdapterError`` when the findings cannot be read.
    """

    async def read_async(
        self,
        *,
        repository: str,
        digest: str,
        source: VulnerabilitySource,
        registry_id: str | None = None,
        region: str | None = None,
    ) -> ScanReport: ...
