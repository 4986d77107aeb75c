"""The findings adapter against moto in server mode: pagination, scan statuses, errors, retries.

Given an image in moto's ECR (pushed with an explicit digest, because moto
computes a wrong one) and findings injected through moto's API, when the
adapter reads them, then the findings, the scan outcome and the baseline's
verdict are the ones a real ECR or Inspector2 answer would give.

What came from where:

* **moto, natively:** NoScan (ScanNotFoundException), the canned COMPLETE
  result, StartImageScan and its LimitExceededException on a second scan the
  same day, ImageNotFoundException, RepositoryNotFoundException.
* **moto, injected:** every ``imageScanStatus`` (moto returns the injected
  DescribeImageScanFindings response as is, over real HTTP), basic and
  enhanced findings, Inspector2 findings.
* **moto plus a thin test shim for pagination:** moto ignores ``nextToken``
  on both APIs (see :class:`EcrPageShim` and :class:`InspectorPageShim`).
* **botocore's Stubber on the adapter's real client:** AccessDenied,
  UnrecognizedClient, ExpiredToken, 5xx and validation errors, which moto
  (without IAM enforcement) cannot produce.
* **a ``before-send`` hook:** throttling. A Stubber answers in
  ``before-call``, before botocore's retry loop, so it cannot show a retry; a
  ``before-send`` answer is an HTTP response inside that loop, exactly where a
  real 400 ThrottlingException lands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import CredentialResolver
from botocore.stub import Stubber

from imagepatch.adapters.errors import ConfigurationError, NotFoundError, TransientError
from imagepatch.adapters.findings import FindingsReader
from imagepatch.core.baseline import FindingSource
from imagepatch.model.policy import Severity, Vulnerabilities, VulnerabilitySource
from tests.support.images import unique_repo
from tests.support.moto import DUMMY_CREDENTIALS

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
ECR = VulnerabilitySource.ECR
INSPECTOR = VulnerabilitySource.INSPECTOR
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"


def days_ago(days: float) -> float:
    # Epoch seconds, as the AWS JSON protocol sends timestamps.
    return (NOW - dt.timedelta(days=days)).timestamp()


# -- fixtures and helpers ---------------------------------------------------------------


def make_reader(aws, *, max_attempts: int = 2, **session_kwargs: Any) -> FindingsReader:
    session = boto3.Session(**(session_kwargs or DUMMY_CREDENTIALS), region_name=aws.region)
    return FindingsReader(
        session=session,
        region=aws.region,
        endpoint_url=aws.endpoint_url,
        # Few attempts keep the retry tests short; the default is 5.
        max_attempts=max_attempts,
    )


@pytest.fixture
def reader(aws) -> FindingsReader:
    return make_reader(aws)


def push_image(aws, prefix: str = "app") -> tuple[str, str]:
    """An image in moto's ECR, under its true digest; return (repository, digest)."""
    repo = unique_repo(prefix)
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName=repo)
    layer = "sha256:" + hashlib.sha256(repo.encode()).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "0" * 64,
                "size": 2,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 1}
            ],
        }
    )
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    ecr.put_image(
        repositoryName=repo,
        imageManifest=manifest,
        imageManifestMediaType="application/vnd.oci.image.manifest.v1+json",
        imageTag="1",
        # moto would hash the layer digests instead of the manifest: always pass it.
        imageDigest=digest,
    )
    return repo, digest


def scan_result(repo: str, digest: str, status: str = "COMPLETE", *, findings=(), enhanced=(),
                next_token: str | None = None, description: str | None = None) -> dict[str, Any]:
    """A whole DescribeImageScanFindings response, bound to the digest form the adapter queries."""
    result: dict[str, Any] = {
        "repositoryName": repo,
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": status, **({"description": description} if description else {})},
        "imageScanFindings": {"imageScanCompletedAt": days_ago(1)},
    }
    if findings:
        result["imageScanFindings"]["findings"] = list(findings)
    if enhanced:
        result["imageScanFindings"]["enhancedFindings"] = list(enhanced)
    if next_token:
        result["nextToken"] = next_token
    return result


def basic(cve: str, severity: str, package: str = "busybox", version: str = "1.36.1-3") -> dict:
    return {
        "name": cve,
        "uri": f"https://nvd.nist.gov/vuln/detail/{cve}",
        "severity": severity,
        "attributes": [
            {"key": "package_name", "value": package},
            {"key": "package_version", "value": version},
            {"key": "CVSS3_SCORE", "value": "7.5"},
        ],
    }


