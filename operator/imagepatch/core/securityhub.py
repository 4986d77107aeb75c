"""Security Hub findings (ASFF) for workloads that break their policy: the mapping and the plan.

Pure. Detection's per-workload results (``reconcile.detection.WorkloadResult``,
seen here through :class:`WorkloadLike`) become AWS Security Finding Format
dicts; :func:`plan_findings` compares them with what was exported before and
says what to send. ``adapters/securityhub.py`` sends it with
``BatchImportFindings`` and remembers what was sent.

**One finding per workload, container and image repository.** The Id is::

    imagepatch/<cluster>/<namespace>/deployments/<workload>/<container>/<host/repository>

It carries no digest, tag, state or time. A new digest of the same image
(a patch landed, or a rebuild) and a change of state (BaseImageOutdated to
Vulnerable, Patching, Failed) update the same finding, because
``BatchImportFindings`` upserts by Id; a restarted operator computes the same
Ids, so it cannot duplicate anything. A container switched to another
repository is another finding (the old one is archived, see below). The
cluster name keeps two clusters in one account apart. An Id over ASFF's 512
characters keeps its head and ends in a hash of the whole.

**Which state gives what** (per container; the workload's own state is the
worst of them). Every ACTIVE finding has Compliance FAILED and Workflow NEW:

* ``Vulnerable``: Severity the worst violating finding's label when detection
  passes it on (``maxSeverity`` or ``findings[].severity`` in the container
  record), else HIGH; Types ``.../Vulnerabilities/CVE``; ``Vulnerabilities``
  from ``findings`` when given;
* ``BaseImageOutdated``: MEDIUM, Types ``.../Industry and Regulatory Standards``;
* ``UntrustedBase``: HIGH, the same Types;
* ``Failed`` (the patch failed or was rolled back): HIGH, Types of its reason;
* ``Patching``: Severity and Types of its reason; the image still breaks the
  policy until the patch lands, so the finding stays ACTIVE;
* ``Compliant``: ARCHIVED, Compliance PASSED, Workflow RESOLVED, INFORMATIONAL,
  sent only if an ACTIVE finding was exported before;
* ``Unknown``: nothing. No facts prove anything; the finding stays as it is;
* gone: ARCHIVED, Compliance NOT_AVAILABLE, Workflow RESOLVED, INFORMATIONAL.

"gone": an ACTIVE finding of a policy whose results are given, whose Id no
result produced this time: the workload was deleted or opted out, its
namespace is no longer admitted (NotAdmitted), its container was removed or
now runs another repository. Results are per policy and complete for it;
a policy absent from the call is left alone, so a pass that evaluated only
some policies archives nothing of the others. A finding is archived as gone
only once it has been missing for ``gone_after`` (ten minutes by default),
in a later pass than the one that first missed it: right after a restart
detection may run before the Deployment watch has listed every workload.

**What is sent.** Only what changed: each finding's fingerprint (a hash of
everything but its timestamps) is kept in ``ProductFields`` and in the
exporter's memory, and a finding whose fingerprint is unchanged is not sent
again, except once per ``refresh_after`` (a day by default), because Security
Hub deletes findings that were not updated for 90 days. ``CreatedAt`` stays
that of the first export of the Id; ``FirstObservedAt`` is when the current
stretch of non-compliance was first exported (it restarts when an archived
finding becomes active again); ``LastObservedAt`` and ``UpdatedAt`` are
``now``.

Severity and Types go both at the top level (required when a finding is
created) and in ``FindingProviderFields`` (how a provider updates them
afterwards; Security Hub keeps a customer's own changes). ``Workflow`` goes
with every finding: it sets NEW on creation, but ``BatchImportFindings``
cannot change the workflow of an existing finding, so the exporter also sets
RESOLVED with ``BatchUpdateFindings`` when it archives one. Security Hub
itself resets RESOLVED to NEW when an archived finding becomes ACTIVE again.

Limits (Security Hub's BatchImportFindings guidelines): at most 100
findings and 6 MB a call, at most 240 KB a finding; Title 256 and
Description 1024 characters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imagepatch.core import reasons
from imagepatch.core.compliance import State
from imagepatch.core.images import InvalidImageReference, parse_image
from imagepatch.model.times import format_milli_time as _time
from imagepatch.model.times import parse_time
from imagepatch.model.times import utc as _utc

__all__ = [
    "ACTIVE",
    "ARCHIVED",
    "DEFAULT_GONE_AFTER",
    "DEFAULT_REFRESH",
    "Exported",
    "FindingContext",
    "FindingPlan",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_FINDINGS",
    "MAX_FINDING_BYTES",
    "WorkloadLike",
    "batches",
    "finding_id",
    "fingerprint",
    "plan_findings",
    "to_finding",
]

SCHEMA_VERSION = "2018-10-08"
PREFIX = "imagepatch/"  # of Ids, GeneratorIds and ProductFields keys
PRODUCT_NAME = "imagepatch"
KIND_PATH = "deployments"  # the workload kind in Ids and resource ids (only Deployments so far)

MAX_BATCH_FINDINGS = 100
MAX_FINDING_BYTES = 240 * 1024
# 6 MB a call, less room for the request's envelope.
MAX_BATCH_BYTES = 6 * 1000 * 1000 - 64 * 1024
MAX_ID = 512
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_VULNERABILITIES = 25
DEFAULT_REFRESH = dt.timedelta(days=1)
DEFAULT_GONE_AFTER = dt.timedelta(minutes=10)

ACTIVE = "ACTIVE"
ARCHIVED = "ARCHIVED"

TYPE_CVE = "Software and Configuration Checks/Vulnerabilities/CVE"
TYPE_STANDARDS = "Software and Configuration Checks/Industry and Regulatory Standards"

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

_SEVERITY_ORDER = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_ACTIVE_STATES = {
    str(State.VULNERABLE),
    str(State.BASE_IMAGE_OUTDATED),
    str(State.UNTRUSTED_BASE),
    str(State.FAILED),
    str(State.PATCHING),
}
# Workloads whose containers the policy no longer evaluates: their findings are "gone".
_NOT_EVALUATED = {reasons.NOT_ADMITTED, reasons.POLICY_NOT_FOUND}


class WorkloadLike(Protocol):
    """What is read of a detection result (``reconcile.detection.WorkloadResult``)."""

    namespace: str
    name: str
    state: str
    message: str
    containers: Sequence[Mapping[str, Any]]


@dataclass(frozen=True, kw_only=True, slots=True)
class FindingContext:
    """Where findings go: the account and region of the hub, and the cluster they describe."""

    account_id: str
    region: str
    cluster: str

    def __post_init__(self) -> None:
        if not (self.account_id.isdigit() and len(self.account_id) == 12):
            raise ValueError(f"AWS account id {self.account_id!r} is not 12 digits")
        if not self.region:
            raise ValueError("an AWS region is required for Security Hub findings")
        # EKS's rule for cluster names; it also keeps '/' out of the Id's segments.
        if not (
            0 < len(self.cluster) <= 100
            and self.cluster[0].isalnum()
            and all(c.isalnum() or c in "-_." for c in self.cluster)
        ):
            raise ValueError(
                f"cluster name {self.cluster!r} must be 1-100 of [A-Za-z0-9._-], "
                "starting with a letter or digit"
            )

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def product_arn(self) -> str:
        """The account's default product: how custom integrations import findings."""
        return (
            f"arn:{self.partition}:securityhub:{self.region}:{self.account_id}:"
            f"product/{self.account_id}/default"
        )


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


