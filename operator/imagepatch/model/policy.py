"""ImagePatchPolicy: its ``spec`` parsed into frozen dataclasses.

An ImagePatchPolicy is the cluster-scoped, admin-owned patch baseline (see
``crds/imagepatch.dev_imagepatchpolicies.yaml`` and DESIGN.md). This module
turns the raw ``spec`` dict into typed, immutable objects once, at the edge, so
``core/`` never touches a raw dict.

It mirrors the CRD on purpose: the same defaults (an object read from an API
server that skipped defaulting, or built by hand in a test, still works) and
the same checks as the CRD's schema and CEL rules, so a spec that passed the
API server always parses, and one rejected here would have been rejected
there. The first bad field raises :class:`SpecError` naming its full path.
Change the CRD and this module together.

What the CRD can only check loosely stays loose here too: the
``maintenanceWindow.schedule`` (cron) and ``timezone`` are kept as strings and
validated by ``core/``, which knows cron and the tz database.
"""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from imagepatch.model.durations import parse_duration
from imagepatch.model.errors import SpecError
from imagepatch.model.names import REBUILD_ANNOTATION

# --- enums (values are the exact strings of the CRD's enums) -----------------


class VulnerabilitySource(enum.StrEnum):
    ECR = "ecr"
    INSPECTOR = "inspector"
    NONE = "none"


class Severity(enum.StrEnum):
    """Finding severities a baseline can require, in ascending order of rank."""

    INFORMATIONAL = "INFORMATIONAL"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        # StrEnum compares as strings ("HIGH" < "LOW"), so order by rank instead.
        return _SEVERITY_RANK[self]

    def at_least(self, other: Severity) -> bool:
        return self.rank >= other.rank


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class RebuildStrategy(enum.StrEnum):
    CODEBUILD = "codebuild"
    JOB = "job"
    EXTERNAL = "external"
    REBASE = "rebase"


class TagPolicy(enum.StrEnum):
    """``spec.rebuild.tagPolicy``: where a rebuild is pushed (see ``core.tags``)."""

    NEW = "New"  # a new tag from spec.rebuild.tagTemplate: works with immutable tags
    OVERWRITE = "Overwrite"  # over the running tag: only a mutable repository accepts it


DEFAULT_TAG_TEMPLATE = "{tag}-patch.{yyyymmdd}.{n}"
_TAG_PLACEHOLDER = re.compile(r"\{(tag|yyyymmdd|n)\}")
_TAG_LITERAL = re.compile(r"[A-Za-z0-9_.-]*")


def tag_template_error(template: str) -> str | None:
    """Why ``template`` cannot make tags, or None (the CRD's CEL rules say the same)."""
    if "{n}" not in template:
        return "must contain {n}, so that a tag that exists already is never reused"
    if not _TAG_LITERAL.fullmatch(_TAG_PLACEHOLDER.sub("", template)):
        return (
            "may hold only letters, digits, '_', '.', '-' and the placeholders "
            "{tag}, {yyyymmdd} and {n}"
        )
    if template[0] in ".-":
        return "must not start with '.' or '-'"
    return None


