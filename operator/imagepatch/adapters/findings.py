"""Read one ECR image's vulnerability findings, from ECR scanning or Inspector2.

Given a repository and a digest, :class:`FindingsReader` returns a
:class:`~imagepatch.core.scans.ScanReport`: the meaning of the image's scan
status (decided by ``core/scans.py``) and its findings as
:class:`~imagepatch.core.baseline.Finding` objects, which ``core/baseline.py``
then judges. Neighbours: the reconciler calls it (through
:meth:`FindingsReader.read_async`, since the operator is asyncio); nothing
here decides anything about a policy.

* ``source: ecr``: ``DescribeImageScanFindings``. Basic scanning answers in
  ``findings[]`` (no fix information, no first-seen time); enhanced scanning
  answers in ``enhancedFindings[]`` of the same call.
* ``source: inspector``: Inspector2 ``ListFindings`` filtered on the image's
  repository and digest. Inspector2 has no scan status of its own that moto or
  a narrow IAM policy offers, so the status still comes from one
  ``DescribeImageScanFindings`` page, which reports enhanced scanning's
  status (ACTIVE, PENDING, …). This assumes the registry uses enhanced
  scanning, as Inspector2 findings for ECR images only exist then.

Every call follows ``nextToken`` to the end through botocore's paginators:
ECR ignores ``maxResults`` for enhanced findings (boto/boto3#3449), so a page
size is only a hint. Throttling and 5xx are retried by botocore's *standard*
retry mode (jittered exponential backoff, capped attempts); whatever is left
is classified once, by ``adapters/aws.py``'s classifier with ECR's own codes
(a missing repository or image) added here, into the errors of
``adapters/errors.py``. Error messages are built from the operation, the error
code and the repository, never from AWS's message text or anything of the
credentials.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from imagepatch.adapters.aws import (
    AWS_ACCESS_DENIED,
    AWS_CREDENTIALS_EXPIRED,
    AWS_CREDENTIALS_INVALID,
    AWS_REQUEST_REJECTED,
    AWS_THROTTLED,
    AWS_UNAVAILABLE,
    DEFAULT_MAX_ATTEMPTS,
    ErrorRules,
    classified,
    client_config,
    error_code,
)
from imagepatch.adapters.errors import IMAGE_NOT_FOUND, REPOSITORY_NOT_FOUND, NotFoundError
from imagepatch.core.baseline import Finding, FindingSource, parse_severity
from imagepatch.core.scans import ScanOutcome, ScanReport, scan_outcome
from imagepatch.model.policy import VulnerabilitySource

__all__ = [
    "AWS_ACCESS_DENIED",
    "AWS_CREDENTIALS_EXPIRED",
    "AWS_CREDENTIALS_INVALID",
    "AWS_REQUEST_REJECTED",
    "AWS_THROTTLED",
    "AWS_UNAVAILABLE",
    "DEFAULT_MAX_ATTEMPTS",
    "FindingsReader",
    "ScanReport",
    "finding_from_basic",
    "finding_from_enhanced",
]

log = logging.getLogger(__name__)

# The AWS_* reasons and DEFAULT_MAX_ATTEMPTS (attempts in all, the first
# included) are adapters/aws.py's, exported here too as they always were.

# StartImageScan answers LimitExceededException when the image was scanned in
# the last 24 hours, and botocore's standard mode retries that code as
# throttling: retrying a daily quota only sleeps. One attempt, no retries.
_NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
# Page sizes are the APIs' maxima, to make as few calls as possible on big
# images. ECR may ignore it (enhanced findings) and Inspector2 may return
# fewer; the paginator follows nextToken either way.
_ECR_PAGE_SIZE = 1000
_INSPECTOR_PAGE_SIZE = 100

# Inspector reports "NotAvailable" as the fixed version of an unfixed package.
_NO_FIX = {"", "NotAvailable"}


class FindingsReader:
    """Reads scan findings for ECR images, in its region or the image's own.

    ``session`` defaults to a new ``boto3.Session`` (the default credential
    chain: EKS Pod Identity or IRSA in a cluster). ``endpoint_url`` points the
    clients elsewhere (moto in tests); boto3 also honours ``AWS_ENDPOINT_URL``.
    ``max_attempts`` counts every attempt, the first included. Clients are
    made on first use and shared: boto3 clients are thread-safe, sessions are
    not, so making them is serialised.

    An image in another region's registry (``<acct>.dkr.ecr.<region>…``) is
    read there: ``region=`` on ``read``/``read_async``/``start_scan`` picks a
    reader for that region (``for_region``), made once and kept, sharing the
    session. ``registry_id`` names another account's registry.
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._session = session
        self._region = region
        self._endpoint_url = endpoint_url
        self._max_attempts = max_attempts
        self._config = client_config(max_attempts)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._regional: dict[str, FindingsReader] = {}

    def for_region(self, region: str | None) -> FindingsReader:
        """The reader for ``region``: this one for None or its own region."""
        if region is None or region == self._region:
            return self
        with self._lock:
            reader = self._regional.get(region)
            if reader is None:
                if self._session is None:
                    self._session = boto3.Session()
                reader = FindingsReader(
                    region=region,
                    endpoint_url=self._endpoint_url,
                    session=self._session,
                    max_attempts=self._max_attempts,
                )
                # One session, so one lock around making its clients.
                reader._lock = self._lock
                self._regional[region] = reader
            return reader

    # -- clients -------------------------------------------------------------------

    def _client(
        self,
        service: Literal["ecr", "inspector2"],
        *,
        key: str | None = None,
        config: Config | None = None,
    ) -> Any:
        key = key or service
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                with _classified(service, "CreateClient", repository=None, region=self._region):
                    if self._session is None:
                        self._session = boto3.Session()
                    client = self._session.client(
                        service,
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=config or self._config,
                    )
                self._clients[key] = client
            return client

    @property
    def ecr(self) -> Any:
        """The ECR client (exposed so tests can attach a Stubber or event hooks)."""
        return self._client("ecr")

    @property
    def inspector2(self) -> Any:
        """The Inspector2 client."""
        return self._client("inspector2")

    @property
    def ecr_scanner(self) -> Any:
        """The ECR client for StartImageScan, which must not retry (see :meth:`start_scan`)."""
        return self._client("ecr", key="ecr-scanner", config=self._config.merge(_NO_RETRY))

    # -- reading -------------------------------------------------------------------

    def read(
        self,
        *,
        repository: str,
        digest: str,
        source: VulnerabilitySource,
        registry_id: str | None = None,
        region: str | None = None,
    ) -> ScanReport:
        """Read the scan of ``repository@digest`` from ``source`` (ecr or inspector).

        Raises :class:`NotFoundError` for a missing repository or image,
        :class:`ConfigurationError` for credentials, permissions or a bad
        request, and :class:`TransientError` once throttling or AWS errors
        outlast the retries. A missing scan is not an error: it is a report
        whose outcome is ``NoScan``. ``region`` is the registry's (default: the reader's).
        """
        reader = self.for_region(region)
        if source is VulnerabilitySource.ECR:
            return reader.read_ecr(repository=repository, digest=digest, registry_id=registry_id)
        if source is VulnerabilitySource.INSPECTOR:
            return reader.read_inspector(
                repository=repository, digest=digest, registry_id=registry_id
            )
        raise ValueError(f"vulnerabilities.source {source.value!r} reads no findings")

    async def read_async(
        self,
        *,
        repository: str,
        digest: str,
        source: VulnerabilitySource,
        registry_id: str | None = None,
        region: str | None = None,
    ) -> ScanReport:
        """:meth:`read` in a worker thread, so boto3's blocking I/O (and its
        retry sleeps) never stall the operator's event loop."""
        return await asyncio.to_thread(
            self.read,
            repository=repository,
            digest=digest,
            source=source,
            registry_id=registry_id,
            region=region,
        )

    def read_ecr(
        self, *, repository: str, digest: str, registry_id: str | None = None
    ) -> ScanReport:
        """Basic and enhanced findings through ``DescribeImageScanFindings``, all pages."""
        params = _ecr_params(repository, digest, registry_id)
        paginator = self.ecr.get_paginator("describe_image_scan_findings")
        findings: list[Finding] = []
        outcome: ScanOutcome | None = None
        scanned_at: dt.datetime | None = None
        pages = 0
        with _classified("ecr", "DescribeImageScanFindings", repository, self._region):
            try:
                for page in paginator.paginate(
                    **params, PaginationConfig={"PageSize": _ECR_PAGE_SIZE}
                ):
                    pages += 1
                    if outcome is None:
                        # The status is the same on every page; the first decides.
                        status = page.get("imageScanStatus") or {}
                        outcome = scan_outcome(
                            status.get("status"), description=status.get("description")
                        )
                        scanned_at = (page.get("imageScanFindings") or {}).get(
                            "imageScanCompletedAt"
                        )
                        if not outcome.findings_usable:
                            break
                    findings.extend(_findings_of_page(page))
            except ClientError as exc:
                if error_code(exc) != "ScanNotFoundException":
                    raise
                return _report(repository, digest, VulnerabilitySource.ECR, None, (), None)
        log.debug("ecr %s@%s: %d findings in %d pages", repository, digest, len(findings), pages)
        return _report(
            repository, digest, VulnerabilitySource.ECR, outcome, tuple(findings), scanned_at
        )

    def read_inspector(
        self, *, repository: str, digest: str, registry_id: str | None = None
    ) -> ScanReport:
        """Inspector2 findings for the image, after ECR says its scan is usable."""
        outcome, scanned_at = self._ecr_scan_status(repository, digest, registry_id)
        if not outcome.findings_usable:
            return _report(
                repository, digest, VulnerabilitySource.INSPECTOR, outcome, (), scanned_at
            )
        criteria: dict[str, list[dict[str, str]]] = {
            "ecrImageRepositoryName": [{"comparison": "EQUALS", "value": repository}],
            "ecrImageHash": [{"comparison": "EQUALS", "value": digest}],
            # Suppressed findings were accepted by a person in Inspector;
            # closed ones are fixed.
            "findingStatus": [{"comparison": "EQUALS", "value": "ACTIVE"}],
            "findingType": [{"comparison": "EQUALS", "value": "PACKAGE_VULNERABILITY"}],
        }
        if registry_id:
            criteria["ecrImageRegistry"] = [{"comparison": "EQUALS", "value": registry_id}]
        paginator = self.inspector2.get_paginator("list_findings")
        findings: list[Finding] = []
        pages = 0
        with _classified("inspector2", "ListFindings", repository, self._region):
            for page in paginator.paginate(
                filterCriteria=criteria, PaginationConfig={"PageSize": _INSPECTOR_PAGE_SIZE}
            ):
                pages += 1
                findings.extend(_enhanced(page.get("findings"), FindingSource.INSPECTOR))
        log.debug(
            "inspector2 %s@%s: %d findings in %d pages", repository, digest, len(findings), pages
        )
        return _report(
            repository, digest, VulnerabilitySource.INSPECTOR, outcome, tuple(findings), scanned_at
        )

    def start_scan(
        self, *, repository: str, digest: str, registry_id: str | None = None
    ) -> ScanOutcome:
        """Start a basic scan of an image that has none (outcome ``NoScan``).

        Returns the new outcome: ``ScanInProgress`` on success,
        ``ScanLimitExceeded`` when the image was already scanned in the last
        24 hours, ``ScanUnsupported`` for an image ECR cannot scan. Needs
        ``ecr:StartImageScan``; whether to call it is the policy's business.
        """
        params = _ecr_params(repository, digest, registry_id)
        with _classified("ecr", "StartImageScan", repository, self._region):
            try:
                response = self.ecr_scanner.start_image_scan(**params)
            except ClientError as exc:
                match error_code(exc):
                    case "LimitExceededException":
                        return scan_outcome("LIMIT_EXCEEDED")
                    case "UnsupportedImageTypeException":
                        return scan_outcome("UNSUPPORTED_IMAGE")
                raise
        status = response.get("imageScanStatus") or {}
        return scan_outcome(status.get("status"), description=status.get("description"))

    def _ecr_scan_status(
        self, repository: str, digest: str, registry_id: str | None
    ) -> tuple[ScanOutcome, dt.datetime | None]:
        """The image's scan outcome and completion time, from one ECR page."""
        params = _ecr_params(repository, digest, registry_id)
        with _classified("ecr", "DescribeImageScanFindings", repository, self._region):
            try:
                # maxResults=1: only the status is wanted (ECR may ignore it).
                page = self.ecr.describe_image_scan_findings(**params, maxResults=1)
            except ClientError as exc:
                if error_code(exc) != "ScanNotFoundException":
                    raise
                return scan_outcome(None), None
        status = page.get("imageScanStatus") or {}
        scanned_at = (page.get("imageScanFindings") or {}).get("imageScanCompletedAt")
        return scan_outcome(status.get("status"), description=status.get("description")), scanned_at