@dataclass(frozen=True, kw_only=True, slots=True)
class FindingPlan:
    """What to send: findings to create or update, and findings to archive.

    ``absent`` is when each ACTIVE finding no result produced was first seen
    missing: the ``absent_since`` of the next plan. It unpacks as
    ``to_upsert, to_archive``.
    """

    to_upsert: list[dict[str, Any]]
    to_archive: list[dict[str, Any]]
    absent: Mapping[str, dt.datetime]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        return iter((self.to_upsert, self.to_archive))

    @property
    def empty(self) -> bool:
        return not (self.to_upsert or self.to_archive)


# -- ids and fingerprints ------------------------------------------------------------------


def finding_id(cluster: str, namespace: str, workload: str, container: str, repository: str) -> str:
    """The stable Id of the finding for one container's image (see the module doc)."""
    raw = f"{PREFIX}{cluster}/{namespace}/{KIND_PATH}/{workload}/{container}/{repository}"
    if len(raw) <= MAX_ID:
        return raw
    tail = hashlib.sha256(raw.encode()).hexdigest()[:32]
    return f"{raw[: MAX_ID - len(tail) - 1]}~{tail}"


def fingerprint(finding: Mapping[str, Any]) -> str:
    """A hash of everything in the finding but its timestamps and the fingerprint itself."""
    material = {k: v for k, v in finding.items() if k not in _VOLATILE}
    fields = dict(material.get("ProductFields") or {})
    fields.pop(F_FINGERPRINT, None)
    material["ProductFields"] = fields
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def repository_of(image: str) -> str:
    """``host/repository`` of an image reference (``python:3`` → ``docker.io/library/python``)."""
    try:
        return parse_image(image).name
    except InvalidImageReference:
        # Detection reports such a workload as Unknown; still give it a stable name.
        name = image.split("@", 1)[0]
        head, slash, last = name.rpartition("/")
        return head + slash + last.split(":", 1)[0]