class ApprovalMode(enum.StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class OnTargetFailure(enum.StrEnum):
    """What one target's failure stops (``spec.rollout.onTargetFailure``).

    ``Continue`` (the default; blast radius is one team): a target's failure
    or outside change stops only the remaining targets of its namespace; a
    failed health gate of the new image also stops every later wave (waves
    are the admin's staging order). ``StopAll`` (v0.2): every target not
    started yet is stopped.
    """

    CONTINUE = "Continue"
    STOP_ALL = "StopAll"


class ArgoPromote(enum.StrEnum):
    """Whether imagepatch promotes an Argo Rollout paused at a manual step
    (``spec.rollout.argoRollouts.promote``; ``core.kinds_rollout``).

    ``Never`` (the default): the gate waits, as for a paused Deployment, for
    a person's ``kubectl argo rollouts promote``. ``Auto``:
    imagepatch promotes it as that command does.
    """

    NEVER = "Never"
    AUTO = "Auto"


class RolloutMode(enum.StrEnum):
    """How the policy rolls a new image out (``spec.rollout.mode``).

    ``Patch``: the live workload is patched. ``Skip``: it is reported, never
    patched. ``GitWriteBack``: the new reference is committed to the Git
    repository the GitOps tool delivers from (``rollout.gitWriteBack``), and
    the tool applies it. Unset: ``Skip`` for a workload a GitOps tool
    delivers (Flux, Argo CD: ``core/gitops.py``), whose sync would undo the
    patch, and ``Patch`` for the rest.
    """

    PATCH = "Patch"
    SKIP = "Skip"
    GIT_WRITE_BACK = "GitWriteBack"


class PullRequestProvider(enum.StrEnum):
    """``spec.rollout.gitWriteBack.pullRequest.provider``: whose API opens the pull request."""

    GITHUB = "GitHub"
    GITLAB = "GitLab"


class SelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# --- dataclasses --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelSelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        # Kubernetes semantics: NotIn also matches objects without the key.
        match self.operator:
            case SelectorOperator.IN:
                return self.key in labels and labels[self.key] in self.values
            case SelectorOperator.NOT_IN:
                return self.key not in labels or labels[self.key] not in self.values
            case SelectorOperator.EXISTS:
                return self.key in labels
            case SelectorOperator.DOES_NOT_EXIST:
                return self.key not in labels

    def to_query(self) -> str:
        match self.operator:
            case SelectorOperator.IN:
                return f"{self.key} in ({','.join(self.values)})"
            case SelectorOperator.NOT_IN:
                return f"{self.key} notin ({','.join(self.values)})"
            case SelectorOperator.EXISTS:
                return self.key
            case SelectorOperator.DOES_NOT_EXIST:
                return f"!{self.key}"


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelSelector:
    """A metav1.LabelSelector. The empty selector selects everything."""

    # Sorted (key, value) pairs rather than a dict, so the object stays hashable.
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @property
    def selects_everything(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def to_query(self) -> str:
        """The ``labelSelector`` query string for list/watch calls ("" selects all)."""
        terms = [f"{k}={v}" for k, v in self.match_labels]
        terms += [r.to_query() for r in self.match_expressions]
        return ",".join(terms)


@dataclass(frozen=True, kw_only=True, slots=True)
class BaseImages:
    # Globs over base image references; empty means every base is trusted.
    trusted: tuple[str, ...] = ()
    check_interval: dt.timedelta = dt.timedelta(hours=1)
    # A new base digest is adopted only once published this long (core/approval.py).
    approve_after: dt.timedelta = dt.timedelta(0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Vulnerabilities:
    source: VulnerabilitySource = VulnerabilitySource.NONE
    min_severity: Severity = Severity.HIGH
    fix_available_only: bool = True
    approve_after_days: int = 0
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class CodeBuildSettings:
    project: str  # a CodeBuild project name or ARN


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSettings:
    template: str  # a ConfigMap holding the Job template, in the operator's namespace


@dataclass(frozen=True, kw_only=True, slots=True)
class AllowedRebuilds:
    """``spec.rebuild.allowed``: what a workload's imagepatch.dev/rebuild may ask for."""

    strategies: tuple[RebuildStrategy, ...] = ()
    codebuild_projects: tuple[str, ...] = ()  # names or globs (* and ?)
    job_templates: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyRef:
    """A signing key: a Secret in the operator's namespace, or an AWS KMS key.

    Exactly one of ``secret_name`` (with ``secret_key``, the data key holding
    the PEM) and ``kms_key`` (a key or alias ARN) is set.
    """

    secret_name: str = ""
    secret_key: str = ""
    kms_key: str = ""

    def describe(self) -> str:
        """How messages and status name the key (never its material)."""
        if self.kms_key:
            return f"kms:{self.kms_key}"
        return f"secret:{self.secret_name}/{self.secret_key}"


@dataclass(frozen=True, kw_only=True, slots=True)
class KeylessIdentity:
    """A Fulcio certificate identity: its OIDC issuer and a regexp over its subject."""

    issuer: str
    subject_regexp: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SignatureRequirement:
    """``spec.verification.signatures``: a rebuilt digest rolls out only when signed.

    A signature by any one of ``keys`` is enough. ``keyless`` identities are
    accepted in the spec for policies shared with clusters that reach
    Fulcio/Rekor, but this operator cannot verify them (it has no trust root
    and no network to Rekor): they never make a digest pass. ``wait_for``: how
    long after the build a missing signature is waited for (CI signs after it
    pushes).
    """

    keys: tuple[KeyRef, ...] = ()
    keyless: tuple[KeylessIdentity, ...] = ()
    wait_for: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvenanceRequirement:
    """``spec.verification.provenance``: a signed SLSA provenance attestation is required.

    Signed by one of ``spec.verification.signatures.keys``; its builder id
    must match ``builder_id_regexp`` (the whole id).
    """

    builder_id_regexp: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Verification:
    """``spec.verification``: what a rebuilt image must carry before it is rolled out."""

    signatures: SignatureRequirement | None = None
    provenance: ProvenanceRequirement | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RebaseSettings:
    """``spec.rebuild.rebase``: the key the operator signs its own rebased images with."""

    signing_key: KeyRef | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Rebuild:
    strategy: RebuildStrategy = RebuildStrategy.EXTERNAL
    codebuild: CodeBuildSettings | None = None
    job: JobSettings | None = None
    rebase: RebaseSettings = RebaseSettings()
    timeout: dt.timedelta = dt.timedelta(hours=1)
    tag_policy: TagPolicy = TagPolicy.NEW
    tag_template: str = DEFAULT_TAG_TEMPLATE
    # None: only this policy's own strategy, project and template are allowed.
    allowed: AllowedRebuilds | None = None

    def effective_allowed(self) -> AllowedRebuilds:
        if self.allowed is not None:
            return self.allowed
        return AllowedRebuilds(
            strategies=(self.strategy,),
            codebuild_projects=(self.codebuild.project,) if self.codebuild else (),
            job_templates=(self.job.template,) if self.job else (),
        )

    def refusal(self, requested: str, *, path: str = "spec.rebuild.allowed") -> str | None:
        """Why a workload's ``imagepatch.dev/rebuild: <requested>`` is not allowed, or None.

        The message names the field an admin changes to allow it. An empty
        project or template (``codebuild``, ``job:``) means the policy's own.
        """
        kind, _, arg = requested.partition(":")
        try:
            strategy = RebuildStrategy(kind)
        except ValueError:
            choices = ", ".join(s.value for s in RebuildStrategy)
            return f"{REBUILD_ANNOTATION} {requested!r} names no strategy ({choices})"
        allowed = self.effective_allowed()
        if strategy not in allowed.strategies:
            return (
                f"{REBUILD_ANNOTATION} {requested!r}: strategy {kind} is not in {path}.strategies"
                + ("" if self.allowed is not None else f" (default: only {self.strategy.value})")
            )
        if strategy is RebuildStrategy.CODEBUILD:
            project = arg or (self.codebuild.project if self.codebuild else "")
            if not any(fnmatch.fnmatchcase(project, g) for g in allowed.codebuild_projects):
                return (
                    f"{REBUILD_ANNOTATION} {requested!r}: CodeBuild project {project!r} "
                    f"is not in {path}.codebuildProjects"
                )
        if strategy is RebuildStrategy.JOB:
            template = arg or (self.job.template if self.job else "")
            if template not in allowed.job_templates:
                return (
                    f"{REBUILD_ANNOTATION} {requested!r}: Job template {template!r} "
                    f"is not in {path}.jobTemplates"
                )
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Wave:
    name: str
    namespace_selector: LabelSelector
    soak: dt.timedelta = dt.timedelta(0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rollout:
    progress_deadline_seconds: int = 600
    healthy_for: dt.timedelta = dt.timedelta(minutes=5)
    max_restarts: int = 0
    rollback: bool = True
    waves: tuple[Wave, ...] = ()
    # CronJobs: gate on a Job started at once from the patched template.
    cron_job_trial_run: bool = False
    # CronJobs without a trial run: patched only when the schedule's next run
    # is due within this long; the gate waits that long for it (and no more).
    # 8 days: a weekly schedule (the most common long one) is covered by default.
    cron_job_run_within: dt.timedelta = dt.timedelta(hours=192)
    on_target_failure: OnTargetFailure = OnTargetFailure.CONTINUE
    argo_promote: ArgoPromote = ArgoPromote.NEVER
    # None: Skip for GitOps-managed workloads, Patch for the rest (core/gitops.py).
    mode: RolloutMode | None = None
    # mode GitWriteBack: where and how the new reference is committed.
    git_write_back: GitWriteBack | None = None


class ArgoCDSourceType(enum.StrEnum):
    """``spec.rollout.gitWriteBack.argoCD.sourceType``: how the Application renders its path."""

    KUSTOMIZE = "Kustomize"
    HELM = "Helm"


@dataclass(frozen=True, kw_only=True, slots=True)
class ArgoCDOverride:
    """Write an Argo CD Application's ``.argocd-source-<app>.yaml`` instead of its manifests."""

    source_type: ArgoCDSourceType
    namespace: str = "argocd"  # Argo CD's own namespace (names the file of apps elsewhere)
    helm_image_parameter: str = "image.repository"
    helm_tag_parameter: str = "image.tag"


@dataclass(frozen=True, kw_only=True, slots=True)
class PullRequest:
    """Open a pull (merge) request for ``pushBranch`` through the forge's API."""

    provider: PullRequestProvider
    api_url: str = ""  # empty: the provider's public API
    token_secret: str = ""  # a Secret in the operator's namespace, data key ``token``


@dataclass(frozen=True, kw_only=True, slots=True)
class GitWriteBack:
    """``spec.rollout.gitWriteBack``: the repository a GitOps tool delivers the workloads from.

    Secrets are named, never read here: ``secret_name`` holds ``username`` and
    ``password`` (or ``token``) for an HTTP(S) URL, ``identity`` and
    ``known_hosts`` for SSH; ``signing_key_secret`` an SSH private key
    (``identity``) that signs the commits.
    """

    url: str
    branch: str = "main"
    path: str = "."  # the folder (in the repository) whose files declare the images
    secret_name: str
    author_name: str = "imagepatch"
    author_email: str = "imagepatch@users.noreply.imagepatch.dev"
    message_template: str = ""  # empty: core.writeback's default message
    push_branch: str = ""  # empty: push to ``branch``
    pull_request: PullRequest | None = None
    signing_key_secret: str = ""
    helm_values_key: str = ""  # a Helm values file: the key of the image block
    # An Argo CD Application's workloads: its parameter-override file under ``path``.
    argo_cd: ArgoCDOverride | None = None
    apply_timeout: dt.timedelta = dt.timedelta(minutes=10)

    @property
    def ssh(self) -> bool:
        return not self.url.startswith(("https://", "http://"))

    def describe(self) -> str:
        """How messages name the repository and branch (never a credential)."""
        return f"{self.url} branch {self.push_branch or self.branch}"


@dataclass(frozen=True, kw_only=True, slots=True)
class MaintenanceWindow:
    schedule: str  # AWS cron(...) or 5-field cron; validated by core/
    timezone: str = "UTC"  # IANA name; validated by core/
    duration: dt.timedelta
    cutoff: dt.timedelta = dt.timedelta(0)
    # Systems Manager's active-period options (see core/window.py):
    schedule_offset: int = 0  # days after each cron fire time (SSM ScheduleOffset)
    start_date: dt.datetime | None = None  # aware; SSM StartDate
    end_date: dt.datetime | None = None  # aware; SSM EndDate


@dataclass(frozen=True, kw_only=True, slots=True)
class History:
    """Retention of finished ImagePatches: the newest ``keep_count``, none past ``max_age``."""

    keep_count: int = 100
    max_age: dt.timedelta = dt.timedelta(hours=2160)


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistryCredentials:
    secret_name: str  # a Secret in the operator's namespace


class SinkType(enum.StrEnum):
    """``spec.notifications[].type``: where a notification goes (``core.notify`` shapes it)."""

    SLACK = "Slack"  # a Slack incoming webhook (Block Kit)
    MSTEAMS = "MSTeams"  # a Teams Workflows ("Power Automate") webhook (Adaptive Card)
    WEBHOOK = "Webhook"  # JSON, signed with HMAC-SHA256 (X-Signature: sha256=<hex>)
    SNS = "SNS"  # an Amazon SNS topic (Publish)


# The reasons a sink may ask for: the ImagePatch phases and workload states the
# operator already records and posts as Events (core/reasons.py, model/imagepatch.py).
NOTIFY_REASONS = ("Patched", "RolledBack", "Failed", "AwaitingApproval", "Vulnerable",
                  "BaseImageOutdated")
DEFAULT_NOTIFY_REASONS = NOTIFY_REASONS[:5]
MAX_SINKS = 10
_SNS_TOPIC_ARN = re.compile(
    r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class NotificationSink:
    """One ``spec.notifications[]`` entry.

    ``secret_name`` names a Secret in the operator's namespace: key ``address``
    holds the URL (Slack, MSTeams, Webhook), key ``token`` the HMAC key
    (Webhook). An SNS topic ARN is no secret, so it is inline (``topic_arn``).
    """

    name: str
    type: SinkType
    secret_name: str = ""
    topic_arn: str = ""
    reasons: frozenset[str] = frozenset(DEFAULT_NOTIFY_REASONS)


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicySpec:
    namespace_selector: LabelSelector
    suspend: bool = False
    base_images: BaseImages = BaseImages()
    vulnerabilities: Vulnerabilities = Vulnerabilities()
    rebuild: Rebuild = Rebuild()
    rollout: Rollout = Rollout()
    maintenance_window: MaintenanceWindow | None = None
    approval: ApprovalMode = ApprovalMode.AUTOMATIC
    registry_credentials: RegistryCredentials | None = None
    history: History = History()
    notifications: tuple[NotificationSink, ...] = ()
    verification: Verification = Verification()


@dataclass(frozen=True, kw_only=True, slots=True)
class ImagePatchPolicy:
    name: str
    generation: int
    spec: PolicySpec


# --- limits and patterns shared with the CRD -----------------------------------

MIN_CHECK_INTERVAL = dt.timedelta(minutes=1)
MIN_REBUILD_TIMEOUT = dt.timedelta(minutes=1)
MIN_WINDOW_DURATION = dt.timedelta(minutes=1)
MAX_WINDOW_DURATION = dt.timedelta(hours=168)
MAX_WAVES = 10
MIN_CRONJOB_RUN_WITHIN = dt.timedelta(minutes=1)
MAX_CRONJOB_RUN_WITHIN = dt.timedelta(hours=744)  # 31 days: a monthly job
MAX_POLICY_NAME = 63  # the name is used as a label value

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VULN_ID = re.compile(r"CVE-[0-9]{4}-[0-9]{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3}")
_CODEBUILD_GLOB = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9_*?-]{0,254}")
_CODEBUILD_PROJECT = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_-]{1,254}"
    r"|arn:aws[a-zA-Z-]*:codebuild:[a-z0-9-]+:[0-9]{12}:project/[A-Za-z0-9][A-Za-z0-9_-]{1,254}"
)
# Shape only, as in the CRD: AWS "cron(6 or 7 fields)" or 5 whitespace-separated fields.
_SCHEDULE_SHAPE = re.compile(
    r"cron\([^\s()]+(\s+[^\s()]+){5,6}\)|rate\([^()]+\)|at\([^()]+\)|[^\s()]+(\s+[^\s()]+){4}"
)
_TIMEZONE_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*")
# RFC 3339 date-time with an explicit offset, as the CRD's format: date-time
# and CEL's timestamp() read it (SSM's ISO 8601 examples have this shape).
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
MAX_SCHEDULE_OFFSET = 6  # days, as SSM's ScheduleOffset allows
KMS_KEY_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]{1,256}"
)
_SECRET_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")
MAX_SIGNATURE_KEYS = 16
MAX_KEYLESS_IDENTITIES = 16


