"""The vulnerability baseline: which scan findings break a policy, and is a new image better.

This is Patch Manager's patch baseline applied to image findings. The
adapter (``adapters/findings.py``) turns ECR and Inspector2 answers into
:class:`Finding` objects; :func:`evaluate` applies a policy's
``spec.vulnerabilities`` to them with an injected clock; :func:`compare` is
what verification uses to decide whether a rebuilt image is an improvement.
Pure: no I/O, no boto3, so every rule is table-tested in
``tests/unit/test_baseline.py``.

The rules, in the order they are applied:

1. ``ignore``: a finding whose ID is listed never counts (Patch Manager's
   rejected list, accepted as a risk).
2. ``minSeverity``: only findings at or above it count. The order is
   CRITICAL > HIGH > MEDIUM > LOW > INFORMATIONAL > UNDEFINED/UNTRIAGED; the
   last two have no rank (``severity is None``) and so never break a baseline,
   whose lowest threshold is INFORMATIONAL.
3. ``fixAvailableOnly``: a finding known to have no fix does not count.
   A finding whose fix availability is *unknown* (ECR basic scanning reports
   none) **does** count. Two reasons. First, the question the baseline asks of
   a patch tool is "would a rebuild help?", and for a basic finding the way to
   find out is to rebuild; a rebuild that did not help is refused by
   :func:`compare`, and the planner never retries a digest that failed, so a
   wrong guess costs one build, not a loop. Second, ``fixAvailableOnly``
   defaults to true: treating unknown as "no fix" would silently turn off
   vulnerability patching for every repository on basic scanning.
4. ``approveAfterDays``: a finding first observed fewer than N days ago is
   *deferred*, not dropped (like Patch Manager's ApproveAfterDays, which counts
   from a patch's release). It becomes a violation once old enough, and
   :attr:`BaselineVerdict.next_approval_at` says when, so the caller can
   requeue then. A finding with no first-observed time (ECR basic scanning)
   counts as old enough: an unknown age can never mature, so deferring it
   would defer it forever. A caller that records when it first saw a finding
   can fill ``first_observed_at`` in with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from imagepatch.model.policy import Severity, Vulnerabilities

__all__ = [
    "BaselineComparison",
    "BaselineVerdict",
    "Finding",
    "FindingSource",
    "SeverityCounts",
    "compare",
    "evaluate",
    "parse_severity",
]


class FindingSource(enum.StrEnum):
    """Which scanner reported a finding (it decides what the finding can tell)."""

    ECR_BASIC = "ecr-basic"  # DescribeImageScanFindings findings[]: no fix, no first-seen time
    ECR_ENHANCED = "ecr-enhanced"  # DescribeImageScanFindings enhancedFindings[] (Inspector)
    INSPECTOR = "inspector"  # Inspector2 ListFindings


def parse_severity(label: str | None) -> Severity | None:
    """A scanner's severity label as a ranked :class:`Severity`, or None if it has no rank.

    ECR says UNDEFINED and Inspector says UNTRIAGED for a vulnerability that
    has not been scored yet; an unknown future label is treated the same way
    rather than crashing evaluation.
    """
    try:
        return Severity((label or "").upper())
    except ValueError:
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One vulnerability in one image, as a scanner reported it."""

    id: str  # CVE-… or GHSA-…: what the baseline's ignore list names
    severity: Severity | None  # None: UNDEFINED / UNTRIAGED, ranked below INFORMATIONAL
    source: FindingSource
    package: str = ""  # "name" or "a, b" when one finding covers several packages
    installed_version: str = ""
    fixed_version: str = ""  # "" when unknown or when there is no fix
    fix_available: bool | None = None  # None: the scanner does not say (ECR basic)
    first_observed_at: dt.datetime | None = None  # None: the scanner does not say

    @property
    def severity_label(self) -> str:
        """The label to show and record (the ImagePatch evidence enum)."""
        if self.severity is not None:
            return self.severity.value
        # ECR basic scanning says UNDEFINED; Inspector-backed sources say UNTRIAGED.
        return "UNDEFINED" if self.source is FindingSource.ECR_BASIC else "UNTRIAGED"

    @property
    def rank(self) -> int:
        """Higher is more severe; unranked findings sort below INFORMATIONAL."""
        return -1 if self.severity is None else self.severity.rank


@dataclass(frozen=True, kw_only=True, slots=True)
class SeverityCounts:
    """How many findings there are of each severity (for status, Events and metrics)."""

    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    informational: int = 0
    undefined: int = 0  # UNDEFINED and UNTRIAGED together

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> SeverityCounts:
        counts = dict.fromkeys(("critical", "high", "medium", "low", "informational"), 0)
        undefined = 0
        for finding in findings:
            if finding.severity is None:
                undefined += 1
            else:
                counts[finding.severity.value.lower()] += 1
        return cls(undefined=undefined, **counts)

    @property
    def total(self) -> int:
        return (
            self.critical + self.high + self.medium + self.low + self.informational + self.undefined
        )

    def as_dict(self) -> dict[str, int]:
        """Non-zero counts keyed by severity label, most severe first (ECR's own form)."""
        pairs = [
            ("CRITICAL", self.critical),
            ("HIGH", self.high),
            ("MEDIUM", self.medium),
            ("LOW", self.low),
            ("INFORMATIONAL", self.informational),
            ("UNDEFINED", self.undefined),
        ]
        return {label: n for label, n in pairs if n}


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineVerdict:
    """What a baseline makes of one image's findings.

    ``violations`` break the baseline now; ``deferred`` would break it but were
    first observed too recently (``approveAfterDays``). Both are sorted most
    severe first, then by ID, so the evidence recorded is stable across scans.
    """

    violations: tuple[Finding, ...]
    deferred: tuple[Finding, ...]
    counts: SeverityCounts  # every finding the scanner reported
    violation_counts: SeverityCounts
    next_approval_at: dt.datetime | None  # when the first deferred finding becomes a violation

    @property
    def compliant(self) -> bool:
        return not self.violations

    @property
    def over_baseline(self) -> tuple[Finding, ...]:
        """Violations and deferred findings: over the baseline, whatever their age."""
        return _sorted((*self.violations, *self.deferred))

    @property
    def violation_ids(self) -> frozenset[str]:
        return frozenset(f.id for f in self.violations)