def enhanced(cve: str, severity: str, *, fix: str | None = "YES", age_days: float = 60,
             status: str = "ACTIVE", packages: list[tuple[str, str, str]] | None = None) -> dict:
    """An enhanced (Inspector) finding; ``packages`` are (name, version, fixedInVersion)."""
    packages = packages or [("openssl", "3.0.11", "3.0.13" if fix in ("YES", "PARTIAL") else "NotAvailable")]
    raw = {
        "findingArn": f"arn:aws:inspector2:us-east-1:123456789012:finding/{cve.lower()}",
        "awsAccountId": "123456789012",
        "type": "PACKAGE_VULNERABILITY",
        "severity": severity,
        "status": status,
        "firstObservedAt": days_ago(age_days),
        "lastObservedAt": days_ago(0),
        "packageVulnerabilityDetails": {
            "vulnerabilityId": cve,
            "source": "DEBIAN_BOOKWORM",
            "vulnerablePackages": [
                {"name": n, "version": v, "release": "1~deb12u1", "fixedInVersion": f, "packageManager": "OS"}
                for n, v, f in packages
            ],
        },
    }
    if fix is not None:
        raw["fixAvailable"] = fix
    return raw


def violation_ids(report, baseline: Vulnerabilities) -> list[str]:
    verdict = report.verdict(baseline, now=NOW)
    assert verdict is not None
    return [f.id for f in verdict.violations]


class EcrPageShim:
    """Make moto answer DescribeImageScanFindings page by page.

    moto 5.2 keys an injected result by the request's ``imageId`` alone and
    ignores ``nextToken`` (moto/ecr/models.py, describe_image_scan_findings),
    so a second page request would get the first page again, and botocore's
    paginator would stop with "the same next token was received twice". This
    hook copies the request's ``nextToken`` into the ``imageId`` that moto keys
    on, so moto hands out the queued pages in order, one per token. The
    adapter's request is otherwise unchanged, and it still has to follow the
    tokens itself: ``tokens_sent`` records what it sent.
    """

    def __init__(self, client) -> None:
        self.tokens_sent: list[str | None] = []
        client.meta.events.register("before-call.ecr.DescribeImageScanFindings", self)

    def __call__(self, params, **_: Any) -> None:
        body = json.loads(params["body"])
        self.tokens_sent.append(body.get("nextToken"))
        if "nextToken" in body:
            body["imageId"] = {**body["imageId"], "page": body["nextToken"]}
            params["body"] = json.dumps(body).encode()


class InspectorPageShim:
    """Make moto's Inspector2 ListFindings return a ``nextToken``.

    moto answers ``{"findings": [...]}`` and never a token, but it does key
    each queued page by the request's nextToken. This hook adds the token the
    real service would send (``page-2`` … for all pages but the last), and
    records the requests, so the test sees the adapter follow them.
    """

    def __init__(self, client, pages: int) -> None:
        self.pages = pages
        self.requests: list[dict[str, Any]] = []
        client.meta.events.register("before-call.inspector2.ListFindings", self.before)
        client.meta.events.register("after-call.inspector2.ListFindings", self.after)

    def before(self, params, **_: Any) -> None:
        self.requests.append(json.loads(params["body"]))

    def after(self, parsed, **_: Any) -> None:
        if len(self.requests) < self.pages:
            parsed["nextToken"] = f"page-{len(self.requests) + 1}"

    @property
    def tokens_sent(self) -> list[str | None]:
        return [r.get("nextToken") for r in self.requests]


# -- ECR basic scanning --------------------------------------------------------------------