# --- reading raw dicts ----------------------------------------------------------
#
# Unknown fields are ignored, not rejected: the API server prunes fields its
# CRD does not declare, so an unknown field here can only come from a CRD newer
# than this operator, and a policy must not stall during an upgrade.
# ``None`` counts as absent: the API server drops nulls of non-nullable fields
# before defaulting, and we do the same.

_E = TypeVar("_E", bound=enum.StrEnum)
_MISSING: Any = object()


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _get(raw: Mapping[str, Any], path: str, name: str, *, required: bool) -> Any:
    value = raw.get(name)
    if value is None and required:
        raise SpecError(f"{path}.{name}", "is required")
    return value


def _string(
    raw: Mapping[str, Any],
    path: str,
    name: str,
    *,
    default: Any = _MISSING,
    max_length: int,
    check: Callable[[str], str | None] | None = None,
) -> Any:
    field = f"{path}.{name}"
    value = _get(raw, path, name, required=default is _MISSING)
    if value is None:
        return default
    return _check_string(value, field, max_length=max_length, check=check)


def _check_string(
    value: Any, field: str, *, max_length: int, check: Callable[[str], str | None] | None = None
) -> str:
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, not {_kind(value)}")
    if len(value) > max_length:
        raise SpecError(field, f"must be at most {max_length} characters")
    if check is not None and (problem := check(value)) is not None:
        raise SpecError(field, problem)
    return value


