"""Security Hub findings for workloads that break their policy: the decisions and the plan.

Pure. Detection's per-workload results (``reconcile.detection.WorkloadResult``,
seen here through :class:`WorkloadLike`; each container is the record of
``model.workload_state.ContainerState``) become :class:`Finding` decisions:
which Id, state, severity, types, record state, title and description.
:func:`plan_findings` compares them with what was exported before (seen
through :class:`ExportedLike`) and says what to send. The wire format is the
Security Hub adapter's (``adapters/securityhub.py``): it lays each decision
out as an AWS Security Finding Format (ASFF) document and fingerprints it
(a :class:`FindingFormat`), reads ASFF back after a restart, batches,
sends with ``BatchImportFindings`` and remembers what was sent.

**One finding per workload, container and image repository.** The Id is::

    imagepatch/<cluster>/<namespace>/<kinds>/<workload>/<container>/<host/repository>

where ``<kinds>`` is the workload kind's resource plural (``deployments``,
``statefulsets``, ``daemonsets``, ``cronjobs``): a StatefulSet and a
Deployment of one name are two findings. Deployments kept the Id they had
when only Deployments were exported; a finding that an older version
exported for another kind under ``deployments`` is no longer produced, so it
is archived as gone (below) and the right Id replaces it.

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
* gone: ARCHIVED, Compliance NOT_AVAILABLE, Workflow RESOLVED, INFORMATIONAL;
* opted out (the workload's owner removed ``imagepatch.dev/policy``, as the
  watch saw): ARCHIVED at once, Compliance NOT_AVAILABLE, reason ``OptedOut``,
  a title saying it opted out and is not fixed, and never RESOLVED: opting
  out is not a fix.

"gone": an ACTIVE finding of a policy whose results are given, whose Id no
result produced this time: the workload was deleted or opted out, its
namespace is no longer admitted (NotAdmitted), its container was removed or
now runs another repository. Results are per policy and complete for it;
a policy absent from the call is left alone, so a pass that evaluated only
some policies archives nothing of the others. A finding is archived as gone
only once it has been missing for ``gone_after`` (ten minutes by default),
in a later pass than the one that first missed it: right after a restart
detection may run before the Deployment watch has listed every workload.

**What is sent.** Only what changed: each finding's fingerprint (the
format's hash of the document but its timestamps; ASFF keeps it in
``ProductFields``) is kept in the exporter's memory, and a finding whose
fingerprint is unchanged is not sent again, except once per
``refresh_after`` (a day by default), because Security Hub deletes findings
that were not updated for 90 days. ``CreatedAt`` stays that of the first
export of the Id; ``FirstObservedAt`` is when the current
stretch of non-compliance was first exported (it restarts when an archived
finding becomes active again); ``LastObservedAt`` and ``UpdatedAt`` are
``now``.

``Workflow`` goes with every finding: it sets NEW on creation, but
``BatchImportFindings`` cannot change the workflow of an existing finding, so
the exporter also sets RESOLVED with ``BatchUpdateFindings`` when it
archives one. Security Hub itself resets RESOLVED to NEW when an archived
finding becomes ACTIVE again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from imagepatch.core import kinds, reasons
from imagepatch.core.compliance import State
from imagepatch.core.images import InvalidImageReference, parse_image
from imagepatch.model.times import utc as _utc

__all__ = [
    "ACTIVE",
    "ARCHIVED",
    "DEFAULT_GONE_AFTER",
    "DEFAULT_REFRESH",
    "ExportedLike",
    "Finding",
    "FindingContext",
    "FindingFormat",
    "FindingPlan",
    "FindingSubject",
    "KIND_PATHS",
    "Vulnerability",
    "WorkloadLike",
    "decide_finding",
    "finding_id",
    "gone_finding",
    "kind_path",
    "opted_out_finding",
    "plan_findings",
    "repository_of",
]

PREFIX = "imagepatch/"  # of Ids, GeneratorIds and ProductFields keys
KIND = kinds.DEPLOYMENT  # of a result or an exported finding that names no kind (older versions)
# The workload kind in Ids and resource ids: its resource plural, as in API paths.
KIND_PATHS: Mapping[str, str] = {
    kinds.DEPLOYMENT: "deployments",
    kinds.STATEFULSET: "statefulsets",
    kinds.DAEMONSET: "daemonsets",
    kinds.CRONJOB: "cronjobs",
}

MAX_ID = 512  # ASFF's limit on an Id
MAX_VULNERABILITIES = 25
DEFAULT_REFRESH = dt.timedelta(days=1)
DEFAULT_GONE_AFTER = dt.timedelta(minutes=10)

ACTIVE = "ACTIVE"
ARCHIVED = "ARCHIVED"

TYPE_CVE = "Software and Configuration Checks/Vulnerabilities/CVE"
TYPE_STANDARDS = "Software and Configuration Checks/Industry and Regulatory Standards"

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

# One container's record (``model.workload_state.ContainerState.to_record()``),
# read leniently: it may carry more than detection writes (``maxSeverity``,
# ``findings`` in the ImagePatch evidence shape).
ContainerRecord = Mapping[str, Any]


class WorkloadLike(Protocol):
    """What is read of a detection result (``reconcile.detection.WorkloadResult``)."""

    @property
    def kind(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def containers(self) -> Sequence[ContainerRecord]: ...


class ExportedLike(Protocol):
    """What the plan reads of a finding Security Hub holds (the adapter's ``Exported``)."""

    @property
    def id(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def active(self) -> bool: ...

    @property
    def policy(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def workload(self) -> str: ...

    @property
    def container(self) -> str: ...

    @property
    def repository(self) -> str: ...

    @property
    def image(self) -> str: ...

    @property
    def digest(self) -> str: ...

    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def first_observed_at(self) -> dt.datetime: ...

    @property
    def updated_at(self) -> dt.datetime: ...


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


# -- ids ------------------------------------------------------------------------------------


def kind_path(kind: str) -> str:
    """The kind's segment of Ids and resource ids: its resource plural (``deployments``)."""
    return KIND_PATHS.get(kind) or kind.lower() + "s"


def finding_id(
    cluster: str, namespace: str, workload: str, container: str, repository: str,
    *, kind: str = KIND,
) -> str:
    """The stable Id of the finding for one container's image (see the module doc)."""
    path = kind_path(kind)
    raw = f"{PREFIX}{cluster}/{namespace}/{path}/{workload}/{container}/{repository}"
    if len(raw) <= MAX_ID:
        return raw
    tail = hashlib.sha256(raw.encode()).hexdigest()[:32]
    return f"{raw[: MAX_ID - len(tail) - 1]}~{tail}"


def repository_of(image: str) -> str:
    """``host/repository`` of an image reference (``python:3`` → ``docker.io/library/python``)."""
    try:
        return parse_image(image).name
    except InvalidImageReference:
        # Detection reports such a workload as Unknown; still give it a stable name.
        name = image.split("@", 1)[0]
        head, slash, last = name.rpartition("/")
        return head + slash + last.split(":", 1)[0]


# -- the decisions --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class FindingSubject:
    """What a finding is about: one container's image in one workload, under one policy."""

    id: str
    policy: str
    namespace: str
    workload: str
    uid: str
    container: str
    repository: str
    image: str
    digest: str
    kind: str = KIND

    @property
    def where(self) -> str:
        return f"{self.kind} {self.namespace}/{self.workload}, container {self.container}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Vulnerability:
    """One violating finding of a Vulnerable container, when detection passed it on."""

    id: str
    packages: tuple[str, ...] = ()
    fix_available: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """What is said of a subject: the decision a format lays out (ASFF in the adapter)."""

    subject: FindingSubject
    state: str
    reason: str
    severity: str  # INFORMATIONAL, LOW, MEDIUM, HIGH, CRITICAL
    types: tuple[str, ...]
    title: str
    description: str
    record_state: str  # ACTIVE | ARCHIVED
    compliance_status: str  # FAILED | PASSED | NOT_AVAILABLE
    workflow: str  # NEW | RESOLVED
    observed_at: dt.datetime  # now: UpdatedAt and LastObservedAt
    created_at: dt.datetime
    first_observed_at: dt.datetime
    vulnerabilities: tuple[Vulnerability, ...] = ()


def _subject(
    result: WorkloadLike, container: ContainerRecord, policy: str, context: FindingContext
) -> FindingSubject:
    name = str(container.get("name") or "")
    image = str(container.get("image") or "")
    repository = repository_of(image)
    kind = result.kind or KIND
    return FindingSubject(
        id=finding_id(context.cluster, result.namespace, result.name, name, repository, kind=kind),
        kind=kind,
        policy=policy,
        namespace=result.namespace,
        workload=result.name,
        uid=str(getattr(result, "uid", "") or ""),
        container=name,
        repository=repository,
        image=image,
        digest=str(container.get("digest") or ""),
    )


class _Times(TypedDict):
    """The three times every finding carries (``Finding``'s fields of those names)."""

    observed_at: dt.datetime
    created_at: dt.datetime
    first_observed_at: dt.datetime


def decide_finding(
    result: WorkloadLike,
    container: ContainerRecord,
    *,
    policy: str,
    context: FindingContext,
    now: dt.datetime,
    created_at: dt.datetime | None = None,
    first_observed_at: dt.datetime | None = None,
) -> Finding | None:
    """The finding for one container of a workload result, or None (Unknown).

    Non-compliant states give an ACTIVE finding, Compliant an ARCHIVED,
    RESOLVED, PASSED one (which :func:`plan_findings` sends only to archive a
    finding that was active). ``created_at`` and ``first_observed_at``
    default to ``now`` (a finding never exported).
    """
    subject = _subject(result, container, policy, context)
    state = str(container.get("state") or "")
    reason = str(container.get("reason") or state)
    message = str(container.get("message") or "")
    facts = _facts(subject, container, context)
    times: _Times = {
        "observed_at": now,
        "created_at": created_at or now,
        "first_observed_at": first_observed_at or now,
    }
    if state in _ACTIVE_STATES:
        cause = reason if state in (str(State.FAILED), str(State.PATCHING)) else state
        severity, types = _severity_and_types(cause, container)
        if state == str(State.FAILED):
            severity = "HIGH"
        return Finding(
            subject=subject, state=state, reason=reason, severity=severity, types=types,
            title=f"{subject.where}: {_headline(state, cause, container, subject)}",
            description=f"{message} ({state}, reason {reason}). {facts}",
            record_state=ACTIVE, compliance_status="FAILED", workflow="NEW",
            vulnerabilities=_vulnerabilities(container), **times,
        )  # fmt: skip
    if state == str(State.COMPLIANT):
        return Finding(
            subject=subject, state=state, reason=reason, severity="INFORMATIONAL",
            types=(TYPE_STANDARDS,),
            title=f"{subject.where}: {subject.repository} complies with policy {policy} again",
            description=f"{message or 'Compliant'}. {facts}",
            record_state=ARCHIVED, compliance_status="PASSED", workflow="RESOLVED", **times,
        )  # fmt: skip
    return None


def gone_finding(previous: ExportedLike, *, context: FindingContext, now: dt.datetime) -> Finding:
    """The archiving update of a finding whose container the policy no longer evaluates."""
    subject = FindingSubject(
        id=previous.id, kind=previous.kind or KIND, policy=previous.policy,
        namespace=previous.namespace, workload=previous.workload, uid="",
        container=previous.container, repository=previous.repository,
        image=previous.image or previous.repository, digest=previous.digest,
    )  # fmt: skip
    return Finding(
        subject=subject, state=reasons.NOT_EVALUATED, reason=reasons.NO_LONGER_EVALUATED,
        severity="INFORMATIONAL", types=(TYPE_STANDARDS,),
        title=(
            f"{subject.where}: {subject.repository} is no longer evaluated by policy "
            f"{previous.policy}"
        ),
        description=(
            f"Policy {previous.policy} no longer evaluates this container's image "
            f"{subject.repository} in cluster {context.cluster}: the workload was deleted or "
            "opted out, its namespace is no longer admitted, or the container was removed or "
            "runs another image repository. The finding is archived."
        ),
        record_state=ARCHIVED, compliance_status="NOT_AVAILABLE", workflow="RESOLVED",
        observed_at=now, created_at=previous.created_at,
        first_observed_at=previous.first_observed_at,
    )  # fmt: skip


def opted_out_finding(
    previous: ExportedLike, *, context: FindingContext, now: dt.datetime
) -> Finding:
    """The archiving update of a finding whose workload opted out: never RESOLVED.

    Removing ``imagepatch.dev/policy`` stops the evaluation; it fixes nothing,
    so the finding says so, and its workflow is left as it was (the exporter
    resolves only findings whose workflow here is RESOLVED).
    """
    gone = gone_finding(previous, context=context, now=now)
    return replace(
        gone, reason=reasons.OPTED_OUT, workflow="NEW",
        title=(
            f"{gone.subject.where}: {gone.subject.repository} opted out of policy "
            f"{previous.policy} (not fixed)"
        ),
        description=(
            f"The workload's owner removed the imagepatch.dev/policy annotation, so policy "
            f"{previous.policy} no longer evaluates this container's image "
            f"{gone.subject.repository} in cluster {context.cluster}. Opting out is not a fix: "
            "the finding is archived without being resolved."
        ),
    )  # fmt: skip


def _severity_and_types(cause: str, container: ContainerRecord) -> tuple[str, tuple[str, ...]]:
    if cause == str(State.VULNERABLE):
        return _vulnerable_severity(container), (TYPE_CVE,)
    if cause in (str(State.UNTRUSTED_BASE), reasons.BASE_UNKNOWN, reasons.UNTRUSTED_BASE):
        return "HIGH", (TYPE_STANDARDS,)
    return "MEDIUM", (TYPE_STANDARDS,)  # BaseImageOutdated, and any cause not known here


def _vulnerable_severity(container: ContainerRecord) -> str:
    """The worst violating finding's label when detection passed it on, else HIGH.

    Detection's container record carries the violating findings counted per
    severity (``findingsBySeverity``); a ``maxSeverity`` or a ``findings``
    list (the ImagePatch evidence shape) makes the label exact too. UNDEFINED
    and UNTRIAGED count as unknown.
    """
    labels = [str(container.get("maxSeverity") or "").upper()]
    by_severity = container.get("findingsBySeverity")
    if isinstance(by_severity, Mapping):
        labels += [str(k).upper() for k, n in by_severity.items() if isinstance(n, int) and n > 0]
    labels += [str(f.get("severity") or "").upper() for f in container.get("findings") or ()]
    ranked = [_SEVERITY_ORDER.index(label) for label in labels if label in _SEVERITY_ORDER]
    return _SEVERITY_ORDER[max(ranked)] if ranked else "HIGH"


def _vulnerabilities(container: ContainerRecord) -> tuple[Vulnerability, ...]:
    out: list[Vulnerability] = []
    for f in list(container.get("findings") or ())[:MAX_VULNERABILITIES]:
        if not f.get("id"):
            continue
        packages = [p.strip() for p in str(f.get("package") or "").split(",") if p.strip()]
        fix = f.get("fixAvailable")
        out.append(
            Vulnerability(
                id=str(f["id"]),
                packages=tuple(packages[:10]),
                fix_available=None if fix is None else bool(fix),
            )
        )
    return tuple(out)


def _headline(state: str, cause: str, container: ContainerRecord, subject: FindingSubject) -> str:
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


def _facts(subject: FindingSubject, container: ContainerRecord, context: FindingContext) -> str:
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


# -- the plan -------------------------------------------------------------------------------

Document = TypeVar("Document")


class FindingFormat(Protocol[Document]):
    """How findings go on the wire (the adapter's ASFF): a document, and its fingerprint."""

    def render(self, finding: Finding, context: FindingContext) -> Document:
        """The document for ``finding``."""
        ...

    def fingerprint(self, document: Document) -> str:
        """A hash of everything in ``document`` but its timestamps."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class FindingPlan(Generic[Document]):
    """What to send: findings to create or update, and findings to archive.

    ``absent`` is when each ACTIVE finding no result produced was first seen
    missing: the ``absent_since`` of the next plan. It unpacks as
    ``to_upsert, to_archive``.
    """

    to_upsert: list[Document]
    to_archive: list[Document]
    absent: Mapping[str, dt.datetime]

    def __iter__(self) -> Iterator[list[Document]]:
        return iter((self.to_upsert, self.to_archive))

    @property
    def empty(self) -> bool:
        return not (self.to_upsert or self.to_archive)


def plan_findings(
    previous: Mapping[str, ExportedLike],
    results_by_policy: Mapping[str, Iterable[WorkloadLike]],
    *,
    context: FindingContext,
    now: dt.datetime,
    form: FindingFormat[Document],
    refresh_after: dt.timedelta | None = DEFAULT_REFRESH,
    absent_since: Mapping[str, dt.datetime] | None = None,
    gone_after: dt.timedelta = DEFAULT_GONE_AFTER,
    opted_out: Collection[tuple[str, str, str]] = (),
) -> FindingPlan[Document]:
    """What to send to Security Hub, given what it holds (``previous``, by Id).

    ``results_by_policy`` holds, for each policy evaluated in this pass, all
    of its workload results; ``form`` lays each finding out for the wire.
    Per container:

    * non-compliant → upsert an ACTIVE finding, unless one with the same
      fingerprint is ACTIVE already and was updated less than
      ``refresh_after`` ago (None: never refresh);
    * Compliant → archive, if an ACTIVE finding was exported; else nothing;
    * Unknown → nothing.

    Then an ACTIVE finding of a given policy that no result produced is
    archived as gone once it has been missing for ``gone_after``; one of a
    workload in ``opted_out`` ((kind, namespace, name) seen to remove its policy
    annotation) is archived at once as opted out, never resolved
    (``absent_since`` says since when; the plan's ``absent`` is the next
    one's). A single pass never archives: right after a restart, detection
    may run before the Deployment watch has listed every workload, and
    archiving then would reactivate the findings a minute later (resetting
    their workflow to NEW). Each list is ordered by Id.
    """
    now = _utc(now)
    upsert: dict[str, Document] = {}
    archive: dict[str, Document] = {}
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
                    finding = decide_finding(
                        result, container, policy=policy, context=context, now=now,
                        created_at=before.created_at if before else None,
                        first_observed_at=(
                            before.first_observed_at if before and before.active else None
                        ),
                    )  # fmt: skip
                    assert finding is not None
                    document = form.render(finding, context)
                    if (
                        before is not None
                        and before.active
                        and before.fingerprint == form.fingerprint(document)
                        and (refresh_after is None or now - before.updated_at < refresh_after)
                    ):
                        continue
                    upsert[subject.id] = document
                    archive.pop(subject.id, None)
                elif state == str(State.COMPLIANT) and before is not None and before.active:
                    finding = decide_finding(
                        result, container, policy=policy, context=context, now=now,
                        created_at=before.created_at, first_observed_at=before.first_observed_at,
                    )  # fmt: skip
                    if finding is not None and subject.id not in upsert:
                        archive[subject.id] = form.render(finding, context)
    absent_since = absent_since or {}
    absent: dict[str, dt.datetime] = {}
    for finding_id_, before in sorted(previous.items()):
        if not before.active or finding_id_ in seen:
            continue
        if (before.kind, before.namespace, before.workload) in opted_out:
            # Known from the watch (its policy annotation was removed): archived at once,
            # saying it opted out, never as resolved.
            archive[finding_id_] = form.render(
                opted_out_finding(before, context=context, now=now), context
            )
            continue
        if before.policy not in results_by_policy:
            if finding_id_ in absent_since:  # not evaluated this time: the clock keeps running
                absent[finding_id_] = absent_since[finding_id_]
            continue
        since = absent[finding_id_] = _utc(absent_since.get(finding_id_, now))
        if now - since >= gone_after:
            archive[finding_id_] = form.render(
                gone_finding(before, context=context, now=now), context
            )
    return FindingPlan(
        to_upsert=[upsert[k] for k in sorted(upsert)],
        to_archive=[archive[k] for k in sorted(archive)],
        absent=absent,
    )
