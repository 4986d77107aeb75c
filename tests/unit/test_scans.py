"""Every ECR scan status has its own outcome: usable findings, wait, or a visible reason."""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.core.baseline import Finding, FindingSource
from imagepatch.core.scans import ScanReport, scan_outcome
from imagepatch.model.policy import Severity, Vulnerabilities, VulnerabilitySource

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("status", "reason", "usable", "error", "retry_after"),
    [
        ("COMPLETE", "ScanComplete", True, False, None),
        ("ACTIVE", "ScanComplete", True, False, None),
        ("IN_PROGRESS", "ScanInProgress", False, False, MINUTE),
        ("PENDING", "ScanInProgress", False, False, MINUTE),
        ("FAILED", "ScanFailed", False, True, HOUR),
        # Not an error, but nothing is proven either, and waiting will not change it.
        ("UNSUPPORTED_IMAGE", "ScanUnsupported", False, False, None),
        ("SCAN_ELIGIBILITY_EXPIRED", "ScanEligibilityExpired", False, False, None),
        ("FINDINGS_UNAVAILABLE", "FindingsUnavailable", False, True, HOUR),
        # Basic scanning: one scan per image per 24 hours.
        ("LIMIT_EXCEEDED", "ScanLimitExceeded", False, False, 24 * HOUR),
        ("IMAGE_ARCHIVED", "ScanImageArchived", False, False, None),
        ("IMAGE_SIZE_EXCEEDED", "ScanImageTooLarge", False, False, None),
        # ScanNotFoundException: there is no scan at all.
        (None, "NoScan", False, False, None),
        # A status AWS adds later: visible, not fatal, looked at again.
        ("QUANTUM_ENTANGLED", "ScanStatusUnknown", False, True, HOUR),
    ],
)
def test_each_scan_status_has_its_own_outcome(status, reason, usable, error, retry_after):
    outcome = scan_outcome(status)
    assert outcome.reason == reason
    assert outcome.findings_usable is usable
    assert outcome.error is error
    assert outcome.retry_after == retry_after
    assert outcome.retry is (retry_after is not None)
    assert outcome.message


def test_no_scan_has_a_status_name_and_says_what_to_do():
    outcome = scan_outcome(None)
    assert outcome.status == "NO_SCAN"
    assert "scan on push" in outcome.message


def test_the_scanners_description_is_kept_in_the_message():
    outcome = scan_outcome(
        "UNSUPPORTED_IMAGE", description="UnsupportedImageError: the OS is not supported"
    )
    assert outcome.message.endswith(": UnsupportedImageError: the OS is not supported")


def test_status_is_case_insensitive():
    assert scan_outcome("complete").findings_usable


def _report(status: str | None) -> ScanReport:
    finding = Finding(id="CVE-1", severity=Severity.CRITICAL, source=FindingSource.INSPECTOR)
    return ScanReport(
        repository="app",
        digest="sha256:" + "a" * 64,
        source=VulnerabilitySource.INSPECTOR,
        status_outcome=scan_outcome(status),
        findings=(finding,),
        scanned_at=None,
    )


def test_a_report_gives_a_verdict_only_when_its_findings_are_usable():
    now = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    verdict = _report("ACTIVE").verdict(Vulnerabilities(), now=now)
    assert verdict is not None and [f.id for f in verdict.violations] == ["CVE-1"]
    # An unfinished scan is neither compliant nor vulnerable.
    assert _report("IN_PROGRESS").verdict(Vulnerabilities(), now=now) is None
    assert _report(None).verdict(Vulnerabilities(), now=now) is None