def _boolean(raw: Mapping[str, Any], path: str, name: str, *, default: bool) -> bool:
    value = raw.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{name}", f"must be true or false, not {_kind(value)}")
    return value


def _integer(
    raw: Mapping[str, Any], path: str, name: str, *, default: int, minimum: int, maximum: int
) -> int:
    field = f"{path}.{name}"
    value = raw.get(name)
    if value is None:
        return default
    # bool is an int subclass in Python, but not an integer in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"must be an integer, not {_kind(value)}")
    if not minimum <= value <= maximum:
        raise SpecError(field, f"must be between {minimum} and {maximum}, not {value}")
    return value


def _enum(
    raw: Mapping[str, Any], path: str, name: str, cls: type[_E], *, default: Any = _MISSING
) -> _E:
    field = f"{path}.{name}"
    value = _get(raw, path, name, required=default is _MISSING)
    if value is None:
        return cast(_E, default)
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise SpecError(field, f"must be one of {allowed}, not {value!r}") from None


def _duration(
    raw: Mapping[str, Any],
    path: str,
    name: str,
    *,
    default: Any = _MISSING,
    minimum: dt.timedelta | None = None,
    maximum: dt.timedelta | None = None,
    bounds_text: str = "",
) -> Any:
    field = f"{path}.{name}"
    value = _get(raw, path, name, required=default is _MISSING)
    if value is None:
        return default
    if isinstance(value, str) and len(value) > 64:
        raise SpecError(field, "must be at most 64 characters")
    try:
        parsed = parse_duration(value)
    except ValueError as e:
        raise SpecError(field, str(e)) from None
    if (minimum is not None and parsed < minimum) or (maximum is not None and parsed > maximum):
        raise SpecError(field, f"must be {bounds_text}, not {value}")
    return parsed


def _list(raw: Mapping[str, Any], path: str, name: str, *, max_items: int) -> list[Any]:
    field = f"{path}.{name}"
    value = raw.get(name)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise SpecError(field, f"must be a list, not {_kind(value)}")
    if len(value) > max_items:
        raise SpecError(field, f"must have at most {max_items} items, not {len(value)}")
    return list(value)


def _matching(pattern: re.Pattern[str], problem: str) -> Callable[[str], str | None]:
    return lambda s: None if pattern.fullmatch(s) else problem


_dns_label = _matching(_DNS_LABEL, "must be a DNS label (lowercase letters, digits and '-')")
_dns_subdomain = _matching(
    _DNS_SUBDOMAIN, "must be an object name (lowercase letters, digits, '-' and '.')"
)


def _nonempty(s: str) -> str | None:
    return None if s else "must not be empty"


# --- parsers -------------------------------------------------------------------


def parse_label_selector(raw: Any, path: str) -> LabelSelector:
    """Parse a metav1.LabelSelector found at ``path`` (used for error messages)."""
    raw = _mapping(raw, path)
    labels_path = f"{path}.matchLabels"
    labels = _mapping(raw.get("matchLabels"), labels_path)
    if len(labels) > 64:
        raise SpecError(labels_path, "must have at most 64 labels")
    for key, value in labels.items():
        _check_string(key, labels_path, max_length=317, check=_nonempty)
        _check_string(value, f"{labels_path}.{key}", max_length=63)
    requirements = []
    exprs_path = f"{path}.matchExpressions"
    for i, item in enumerate(_list(raw, path, "matchExpressions", max_items=32)):
        item_path = f"{exprs_path}[{i}]"
        item = _mapping(item, item_path)
        key = _string(item, item_path, "key", max_length=317, check=_nonempty)
        operator = _enum(item, item_path, "operator", SelectorOperator)
        values = tuple(
            _check_string(v, f"{item_path}.values[{j}]", max_length=63)
            for j, v in enumerate(_list(item, item_path, "values", max_items=64))
        )
        if operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not values:
            raise SpecError(f"{item_path}.values", f"must not be empty when operator is {operator}")
        if operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST) and values:
            raise SpecError(f"{item_path}.values", f"must be empty when operator is {operator}")
        requirements.append(LabelSelectorRequirement(key=key, operator=operator, values=values))
    return LabelSelector(
        match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        match_expressions=tuple(requirements),
    )