# -- mapping AWS shapes to Findings ---------------------------------------------------


def _ecr_params(repository: str, digest: str, registry_id: str | None) -> dict[str, Any]:
    # Always by digest: a tag can move between the scan and the read.
    params: dict[str, Any] = {"repositoryName": repository, "imageId": {"imageDigest": digest}}
    if registry_id:
        params["registryId"] = registry_id
    return params


def _report(
    repository: str,
    digest: str,
    source: VulnerabilitySource,
    outcome: ScanOutcome | None,
    findings: tuple[Finding, ...],
    scanned_at: dt.datetime | None,
) -> ScanReport:
    outcome = outcome or scan_outcome(None)
    return ScanReport(
        repository=repository,
        digest=digest,
        source=source,
        status_outcome=outcome,
        findings=findings if outcome.findings_usable else (),
        scanned_at=scanned_at,
    )


def _findings_of_page(page: Mapping[str, Any]) -> Iterator[Finding]:
    scan = page.get("imageScanFindings") or {}
    for raw in scan.get("findings") or ():
        yield finding_from_basic(raw)
    yield from _enhanced(scan.get("enhancedFindings"), FindingSource.ECR_ENHANCED)


def _enhanced(raws: Iterable[Mapping[str, Any]] | None, source: FindingSource) -> Iterator[Finding]:
    for raw in raws or ():
        # SUPPRESSED (a person accepted it in Inspector) and CLOSED (fixed)
        # findings are history, not current risk.
        if raw.get("status", "ACTIVE") != "ACTIVE":
            continue
        yield finding_from_enhanced(raw, source=source)


