"""The vulnerability baseline: which findings break a policy, and when a rebuild is better."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from imagepatch.core.baseline import (
    BaselineVerdict,
    Finding,
    FindingSource,
    SeverityCounts,
    compare,
    evaluate,
    parse_severity,
)
from imagepatch.model.policy import Severity, Vulnerabilities

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

C, H, M, L, I = (  # noqa: E741 - one letter per severity keeps the tables readable
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
    Severity.INFORMATIONAL,
)


def finding(
    id: str,
    severity: Severity | None = H,
    *,
    fix: bool | None = True,
    age_days: float | None = 30,
    source: FindingSource = FindingSource.INSPECTOR,
) -> Finding:
    return Finding(
        id=id,
        severity=severity,
        source=source,
        package="openssl",
        installed_version="3.0.11-1",
        fixed_version="3.0.13-1" if fix else "",
        fix_available=fix,
        first_observed_at=None if age_days is None else NOW - age_days * DAY,
    )


def ids(findings: tuple[Finding, ...]) -> list[str]:
    return [f.id for f in findings]


def baseline(**kwargs) -> Vulnerabilities:
    kwargs.setdefault("approve_after_days", 0)
    return Vulnerabilities(**kwargs)


# -- severity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("CRITICAL", C),
        ("high", H),
        ("MEDIUM", M),
        ("LOW", L),
        ("INFORMATIONAL", I),
        ("UNDEFINED", None),  # ECR basic: not scored yet
        ("UNTRIAGED", None),  # Inspector: not scored yet
        ("SOMETHING_NEW", None),  # a future label does not crash evaluation
        (None, None),
        ("", None),
    ],
)
def test_parse_severity_ranks_known_labels_and_leaves_the_rest_unranked(label, expected):
    assert parse_severity(label) is expected


def test_severity_order_is_critical_high_medium_low_informational_then_unranked():
    findings = [
        finding("CVE-0-U", None),
        finding("CVE-0-I", I),
        finding("CVE-0-M", M),
        finding("CVE-0-C", C),
        finding("CVE-0-L", L),
        finding("CVE-0-H", H),
    ]
    ranked = sorted(findings, key=lambda f: f.rank, reverse=True)
    assert ids(tuple(ranked)) == ["CVE-0-C", "CVE-0-H", "CVE-0-M", "CVE-0-L", "CVE-0-I", "CVE-0-U"]


@pytest.mark.parametrize(
    ("source", "label"),
    [
        (FindingSource.ECR_BASIC, "UNDEFINED"),
        (FindingSource.ECR_ENHANCED, "UNTRIAGED"),
        (FindingSource.INSPECTOR, "UNTRIAGED"),
    ],
)
def test_unranked_findings_keep_their_scanners_label(source, label):
    assert finding("CVE-1", None, source=source).severity_label == label
    assert finding("CVE-1", C, source=source).severity_label == "CRITICAL"


# -- the rules, one table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "rules", "findings", "violations", "deferred"),
    [
        # minSeverity: at or above counts, below does not; unranked never counts.
        ("at min severity", {"min_severity": H}, [finding("CVE-1", H)], ["CVE-1"], []),
        ("above min severity", {"min_severity": H}, [finding("CVE-1", C)], ["CVE-1"], []),
        ("below min severity", {"min_severity": H}, [finding("CVE-1", M)], [], []),
        ("informational threshold takes everything ranked", {"min_severity": I},
         [finding("CVE-1", I), finding("CVE-2", L)], ["CVE-2", "CVE-1"], []),
        ("unranked never breaks, even the lowest threshold", {"min_severity": I},
         [finding("CVE-1", None)], [], []),
        # fixAvailableOnly: a known "no fix" is dropped; unknown counts as fixable.
        ("no fix, fixAvailableOnly", {"fix_available_only": True}, [finding("CVE-1", fix=False)], [], []),
        ("no fix, all findings", {"fix_available_only": False}, [finding("CVE-1", fix=False)], ["CVE-1"], []),
        ("fix unknown counts as fixable", {"fix_available_only": True},
         [finding("CVE-1", fix=None, source=FindingSource.ECR_BASIC)], ["CVE-1"], []),
        # ignore: by exact ID, case-insensitively.
        ("ignored", {"ignore": ("CVE-2024-1",)}, [finding("CVE-2024-1", C)], [], []),
        ("ignored, other case", {"ignore": ("cve-2024-1",)}, [finding("CVE-2024-1", C)], [], []),
        ("ignore is exact, not a prefix", {"ignore": ("CVE-2024-1",)},
         [finding("CVE-2024-10", C)], ["CVE-2024-10"], []),
        # approveAfterDays: too recent is deferred, old enough breaks, unknown age breaks.
        ("too recent", {"approve_after_days": 7}, [finding("CVE-1", age_days=2)], [], ["CVE-1"]),
        ("exactly old enough", {"approve_after_days": 7}, [finding("CVE-1", age_days=7)], ["CVE-1"], []),
        ("old enough", {"approve_after_days": 7}, [finding("CVE-1", age_days=30)], ["CVE-1"], []),
        ("unknown age counts as old enough", {"approve_after_days": 7},
         [finding("CVE-1", age_days=None)], ["CVE-1"], []),
        ("zero days approves even a skewed future time", {"approve_after_days": 0},
         [finding("CVE-1", age_days=-0.01)], ["CVE-1"], []),
        # Rules combine: each finding is dropped by the first rule it fails.
        ("combined", {"min_severity": H, "fix_available_only": True, "approve_after_days": 7,
                      "ignore": ("CVE-9",)},
         [finding("CVE-1", C), finding("CVE-2", M), finding("CVE-3", H, fix=False),
          finding("CVE-4", H, age_days=1), finding("CVE-9", C), finding("CVE-5", H, fix=None)],
         ["CVE-1", "CVE-5"], ["CVE-4"]),
        # An ignored or low finding is not deferred either: deferral is only for age.
        ("ignored and recent is not deferred", {"approve_after_days": 7, "ignore": ("CVE-1",)},
         [finding("CVE-1", age_days=1)], [], []),
        ("nothing", {}, [], [], []),
    ],
)
def test_baseline_rules(case, rules, findings, violations, deferred):
    verdict = evaluate(findings, baseline(**rules), now=NOW)
    assert ids(verdict.violations) == violations, case
    assert ids(verdict.deferred) == deferred, case
    assert verdict.compliant is (not violations)


def test_defaults_are_high_and_above_with_a_fix():
    # The CRD's defaults: minSeverity HIGH, fixAvailableOnly true, no waiting.
    verdict = evaluate(
        [finding("CVE-1", C), finding("CVE-2", H, fix=False), finding("CVE-3", M)],
        Vulnerabilities(),
        now=NOW,
    )
    assert ids(verdict.violations) == ["CVE-1"]


def test_violations_are_sorted_most_severe_first_then_by_id():
    verdict = evaluate(
        [finding("CVE-3", H), finding("CVE-2", C), finding("CVE-1", H), finding("CVE-0", M)],
        baseline(min_severity=M),
        now=NOW,
    )
    assert ids(verdict.violations) == ["CVE-2", "CVE-1", "CVE-3", "CVE-0"]


def test_counts_cover_every_finding_and_violation_counts_only_violations():
    findings = [
        finding("CVE-1", C),
        finding("CVE-2", C, fix=False),
        finding("CVE-3", H),
        finding("CVE-4", M),
        finding("CVE-5", L),
        finding("CVE-6", I),
        finding("CVE-7", None),
        finding("CVE-8", None, source=FindingSource.ECR_BASIC),
    ]
    verdict = evaluate(findings, baseline(), now=NOW)
    assert verdict.counts == SeverityCounts(
        critical=2, high=1, medium=1, low=1, informational=1, undefined=2
    )
    assert verdict.counts.total == 8
    assert verdict.violation_counts == SeverityCounts(critical=1, high=1)
    assert verdict.violation_counts.as_dict() == {"CRITICAL": 1, "HIGH": 1}


def test_next_approval_is_when_the_first_deferred_finding_matures():
    verdict = evaluate(
        [finding("CVE-1", age_days=5), finding("CVE-2", age_days=6), finding("CVE-3", age_days=1)],
        baseline(approve_after_days=7),
        now=NOW,
    )
    assert verdict.compliant
    assert verdict.next_approval_at == NOW + 1 * DAY  # CVE-2, observed 6 days ago

    # A day later the reconciler evaluates again, and CVE-2 now breaks the baseline.
    later = evaluate(
        [finding("CVE-1", age_days=5), finding("CVE-2", age_days=6), finding("CVE-3", age_days=1)],
        baseline(approve_after_days=7),
        now=verdict.next_approval_at,
    )
    assert ids(later.violations) == ["CVE-2"]
    assert later.next_approval_at == NOW + 2 * DAY


def test_no_deferral_means_no_next_approval():
    verdict = evaluate([finding("CVE-1")], baseline(approve_after_days=7), now=NOW)
    assert verdict.next_approval_at is None


def test_a_caller_can_supply_the_first_seen_time_of_a_basic_finding():
    basic = finding("CVE-1", fix=None, age_days=None, source=FindingSource.ECR_BASIC)
    seen_yesterday = replace(basic, first_observed_at=NOW - DAY)
    verdict = evaluate([seen_yesterday], baseline(approve_after_days=7), now=NOW)
    assert ids(verdict.deferred) == ["CVE-1"]


# -- compare: is the rebuilt image better? ------------------------------------------------


def verdict_of(*findings: Finding, **rules) -> BaselineVerdict:
    return evaluate(findings, baseline(**rules), now=NOW)


@pytest.mark.parametrize(
    ("case", "before", "after", "accepted"),
    [
        ("fixed all", [finding("CVE-1"), finding("CVE-2")], [], True),
        ("fixed some", [finding("CVE-1"), finding("CVE-2")], [finding("CVE-2")], True),
        ("fixed nothing", [finding("CVE-1")], [finding("CVE-1")], False),
        ("fixed one, introduced one", [finding("CVE-1")], [finding("CVE-2")], False),
        ("worse", [finding("CVE-1")], [finding("CVE-1"), finding("CVE-2")], False),
        ("clean stays clean (outdated base)", [], [], True),
        ("clean becomes vulnerable", [], [finding("CVE-1")], False),
        ("below the baseline does not count", [finding("CVE-1")], [finding("CVE-1", L)], True),
    ],
)
def test_compare_accepts_only_fewer_findings_over_the_baseline(case, before, after, accepted):
    result = compare(verdict_of(*before), verdict_of(*after))
    assert result.accepted is accepted, case


def test_compare_counts_deferred_findings_because_a_new_image_is_always_freshly_observed():
    rules = {"approve_after_days": 7}
    before = verdict_of(finding("CVE-1", age_days=30), **rules)
    # The rebuild still has CVE-1, but as a new image it was first observed just now.
    after = verdict_of(finding("CVE-1", age_days=0), **rules)
    assert after.compliant  # by age alone it would look clean...

    result = compare(before, after)

    assert (result.before, result.after) == (1, 1)
    assert not result.accepted  # ...but it is not better


def test_compare_names_what_was_fixed_and_what_is_new():
    result = compare(
        verdict_of(finding("CVE-1"), finding("CVE-2")),
        verdict_of(finding("CVE-2"), finding("CVE-3")),
    )
    assert result.fixed == ("CVE-1",)
    assert result.introduced == ("CVE-3",)
    assert result.reason == "new findings at or over the baseline: CVE-3"
    assert compare(verdict_of(), verdict_of()).reason == (
        "no findings over the baseline before or after"
    )


# The application's own CVE-APP is over the baseline before and after; the base's
# CVE-B1 and CVE-B2 made the patch with it (spec.evidence.findings).
APP, B1, B2 = finding("CVE-APP"), finding("CVE-B1", C), finding("CVE-B2")
MADE_THE_PATCH = ["CVE-APP", "CVE-B1", "CVE-B2"]


def test_a_base_update_that_fixes_the_base_findings_passes_though_the_app_keeps_its_cve():
    result = compare(
        verdict_of(APP, B1, B2), verdict_of(APP), required=MADE_THE_PATCH, base_moved=True
    )
    assert result.accepted
    assert result.fixed == ("CVE-B1", "CVE-B2")
    assert result.still_present == ("CVE-APP",)
    assert result.reason == (
        "3 findings over the baseline before, 1 after; fixed CVE-B1, CVE-B2; "
        "still present (not fixed by the base): CVE-APP"
    )


def test_a_base_update_is_not_refused_because_the_app_carries_a_cve():
    # The base had nothing over the baseline; before and after count the same.
    result = compare(verdict_of(APP), verdict_of(APP), required=["CVE-APP"], base_moved=True)
    assert result.accepted
    assert (result.before, result.after) == (1, 1)


def test_a_new_finding_at_the_baseline_is_refused_and_named_even_when_the_base_fixed_its_own():
    new = finding("CVE-NEW", H)  # HIGH: exactly at the baseline below
    result = compare(
        verdict_of(APP, B1, min_severity=H),
        verdict_of(APP, new, min_severity=H),
        required=["CVE-APP", "CVE-B1"],
        base_moved=True,
    )
    assert not result.accepted
    assert result.introduced == ("CVE-NEW",)
    assert result.reason == "new findings at or over the baseline: CVE-NEW"


def test_a_new_finding_below_the_baseline_does_not_count():
    result = compare(
        verdict_of(APP, B1, min_severity=H),
        verdict_of(APP, finding("CVE-LOW", L), min_severity=H),
        required=["CVE-APP", "CVE-B1"],
        base_moved=True,
    )
    assert result.accepted


def test_a_rebuild_on_the_same_base_must_fix_at_least_one_finding_that_made_the_patch():
    refused = compare(verdict_of(APP, B1), verdict_of(APP, B1), required=["CVE-APP", "CVE-B1"])
    assert not refused.accepted
    assert refused.reason == (
        "2 findings over the baseline before, 2 after; fixed none of the findings that made "
        "the patch: CVE-APP, CVE-B1"
    )
    fixed_one = compare(verdict_of(APP, B1), verdict_of(APP), required=["CVE-APP", "CVE-B1"])
    assert fixed_one.accepted


def test_without_recorded_evidence_the_findings_before_are_what_must_be_fixed():
    result = compare(verdict_of(APP, B1), verdict_of(APP, B1), required=None)
    assert result.required == ("CVE-APP", "CVE-B1")
    assert not result.accepted
    many = [finding(f"CVE-{i}") for i in range(7)]
    assert compare(verdict_of(*many), verdict_of(*many)).reason.endswith(
        "CVE-0, CVE-1, CVE-2, CVE-3, CVE-4 and 2 more"
    )