def _parse_base_images(raw: Any, path: str) -> BaseImages:
    raw = _mapping(raw, path)

    def glob(s: str) -> str | None:
        if not s:
            return "must not be empty"
        return "must not contain whitespace" if re.search(r"\s", s) else None

    trusted = tuple(
        _check_string(g, f"{path}.trusted[{i}]", max_length=512, check=glob)
        for i, g in enumerate(_list(raw, path, "trusted", max_items=100))
    )
    interval = _duration(
        raw,
        path,
        "checkInterval",
        default=BaseImages().check_interval,
        minimum=MIN_CHECK_INTERVAL,
        bounds_text="at least 1m",
    )
    approve_after = _duration(raw, path, "approveAfter", default=dt.timedelta(0))
    return BaseImages(trusted=trusted, check_interval=interval, approve_after=approve_after)


def _parse_vulnerabilities(raw: Any, path: str) -> Vulnerabilities:
    raw = _mapping(raw, path)
    defaults = Vulnerabilities()
    ignore: list[str] = []
    id_problem = "must be a CVE ID (CVE-2024-12345) or a GHSA ID (GHSA-xxxx-xxxx-xxxx)"
    for i, item in enumerate(_list(raw, path, "ignore", max_items=1000)):
        field = f"{path}.ignore[{i}]"
        ignore.append(
            _check_string(item, field, max_length=64, check=_matching(_VULN_ID, id_problem))
        )
        if item in ignore[:-1]:
            raise SpecError(field, f"duplicates {item!r}")
    return Vulnerabilities(
        source=_enum(raw, path, "source", VulnerabilitySource, default=defaults.source),
        min_severity=_enum(raw, path, "minSeverity", Severity, default=defaults.min_severity),
        fix_available_only=_boolean(
            raw, path, "fixAvailableOnly", default=defaults.fix_available_only
        ),
        approve_after_days=_integer(
            raw,
            path,
            "approveAfterDays",
            default=defaults.approve_after_days,
            minimum=0,
            maximum=3650,
        ),
        ignore=tuple(ignore),
    )


def _parse_rebuild(raw: Any, path: str) -> Rebuild:
    raw = _mapping(raw, path)
    strategy = _enum(raw, path, "strategy", RebuildStrategy, default=RebuildStrategy.EXTERNAL)
    codebuild = job = None
    if raw.get("codebuild") is not None:
        cb_path = f"{path}.codebuild"
        project = _string(
            _mapping(raw["codebuild"], cb_path),
            cb_path,
            "project",
            max_length=512,
            check=_matching(_CODEBUILD_PROJECT, "must be a CodeBuild project name or ARN"),
        )
        codebuild = CodeBuildSettings(project=project)
    if raw.get("job") is not None:
        job_path = f"{path}.job"
        template = _string(
            _mapping(raw["job"], job_path),
            job_path,
            "template",
            max_length=253,
            check=_dns_subdomain,
        )
        job = JobSettings(template=template)
    if strategy is RebuildStrategy.CODEBUILD and codebuild is None:
        raise SpecError(
            f"{path}.codebuild.project", f"is required when {path}.strategy is codebuild"
        )
    if strategy is RebuildStrategy.JOB and job is None:
        raise SpecError(f"{path}.job.template", f"is required when {path}.strategy is job")
    timeout = _duration(
        raw,
        path,
        "timeout",
        default=Rebuild().timeout,
        minimum=MIN_REBUILD_TIMEOUT,
        bounds_text="at least 1m",
    )
    allowed = None
    if raw.get("allowed") is not None:
        allowed = _parse_allowed(raw["allowed"], f"{path}.allowed")
    rebase_path = f"{path}.rebase"
    rebase_raw = _mapping(raw.get("rebase"), rebase_path)
    signing_key = None
    if rebase_raw.get("signingKey") is not None:
        signing_key = _parse_key_ref(
            rebase_raw["signingKey"], f"{rebase_path}.signingKey", default_data_key="cosign.key"
        )
    return Rebuild(
        strategy=strategy,
        codebuild=codebuild,
        job=job,
        rebase=RebaseSettings(signing_key=signing_key),
        timeout=timeout,
        allowed=allowed,
        tag_policy=_enum(raw, path, "tagPolicy", TagPolicy, default=TagPolicy.NEW),
        tag_template=_string(
            raw,
            path,
            "tagTemplate",
            default=DEFAULT_TAG_TEMPLATE,
            max_length=128,
            check=tag_template_error,
        ),
    )


def _parse_allowed(raw: Any, path: str) -> AllowedRebuilds:
    raw = _mapping(raw, path)
    strategies: list[RebuildStrategy] = []
    for i, item in enumerate(_list(raw, path, "strategies", max_items=4)):
        field = f"{path}.strategies[{i}]"
        try:
            strategies.append(RebuildStrategy(item))
        except ValueError:
            choices = ", ".join(s.value for s in RebuildStrategy)
            raise SpecError(field, f"must be one of {choices}, not {item!r}") from None
    projects = tuple(
        _check_string(
            item, f"{path}.codebuildProjects[{i}]", max_length=255,
            check=_matching(_CODEBUILD_GLOB, "must be a CodeBuild project name or a glob of them"),
        )
        for i, item in enumerate(_list(raw, path, "codebuildProjects", max_items=64))
    )  # fmt: skip
    templates = tuple(
        _check_string(item, f"{path}.jobTemplates[{i}]", max_length=253, check=_dns_subdomain)
        for i, item in enumerate(_list(raw, path, "jobTemplates", max_items=64))
    )
    if projects and RebuildStrategy.CODEBUILD not in strategies:
        raise SpecError(
            f"{path}.strategies", "must include codebuild when codebuildProjects is set"
        )
    if templates and RebuildStrategy.JOB not in strategies:
        raise SpecError(f"{path}.strategies", "must include job when jobTemplates is set")
    return AllowedRebuilds(
        strategies=tuple(strategies), codebuild_projects=projects, job_templates=templates
    )