def finding_from_basic(raw: Mapping[str, Any]) -> Finding:
    """A ``findings[]`` entry of basic scanning.

    Basic scanning says nothing of fixes or of when a finding was first seen,
    so both stay unknown (None); ``core/baseline.py`` says how unknowns count.
    """
    attributes = {a.get("key"): a.get("value") or "" for a in raw.get("attributes") or ()}
    return Finding(
        id=raw.get("name") or "",
        severity=parse_severity(raw.get("severity")),
        source=FindingSource.ECR_BASIC,
        package=attributes.get("package_name", ""),
        installed_version=attributes.get("package_version", ""),
        fix_available=None,
        first_observed_at=None,
    )


def finding_from_enhanced(raw: Mapping[str, Any], *, source: FindingSource) -> Finding:
    """An ``enhancedFindings[]`` entry of ECR, or a finding of Inspector2 (same shape)."""
    details = raw.get("packageVulnerabilityDetails") or {}
    packages = details.get("vulnerablePackages") or ()
    fixed = [p.get("fixedInVersion") or "" for p in packages]
    fixed = [v for v in fixed if v not in _NO_FIX]
    match raw.get("fixAvailable"):
        case "YES" | "PARTIAL":  # PARTIAL: some of the packages have a fix
            fix_available: bool | None = True
        case "NO":
            fix_available = False
        case _:  # older findings lack the field: a fixed version tells
            fix_available = True if fixed else None
    return Finding(
        id=details.get("vulnerabilityId") or raw.get("title") or raw.get("findingArn") or "",
        severity=parse_severity(raw.get("severity")),
        source=source,
        package=_join(p.get("name") for p in packages),
        installed_version=_join(_version(p) for p in packages),
        fixed_version=_join(fixed),
        fix_available=fix_available,
        first_observed_at=raw.get("firstObservedAt"),
    )