def _sorted(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: (-f.rank, f.id, f.package)))


def evaluate(
    findings: Iterable[Finding], baseline: Vulnerabilities, *, now: dt.datetime
) -> BaselineVerdict:
    """Apply ``baseline`` to ``findings`` at time ``now`` (timezone-aware).

    See the module docstring for the rules and for how unknown fix
    availability and unknown age are treated.
    """
    all_findings = tuple(findings)
    ignored = {i.upper() for i in baseline.ignore}
    min_age = dt.timedelta(days=baseline.approve_after_days)
    violations: list[Finding] = []
    deferred: list[Finding] = []
    next_approval_at: dt.datetime | None = None
    for finding in all_findings:
        if finding.id.upper() in ignored:
            continue
        if finding.severity is None or not finding.severity.at_least(baseline.min_severity):
            continue
        if baseline.fix_available_only and finding.fix_available is False:
            continue
        # approveAfterDays 0 approves everything, even a first-seen time a
        # little in the future because of clock skew between AWS and us.
        if baseline.approve_after_days > 0 and finding.first_observed_at is not None:
            approved_at = finding.first_observed_at + min_age
            if now < approved_at:
                deferred.append(finding)
                if next_approval_at is None or approved_at < next_approval_at:
                    next_approval_at = approved_at
                continue
        violations.append(finding)
    return BaselineVerdict(
        violations=_sorted(violations),
        deferred=_sorted(deferred),
        counts=SeverityCounts.of(all_findings),
        violation_counts=SeverityCounts.of(violations),
        next_approval_at=next_approval_at,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineComparison:
    """A rebuilt image's verdict against the one it would replace.

    Counted over :attr:`BaselineVerdict.over_baseline`, not just violations:
    every finding of a freshly scanned image is freshly observed, so with
    ``approveAfterDays`` the new image would otherwise always look clean.

    The rule (issue #14, "verification that fits real builds"): the rebuild
    must fix what made the patch and add nothing at or over the baseline.
    ``required`` are the finding IDs that made the patch (the ImagePatch's
    ``spec.evidence.findings``, recorded by detection). A finding the rebuild
    still carries is the application's own, or one its base has not fixed
    yet: no rebuild on the base can remove it, so it does not block a base
    update (``base_moved``). A rebuild on the *same* base must fix at least
    one of them, or it is no better and is not rolled out for vulnerability
    reasons.
    """

    before: int  # findings over the baseline before
    after: int
    fixed: tuple[str, ...]  # IDs over the baseline before and not after
    introduced: tuple[str, ...]  # IDs over the baseline after and not before
    required: tuple[str, ...] = ()  # the IDs that made the patch
    still_present: tuple[str, ...] = ()  # required IDs the rebuild still carries
    base_moved: bool = False  # the rebuild is on a newer base than the running image

    @property
    def accepted(self) -> bool:
        """Roll the new image out? Nothing new over the baseline, and no worse.

        A clean image that stays clean is accepted: a rebuild for an outdated
        base must not be refused because there was nothing to fix; neither is
        a base update refused because the application itself carries a finding.
        """
        if self.introduced:
            return False
        if self.base_moved or not self.required:
            return True
        return len(self.still_present) < len(self.required)

    @property
    def reason(self) -> str:
        """A human sentence for the verification message, naming the findings."""
        if self.introduced:
            return f"new findings at or over the baseline: {_names(self.introduced)}"
        if self.before == self.after == 0:
            return "no findings over the baseline before or after"
        text = f"{self.before} findings over the baseline before, {self.after} after"
        if not self.accepted:
            return f"{text}; fixed none of the findings that made the patch: " + _names(
                self.required
            )
        if self.fixed:
            text += f"; fixed {_names(self.fixed)}"
        if self.still_present:
            text += f"; still present (not fixed by the base): {_names(self.still_present)}"
        return text


def _names(ids: tuple[str, ...], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def compare(
    before: BaselineVerdict,
    after: BaselineVerdict,
    *,
    required: Iterable[str] | None = None,
    base_moved: bool = False,
) -> BaselineComparison:
    """Compare the verdicts of the running image and its rebuild (same baseline).

    ``required``: the finding IDs that made the patch; None when the patch
    recorded none (made by hand, or by an older operator), and then the
    findings over the baseline before are what must be fixed.
    """
    before_ids = {f.id for f in before.over_baseline}
    after_ids = {f.id for f in after.over_baseline}
    needed = sorted(set(required) if required is not None else before_ids)
    return BaselineComparison(
        before=len(before.over_baseline),
        after=len(after.over_baseline),
        fixed=tuple(sorted(before_ids - after_ids)),
        introduced=tuple(sorted(after_ids - before_ids)),
        required=tuple(needed),
        still_present=tuple(i for i in needed if i in after_ids),
        base_moved=base_moved,
    )