def _parse_rollout(raw: Any, path: str) -> Rollout:
    raw = _mapping(raw, path)
    defaults = Rollout()
    mode = _enum(raw, path, "mode", RolloutMode, default=None)
    write_back = None
    if raw.get("gitWriteBack") is not None:
        write_back = _parse_git_write_back(raw["gitWriteBack"], f"{path}.gitWriteBack")
    if mode is RolloutMode.GIT_WRITE_BACK and write_back is None:
        raise SpecError(f"{path}.gitWriteBack", f"is required when {path}.mode is GitWriteBack")
    waves: list[Wave] = []
    for i, item in enumerate(_list(raw, path, "waves", max_items=MAX_WAVES)):
        wave_path = f"{path}.waves[{i}]"
        item = _mapping(item, wave_path)
        name = _string(item, wave_path, "name", max_length=63, check=_dns_label)
        if any(w.name == name for w in waves):
            raise SpecError(f"{wave_path}.name", f"must be unique, {name!r} is used twice")
        selector_raw = _get(item, wave_path, "namespaceSelector", required=True)
        waves.append(
            Wave(
                name=name,
                namespace_selector=parse_label_selector(
                    selector_raw, f"{wave_path}.namespaceSelector"
                ),
                soak=_duration(item, wave_path, "soak", default=dt.timedelta(0)),
            )
        )
    return Rollout(
        progress_deadline_seconds=_integer(
            raw,
            path,
            "progressDeadlineSeconds",
            default=defaults.progress_deadline_seconds,
            minimum=30,
            maximum=86400,
        ),
        healthy_for=_duration(raw, path, "healthyFor", default=defaults.healthy_for),
        max_restarts=_integer(
            raw, path, "maxRestarts", default=defaults.max_restarts, minimum=0, maximum=1000
        ),
        rollback=_boolean(raw, path, "rollback", default=defaults.rollback),
        waves=tuple(waves),
        cron_job_trial_run=_boolean(
            raw, path, "cronJobTrialRun", default=defaults.cron_job_trial_run
        ),
        cron_job_run_within=_duration(
            raw,
            path,
            "cronJobRunWithin",
            default=defaults.cron_job_run_within,
            minimum=MIN_CRONJOB_RUN_WITHIN,
            maximum=MAX_CRONJOB_RUN_WITHIN,
            bounds_text="between 1m and 744h",
        ),
        on_target_failure=_enum(
            raw, path, "onTargetFailure", OnTargetFailure, default=defaults.on_target_failure
        ),
        argo_promote=_enum(
            _mapping(raw.get("argoRollouts"), f"{path}.argoRollouts"), f"{path}.argoRollouts",
            "promote", ArgoPromote, default=defaults.argo_promote,
        ),  # fmt: skip
        mode=mode,
        git_write_back=write_back,
    )


# An HTTP(S) or ssh:// URL, or scp-like user@host:path. No credentials in the URL
# (they come from secretRef): a URL is logged and recorded in status.
_GIT_URL = re.compile(
    r"(https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[^\s@]*|ssh://([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+"
    r"(:[0-9]{1,5})?/[^\s]*|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s/][^\s]*)"
)
# A Git branch name (git check-ref-format, the common subset).
_BRANCH = re.compile(r"(?!/|.*//|.*\.\.|.*\.lock$|.*/$|.*@\{)[A-Za-z0-9._/-]{1,200}")
_REPO_PATH = re.compile(r"(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/-]{1,512}")
_EMAIL = re.compile(r"[^\s@<>]+@[^\s@<>]+")
_VALUES_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _secret_ref(raw: Mapping[str, Any], path: str, name: str, *, required: bool) -> str:
    ref = _get(raw, path, name, required=required)
    if ref is None:
        return ""
    return str(_string(_mapping(ref, f"{path}.{name}"), f"{path}.{name}", "name",
                       max_length=253, check=_dns_subdomain))


def _parse_git_write_back(raw: Any, path: str) -> GitWriteBack:
    raw = _mapping(raw, path)
    defaults = GitWriteBack(url="", secret_name="")
    url = _string(raw, path, "url", max_length=2048, check=_matching(
        _GIT_URL, "must be an https://, http:// or ssh:// URL, or user@host:path, without "
        "credentials (they come from secretRef)"))
    branch_check = _matching(_BRANCH, "must be a Git branch name")
    author = _mapping(raw.get("author"), f"{path}.author")
    pull_request = None
    if raw.get("pullRequest") is not None:
        pr_path = f"{path}.pullRequest"
        pr = _mapping(raw["pullRequest"], pr_path)
        pull_request = PullRequest(
            provider=_enum(pr, pr_path, "provider", PullRequestProvider),
            api_url=_string(pr, pr_path, "apiURL", default="", max_length=2048,
                            check=_matching(re.compile(r"https?://\S+"),
                                            "must be an https:// URL")),
            token_secret=_secret_ref(pr, pr_path, "tokenSecretRef", required=True),
        )
    push_branch = _string(raw, path, "pushBranch", default="", max_length=200,
                          check=branch_check)
    if pull_request is not None and not push_branch:
        raise SpecError(f"{path}.pushBranch", f"is required when {path}.pullRequest is set")
    return GitWriteBack(
        url=url,
        branch=_string(raw, path, "branch", default=defaults.branch, max_length=200,
                       check=branch_check),
        path=_string(raw, path, "path", default=defaults.path, max_length=512,
                     check=_matching(_REPO_PATH, "must be a relative folder in the repository "
                                     "(no leading /, no ..)")),
        secret_name=_secret_ref(raw, path, "secretRef", required=True),
        author_name=_string(author, f"{path}.author", "name", default=defaults.author_name,
                            max_length=256),
        author_email=_string(author, f"{path}.author", "email", default=defaults.author_email,
                             max_length=256, check=_matching(_EMAIL, "must be an email address")),
        message_template=_string(raw, path, "messageTemplate", default="", max_length=4096),
        push_branch=push_branch,
        pull_request=pull_request,
        signing_key_secret=_secret_ref(raw, path, "signingKey", required=False),
        helm_values_key=_string(raw, path, "helmValuesKey", default="", max_length=256,
                                check=_matching(_VALUES_KEY, "must be a dotted key such as "
                                                "image or app.image")),
        argo_cd=_parse_argo_cd(raw.get("argoCD"), f"{path}.argoCD"),
        apply_timeout=_duration(raw, path, "applyTimeout", default=defaults.apply_timeout,
                                minimum=dt.timedelta(minutes=1), maximum=dt.timedelta(hours=24),
                                bounds_text="between 1m and 24h"),
    )