# -- mapping -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Subject:
    id: str
    policy: str
    namespace: str
    workload: str
    uid: str
    container: str
    repository: str
    image: str
    digest: str


def _subject(
    result: WorkloadLike, container: Mapping[str, Any], policy: str, context: FindingContext
) -> _Subject:
    name = str(container.get("name") or "")
    image = str(container.get("image") or "")
    repository = repository_of(image)
    return _Subject(
        id=finding_id(context.cluster, result.namespace, result.name, name, repository),
        policy=policy,
        namespace=result.namespace,
        workload=result.name,
        uid=str(getattr(result, "uid", "") or ""),
        container=name,
        repository=repository,
        image=image,
        digest=str(container.get("digest") or ""),
    )


def to_finding(
    result: WorkloadLike,
    container: Mapping[str, Any],
    *,
    policy: str,
    context: FindingContext,
    now: dt.datetime,
    created_at: dt.datetime | None = None,
    first_observed_at: dt.datetime | None = None,
) -> dict[str, Any] | None:
    """The ASFF finding for one container of a workload result, or None (Unknown).

    Non-compliant states give an ACTIVE finding, Compliant an ARCHIVED,
    RESOLVED, PASSED one (which :func:`plan_findings` sends only to archive a
    finding that was active). ``created_at`` and ``first_observed_at``
    default to ``now`` (a finding never exported).
    """
    subject = _subject(result, container, policy, context)
    state = str(container.get("state") or "")
    reason = str(container.get("reason") or state)
    message = str(container.get("message") or "")
    where = f"Deployment {subject.namespace}/{subject.workload}, container {subject.container}"
    facts = _facts(subject, container, context)
    if state in _ACTIVE_STATES:
        cause = reason if state in (str(State.FAILED), str(State.PATCHING)) else state
        severity, types = _severity_and_types(cause, container)
        if state == str(State.FAILED):
            severity = "HIGH"
        title = f"{where}: {_headline(state, cause, container, subject)}"
        description = f"{message} ({state}, reason {reason}). {facts}"
        return _asff(
            subject, context, state=state, reason=reason, severity=severity, types=types,
            title=title, description=description, record_state=ACTIVE, compliance_status="FAILED",
            workflow="NEW", now=now, created_at=created_at, first_observed_at=first_observed_at,
            vulnerabilities=_vulnerabilities(container),
        )  # fmt: skip
    if state == str(State.COMPLIANT):
        title = f"{where}: {subject.repository} complies with policy {policy} again"
        description = f"{message or 'Compliant'}. {facts}"
        return _asff(
            subject, context, state=state, reason=reason, severity="INFORMATIONAL",
            types=[TYPE_STANDARDS], title=title, description=description,
            record_state=ARCHIVED, compliance_status="PASSED", workflow="RESOLVED", now=now,
            created_at=created_at, first_observed_at=first_observed_at,
        )  # fmt: skip
    return None