def test_basic_findings_over_three_pages_are_all_read_and_judged(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    # 237 findings, 100 a page as ECR pages them. The only CRITICAL is on the
    # last page, so a reader that stopped early would miss it.
    page1 = [basic(f"CVE-2026-1{i:04d}", "LOW") for i in range(100)]
    page2 = [basic(f"CVE-2026-2{i:04d}", "MEDIUM") for i in range(95)]
    page2 += [basic(f"CVE-2026-2{i:04d}", "HIGH", "openssl", "3.0.11-1") for i in range(95, 100)]
    page3 = [basic(f"CVE-2026-3{i:04d}", "UNDEFINED") for i in range(36)]
    page3 += [basic("CVE-2026-39999", "CRITICAL", "zlib", "1:1.2.13.dfsg-1")]
    aws.inject_ecr_scan_findings(
        scan_result(repo, digest, findings=page1, next_token="page-2"),
        scan_result(repo, digest, findings=page2, next_token="page-3"),
        scan_result(repo, digest, findings=page3),
    )
    pages = EcrPageShim(reader.ecr)

    report = reader.read(repository=repo, digest=digest, source=ECR)

    assert pages.tokens_sent == [None, "page-2", "page-3"]  # three calls, following the tokens
    assert report.status_outcome.reason == "ScanComplete"
    assert len(report.findings) == 237
    assert report.scanned_at == dt.datetime.fromtimestamp(days_ago(1), dt.UTC)
    critical = next(f for f in report.findings if f.id == "CVE-2026-39999")
    assert (critical.source, critical.severity, critical.package, critical.installed_version) == (
        FindingSource.ECR_BASIC, Severity.CRITICAL, "zlib", "1:1.2.13.dfsg-1"
    )
    # Basic scanning says nothing of fixes or age.
    assert (critical.fix_available, critical.fixed_version, critical.first_observed_at) == (None, "", None)

    verdict = report.verdict(Vulnerabilities(min_severity=Severity.HIGH, ignore=("CVE-2026-20095",)), now=NOW)
    assert [f.id for f in verdict.violations] == [
        "CVE-2026-39999", "CVE-2026-20096", "CVE-2026-20097", "CVE-2026-20098", "CVE-2026-20099",
    ]
    assert verdict.counts.as_dict() == {"CRITICAL": 1, "HIGH": 5, "MEDIUM": 95, "LOW": 100, "UNDEFINED": 36}
    # Unknown fix availability counts as fixable, even with fixAvailableOnly (the default).
    assert Vulnerabilities().fix_available_only


@pytest.mark.parametrize(
    ("case", "baseline", "violations"),
    [
        ("above the baseline", Vulnerabilities(min_severity=Severity.HIGH), ["CVE-2026-0001"]),
        ("below the baseline", Vulnerabilities(min_severity=Severity.CRITICAL), []),
        ("ignored", Vulnerabilities(min_severity=Severity.HIGH, ignore=("CVE-2026-0001",)), []),
    ],
)
def test_basic_findings_against_the_baseline(aws, reader, case, baseline, violations):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    aws.inject_ecr_scan_findings(
        scan_result(repo, digest, findings=[basic("CVE-2026-0001", "HIGH"), basic("CVE-2026-0002", "MEDIUM")])
    )
    report = reader.read(repository=repo, digest=digest, source=ECR)
    assert violation_ids(report, baseline) == violations, case


# -- ECR enhanced scanning -------------------------------------------------------------------

# One image's enhanced findings: what each one tests is in its ID.
ENHANCED = [
    enhanced("CVE-2026-0001", "CRITICAL", fix="YES"),  # breaks any HIGH baseline
    enhanced("CVE-2026-0002", "HIGH", fix="NO"),  # no fix: dropped by fixAvailableOnly
    enhanced("CVE-2026-0003", "HIGH", fix="PARTIAL",  # some packages fixed: counts as fixable
             packages=[("openssl", "3.0.11", "3.0.13"), ("libssl3", "3.0.11", "3.0.13")]),
    enhanced("CVE-2026-0004", "HIGH", fix="YES", age_days=2),  # too recent for approveAfterDays 7
    enhanced("CVE-2026-0005", "MEDIUM", fix="YES"),  # below HIGH
    enhanced("CVE-2026-0006", "UNTRIAGED", fix="YES"),  # unranked: never breaks
    enhanced("CVE-2026-0007", "CRITICAL", fix="YES", status="SUPPRESSED"),  # accepted in Inspector
    enhanced("CVE-2026-0008", "CRITICAL", fix="YES", status="CLOSED"),  # fixed
    enhanced("CVE-2026-0009", "HIGH", fix=None),  # older finding without fixAvailable: fixedInVersion tells
]

BASELINES = [
    ("the defaults", Vulnerabilities(),
     ["CVE-2026-0001", "CVE-2026-0003", "CVE-2026-0004", "CVE-2026-0009"]),
    ("approveAfterDays defers the recent one", Vulnerabilities(approve_after_days=7),
     ["CVE-2026-0001", "CVE-2026-0003", "CVE-2026-0009"]),
    ("fixes or not", Vulnerabilities(fix_available_only=False),
     ["CVE-2026-0001", "CVE-2026-0002", "CVE-2026-0003", "CVE-2026-0004", "CVE-2026-0009"]),
    ("critical only", Vulnerabilities(min_severity=Severity.CRITICAL), ["CVE-2026-0001"]),
    ("down to medium", Vulnerabilities(min_severity=Severity.MEDIUM),
     ["CVE-2026-0001", "CVE-2026-0003", "CVE-2026-0004", "CVE-2026-0009", "CVE-2026-0005"]),
    ("all ignored", Vulnerabilities(ignore=("CVE-2026-0001", "CVE-2026-0003", "CVE-2026-0004", "CVE-2026-0009")), []),
]


def test_enhanced_findings_over_two_pages_against_each_baseline(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    filler = [enhanced(f"CVE-2025-{i:05d}", "LOW") for i in range(120)]
    aws.inject_ecr_scan_findings(
        scan_result(repo, digest, "ACTIVE", enhanced=filler, next_token="page-2"),
        scan_result(repo, digest, "ACTIVE", enhanced=ENHANCED),
    )
    pages = EcrPageShim(reader.ecr)

    report = reader.read(repository=repo, digest=digest, source=ECR)

    assert pages.tokens_sent == [None, "page-2"]
    assert report.status_outcome.reason == "ScanComplete"
    assert len(report.findings) == 120 + len(ENHANCED) - 2  # SUPPRESSED and CLOSED are not read
    partial = next(f for f in report.findings if f.id == "CVE-2026-0003")
    assert partial.source is FindingSource.ECR_ENHANCED
    assert (partial.package, partial.installed_version, partial.fixed_version, partial.fix_available) == (
        "openssl, libssl3", "3.0.11-1~deb12u1", "3.0.13", True
    )
    assert partial.first_observed_at == dt.datetime.fromtimestamp(days_ago(60), dt.UTC)
    for case, baseline, expected in BASELINES:
        assert violation_ids(report, baseline) == expected, case


# -- Inspector2 --------------------------------------------------------------------------------


def test_inspector_findings_are_paginated_and_filtered_to_the_image(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    # The scan status comes from ECR (enhanced scanning reports ACTIVE).
    aws.inject_ecr_scan_findings(scan_result(repo, digest, "ACTIVE"))
    filler = [enhanced(f"CVE-2025-{i:05d}", "LOW") for i in range(100)]
    aws.inject_inspector2_findings(filler, ENHANCED)
    pages = InspectorPageShim(reader.inspector2, pages=2)

    report = reader.read(repository=repo, digest=digest, source=INSPECTOR)

    assert pages.tokens_sent == [None, "page-2"]
    criteria = pages.requests[0]["filterCriteria"]
    assert criteria["ecrImageHash"] == [{"comparison": "EQUALS", "value": digest}]
    assert criteria["ecrImageRepositoryName"] == [{"comparison": "EQUALS", "value": repo}]
    assert criteria["findingStatus"] == [{"comparison": "EQUALS", "value": "ACTIVE"}]
    assert report.source is INSPECTOR
    assert len(report.findings) == 100 + len(ENHANCED) - 2
    assert {f.source for f in report.findings} == {FindingSource.INSPECTOR}
    for case, baseline, expected in BASELINES:
        assert violation_ids(report, baseline) == expected, case


def test_inspector_is_not_asked_while_the_scan_is_pending(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    aws.inject_ecr_scan_findings(scan_result(repo, digest, "PENDING"))
    pages = InspectorPageShim(reader.inspector2, pages=1)

    report = reader.read(repository=repo, digest=digest, source=INSPECTOR)

    assert report.status_outcome.reason == "ScanInProgress"
    assert report.status_outcome.retry_after == dt.timedelta(minutes=1)
    assert pages.requests == []
    assert report.verdict(Vulnerabilities(), now=NOW) is None


# -- scan statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "usable"),
    [
        ("COMPLETE", "ScanComplete", True),
        ("ACTIVE", "ScanComplete", True),
        ("IN_PROGRESS", "ScanInProgress", False),
        ("PENDING", "ScanInProgress", False),
        ("FAILED", "ScanFailed", False),
        ("UNSUPPORTED_IMAGE", "ScanUnsupported", False),
        ("SCAN_ELIGIBILITY_EXPIRED", "ScanEligibilityExpired", False),
        ("FINDINGS_UNAVAILABLE", "FindingsUnavailable", False),
        ("LIMIT_EXCEEDED", "ScanLimitExceeded", False),
        ("IMAGE_ARCHIVED", "ScanImageArchived", False),
        ("IMAGE_SIZE_EXCEEDED", "ScanImageTooLarge", False),
    ],
)
def test_each_injected_scan_status_has_its_outcome(aws, reader, status, reason, usable):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    # Stale or partial findings come with some statuses; they must not pass for a result.
    aws.inject_ecr_scan_findings(
        scan_result(repo, digest, status, findings=[basic("CVE-2026-0001", "CRITICAL")], description="from ECR")
    )

    report = reader.read(repository=repo, digest=digest, source=ECR)

    assert report.status_outcome.reason == reason
    assert report.status_outcome.message.endswith(": from ECR")
    assert report.findings == ((report.findings[0],) if usable else ())
    assert (report.verdict(Vulnerabilities(), now=NOW) is not None) is usable


def test_an_image_never_scanned_is_no_scan_not_clean(aws, reader):
    repo, digest = push_image(aws)  # moto answers ScanNotFoundException, as ECR does

    report = reader.read(repository=repo, digest=digest, source=ECR)

    assert report.status_outcome.reason == "NoScan"
    assert (report.findings, report.scanned_at) == ((), None)
    assert report.verdict(Vulnerabilities(), now=NOW) is None
    # The same holds when the policy reads Inspector: ECR knows there is no scan.
    assert reader.read(repository=repo, digest=digest, source=INSPECTOR).status_outcome.reason == "NoScan"


def test_motos_canned_scan_result_is_read_as_complete(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})

    report = reader.read(repository=repo, digest=digest, source=ECR)

    # moto's canned answer: one HIGH finding in package moto_fake.
    assert report.status_outcome.reason == "ScanComplete"
    assert [(f.id, f.severity, f.package) for f in report.findings] == [
        ("CVE-9999-9999", Severity.HIGH, "moto_fake")
    ]


def test_start_scan_then_a_second_scan_the_same_day_is_limit_exceeded(aws, reader):
    repo, digest = push_image(aws)
    sends = []
    reader.ecr_scanner.meta.events.register("before-send.ecr.StartImageScan", lambda **kw: sends.append(1))

    first = reader.start_scan(repository=repo, digest=digest)
    second = reader.start_scan(repository=repo, digest=digest)

    assert first.reason == "ScanInProgress"
    assert second.reason == "ScanLimitExceeded"
    assert second.retry_after == dt.timedelta(hours=24)
    # LimitExceededException is a throttling code to botocore; a daily quota is not retried.
    assert len(sends) == 2


def test_a_missing_image_or_repository_is_not_found(aws, reader):
    repo, _ = push_image(aws)
    with pytest.raises(NotFoundError) as err:
        reader.read(repository=repo, digest="sha256:" + "f" * 64, source=ECR)
    assert err.value.reason == "ImageNotFound"
    with pytest.raises(NotFoundError) as err:
        reader.read(repository="no-such-repo", digest="sha256:" + "f" * 64, source=ECR)
    assert err.value.reason == "RepositoryNotFound"
    assert "'no-such-repo'" in str(err.value)


# -- failures moto cannot produce: botocore's Stubber on the adapter's real client ------------


@pytest.mark.parametrize(
    ("service", "source", "code", "http_status", "error_type", "reason", "advice"),
    [
        ("ecr", ECR, "AccessDeniedException", 400, ConfigurationError, "AwsAccessDenied",
         "allow ecr:DescribeImageScanFindings to the operator's IAM role"),
        ("ecr", ECR, "UnrecognizedClientException", 400, ConfigurationError, "AwsCredentialsInvalid",
         "EKS Pod Identity or IRSA"),
        ("ecr", ECR, "ExpiredTokenException", 400, ConfigurationError, "AwsCredentialsExpired",
         "web identity token is mounted and refreshed"),
        ("ecr", ECR, "ServerException", 500, TransientError, "AwsUnavailable", "failed on the AWS side"),
        ("ecr", ECR, "InvalidParameterException", 400, ConfigurationError, "AwsRequestRejected",
         "rejected the request"),
        ("inspector2", INSPECTOR, "AccessDeniedException", 403, ConfigurationError, "AwsAccessDenied",
         "allow inspector2:ListFindings"),
        ("inspector2", INSPECTOR, "InternalServerException", 500, TransientError, "AwsUnavailable",
         "failed on the AWS side"),
    ],
)
def test_aws_errors_are_classified_with_an_actionable_message_and_no_secret(
    aws, service, source, code, http_status, error_type, reason, advice
):
    reader = make_reader(aws, aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key=SECRET,
                         aws_session_token="FwoGZXIvYXdzSESSIONTOKEN")
    repo, digest = "app", "sha256:" + "a" * 64
    ecr_stub = Stubber(reader.ecr)
    inspector_stub = Stubber(reader.inspector2)
    # AWS's message may quote a principal or a policy; none of it may leak.
    leaky = f"User: arn:aws:sts::123456789012:assumed-role/x is not authorized; key {SECRET}"
    if service == "ecr":
        ecr_stub.add_client_error("describe_image_scan_findings", code, leaky, http_status, response_meta={"RequestId": "req-1"})
    else:
        ecr_stub.add_response("describe_image_scan_findings", {"imageScanStatus": {"status": "ACTIVE"}})
        inspector_stub.add_client_error("list_findings", code, leaky, http_status, response_meta={"RequestId": "req-1"})

    with ecr_stub, inspector_stub, pytest.raises(error_type) as err:
        reader.read(repository=repo, digest=digest, source=source)

    assert err.value.reason == reason
    message = str(err.value)
    assert advice in message and code in message and "req-1" in message
    for secret in (SECRET, "SESSIONTOKEN", "AKIAIOSFODNN7EXAMPLE", "assumed-role", "not authorized"):
        assert secret not in message and secret not in repr(err.value)


def test_no_credentials_at_all_is_a_configuration_error(aws):
    # An empty credential chain (no Pod Identity, no IRSA, nothing).
    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver(providers=[]))
    reader = FindingsReader(session=boto3.Session(botocore_session=core), region=aws.region,
                            endpoint_url=aws.endpoint_url)
    with pytest.raises(ConfigurationError) as err:
        reader.read(repository="app", digest="sha256:" + "a" * 64, source=ECR)
    assert err.value.reason == "AwsCredentialsInvalid"
    assert "Pod Identity or IRSA" in str(err.value)


# -- throttling: botocore's standard retry mode --------------------------------------------------


class Throttle:
    """Answer the first ``times`` HTTP sends with a real 400 ThrottlingException, then let
    requests through to moto. It hooks ``before-send``, inside botocore's retry loop."""

    def __init__(self, client, operation: str, times: int) -> None:
        self.times = times
        self.sends = 0
        client.meta.events.register(f"before-send.ecr.{operation}", self)

    def __call__(self, request, **_: Any) -> AWSResponse | None:
        self.sends += 1
        if self.sends > self.times:
            return None
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        response = AWSResponse(request.url, 400, {"content-type": "application/x-amz-json-1.1"}, None)
        response._content = body  # the raw stream is never read when content is set
        return response


def test_throttling_is_retried_by_the_standard_mode_then_succeeds(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    throttle = Throttle(reader.ecr, "DescribeImageScanFindings", times=1)

    report = reader.read(repository=repo, digest=digest, source=ECR)

    assert throttle.sends == 2  # throttled once, retried once, answered by moto
    assert report.status_outcome.reason == "ScanComplete"


def test_throttling_that_outlasts_the_retries_is_transient(aws):
    reader = make_reader(aws, max_attempts=2)
    repo, digest = push_image(aws)
    throttle = Throttle(reader.ecr, "DescribeImageScanFindings", times=10)

    with pytest.raises(TransientError) as err:
        reader.read(repository=repo, digest=digest, source=ECR)

    assert throttle.sends == 2  # max_attempts counts the first attempt
    assert err.value.reason == "AwsThrottled"
    assert "ThrottlingException" in str(err.value)


# -- asyncio ----------------------------------------------------------------------------------------


def test_the_async_wrapper_reads_in_a_worker_thread(aws, reader):
    repo, digest = push_image(aws)
    aws.client("ecr").start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    threads = []
    reader.ecr.meta.events.register(
        "before-call.ecr.DescribeImageScanFindings", lambda **_: threads.append(threading.get_ident())
    )

    report = asyncio.run(reader.read_async(repository=repo, digest=digest, source=ECR))

    assert report.status_outcome.reason == "ScanComplete"
    assert threads and threading.get_ident() not in threads  # the event loop never blocked on boto3