def _parse_argo_cd(raw: Any, path: str) -> ArgoCDOverride | None:
    if raw is None:
        return None
    raw = _mapping(raw, path)
    defaults = ArgoCDOverride(source_type=ArgoCDSourceType.KUSTOMIZE)
    key = _matching(_VALUES_KEY, "must be a dotted Helm parameter such as image.tag")
    return ArgoCDOverride(
        source_type=_enum(raw, path, "sourceType", ArgoCDSourceType),
        namespace=_string(raw, path, "argoCDNamespace", default=defaults.namespace,
                          max_length=63, check=_dns_label),
        helm_image_parameter=_string(raw, path, "helmImageParameter",
                                     default=defaults.helm_image_parameter, max_length=256,
                                     check=key),
        helm_tag_parameter=_string(raw, path, "helmTagParameter",
                                   default=defaults.helm_tag_parameter, max_length=256,
                                   check=key),
    )


def _parse_maintenance_window(raw: Any, path: str) -> MaintenanceWindow | None:
    if raw is None:
        return None
    raw = _mapping(raw, path)
    schedule = _string(
        raw,
        path,
        "schedule",
        max_length=128,
        check=_matching(
            _SCHEDULE_SHAPE,
            "must be an AWS cron expression such as cron(0 2 ? * SUN *), an AWS rate(...) "
            "or at(...) expression, or a 5-field cron expression such as 0 2 * * 0",
        ),
    )
    timezone = _string(
        raw,
        path,
        "timezone",
        default="UTC",
        max_length=64,
        check=_matching(
            _TIMEZONE_SHAPE, "must be an IANA time zone name such as UTC or Europe/Berlin"
        ),
    )
    duration = _duration(
        raw,
        path,
        "duration",
        minimum=MIN_WINDOW_DURATION,
        maximum=MAX_WINDOW_DURATION,
        bounds_text="between 1m and 168h",
    )
    cutoff = _duration(raw, path, "cutoff", default=dt.timedelta(0))
    if cutoff >= duration:
        raise SpecError(f"{path}.cutoff", f"must be shorter than {path}.duration")
    offset = _integer(raw, path, "scheduleOffset", default=0, minimum=0,
                      maximum=MAX_SCHEDULE_OFFSET)
    if offset and _AWS_OTHER.match(schedule):
        raise SpecError(f"{path}.scheduleOffset",
                        "is only allowed with a cron schedule, not rate(...) or at(...)")
    start = _date_time(raw, path, "startDate")
    end = _date_time(raw, path, "endDate")
    if start is not None and end is not None and end <= start:
        raise SpecError(f"{path}.endDate", f"must be after {path}.startDate")
    return MaintenanceWindow(
        schedule=schedule,
        timezone=timezone,
        duration=duration,
        cutoff=cutoff,
        schedule_offset=offset,
        start_date=start,
        end_date=end,
    )


_AWS_OTHER = re.compile(r"\s*(rate|at)\(")


def _date_time(raw: Mapping[str, Any], path: str, name: str) -> dt.datetime | None:
    """An RFC 3339 date-time with its UTC offset (``2021-04-07T14:29:00-08:00``)."""
    value = _string(raw, path, name, default=None, max_length=64,
                    check=_matching(_DATE_TIME, "must be an RFC 3339 date-time with a UTC "
                                    "offset, such as 2021-04-07T14:29:00-08:00"))
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(f"{path}.{name}", f"{value!r} is not a real date and time") from None


def _parse_registry_credentials(raw: Any, path: str) -> RegistryCredentials | None:
    if raw is None:
        return None
    raw = _mapping(raw, path)
    name = _string(raw, path, "secretName", max_length=253, check=_dns_subdomain)
    return RegistryCredentials(secret_name=name)


def _parse_sink(raw: Any, path: str) -> NotificationSink:
    raw = _mapping(raw, path)
    name = _string(raw, path, "name", max_length=63, check=_dns_label)
    kind = _enum(raw, path, "type", SinkType)
    secret = raw.get("secretRef")
    secret_name = ""
    if secret is not None:
        secret_name = _string(_mapping(secret, f"{path}.secretRef"), f"{path}.secretRef", "name",
                              max_length=253, check=_dns_subdomain)
    topic = _string(raw, path, "topicArn", default="", max_length=1024,
                    check=_matching(_SNS_TOPIC_ARN, "must be an SNS topic ARN "
                                    "(arn:aws:sns:<region>:<account>:<topic>)"))
    if kind == SinkType.SNS:
        if not topic:
            raise SpecError(f"{path}.topicArn", "is required when type is SNS")
        if secret_name:
            raise SpecError(f"{path}.secretRef", "must not be set when type is SNS "
                            "(the topic ARN is no secret; AWS credentials are the operator's)")
    else:
        if not secret_name:
            raise SpecError(f"{path}.secretRef", f"is required when type is {kind}")
        if topic:
            raise SpecError(f"{path}.topicArn", "may only be set when type is SNS")
    reasons = _list(raw, path, "reasons", max_items=len(NOTIFY_REASONS))
    for i, reason in enumerate(reasons):
        if reason not in NOTIFY_REASONS:
            raise SpecError(f"{path}.reasons[{i}]",
                            f"must be one of {', '.join(NOTIFY_REASONS)}, not {reason!r}")
    if "reasons" in raw and raw["reasons"] is not None and not reasons:
        raise SpecError(f"{path}.reasons", "must not be empty (leave it out for the default)")
    return NotificationSink(
        name=name, type=kind, secret_name=secret_name, topic_arn=topic,
        reasons=frozenset(reasons) if reasons else frozenset(DEFAULT_NOTIFY_REASONS),
    )