def _gone_finding(
    previous: Exported, *, context: FindingContext, now: dt.datetime
) -> dict[str, Any]:
    """The archiving update of a finding whose container the policy no longer evaluates."""
    subject = _Subject(
        id=previous.id, policy=previous.policy, namespace=previous.namespace,
        workload=previous.workload, uid="", container=previous.container,
        repository=previous.repository, image=previous.image or previous.repository,
        digest=previous.digest,
    )  # fmt: skip
    where = f"Deployment {subject.namespace}/{subject.workload}, container {subject.container}"
    return _asff(
        subject, context, state=reasons.NOT_EVALUATED, reason=reasons.NO_LONGER_EVALUATED,
        severity="INFORMATIONAL", types=[TYPE_STANDARDS],
        title=f"{where}: {subject.repository} is no longer evaluated by policy {previous.policy}",
        description=(
            f"Policy {previous.policy} no longer evaluates this container's image "
            f"{subject.repository} in cluster {context.cluster}: the workload was deleted or "
            "opted out, its namespace is no longer admitted, or the container was removed or "
            "runs another image repository. The finding is archived."
        ),
        record_state=ARCHIVED, compliance_status="NOT_AVAILABLE", workflow="RESOLVED", now=now,
        created_at=previous.created_at, first_observed_at=previous.first_observed_at,
    )  # fmt: skip


def _asff(
    subject: _Subject,
    context: FindingContext,
    *,
    state: str,
    reason: str,
    severity: str,
    types: list[str],
    title: str,
    description: str,
    record_state: str,
    compliance_status: str,
    workflow: str,
    now: dt.datetime,
    created_at: dt.datetime | None,
    first_observed_at: dt.datetime | None,
    vulnerabilities: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container_details = {
        "Name": subject.container,
        "ImageId": subject.digest,
        "ImageName": subject.image,
    }
    workload_id = f"k8s://{context.cluster}/{subject.namespace}/{KIND_PATH}/{subject.workload}"
    other = {
        "kubernetes/cluster": context.cluster,
        "kubernetes/namespace": subject.namespace,
        "kubernetes/kind": "Deployment",
        "kubernetes/name": subject.workload,
        "kubernetes/uid": subject.uid,
    }
    fields = {
        F_CLUSTER: context.cluster,
        F_NAMESPACE: subject.namespace,
        F_WORKLOAD: subject.workload,
        F_KIND: "Deployment",
        F_CONTAINER: subject.container,
        F_REPOSITORY: subject.repository,
        F_IMAGE: subject.image,
        F_DIGEST: subject.digest,
        F_POLICY: subject.policy,
        F_STATE: state,
        F_REASON: reason,
    }
    finding: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": subject.id,
        "ProductArn": context.product_arn,
        "ProductName": PRODUCT_NAME,
        "CompanyName": PRODUCT_NAME,
        "GeneratorId": f"{PREFIX}{subject.policy}",
        "AwsAccountId": context.account_id,
        "Types": types,
        "CreatedAt": _time(created_at or now),
        "UpdatedAt": _time(now),
        "FirstObservedAt": _time(first_observed_at or now),
        "LastObservedAt": _time(now),
        "Severity": {"Label": severity, "Original": state},
        "FindingProviderFields": {
            "Severity": {"Label": severity, "Original": state},
            "Types": types,
        },
        "Title": _cap(title, MAX_TITLE),
        "Description": _cap(description, MAX_DESCRIPTION),
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
        "Compliance": {"Status": compliance_status},
        "RecordState": record_state,
        "Workflow": {"Status": workflow},
        "ProductFields": {k: _cap(v, 2048) for k, v in fields.items() if v},
    }
    if vulnerabilities:
        finding["Vulnerabilities"] = vulnerabilities
    finding["ProductFields"][F_FINGERPRINT] = fingerprint(finding)
    return finding


