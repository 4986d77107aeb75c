"""Export detection's results to AWS Security Hub as ASFF findings.

:class:`SecurityHubExporter` keeps one finding per non-compliant workload,
container and image repository in the account's Security Hub (what each
finding says, the Id scheme and the plan are ``core/securityhub.py``'s; their
ASFF layout, fingerprint and batches are here): created when
detection first sees it break its policy, updated when its state changes,
archived when it complies again or, after ``gone_after``, is no longer
evaluated. Neighbours: detection calls :meth:`SecurityHubExporter.export` after each policy's pass;
nothing here decides anything about compliance.

* **What was sent** is kept in memory (``previous``: Id → ``Exported``), so
  an unchanged finding is not sent again. After a restart,
  :meth:`~SecurityHubExporter.load_previous` (called by the first export
  anyway) rebuilds it from Security Hub itself with ``GetFindings``, filtered
  to this account's default product, ``GeneratorId`` prefix ``imagepatch/``
  and ``ProductFields`` ``imagepatch/Cluster``, and filtered again here,
  since a filter is a request (and moto ignores them). Ids are stable, and
  ``BatchImportFindings`` upserts by Id, so even a lost memory re-sends, it
  never duplicates.
* **Batches** of at most 100 findings and 6 MB (Security Hub's limits).
  A finding Security Hub rejects (``FailedFindings``) is logged with its Id
  and error code, counted, and left out of ``previous``, so the next export
  sends it again. A batch that fails as a whole stops the export: what went
  before it is remembered, the rest is sent next time, and the classified
  error is raised.
* **Throttling and 5xx** are retried by botocore's standard retry mode
  (jittered exponential backoff, ``max_attempts`` in all); Security Hub allows
  10 requests a second, 30 in bursts, per account and region.
* **Workflow.** ``BatchImportFindings`` cannot change the workflow of an
  existing finding, so archived findings are then set RESOLVED with
  ``BatchUpdateFindings`` (needs ``securityhub:BatchUpdateFindings``).
  That step is best effort: a failure is logged and counted, never retried,
  and never fails the export; the archive itself is what matters.
* **Errors** are classified once, by ``adapters/aws.py``'s classifier, in
  the wording of ``adapters/findings.py``: credentials and permissions are
  configuration, throttling and outages transient. A hub that is not enabled
  is ``SecurityHubNotEnabled``. Messages never quote AWS's text.

boto3 blocks, so every call runs in a worker thread; exports are serialised.
IAM: ``securityhub:BatchImportFindings``, ``securityhub:GetFindings`` and
``securityhub:BatchUpdateFindings`` (STS ``GetCallerIdentity``, asked when no
account id is given, needs no permission).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import boto3

from imagepatch.adapters.aws import (
    DEFAULT_MAX_ATTEMPTS,
    ClientFailure,
    ErrorRules,
    classified,
    client_config,
)
from imagepatch.adapters.errors import AdapterError, ConfigurationError
from imagepatch.core.reasons import (
    SECURITY_HUB_NOT_ENABLED,
)
from imagepatch.core.securityhub import (
    ACTIVE,
    DEFAULT_GONE_AFTER,
    DEFAULT_REFRESH,
    KIND,
    MAX_ID,
    PREFIX,
    ContainerRecord,
    Finding,
    FindingContext,
    FindingPlan,
    WorkloadLike,
    decide_finding,
    kind_path,
    plan_findings,
)
from imagepatch.model.times import format_milli_time as _time
from imagepatch.model.times import parse_time
from imagepatch.model.times import utc as _utc

__all__ = [
    "ASFF",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_FINDINGS",
    "MAX_FINDING_BYTES",
    "SECURITY_HUB_NOT_ENABLED",
    "AsffFormat",
    "ExportResult",
    "Exported",
    "SecurityHubExporter",
    "batches",
    "fingerprint",
    "plan_asff_findings",
    "to_finding",
]

log = logging.getLogger("imagepatch.securityhub")


# -- ASFF: the wire format ---------------------------------------------------------------------
#
# Limits (Security Hub's BatchImportFindings guidelines): at most 100 findings
# and 6 MB a call, at most 240 KB a finding; Title 256 and Description 1024
# characters. Severity and Types go both at the top level (required when a
# finding is created) and in FindingProviderFields (how a provider updates them
# afterwards; Security Hub keeps a customer's own changes).

SCHEMA_VERSION = "2018-10-08"
PRODUCT_NAME = "imagepatch"

MAX_BATCH_FINDINGS = 100
MAX_FINDING_BYTES = 240 * 1024
# 6 MB a call, less room for the request's envelope.
MAX_BATCH_BYTES = 6 * 1000 * 1000 - 64 * 1024
MAX_TITLE = 256
MAX_DESCRIPTION = 1024

# ProductFields keys (all under imagepatch/).
F_CLUSTER = PREFIX + "Cluster"
F_NAMESPACE = PREFIX + "Namespace"
F_WORKLOAD = PREFIX + "Workload"
F_KIND = PREFIX + "Kind"
F_CONTAINER = PREFIX + "Container"
F_REPOSITORY = PREFIX + "Repository"
F_IMAGE = PREFIX + "Image"
F_DIGEST = PREFIX + "Digest"
F_POLICY = PREFIX + "Policy"
F_STATE = PREFIX + "State"
F_REASON = PREFIX + "Reason"
F_FINGERPRINT = PREFIX + "Fingerprint"

# Not part of the fingerprint: they change on every send.
_VOLATILE = ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt")


def fingerprint(finding: Mapping[str, Any]) -> str:
    """A hash of everything in the finding but its timestamps and the fingerprint itself."""
    material = {k: v for k, v in finding.items() if k not in _VOLATILE}
    fields = dict(material.get("ProductFields") or {})
    fields.pop(F_FINGERPRINT, None)
    material["ProductFields"] = fields
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def asff(finding: Finding, context: FindingContext) -> dict[str, Any]:
    """``finding`` as an ASFF document, its fingerprint in ``ProductFields``."""
    subject = finding.subject
    container_details = {
        "Name": subject.container,
        "ImageId": subject.digest,
        "ImageName": subject.image,
    }
    workload_id = (
        f"k8s://{context.cluster}/{subject.namespace}/{kind_path(subject.kind)}/{subject.workload}"
    )
    other = {
        "kubernetes/cluster": context.cluster,
        "kubernetes/namespace": subject.namespace,
        "kubernetes/kind": subject.kind,
        "kubernetes/name": subject.workload,
        "kubernetes/uid": subject.uid,
    }
    fields = {
        F_CLUSTER: context.cluster,
        F_NAMESPACE: subject.namespace,
        F_WORKLOAD: subject.workload,
        F_KIND: subject.kind,
        F_CONTAINER: subject.container,
        F_REPOSITORY: subject.repository,
        F_IMAGE: subject.image,
        F_DIGEST: subject.digest,
        F_POLICY: subject.policy,
        F_STATE: finding.state,
        F_REASON: finding.reason,
    }
    severity = {"Label": finding.severity, "Original": finding.state}
    types = list(finding.types)
    document: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": subject.id,
        "ProductArn": context.product_arn,
        "ProductName": PRODUCT_NAME,
        "CompanyName": PRODUCT_NAME,
        "GeneratorId": f"{PREFIX}{subject.policy}",
        "AwsAccountId": context.account_id,
        "Types": types,
        "CreatedAt": _time(finding.created_at),
        "UpdatedAt": _time(finding.observed_at),
        "FirstObservedAt": _time(finding.first_observed_at),
        "LastObservedAt": _time(finding.observed_at),
        "Severity": severity,
        "FindingProviderFields": {"Severity": dict(severity), "Types": list(types)},
        "Title": _cap(finding.title, MAX_TITLE),
        "Description": _cap(finding.description, MAX_DESCRIPTION),
        "Resources": [
            {
                "Type": "Container",
                "Id": _cap(
                    f"{subject.repository}@{subject.digest}" if subject.digest else subject.image,
                    MAX_ID,
                ),
                "Partition": context.partition,
                "Region": context.region,
                "Details": {"Container": {k: v for k, v in container_details.items() if v}},
            },
            {
                "Type": "Other",
                "Id": _cap(workload_id, MAX_ID),
                "Partition": context.partition,
                "Region": context.region,
                "Details": {"Other": {k: v for k, v in other.items() if v}},
            },
        ],
        "Compliance": {"Status": finding.compliance_status},
        "RecordState": finding.record_state,
        "Workflow": {"Status": finding.workflow},
        "ProductFields": {k: _cap(v, 2048) for k, v in fields.items() if v},
    }
    vulnerabilities = []
    for v in finding.vulnerabilities:
        item: dict[str, Any] = {"Id": _cap(v.id, 256)}
        if v.packages:
            item["VulnerablePackages"] = [{"Name": _cap(p, 256)} for p in v.packages]
        if v.fix_available is not None:
            item["FixAvailable"] = "YES" if v.fix_available else "NO"
        vulnerabilities.append(item)
    if vulnerabilities:
        document["Vulnerabilities"] = vulnerabilities
    document["ProductFields"][F_FINGERPRINT] = fingerprint(document)
    return document


class AsffFormat:
    """The :class:`~imagepatch.core.securityhub.FindingFormat` of Security Hub: ASFF."""

    def render(self, finding: Finding, context: FindingContext) -> dict[str, Any]:
        return asff(finding, context)

    def fingerprint(self, document: dict[str, Any]) -> str:
        return str(document["ProductFields"][F_FINGERPRINT])


ASFF = AsffFormat()


def to_finding(
    result: WorkloadLike,
    container: ContainerRecord,
    *,
    policy: str,
    context: FindingContext,
    now: dt.datetime,
    created_at: dt.datetime | None = None,
    first_observed_at: dt.datetime | None = None,
) -> dict[str, Any] | None:
    """The ASFF finding for one container of a workload result, or None (Unknown).

    The decision is ``core.securityhub.decide_finding``'s; see it for the
    arguments.
    """
    finding = decide_finding(
        result, container, policy=policy, context=context, now=now, created_at=created_at,
        first_observed_at=first_observed_at,
    )  # fmt: skip
    return None if finding is None else asff(finding, context)


def plan_asff_findings(
    previous: Mapping[str, Exported],
    results_by_policy: Mapping[str, Iterable[WorkloadLike]],
    *,
    context: FindingContext,
    now: dt.datetime,
    refresh_after: dt.timedelta | None = DEFAULT_REFRESH,
    absent_since: Mapping[str, dt.datetime] | None = None,
    gone_after: dt.timedelta = DEFAULT_GONE_AFTER,
    opted_out: Collection[tuple[str, str, str]] = (),
) -> FindingPlan[dict[str, Any]]:
    """``core.securityhub.plan_findings`` with the findings laid out as ASFF."""
    return plan_findings(
        previous, results_by_policy, context=context, now=now, form=ASFF,
        refresh_after=refresh_after, absent_since=absent_since, gone_after=gone_after,
        opted_out=opted_out,
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class Exported:
    """What is remembered of one finding that Security Hub holds.

    Built by :meth:`from_finding` from a finding just sent, or read back with
    ``GetFindings`` after a restart: the same parser either way, so a
    restarted exporter sees exactly what a running one would.
    """

    id: str
    fingerprint: str
    record_state: str
    policy: str
    namespace: str
    workload: str
    container: str
    repository: str
    image: str
    digest: str
    created_at: dt.datetime
    first_observed_at: dt.datetime
    updated_at: dt.datetime
    kind: str = KIND  # findings exported before kinds were told apart are Deployments

    @property
    def active(self) -> bool:
        return self.record_state == ACTIVE

    @classmethod
    def from_finding(
        cls, finding: Mapping[str, Any], *, context: FindingContext | None = None
    ) -> Exported | None:
        """The finding as remembered, or None when it is not one of ours.

        With ``context``, a finding must also be of this account's default
        product and of this cluster (``GetFindings`` filters are a request,
        and moto ignores them).
        """
        fields = finding.get("ProductFields") or {}
        finding_id = finding.get("Id") or ""
        if not (
            finding_id.startswith(PREFIX) and (finding.get("GeneratorId") or "").startswith(PREFIX)
        ):
            return None
        if context is not None and (
            finding.get("ProductArn") != context.product_arn
            or fields.get(F_CLUSTER) != context.cluster
        ):
            return None
        created = _parse_time(finding.get("CreatedAt"))
        updated = _parse_time(finding.get("UpdatedAt"))
        if created is None or updated is None:
            return None
        return cls(
            id=finding_id,
            # A finding without one is sent again on the next export: harmless.
            fingerprint=fields.get(F_FINGERPRINT, ""),
            record_state=finding.get("RecordState") or ACTIVE,
            policy=fields.get(F_POLICY) or finding["GeneratorId"][len(PREFIX) :],
            kind=fields.get(F_KIND) or KIND,
            namespace=fields.get(F_NAMESPACE, ""),
            workload=fields.get(F_WORKLOAD, ""),
            container=fields.get(F_CONTAINER, ""),
            repository=fields.get(F_REPOSITORY, ""),
            image=fields.get(F_IMAGE, ""),
            digest=fields.get(F_DIGEST, ""),
            created_at=created,
            first_observed_at=_parse_time(finding.get("FirstObservedAt")) or created,
            updated_at=updated,
        )


def batches(
    findings: Iterable[Mapping[str, Any]],
    size: int = MAX_BATCH_FINDINGS,
    *,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[Mapping[str, Any]]]:
    """Findings in order, in lists of at most ``size`` and ``max_bytes`` of JSON.

    Raises ValueError for a finding over 240 KB, which Security Hub would
    reject (the mapping caps every free text, so this is a bug, not data).
    """
    if not 1 <= size <= MAX_BATCH_FINDINGS:
        raise ValueError(f"batch size {size} is not within 1..{MAX_BATCH_FINDINGS}")
    batch: list[Mapping[str, Any]] = []
    total = 0
    for finding in findings:
        n = len(json.dumps(finding, separators=(",", ":"), default=str).encode())
        if n > MAX_FINDING_BYTES:
            raise ValueError(f"finding {finding.get('Id')!r} is {n} bytes, over 240 KB")
        if batch and (len(batch) >= size or total + n > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(finding)
        total += n
    if batch:
        yield batch


def _parse_time(value: Any) -> dt.datetime | None:
    """A time Security Hub returned (text, or a datetime from boto3), in UTC."""
    if isinstance(value, dt.datetime):
        return _utc(value)
    parsed = parse_time(value)
    return None if parsed is None else _utc(parsed)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the exporter ----------------------------------------------------------------------------


class SecurityHubClient(Protocol):
    """The calls made of boto3's ``securityhub`` client (boto3 itself is untyped)."""

    @property
    def meta(self) -> Any: ...

    def get_paginator(self, operation_name: str) -> Any: ...

    def batch_import_findings(self, *, Findings: list[Mapping[str, Any]]) -> Mapping[str, Any]: ...

    def batch_update_findings(
        self, *, FindingIdentifiers: list[Mapping[str, str]], Workflow: Mapping[str, str]
    ) -> Mapping[str, Any]: ...