def _version(package: Mapping[str, Any]) -> str:
    # Debian-style epoch:version-release, as the package manager shows it.
    version = package.get("version") or ""
    if release := package.get("release"):
        version = f"{version}-{release}"
    if epoch := package.get("epoch"):
        version = f"{epoch}:{version}"
    return version


def _join(values: Iterable[str | None]) -> str:
    # One finding often covers several binary packages of one source package
    # (openssl, libssl3): keep them all, once each, in order.
    return ", ".join(dict.fromkeys(v for v in values if v))


# -- error classification ------------------------------------------------------------

# What ECR and Inspector2 add to adapters/aws.py's classification.
_RULES = ErrorRules(
    service_codes={
        "RepositoryNotFoundException": lambda f: NotFoundError(
            f"ECR {f.where} does not exist in {f.region or 'this region'}",
            reason=REPOSITORY_NOT_FOUND,
        ),
        "ImageNotFoundException": lambda f: NotFoundError(
            f"the image is not in ECR {f.where}", reason=IMAGE_NOT_FOUND
        ),
    },
    rejected_codes=frozenset({"ValidationException", "InvalidParameterException"}),
    region_hint="set AWS_REGION or the region of the ECR registry",
    otherwise="failed",
    repeated_page="{action} for {where} returned a repeated page token",
)


def _classified(
    service: str, operation: str, repository: str | None, region: str | None
) -> AbstractContextManager[None]:
    """botocore's exceptions as adapter errors (see adapters/aws.py), about ``repository``."""
    where = f"repository {repository!r}" if repository else "this account"
    return classified(f"{service}:{operation}", where, region, _RULES)