def _severity_and_types(cause: str, container: Mapping[str, Any]) -> tuple[str, list[str]]:
    if cause == str(State.VULNERABLE):
        return _vulnerable_severity(container), [TYPE_CVE]
    if cause in (str(State.UNTRUSTED_BASE), reasons.BASE_UNKNOWN, reasons.UNTRUSTED_BASE):
        return "HIGH", [TYPE_STANDARDS]
    return "MEDIUM", [TYPE_STANDARDS]  # BaseImageOutdated, and any cause not known here


def _vulnerable_severity(container: Mapping[str, Any]) -> str:
    """The worst violating finding's label when detection passed it on, else HIGH.

    Detection's container record carries a count (``findingsOverBaseline``);
    a ``maxSeverity`` or a ``findings`` list (the ImagePatch evidence shape)
    makes the label exact. UNDEFINED and UNTRIAGED count as unknown.
    """
    labels = [str(container.get("maxSeverity") or "").upper()]
    labels += [str(f.get("severity") or "").upper() for f in container.get("findings") or ()]
    ranked = [_SEVERITY_ORDER.index(label) for label in labels if label in _SEVERITY_ORDER]
    return _SEVERITY_ORDER[max(ranked)] if ranked else "HIGH"


def _vulnerabilities(container: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in list(container.get("findings") or ())[:MAX_VULNERABILITIES]:
        if not f.get("id"):
            continue
        item: dict[str, Any] = {"Id": _cap(str(f["id"]), 256)}
        packages = [p.strip() for p in str(f.get("package") or "").split(",") if p.strip()]
        if packages:
            item["VulnerablePackages"] = [{"Name": _cap(p, 256)} for p in packages[:10]]
        if f.get("fixAvailable") is not None:
            item["FixAvailable"] = "YES" if f["fixAvailable"] else "NO"
        out.append(item)
    return out


def _headline(state: str, cause: str, container: Mapping[str, Any], subject: _Subject) -> str:
    repo = subject.repository
    if state == str(State.FAILED):
        return f"the patch of {repo} failed or was rolled back ({cause})"
    if state == str(State.PATCHING):
        return f"{repo} is being patched ({cause})"
    if state == str(State.VULNERABLE):
        count = container.get("findingsOverBaseline")
        return (
            f"{repo} has {count} vulnerabilities over the policy baseline"
            if count
            else f"{repo} has vulnerabilities over the policy baseline"
        )
    if state == str(State.UNTRUSTED_BASE):
        return f"{repo} is not built on a trusted base image"
    return f"{repo} is built on an outdated base image"


def _facts(subject: _Subject, container: Mapping[str, Any], context: FindingContext) -> str:
    parts = [
        f"Cluster {context.cluster}, policy {subject.policy}.",
        f"Image {subject.image}" + (f" running {subject.digest}." if subject.digest else "."),
    ]
    if base := container.get("base"):
        text = f"Base {base}"
        if (old := container.get("baseDigest")) and (new := container.get("baseCurrent")):
            text += f": built on {old}, now {new}" if old != new else f" at {old}"
        parts.append(text + ".")
    return " ".join(parts)


# -- the plan ----------------------------------------------------------------------------


def plan_findings(
    previous: Mapping[str, Exported],
    results_by_policy: Mapping[str, Iterable[WorkloadLike]],
    *,
    context: FindingContext,
    now: dt.datetime,
    refresh_after: dt.timedelta | None = DEFAULT_REFRESH,
    absent_since: Mapping[str, dt.datetime] | None = None,
    gone_after: dt.timedelta = DEFAULT_GONE_AFTER,
) -> FindingPlan:
    """What to send to Security Hub, given what it holds (``previous``, by Id).

    ``results_by_policy`` holds, for each policy evaluated in this pass, all
    of its workload results. Per container:

    * non-compliant → upsert an ACTIVE finding, unless one with the same
      fingerprint is ACTIVE already and was updated less than
      ``refresh_after`` ago (None: never refresh);
    * Compliant → archive, if an ACTIVE finding was exported; else nothing;
    * Unknown → nothing.

    Then an ACTIVE finding of a given policy that no result produced is
    archived as gone once it has been missing for ``gone_after``
    (``absent_since`` says since when; the plan's ``absent`` is the next
    one's). A single pass never archives: right after a restart, detection
    may run before the Deployment watch has listed every workload, and
    archiving then would reactivate the findings a minute later (resetting
    their workflow to NEW). Each list is ordered by Id.
    """
    now = _utc(now)
    upsert: dict[str, dict[str, Any]] = {}
    archive: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for policy in sorted(results_by_policy):
        for result in results_by_policy[policy]:
            if result.state in _NOT_EVALUATED:
                continue  # its findings, if any, are archived as gone below
            for container in result.containers:
                subject = _subject(result, container, policy, context)
                seen.add(subject.id)
                before = previous.get(subject.id)
                state = str(container.get("state") or "")
                if state in _ACTIVE_STATES:
                    finding = to_finding(
                        result, container, policy=policy, context=context, now=now,
                        created_at=before.created_at if before else None,
                        first_observed_at=(
                            before.first_observed_at if before and before.active else None
                        ),
                    )  # fmt: skip
                    assert finding is not None
                    if (
                        before is not None
                        and before.active
                        and before.fingerprint == finding["ProductFields"][F_FINGERPRINT]
                        and (refresh_after is None or now - before.updated_at < refresh_after)
                    ):
                        continue
                    upsert[subject.id] = finding
                    archive.pop(subject.id, None)
                elif state == str(State.COMPLIANT) and before is not None and before.active:
                    finding = to_finding(
                        result, container, policy=policy, context=context, now=now,
                        created_at=before.created_at, first_observed_at=before.first_observed_at,
                    )  # fmt: skip
                    if finding is not None and subject.id not in upsert:
                        archive[subject.id] = finding
    absent_since = absent_since or {}
    absent: dict[str, dt.datetime] = {}
    for finding_id_, before in sorted(previous.items()):
        if not before.active or finding_id_ in seen:
            continue
        if before.policy not in results_by_policy:
            if finding_id_ in absent_since:  # not evaluated this time: the clock keeps running
                absent[finding_id_] = absent_since[finding_id_]
            continue
        since = absent[finding_id_] = _utc(absent_since.get(finding_id_, now))
        if now - since >= gone_after:
            archive[finding_id_] = _gone_finding(before, context=context, now=now)
    return FindingPlan(
        to_upsert=[upsert[k] for k in sorted(upsert)],
        to_archive=[archive[k] for k in sorted(archive)],
        absent=absent,
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


# -- helpers -----------------------------------------------------------------------------


def _parse_time(value: Any) -> dt.datetime | None:
    """A time Security Hub returned (text, or a datetime from boto3), in UTC."""
    if isinstance(value, dt.datetime):
        return _utc(value)
    parsed = parse_time(value)
    return None if parsed is None else _utc(parsed)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