def _parse_notifications(raw: Any, path: str) -> tuple[NotificationSink, ...]:
    items = _list({"notifications": raw}, path.rsplit(".", 1)[0], "notifications",
                  max_items=MAX_SINKS)
    sinks = tuple(_parse_sink(item, f"{path}[{i}]") for i, item in enumerate(items))
    seen: set[str] = set()
    for i, sink in enumerate(sinks):
        if sink.name in seen:
            raise SpecError(f"{path}[{i}].name", f"{sink.name!r} is used by another sink")
        seen.add(sink.name)
    return sinks
def _parse_key_ref(raw: Any, path: str, *, default_data_key: str) -> KeyRef:
    raw = _mapping(raw, path)
    has_secret, has_kms = raw.get("secretName") is not None, raw.get("kmsKey") is not None
    if has_secret == has_kms:
        raise SpecError(path, "must set exactly one of secretName and kmsKey")
    if has_kms:
        kms = _string(
            raw, path, "kmsKey", max_length=2048,
            check=_matching(KMS_KEY_ARN, "must be an AWS KMS key or alias ARN"),
        )  # fmt: skip
        return KeyRef(kms_key=kms)
    return KeyRef(
        secret_name=_string(raw, path, "secretName", max_length=253, check=_dns_subdomain),
        secret_key=_string(
            raw, path, "secretKey", default=default_data_key, max_length=253,
            check=_matching(_SECRET_DATA_KEY, "must be a Secret data key ('-', '_', '.', "
                            "letters and digits)"),
        ),
    )  # fmt: skip


def _parse_verification(value: Any, path: str) -> Verification:
    raw = _mapping(value, path)
    signatures = _parse_signatures(raw, path)
    provenance = None
    if raw.get("provenance") is not None:
        prov_path = f"{path}.provenance"
        prov = _mapping(raw["provenance"], prov_path)
        pattern = _string(prov, prov_path, "builderIdRegExp", max_length=1024, check=_regexp)
        if signatures is None or not signatures.keys:
            raise SpecError(
                prov_path, f"needs {path}.signatures.keys: the keys its attestation is signed with"
            )
        provenance = ProvenanceRequirement(builder_id_regexp=pattern)
    return Verification(signatures=signatures, provenance=provenance)


def _parse_signatures(raw: Mapping[str, Any], path: str) -> SignatureRequirement | None:
    if raw.get("signatures") is None:
        return None
    sig_path = f"{path}.signatures"
    sig = _mapping(raw["signatures"], sig_path)
    keys = tuple(
        _parse_key_ref(item, f"{sig_path}.keys[{i}]", default_data_key="cosign.pub")
        for i, item in enumerate(_list(sig, sig_path, "keys", max_items=MAX_SIGNATURE_KEYS))
    )
    keyless: list[KeylessIdentity] = []
    for i, item in enumerate(_list(sig, sig_path, "keyless", max_items=MAX_KEYLESS_IDENTITIES)):
        item_path = f"{sig_path}.keyless[{i}]"
        item = _mapping(item, item_path)
        keyless.append(
            KeylessIdentity(
                issuer=_string(item, item_path, "issuer", max_length=1024, check=_nonempty),
                subject_regexp=_string(
                    item, item_path, "subjectRegExp", max_length=1024, check=_regexp
                ),
            )
        )
    if not keys and not keyless:
        raise SpecError(sig_path, "must name at least one key or keyless identity")
    wait_for = _duration(
        sig, sig_path, "waitFor", default=SignatureRequirement().wait_for,
        maximum=dt.timedelta(hours=24), bounds_text="at most 24h",
    )  # fmt: skip
    return SignatureRequirement(keys=keys, keyless=tuple(keyless), wait_for=wait_for)


def _regexp(s: str) -> str | None:
    if not s:
        return "must not be empty"
    try:
        re.compile(s)
    except re.error as exc:
        return f"must be a regular expression: {exc}"
    return None


def parse_policy_spec(spec: Any, path: str = "spec") -> PolicySpec:
    """Parse an ImagePatchPolicy ``spec`` dict, applying the CRD's defaults.

    Raises :class:`SpecError` naming the first bad field (``spec.…``).
    """
    raw = _mapping(spec, path)
    selector = _get(raw, path, "namespaceSelector", required=True)
    return PolicySpec(
        suspend=_boolean(raw, path, "suspend", default=False),
        namespace_selector=parse_label_selector(selector, f"{path}.namespaceSelector"),
        base_images=_parse_base_images(raw.get("baseImages"), f"{path}.baseImages"),
        vulnerabilities=_parse_vulnerabilities(
            raw.get("vulnerabilities"), f"{path}.vulnerabilities"
        ),
        rebuild=_parse_rebuild(raw.get("rebuild"), f"{path}.rebuild"),
        rollout=_parse_rollout(raw.get("rollout"), f"{path}.rollout"),
        maintenance_window=_parse_maintenance_window(
            raw.get("maintenanceWindow"), f"{path}.maintenanceWindow"
        ),
        approval=_enum(raw, path, "approval", ApprovalMode, default=ApprovalMode.AUTOMATIC),
        registry_credentials=_parse_registry_credentials(
            raw.get("registryCredentials"), f"{path}.registryCredentials"
        ),
        history=_parse_history(raw.get("history"), f"{path}.history"),
        notifications=_parse_notifications(raw.get("notifications"), f"{path}.notifications"),
        verification=_parse_verification(raw.get("verification"), f"{path}.verification"),
    )


def _parse_history(value: Any, path: str) -> History:
    raw = _mapping(value, path) if value is not None else {}
    return History(
        keep_count=_integer(raw, path, "keepCount", default=100, minimum=0, maximum=10000),
        max_age=_duration(raw, path, "maxAge", default=dt.timedelta(hours=2160)),
    )


def parse_policy(body: Mapping[str, Any]) -> ImagePatchPolicy:
    """Parse a whole ImagePatchPolicy object (as kopf or the API hands it over)."""
    metadata = _mapping(body.get("metadata"), "metadata")
    name = _string(metadata, "metadata", "name", max_length=MAX_POLICY_NAME, check=_nonempty)
    generation = metadata.get("generation") or 0
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise SpecError("metadata.generation", f"must be an integer, not {_kind(generation)}")
    return ImagePatchPolicy(
        name=name, generation=generation, spec=parse_policy_spec(body.get("spec"))
    )