class StsClient(Protocol):
    """The call made of boto3's ``sts`` client."""

    def get_caller_identity(self) -> Mapping[str, Any]: ...


_PAGE_SIZE = 100  # GetFindings' maximum
_UPDATE_BATCH = 100  # BatchUpdateFindings takes at most 100 finding identifiers


@dataclass
class ExportResult:
    """What one :meth:`SecurityHubExporter.export` did."""

    upserted: int = 0  # created or updated, ACTIVE
    archived: int = 0
    failed_ids: list[str] = field(default_factory=list)  # rejected; sent again next time
    calls: int = 0  # BatchImportFindings calls
    resolved: int = 0  # Workflow set RESOLVED by BatchUpdateFindings
    resolve_failed: int = 0

    @property
    def failed(self) -> int:
        return len(self.failed_ids)


class SecurityHubExporter:
    """Keeps Security Hub's imagepatch findings in step with detection's results.

    ``region`` is the hub's (the session's default if None). ``account_id``
    is resolved with STS ``GetCallerIdentity`` on first use if None.
    ``cluster_name`` goes into every Id and is how findings of several
    clusters in one account stay apart (EKS's naming rule). ``session``
    defaults to a new ``boto3.Session`` (Pod Identity or IRSA in a cluster);
    ``endpoint_url`` points the clients elsewhere (moto in tests).
    ``refresh_after`` and ``gone_after`` are :func:`plan_findings`'s.
    ``resolve_workflow=False`` skips ``BatchUpdateFindings``.
    """

    def __init__(
        self,
        region: str | None = None,
        *,
        cluster_name: str,
        account_id: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        refresh_after: dt.timedelta | None = DEFAULT_REFRESH,
        gone_after: dt.timedelta = DEFAULT_GONE_AFTER,
        resolve_workflow: bool = True,
    ) -> None:
        self.cluster_name = cluster_name
        self.refresh_after = refresh_after
        self.gone_after = gone_after
        # Id -> when an ACTIVE finding was first missing from its policy's results.
        self.absent: dict[str, dt.datetime] = {}
        self.resolve_workflow = resolve_workflow
        self.previous: dict[str, Exported] = {}
        self.loaded = False
        # Since start: exported (upserted+archived), failed, calls, resolve_failed.
        self.totals: dict[str, int] = {
            "upserted": 0,
            "archived": 0,
            "failed": 0,
            "calls": 0,
            "resolved": 0,
            "resolve_failed": 0,
        }
        self._region = region
        self._account_id = account_id
        self._endpoint_url = endpoint_url
        self._session = session
        self._config = client_config(max_attempts)
        self._context: FindingContext | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._export_lock = asyncio.Lock()

    # -- clients and context -------------------------------------------------------------

    def _client(self, service: Literal["securityhub", "sts"]) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                with _classified("CreateClient", self._region, service=service):
                    if self._session is None:
                        self._session = boto3.Session()
                    if self._region is None:
                        self._region = self._session.region_name
                    client = self._session.client(
                        service,
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
                self._clients[service] = client
            return client

    @property
    def securityhub(self) -> SecurityHubClient:
        """The Security Hub client (exposed so tests can attach a Stubber or event hooks)."""
        client: SecurityHubClient = self._client("securityhub")
        return client

    @property
    def sts(self) -> StsClient:
        client: StsClient = self._client("sts")
        return client

    def context_sync(self) -> FindingContext:
        """The account, region and cluster of the findings (STS is asked once, if needed)."""
        if self._context is None:
            client = self.securityhub  # resolves the region
            account = self._account_id
            if account is None:
                with _classified("GetCallerIdentity", self._region, service="sts"):
                    account = str(self.sts.get_caller_identity()["Account"])
            try:
                self._context = FindingContext(
                    account_id=account,
                    region=self._region or client.meta.region_name or "",
                    cluster=self.cluster_name,
                )
            except ValueError as exc:
                raise ConfigurationError(
                    f"Security Hub export: {exc}", reason="SecurityHubMisconfigured"
                ) from None
        return self._context

    async def context(self) -> FindingContext:
        return await asyncio.to_thread(self.context_sync)

    def active_policies(self) -> set[str]:
        """Policies with ACTIVE findings: pass a deleted one with no results to archive them."""
        return {e.policy for e in self.previous.values() if e.active}

    # -- restart -------------------------------------------------------------------------

    async def load_previous(self) -> int:
        """Rebuild ``previous`` from the findings Security Hub holds; returns how many.

        Both ACTIVE and ARCHIVED findings of this cluster are read (an
        archived one keeps its ``CreatedAt`` if it becomes active again).
        """
        context = await self.context()
        loaded = await asyncio.to_thread(self._load, context)
        self.previous = loaded
        self.loaded = True
        active = sum(1 for e in loaded.values() if e.active)
        log.info(
            "Security Hub: %d imagepatch findings of cluster %s loaded (%d active)",
            len(loaded), context.cluster, active,
        )  # fmt: skip
        return len(loaded)

    def _load(self, context: FindingContext) -> dict[str, Exported]:
        filters = {
            "ProductArn": [{"Value": context.product_arn, "Comparison": "EQUALS"}],
            "GeneratorId": [{"Value": PREFIX, "Comparison": "PREFIX"}],
            "ProductFields": [
                {"Key": f"{PREFIX}Cluster", "Value": context.cluster, "Comparison": "EQUALS"}
            ],
        }
        found: dict[str, Exported] = {}
        ignored = 0
        paginator = self.securityhub.get_paginator("get_findings")
        with _classified("GetFindings", context.region):
            for page in paginator.paginate(
                Filters=filters, PaginationConfig={"PageSize": _PAGE_SIZE}
            ):
                for raw in page.get("Findings") or ():
                    exported = Exported.from_finding(raw, context=context)
                    if exported is None:
                        ignored += 1
                        continue
                    known = found.get(exported.id)
                    if known is None or exported.updated_at > known.updated_at:
                        found[exported.id] = exported
        if ignored:
            log.debug("Security Hub: %d findings of other products or clusters ignored", ignored)
        return found

    # -- export --------------------------------------------------------------------------

    async def export(
        self,
        results_by_policy: Mapping[str, Iterable[WorkloadLike]],
        *,
        now: dt.datetime,
        opted_out: Collection[tuple[str, str, str]] = (),
    ) -> ExportResult:
        """Send what changed in ``results_by_policy`` (all results of each policy given).

        Raises a classified :class:`AdapterError` when Security Hub cannot be
        reached or refuses a whole call; what was sent before stays sent.
        """
        results = {p: list(r) for p, r in results_by_policy.items()}
        async with self._export_lock:
            if not self.loaded:
                await self.load_previous()
            context = await self.context()
            plan = plan_asff_findings(
                self.previous, results, context=context, now=now,
                refresh_after=self.refresh_after, absent_since=self.absent,
                gone_after=self.gone_after, opted_out=opted_out,
            )  # fmt: skip
            self.absent = dict(plan.absent)
            outcome = ExportResult()
            archiving = {f["Id"] for f in plan.to_archive}
            # An opted-out workload's finding is archived but never resolved.
            resolving = {
                f["Id"] for f in plan.to_archive
                if (f.get("Workflow") or {}).get("Status") == "RESOLVED"
            }  # fmt: skip
            resolved_ids: list[str] = []
            error: AdapterError | None = None
            for batch in batches([*plan.to_upsert, *plan.to_archive]):
                try:
                    response = await asyncio.to_thread(self._import, batch, context.region)
                except AdapterError as exc:
                    error = exc
                    break
                outcome.calls += 1
                rejected = self._rejected(batch, response)
                for finding in batch:
                    finding_id = finding["Id"]
                    if finding_id in rejected:
                        outcome.failed_ids.append(finding_id)
                        continue
                    exported = Exported.from_finding(finding)
                    if exported is not None:
                        self.previous[finding_id] = exported
                    if finding_id in archiving:
                        outcome.archived += 1
                        if finding_id in resolving:
                            resolved_ids.append(finding_id)
                    else:
                        outcome.upserted += 1
            if resolved_ids and self.resolve_workflow:
                await asyncio.to_thread(self._resolve, resolved_ids, context, outcome)
            for key in self.totals:
                self.totals[key] += getattr(outcome, key)
            if outcome.calls or error is not None:
                log.info(
                    "Security Hub: %d findings upserted, %d archived, %d rejected in %d calls%s",
                    outcome.upserted, outcome.archived, outcome.failed, outcome.calls,
                    f"; stopped: {error.reason}: {error}" if error else "",
                )  # fmt: skip
            if error is not None:
                raise error
            return outcome

    def _import(self, batch: Sequence[Mapping[str, Any]], region: str) -> Mapping[str, Any]:
        with _classified("BatchImportFindings", region):
            return self.securityhub.batch_import_findings(Findings=list(batch))

    @staticmethod
    def _rejected(batch: Sequence[Mapping[str, Any]], response: Mapping[str, Any]) -> set[str]:
        failed = response.get("FailedFindings") or []
        rejected = {str(f.get("Id") or "") for f in failed}
        for f in failed:
            # The code and the Id only: AWS's message text stays out of the logs.
            log.warning(
                "Security Hub rejected finding %s (%s); it is sent again on the next export",
                f.get("Id"), f.get("ErrorCode"),
            )  # fmt: skip
        if int(response.get("FailedCount") or 0) > len(failed):
            # Rejections without Ids: no way to tell which; send the whole batch again
            # (upserts by Id are idempotent).
            log.warning(
                "Security Hub rejected %s findings without naming them; the batch of %d "
                "is sent again on the next export", response.get("FailedCount"), len(batch),
            )  # fmt: skip
            rejected = {str(f["Id"]) for f in batch}
        return rejected

    def _resolve(self, ids: Sequence[str], context: FindingContext, outcome: ExportResult) -> None:
        """Set Workflow RESOLVED on archived findings: best effort (see the module doc)."""
        for start in range(0, len(ids), _UPDATE_BATCH):
            chunk = ids[start : start + _UPDATE_BATCH]
            try:
                with _classified("BatchUpdateFindings", context.region):
                    response = self.securityhub.batch_update_findings(
                        FindingIdentifiers=[
                            {"Id": i, "ProductArn": context.product_arn} for i in chunk
                        ],
                        Workflow={"Status": "RESOLVED"},
                    )
            except AdapterError as exc:
                outcome.resolve_failed += len(chunk)
                log.warning(
                    "Security Hub: %d archived findings keep their workflow status: %s: %s",
                    len(chunk), exc.reason, exc,
                )  # fmt: skip
                continue
            unprocessed = response.get("UnprocessedFindings") or []
            for item in unprocessed:
                log.warning(
                    "Security Hub did not resolve the workflow of finding %s (%s)",
                    (item.get("FindingIdentifier") or {}).get("Id"), item.get("ErrorCode"),
                )  # fmt: skip
            outcome.resolve_failed += len(unprocessed)
            outcome.resolved += len(chunk) - len(unprocessed)


def _not_enabled(failure: ClientFailure) -> ConfigurationError:
    return ConfigurationError(
        f"{failure.action} in {failure.region or 'the default region'}: "
        "Security Hub is not enabled in this account and region "
        "(InvalidAccessException); enable it, or turn the export off",
        reason=SECURITY_HUB_NOT_ENABLED,
    )


# What Security Hub adds to adapters/aws.py's classification: a hub that is not
# enabled, and its own wording for bad requests.
_RULES = ErrorRules(
    service_codes={"InvalidAccessException": _not_enabled},
    rejected_codes=frozenset({"ValidationException", "InvalidParameterException"}),
    region_hint="set AWS_REGION (the Security Hub region)",
    otherwise="failed",
    invalid_request="{action} in Security Hub: {detail}",
    repeated_page="{action} in Security Hub returned a repeated page token",
)


def _classified(
    operation: str, region: str | None, *, service: str = "securityhub"
) -> AbstractContextManager[None]:
    """botocore's exceptions as adapter errors (see adapters/aws.py)."""
    return classified(f"{service}:{operation}", "this account", region, _RULES)
