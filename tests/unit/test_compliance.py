"""Compliance: each container's state and its precedence, and the ImagePatches that calls for.

Given the facts detection gathered about a container, when it is assessed
under a policy, then it gets exactly one state; a workload shows its worst
container's; Vulnerable and BaseImageOutdated ask for an ImagePatch with a
deterministic, DNS-1123 name; the planner creates only what is not known yet
and closes only what it is safe to close; open or failed patches overlay the
state as Patching or Failed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagepatch.core.baseline import Finding, FindingSource, evaluate
from imagepatch.core.compliance import (
    Assessment,
    ContainerFacts,
    KnownPatch,
    PatchIntent,
    State,
    assess_container,
    counts,
    intent_for,
    overlay,
    plan_patches,
    worst,
)
from imagepatch.core.scans import scan_outcome
from imagepatch.model.policy import Severity, Vulnerabilities, parse_policy_spec

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
CRDS = Path(__file__).resolve().parents[2] / "crds"

ANY_BASE = parse_policy_spec({"namespaceSelector": {}})
TRUSTS_PYTHON = parse_policy_spec(
    {"namespaceSelector": {}, "baseImages": {"trusted": ["docker.io/library/python:*"]}}
)

REPO = "registry.example.com/team/app"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")

S = State  # keeps the tables on one line each


def dg(c: str) -> str:
    return "sha256:" + c * 64


RUNNING, BASE_OLD, BASE_NEW, BASE_NEWER = dg("a"), dg("b"), dg("c"), dg("d")
AMD64, ARM64 = dg("e"), dg("f")


def cve(i: int) -> str:
    return f"CVE-2026-{i:04d}"


def verdict(n: int, *, vulnerabilities: Vulnerabilities | None = None, **finding: Any):
    """A baseline verdict with ``n`` HIGH violations CVE-2026-0000…, sorted by ID."""
    findings = [
        Finding(id=cve(i), severity=Severity.HIGH, source=FindingSource.INSPECTOR, **finding)
        for i in range(n)
    ]
    return evaluate(findings, vulnerabilities or Vulnerabilities(), now=NOW)


def facts(**overrides: Any) -> ContainerFacts:
    """A container on python:3.12, built on the base as it is now, with no scan."""
    base = ContainerFacts(
        container="app",
        image=f"{REPO}:1.0",
        repository=REPO,
        digest=RUNNING,
        digest_source="pod-status",
        base_name="python:3.12",
        base_digest=BASE_OLD,
        lineage_source="manifest-annotations",
        base_current=BASE_OLD,
    )
    return replace(base, **overrides)


OUTDATED = {"base_current": BASE_NEW}
FAILED_SCAN = scan_outcome("FAILED")


# --- assess_container: states and precedence ----------------------------------------------


@pytest.mark.parametrize(
    ("case", "overrides", "policy", "state", "reason"),
    [
        ("an error beats every other fact", dict(error_reason="RegistryUnavailable", error="x", base_name="ghcr.io/evil/base:1", findings=verdict(3), scan=FAILED_SCAN, **OUTDATED), TRUSTS_PYTHON, S.UNKNOWN, "RegistryUnavailable"),
        ("an error beats a clean image", dict(error_reason="ImageNotFound", error="x"), ANY_BASE, S.UNKNOWN, "ImageNotFound"),
        ("an untrusted base beats findings and an outdated base", dict(base_name="ghcr.io/evil/base:1", findings=verdict(3), **OUTDATED), TRUSTS_PYTHON, S.UNTRUSTED_BASE, "UntrustedBase"),
        ("no recorded base cannot be shown trusted", dict(base_name="", base_digest="", base_current="", findings=verdict(3)), TRUSTS_PYTHON, S.UNTRUSTED_BASE, "BaseUnknown"),
        ("a trusted base goes on to the other checks", dict(findings=verdict(1)), TRUSTS_PYTHON, S.VULNERABLE, "Vulnerable"),
        ("a trusted base that is current is compliant", {}, TRUSTS_PYTHON, S.COMPLIANT, "Compliant"),
        ("without a trusted list any base is trusted", dict(base_name="ghcr.io/evil/base:1"), ANY_BASE, S.COMPLIANT, "Compliant"),
        ("without a trusted list no base is fine", dict(base_name="", base_digest="", base_current=""), ANY_BASE, S.COMPLIANT, "NoBaseRecorded"),
        ("findings beat an outdated base and a failed scan", dict(findings=verdict(2), scan=FAILED_SCAN, **OUTDATED), ANY_BASE, S.VULNERABLE, "Vulnerable"),
        ("a clean verdict is not vulnerable", dict(findings=verdict(0), scan=scan_outcome("COMPLETE")), ANY_BASE, S.COMPLIANT, "Compliant"),
        ("only violations count, not deferred findings", dict(findings=verdict(2, vulnerabilities=Vulnerabilities(approve_after_days=7), first_observed_at=NOW)), ANY_BASE, S.COMPLIANT, "Compliant"),
        ("a moved base tag is outdated", OUTDATED, ANY_BASE, S.BASE_IMAGE_OUTDATED, "BaseImageOutdated"),
        ("an outdated base beats a failed scan", dict(scan=FAILED_SCAN, **OUTDATED), ANY_BASE, S.BASE_IMAGE_OUTDATED, "BaseImageOutdated"),
        ("a platform digest of the current index is not outdated", dict(base_digest=ARM64, base_current=BASE_NEW, base_platforms={"linux/amd64": AMD64, "linux/arm64": ARM64}), ANY_BASE, S.COMPLIANT, "Compliant"),
        ("a digest of none of the index's platforms is outdated", dict(base_digest=BASE_OLD, base_current=BASE_NEW, base_platforms={"linux/amd64": AMD64, "linux/arm64": ARM64}), ANY_BASE, S.BASE_IMAGE_OUTDATED, "BaseImageOutdated"),
        ("an unresolved current base is not outdated", dict(base_current=""), ANY_BASE, S.COMPLIANT, "Compliant"),
        ("no recorded base digest is not outdated", dict(base_digest="", **OUTDATED), ANY_BASE, S.COMPLIANT, "Compliant"),
        ("a failed scan is unknown", dict(scan=FAILED_SCAN), ANY_BASE, S.UNKNOWN, "ScanFailed"),
        ("unavailable findings are unknown", dict(scan=scan_outcome("FINDINGS_UNAVAILABLE")), ANY_BASE, S.UNKNOWN, "FindingsUnavailable"),
        ("an unknown scan status is unknown", dict(scan=scan_outcome("QUANTUM_ENTANGLED")), ANY_BASE, S.UNKNOWN, "ScanStatusUnknown"),
        ("a failed scan beats no recorded base", dict(base_name="", base_digest="", base_current="", scan=FAILED_SCAN), ANY_BASE, S.UNKNOWN, "ScanFailed"),
        ("a completed clean scan with no base is compliant", dict(base_name="", base_digest="", base_current="", scan=scan_outcome("ACTIVE"), findings=verdict(0)), ANY_BASE, S.COMPLIANT, "NoBaseRecorded"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_each_container_gets_the_first_state_that_applies(case, overrides, policy, state, reason):
    assessment = assess_container(facts(**overrides), policy)
    assert (assessment.state, assessment.reason) == (state, reason)
    assert assessment.message


def test_an_error_keeps_its_own_message():
    assessment = assess_container(facts(error_reason="RegistryUnavailable", error="503 from registry.example.com"), ANY_BASE)
    assert assessment.message == "503 from registry.example.com"


def test_an_unusable_scan_explains_itself_with_the_scans_message():
    scan = scan_outcome("FAILED", description="internal error")
    assessment = assess_container(facts(scan=scan), ANY_BASE)
    assert assessment.message == scan.message


@pytest.mark.parametrize("status", [None, "IN_PROGRESS"])
def test_an_image_not_scanned_yet_is_not_reported_compliant(status):
    assessment = assess_container(facts(scan=scan_outcome(status)), ANY_BASE)
    assert assessment.state is not S.COMPLIANT


@pytest.mark.parametrize(
    ("n", "listed", "tail"),
    [
        (1, 1, ""),
        (5, 5, ""),
        (6, 5, " and 1 more"),
        (12, 5, " and 7 more"),
    ],
)
def test_vulnerable_message_lists_at_most_five_ids_and_counts_the_rest(n, listed, tail):
    assessment = assess_container(facts(findings=verdict(n)), ANY_BASE)
    ids = ", ".join(cve(i) for i in range(listed))
    assert assessment.message == f"{n} findings over the baseline: {ids}{tail}"


def test_outdated_message_names_the_base_and_both_short_digests():
    assessment = assess_container(facts(**OUTDATED), ANY_BASE)
    assert assessment.message == f"base python:3.12 moved from {'b' * 12} to {'c' * 12}"


def test_untrusted_message_names_the_base():
    assessment = assess_container(facts(base_name="ghcr.io/evil/base:1"), TRUSTS_PYTHON)
    assert "ghcr.io/evil/base:1" in assessment.message


# --- worst and counts --------------------------------------------------------------------

WORST_FIRST = [S.FAILED, S.VULNERABLE, S.UNTRUSTED_BASE, S.BASE_IMAGE_OUTDATED, S.UNKNOWN, S.PATCHING, S.COMPLIANT]
PAIRS = [(a, b) for i, a in enumerate(WORST_FIRST) for b in WORST_FIRST[i + 1 :]]


@pytest.mark.parametrize(("worse", "better"), PAIRS, ids=[f"{a}>{b}" for a, b in PAIRS])
def test_a_workload_shows_its_worst_containers_state(worse, better):
    assert worst([better, worse]) is worse
    assert worst([worse, better, better]) is worse


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], S.COMPLIANT),
        ([S.COMPLIANT], S.COMPLIANT),
        ([S.PATCHING, S.COMPLIANT, S.PATCHING], S.PATCHING),
        (iter([S.COMPLIANT, S.UNKNOWN, S.BASE_IMAGE_OUTDATED]), S.BASE_IMAGE_OUTDATED),
        (list(reversed(WORST_FIRST)), S.FAILED),
    ],
)
def test_worst_of_a_mix(states, expected):
    assert worst(states) is expected


COUNT_KEYS = {"total", "compliant", "baseImageOutdated", "vulnerable", "untrustedBase", "patching", "failed"}


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], {}),
        ([S.COMPLIANT, S.COMPLIANT], {"total": 2, "compliant": 2}),
        ([S.COMPLIANT, S.VULNERABLE, S.BASE_IMAGE_OUTDATED, S.UNTRUSTED_BASE, S.PATCHING, S.FAILED], {"total": 6, "compliant": 1, "vulnerable": 1, "baseImageOutdated": 1, "untrustedBase": 1, "patching": 1, "failed": 1}),
        # Unknown has no field of its own: it shows only in the total.
        ([S.UNKNOWN, S.UNKNOWN, S.VULNERABLE], {"total": 3, "vulnerable": 1}),
    ],
)
def test_counts_have_every_field_and_a_total_of_all_workloads(states, expected):
    assert counts(iter(states)) == {**dict.fromkeys(COUNT_KEYS, 0), **expected}


def test_count_fields_are_the_policys_status_workloads_fields():
    crd = yaml.safe_load((CRDS / "imagepatch.dev_imagepatchpolicies.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    workloads = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["workloads"]
    assert set(counts([])) == set(workloads["properties"]) == COUNT_KEYS


# --- intent_for --------------------------------------------------------------------------

VULNERABLE_AND_OUTDATED = facts(findings=verdict(2), **OUTDATED)


@pytest.mark.parametrize(
    ("state", "wants_patch"),
    [
        (S.VULNERABLE, True),
        (S.BASE_IMAGE_OUTDATED, True),
        (S.UNTRUSTED_BASE, False),
        (S.UNKNOWN, False),
        (S.COMPLIANT, False),
        (S.PATCHING, False),
        (S.FAILED, False),
    ],
)
def test_only_vulnerable_and_outdated_images_ask_for_a_patch(state, wants_patch):
    intent = intent_for(VULNERABLE_AND_OUTDATED, Assessment(state=state, reason=str(state), message="m"))
    assert (intent is not None) is wants_patch


def intent_of(f: ContainerFacts, policy=ANY_BASE) -> PatchIntent:
    intent = intent_for(f, assess_container(f, policy))
    assert intent is not None
    return intent


def test_an_outdated_intent_names_the_image_digest_reason_and_both_base_digests():
    intent = intent_of(facts(**OUTDATED))
    assert (intent.image, intent.current_digest, intent.reason) == (REPO, RUNNING, "BaseImageOutdated")
    assert intent.evidence == {"baseImage": {"name": "python:3.12", "oldDigest": BASE_OLD, "newDigest": BASE_NEW}}


def test_a_vulnerable_intent_records_its_findings_most_severe_first():
    findings = [
        Finding(id="CVE-2026-0002", severity=Severity.HIGH, source=FindingSource.INSPECTOR, package="openssl", fix_available=True, first_observed_at=NOW - dt.timedelta(days=3)),
        Finding(id="CVE-2026-0001", severity=Severity.CRITICAL, source=FindingSource.ECR_BASIC),
    ]
    f = facts(base_name="", base_digest="", base_current="", findings=evaluate(findings, Vulnerabilities(), now=NOW))
    intent = intent_of(f)
    assert intent.reason == "Vulnerable"
    assert intent.evidence == {
        "findings": [
            # ECR basic says neither package nor fix nor age: the fields are left out, not empty.
            {"id": "CVE-2026-0001", "severity": "CRITICAL"},
            {"id": "CVE-2026-0002", "severity": "HIGH", "package": "openssl", "fixAvailable": True, "firstObservedAt": "2026-11-24T12:00:00Z"},
        ]
    }


def test_a_known_absent_fix_is_recorded_as_false_not_dropped():
    f = facts(findings=verdict(1, vulnerabilities=Vulnerabilities(fix_available_only=False), fix_available=False))
    assert intent_of(f).evidence["findings"] == [{"id": cve(0), "severity": "HIGH", "fixAvailable": False}]


@pytest.mark.parametrize(("n", "recorded"), [(1, 1), (50, 50), (51, 50), (120, 50)])
def test_evidence_keeps_at_most_fifty_findings(n, recorded):
    evidence = intent_of(facts(findings=verdict(n))).evidence
    assert [x["id"] for x in evidence["findings"]] == [cve(i) for i in range(recorded)]


def empty_fields(value: Any, path: str = "evidence") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in empty_fields(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in empty_fields(v, f"{path}[{i}]")]
    return [path] if value is None or value == "" else []


def assert_evidence_fits_the_crd(evidence: dict[str, Any]) -> None:
    assert empty_fields(evidence) == []
    for field in ("oldDigest", "newDigest"):
        if field in evidence.get("baseImage", {}):
            assert DIGEST.match(evidence["baseImage"][field])


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(OUTDATED, id="outdated"),
        pytest.param(dict(findings=verdict(3)), id="vulnerable on a current base"),
        pytest.param(dict(findings=verdict(3), **OUTDATED), id="vulnerable on an outdated base"),
        pytest.param(dict(findings=verdict(3), base_name="", base_digest="", base_current=""), id="vulnerable with no base"),
        pytest.param(dict(findings=verdict(3), base_digest=ARM64, base_current=BASE_NEW, base_platforms={"linux/arm64": ARM64}), id="vulnerable on a platform of the current base"),
    ],
)
def test_evidence_has_no_empty_fields(overrides):
    assert_evidence_fits_the_crd(dict(intent_of(facts(**overrides)).evidence))


@pytest.mark.parametrize(
    "overrides",
    [
        # FROM python@sha256:…: no tag to follow, so detection leaves base_current empty.
        pytest.param(dict(findings=verdict(3), base_name=f"python@{BASE_OLD}", base_current=""), id="vulnerable on a digest-pinned base"),
        # Lineage named the base but recorded no digest.
        pytest.param(dict(findings=verdict(3), base_digest=""), id="vulnerable on a base without a recorded digest"),
    ],
)
def test_evidence_leaves_out_an_unknown_base_digest(overrides):
    assert_evidence_fits_the_crd(dict(intent_of(facts(**overrides)).evidence))


def test_the_same_facts_always_give_the_same_patch():
    first = intent_of(facts(findings=verdict(2), **OUTDATED))
    again = intent_of(facts(findings=verdict(2), **OUTDATED))
    assert (first.name, first.key) == (again.name, again.key)


@pytest.mark.parametrize(
    ("case", "changed"),
    [
        ("a newer base", dict(base_current=BASE_NEWER)),
        ("another running digest", dict(digest=dg("9"))),
        ("another repository", dict(repository="registry.example.com/team/other")),
    ],
)
def test_a_change_of_what_the_patch_is_for_gives_a_new_patch(case, changed):
    before = intent_of(facts(**OUTDATED))
    after = intent_of(facts(**{**OUTDATED, **changed}))
    assert after.key != before.key
    assert after.name != before.name


def test_the_key_holds_the_base_to_move_to():
    assert BASE_NEW in intent_of(facts(**OUTDATED)).key
    # Vulnerable on an outdated base: a newer base is also a reason to try again.
    assert BASE_NEW in intent_of(facts(findings=verdict(1), **OUTDATED)).key


def test_a_vulnerable_image_on_a_current_base_keeps_its_patch_as_findings_change():
    one = intent_of(facts(findings=verdict(1)))
    more = intent_of(facts(findings=verdict(4)))
    assert one.key == more.key


def test_vulnerable_and_outdated_patches_of_one_digest_are_distinct():
    f = facts(findings=verdict(1), **OUTDATED)
    vulnerable = intent_for(f, Assessment(state=S.VULNERABLE, reason="Vulnerable", message="m"))
    outdated = intent_for(f, Assessment(state=S.BASE_IMAGE_OUTDATED, reason="BaseImageOutdated", message="m"))
    assert vulnerable is not None and outdated is not None
    assert vulnerable.key != outdated.key


@pytest.mark.parametrize(
    ("repository", "prefix"),
    [
        (REPO, "app-"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments-api", "payments-api-"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/Payments_API.v2", "payments-api-v2-"),
        ("ghcr.io/Org/UPPER", "upper-"),
        ("localhost:5000/my.app", "my-app-"),
        ("registry.example.com/team/__weird__..name--", "weird-name-"),
        ("registry.example.com/team/___", "image-"),
        ("registry.example.com/team/" + "Very_Long.Name" * 10, ""),
        ("docker.io/library/" + "a" * 39 + "_b", "a" * 39 + "-"),
    ],
)
def test_patch_names_are_dns1123_labels_for_any_repository(repository, prefix):
    intent = intent_of(facts(repository=repository, **OUTDATED))
    assert len(intent.name) <= 63
    assert DNS1123_LABEL.match(intent.name), intent.name
    assert intent.name.startswith(prefix)


# --- plan_patches ------------------------------------------------------------------------

OTHER = "registry.example.com/team/other"


def intent(key: str, image: str = REPO) -> PatchIntent:
    return PatchIntent(name=f"n-{key}", key=key, image=image, current_digest=RUNNING, reason="Vulnerable", evidence={})


def known(key: str, phase: str = "Pending", *, image: str = REPO, started: bool = False, name: str = "") -> KnownPatch:
    return KnownPatch(name=name or f"p-{key or 'manual'}-{phase}", key=key, image=image, current_digest=RUNNING, phase=phase, started=started)


@pytest.mark.parametrize(
    ("case", "intents", "existing", "created"),
    [
        ("nothing known: create every intent, in key order", [intent("k2"), intent("k1")], [], ["k1", "k2"]),
        ("an open patch with the key is not created again", [intent("k1")], [known("k1", "Building")], []),
        ("a failed digest is not retried", [intent("k1")], [known("k1", "Failed")], []),
        ("a rolled-back digest is not retried", [intent("k1")], [known("k1", "RolledBack")], []),
        ("a succeeded patch is not repeated", [intent("k1")], [known("k1", "Succeeded")], []),
        ("a newer base after a failure is tried", [intent("k-new")], [known("k-old", "Failed")], ["k-new"]),
        ("a manual patch does not stand for an intent", [intent("k1")], [known("", "Pending")], ["k1"]),
        ("two containers on one image make one patch", [intent("k1"), intent("k1")], [], ["k1"]),
        ("only the unknown key is created", [intent("k1"), intent("k2", OTHER)], [known("k1", "Pending")], ["k2"]),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_plan_creates_only_keys_it_does_not_know(case, intents, existing, created):
    plan = plan_patches(intents, existing, evaluated_images=[REPO, OTHER])
    assert [i.key for i in plan.create] == created


OPEN_PHASES = ["Pending", "AwaitingWindow", "AwaitingApproval", "Building", "Verifying", "RollingOut"]


@pytest.mark.parametrize(
    ("case", "patch", "wanted", "evaluated", "closed"),
    [
        *[(f"an unneeded {p} patch is closed", known("k1", p), [], [REPO], True) for p in OPEN_PHASES],
        ("a patch still asked for is kept", known("k1"), ["k1"], [REPO], False),
        ("a patch asked for under a newer key is closed", known("k-old"), ["k-new"], [REPO], True),
        ("a started rollout is never closed", known("k1", "RollingOut", started=True), [], [REPO], False),
        ("a manual patch is never closed", known("", "Pending"), [], [REPO], False),
        ("an image not evaluated (registry outage) is never closed", known("k1"), [], [OTHER], False),
        ("nothing evaluated closes nothing", known("k1"), [], [], False),
        ("a succeeded patch is not closed", known("k1", "Succeeded"), [], [REPO], False),
        ("a failed patch is not closed", known("k1", "Failed"), [], [REPO], False),
        ("a rolled-back patch is not closed", known("k1", "RolledBack"), [], [REPO], False),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_plan_closes_only_open_unneeded_unstarted_detection_patches_of_evaluated_images(case, patch, wanted, evaluated, closed):
    plan = plan_patches([intent(k) for k in wanted], [patch], evaluated_images=iter(evaluated))
    assert (plan.close == (patch,)) is closed
    assert plan.close in ((), (patch,))


def test_plan_closes_and_creates_in_one_pass_and_leaves_the_rest():
    stale = known("k-old", "AwaitingWindow")
    keep = [known("k1", "Building"), known("k-old2", "Building", started=True), known("", "Pending"), known("k-other", "Pending", image=OTHER)]
    plan = plan_patches([intent("k1"), intent("k-new")], [stale, *keep], evaluated_images={REPO})
    assert [i.key for i in plan.create] == ["k-new"]
    assert plan.close == (stale,)


def test_a_closed_patch_is_not_closed_again():
    plan = plan_patches([], [known("k1", "Closed")], evaluated_images=[REPO])
    assert plan.close == ()


# --- overlay -----------------------------------------------------------------------------


def patch_for(phase: str, *, image: str = REPO, digest: str = RUNNING) -> KnownPatch:
    return KnownPatch(name=f"p-{phase}", key="k", image=image, current_digest=digest, phase=phase, started=False)


@pytest.mark.parametrize(
    ("case", "state", "patches", "expected"),
    [
        ("no patch leaves the state", S.VULNERABLE, [], S.VULNERABLE),
        *[(f"an open {p} patch makes it Patching", S.VULNERABLE, [patch_for(p)], S.PATCHING) for p in OPEN_PHASES],
        ("an open patch covers an outdated base too", S.BASE_IMAGE_OUTDATED, [patch_for("Building")], S.PATCHING),
        ("a manual open patch makes a compliant image Patching", S.COMPLIANT, [patch_for("Pending")], S.PATCHING),
        ("an open patch for another digest does not count", S.VULNERABLE, [patch_for("Building", digest=dg("9"))], S.VULNERABLE),
        ("an open patch for another image does not count", S.VULNERABLE, [patch_for("Building", image=OTHER)], S.VULNERABLE),
        ("a failed patch while still vulnerable is Failed", S.VULNERABLE, [patch_for("Failed")], S.FAILED),
        ("a rolled-back patch while still outdated is Failed", S.BASE_IMAGE_OUTDATED, [patch_for("RolledBack")], S.FAILED),
        ("a failed patch once compliant is Compliant", S.COMPLIANT, [patch_for("Failed")], S.COMPLIANT),
        ("a failed patch does not hide an unknown", S.UNKNOWN, [patch_for("RolledBack")], S.UNKNOWN),
        ("a failed patch of another digest does not count", S.VULNERABLE, [patch_for("Failed", digest=dg("9"))], S.VULNERABLE),
        ("a succeeded patch leaves the state", S.VULNERABLE, [patch_for("Succeeded")], S.VULNERABLE),
        ("a new open patch after a failed one is Patching", S.VULNERABLE, [patch_for("Failed"), patch_for("Pending")], S.PATCHING),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_overlay_shows_patching_and_failed_patches(case, state, patches, expected):
    assert overlay(state, REPO, RUNNING, patches) is expected


def test_a_closed_patch_does_not_make_a_workload_patching():
    assert overlay(S.COMPLIANT, REPO, RUNNING, [patch_for("Closed")]) is S.COMPLIANT


# --- exact targets, holders, failed memory (one actor per container) ----------------------

WEB_APP = ("Deployment", "shop", "web", "app")
API_APP = ("Deployment", "shop", "api", "app")


def targeted(key: str, *keys: tuple[str, str, str, str]) -> PatchIntent:
    from imagepatch.model.imagepatch import Target

    targets = tuple(Target(namespace=ns, name=n, container=c, kind=k) for k, ns, n, c in keys)
    return PatchIntent(name=f"n-{key}", key=key, image=REPO, current_digest=RUNNING,
                       reason="Vulnerable", evidence={}, targets=targets)


def holder(key: str, *held: tuple[str, str, str, str]) -> KnownPatch:
    return KnownPatch(name=f"p-{key}", key=key, image=REPO, current_digest=RUNNING,
                      phase="RollingOut", started=True, held=frozenset(held))


def test_the_tag_is_part_of_the_patch_identity():
    on_14 = intent_for(facts(image=f"{REPO}:1.4", findings=verdict(1)),
                       Assessment(state=S.VULNERABLE, reason="Vulnerable", message="m"))
    on_latest = intent_for(facts(image=f"{REPO}:latest", findings=verdict(1)),
                           Assessment(state=S.VULNERABLE, reason="Vulnerable", message="m"))
    assert (on_14.tag, on_latest.tag) == ("1.4", "latest")
    assert on_14.key != on_latest.key and on_14.name != on_latest.name


def test_no_patch_is_opened_for_containers_another_open_patch_is_changing():
    plan = plan_patches([targeted("k-new", WEB_APP)], [holder("k-old", WEB_APP)],
                        evaluated_images=[REPO])
    assert plan.create == ()
    # One free container is enough to open it (the planner then waits on the held one).
    plan = plan_patches([targeted("k-new", WEB_APP, API_APP)], [holder("k-old", WEB_APP)],
                        evaluated_images=[REPO])
    assert [i.key for i in plan.create] == ["k-new"]
    # A finished patch holds nothing.
    done = KnownPatch(name="p", key="k-old", image=REPO, current_digest=RUNNING,
                      phase="RolledBack", started=True, held=frozenset({WEB_APP}))
    assert plan_patches([targeted("k-new", WEB_APP)], [done], evaluated_images=[REPO]).create


def test_a_key_remembered_as_failed_on_its_workloads_is_not_opened_again():
    plan = plan_patches([targeted("k1", WEB_APP)], [], evaluated_images=[REPO],
                        failed_keys={"k1"})
    assert plan.create == ()


def test_a_close_is_asked_for_once():
    asked = KnownPatch(name="p", key="k1", image=REPO, current_digest=RUNNING, phase="Pending",
                       started=False, close_requested=True)
    assert plan_patches([], [asked], evaluated_images=[REPO]).close == ()


def test_an_unstarted_patch_gains_containers_judged_since_it_was_opened():
    existing = KnownPatch(name="p", key="k1", image=REPO, current_digest=RUNNING,
                          phase="AwaitingApproval", started=False, targets=frozenset({WEB_APP}))
    wanted = targeted("k1", WEB_APP, API_APP)
    plan = plan_patches([wanted], [existing], evaluated_images=[REPO])
    assert plan.retarget == ((existing, wanted),) and plan.create == ()
    # Nothing new, or already started: left alone.
    assert plan_patches([targeted("k1", WEB_APP)], [existing], evaluated_images=[REPO]).retarget == ()
    started = KnownPatch(name="p", key="k1", image=REPO, current_digest=RUNNING,
                         phase="RollingOut", started=True, targets=frozenset({WEB_APP}))
    assert plan_patches([wanted], [started], evaluated_images=[REPO]).retarget == ()


def test_overlay_is_per_tag():
    patch = KnownPatch(name="p", key="k", image=REPO, current_digest=RUNNING, phase="Building",
                       started=False, tag="1.4")
    assert overlay(S.VULNERABLE, REPO, RUNNING, [patch], "1.4") == S.PATCHING
    assert overlay(S.VULNERABLE, REPO, RUNNING, [patch], "latest") == S.VULNERABLE


def test_a_patch_asked_to_close_no_longer_makes_its_image_patching():
    closing = KnownPatch(name="p", key="k", image=REPO, current_digest=RUNNING, phase="Building",
                         started=False, close_requested=True)
    assert closing.closing
    assert overlay(S.COMPLIANT, REPO, RUNNING, [closing]) == S.COMPLIANT
    started = KnownPatch(name="p", key="k", image=REPO, current_digest=RUNNING,
                         phase="RollingOut", started=True, close_requested=True)
    assert not started.closing
    assert overlay(S.COMPLIANT, REPO, RUNNING, [started]) == S.PATCHING


def test_image_tag_of_an_invalid_reference_is_empty():
    from imagepatch.core.compliance import image_tag

    assert (image_tag(f"{REPO}:1.4"), image_tag(f"{REPO}@{RUNNING}"), image_tag("Not A Ref")) == ("1.4", "", "")


def test_a_targeted_pass_closes_only_patches_whose_every_target_it_evaluated():
    def unneeded(*targets: tuple[str, str, str, str]) -> KnownPatch:
        return KnownPatch(name="p", key="k1", image=REPO, current_digest=RUNNING,
                          phase="AwaitingApproval", started=False, targets=frozenset(targets))

    # Every target evaluated: closed, as in a full pass.
    assert plan_patches([], [unneeded(WEB_APP)], evaluated_images=[REPO],
                        evaluated_targets={WEB_APP, API_APP}).close
    # A target the pass did not evaluate may still need it: left for a full pass.
    assert plan_patches([], [unneeded(WEB_APP, API_APP)], evaluated_images=[REPO],
                        evaluated_targets={WEB_APP}).close == ()
    # A patch listing no targets may be any workload's: left for a full pass.
    assert plan_patches([], [unneeded()], evaluated_images=[REPO],
                        evaluated_targets={WEB_APP}).close == ()
    # A full pass (no evaluated_targets) closes both.
    assert plan_patches([], [unneeded(WEB_APP, API_APP)], evaluated_images=[REPO]).close
    assert plan_patches([], [unneeded()], evaluated_images=[REPO]).close
