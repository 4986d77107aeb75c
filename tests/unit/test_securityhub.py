"""Security Hub findings: the ASFF mapping, the Id scheme, the plan and the batches, as tables.

Given detection's results for a policy (``WorkloadResult`` with per-container
records, exactly as ``reconcile.detection`` builds them) and what Security
Hub already holds, when the plan is made, then each non-compliant container
has one ACTIVE finding with a stable Id, the right severity and types; a
compliant one archives a finding that was active; nothing unchanged is sent;
a finding whose workload has been gone from its policy for a while is
archived; and batches respect Security Hub's limits.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from imagepatch.adapters.securityhub import (
    MAX_BATCH_FINDINGS,
    MAX_FINDING_BYTES,
    Exported,
    batches,
    fingerprint,
    to_finding,
)
from imagepatch.adapters.securityhub import plan_asff_findings as plan_findings
from imagepatch.core.securityhub import TYPE_CVE, TYPE_STANDARDS, FindingContext, finding_id
from imagepatch.reconcile.detection import WorkloadResult

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=10)
CTX = FindingContext(account_id="123456789012", region="eu-west-1", cluster="prod-eu")
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
B_OLD = "sha256:" + "a" * 64
B_NEW = "sha256:" + "b" * 64
IMAGE = "registry.example.com/team/app:1.4"
REPO = "registry.example.com/team/app"


def container(state: str = "Vulnerable", **extra: Any) -> dict[str, Any]:
    record = {
        "name": "app",
        "image": IMAGE,
        "digest": D1,
        "digestSource": "spec",
        "base": "public.ecr.aws/docker/library/python:3.12-slim",
        "baseDigest": B_OLD,
        "baseCurrent": B_OLD,
        "state": state,
        "reason": state,
        "message": f"app is {state}",
    }
    record.update(extra)
    return record


def workload(*containers: dict[str, Any], name: str = "web", namespace: str = "shop",
             state: str | None = None) -> WorkloadResult:
    return WorkloadResult(namespace=namespace, name=name, uid=f"uid-{namespace}-{name}",
                          state=state or containers[0]["state"], message="", containers=list(containers))


def plan(previous: Mapping[str, Exported], results: Mapping[str, list[WorkloadResult]], now=NOW, **kw):
    return plan_findings(previous, results, context=CTX, now=now, **kw)


GONE_AFTER = dt.timedelta(minutes=10)


def remember(*findings: dict[str, Any]) -> dict[str, Exported]:
    """What the exporter keeps after sending these findings."""
    out = {}
    for f in findings:
        exported = Exported.from_finding(f, context=CTX)
        assert exported is not None
        out[exported.id] = exported
    return out


def only(findings: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(findings) == 1, [f["Id"] for f in findings]
    return findings[0]


# -- the Id ---------------------------------------------------------------------------------


def test_the_id_names_cluster_namespace_workload_container_and_repository():
    finding = to_finding(workload(container()), container(), policy="critical", context=CTX, now=NOW)
    assert finding["Id"] == "imagepatch/prod-eu/shop/deployments/web/app/registry.example.com/team/app"
    assert finding["Id"] == finding_id("prod-eu", "shop", "web", "app", REPO)


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"digest": D2}, True),  # a patch landed: the same finding is updated
        ({"image": "registry.example.com/team/app:1.5"}, True),  # a new tag of the same image
        ({"image": f"{REPO}@{D2}"}, True),  # pinned by digest, as the operator writes it
        ({"state": "BaseImageOutdated", "reason": "BaseImageOutdated"}, True),
        ({"name": "sidecar"}, False),  # another container
        ({"image": "registry.example.com/team/other:1.4"}, False),  # another repository
    ],
)
def test_the_id_survives_digests_tags_and_states_but_not_another_container_or_image(change, same):
    base = to_finding(workload(container()), container(), policy="p", context=CTX, now=NOW)
    changed = container(**change)
    other = to_finding(workload(changed), changed, policy="p", context=CTX, now=LATER)
    assert (base["Id"] == other["Id"]) is same


def test_the_id_differs_by_cluster_namespace_and_workload():
    ids = {
        finding_id(cluster, ns, name, "app", REPO)
        for cluster in ("a", "b") for ns in ("x", "y") for name in ("web", "api")
    }
    assert len(ids) == 8


def test_docker_hub_short_names_are_normalized_in_the_id():
    c = container(image="python:3.12")
    f = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    assert f["Id"].endswith("/app/docker.io/library/python")


def test_an_overlong_id_is_cut_to_512_characters_and_stays_unique_and_stable():
    long_a = finding_id("c", "n" * 63, "w" * 253, "c" * 63, "registry.example.com/" + "r" * 250 + "a")
    long_b = finding_id("c", "n" * 63, "w" * 253, "c" * 63, "registry.example.com/" + "r" * 250 + "b")
    assert len(long_a) == len(long_b) == 512
    assert long_a != long_b
    assert long_a == finding_id("c", "n" * 63, "w" * 253, "c" * 63, "registry.example.com/" + "r" * 250 + "a")


# -- the mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "extra", "severity", "types", "record", "compliance", "workflow"),
    [
        ("Vulnerable", {}, "HIGH", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Vulnerable", {"maxSeverity": "CRITICAL"}, "CRITICAL", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Vulnerable", {"findings": [{"id": "CVE-1", "severity": "MEDIUM"}, {"id": "CVE-2", "severity": "UNDEFINED"}]},
         "MEDIUM", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Vulnerable", {"findings": [{"id": "CVE-1", "severity": "UNTRIAGED"}]}, "HIGH", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        # What detection writes: violating findings counted per severity.
        ("Vulnerable", {"findingsBySeverity": {"MEDIUM": 3, "CRITICAL": 1}}, "CRITICAL", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Vulnerable", {"findingsBySeverity": {"LOW": 2, "CRITICAL": 0}}, "LOW", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Vulnerable", {"findingsBySeverity": ["CRITICAL"]}, "HIGH", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("BaseImageOutdated", {"baseCurrent": B_NEW}, "MEDIUM", [TYPE_STANDARDS], "ACTIVE", "FAILED", "NEW"),
        ("UntrustedBase", {}, "HIGH", [TYPE_STANDARDS], "ACTIVE", "FAILED", "NEW"),
        ("UntrustedBase", {"reason": "BaseUnknown"}, "HIGH", [TYPE_STANDARDS], "ACTIVE", "FAILED", "NEW"),
        ("Failed", {"reason": "Vulnerable"}, "HIGH", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Failed", {"reason": "BaseImageOutdated"}, "HIGH", [TYPE_STANDARDS], "ACTIVE", "FAILED", "NEW"),
        ("Patching", {"reason": "BaseImageOutdated"}, "MEDIUM", [TYPE_STANDARDS], "ACTIVE", "FAILED", "NEW"),
        ("Patching", {"reason": "Vulnerable", "maxSeverity": "CRITICAL"}, "CRITICAL", [TYPE_CVE], "ACTIVE", "FAILED", "NEW"),
        ("Compliant", {}, "INFORMATIONAL", [TYPE_STANDARDS], "ARCHIVED", "PASSED", "RESOLVED"),
    ],
)
def test_each_state_maps_to_its_severity_types_and_statuses(
    state, extra, severity, types, record, compliance, workflow
):
    c = container(state, **extra)
    f = to_finding(workload(c), c, policy="critical", context=CTX, now=NOW)
    assert f["Severity"]["Label"] == severity
    assert f["FindingProviderFields"]["Severity"]["Label"] == severity
    assert f["Types"] == f["FindingProviderFields"]["Types"] == types
    assert (f["RecordState"], f["Compliance"]["Status"], f["Workflow"]["Status"]) == (record, compliance, workflow)
    assert f["ProductFields"]["imagepatch/State"] == state


@pytest.mark.parametrize("state", ["Unknown", "SomethingNew", ""])
def test_unknown_states_give_no_finding(state):
    c = container(state)
    assert to_finding(workload(c), c, policy="p", context=CTX, now=NOW) is None


def test_a_vulnerable_container_as_a_whole_asff_finding():
    c = container(
        "Vulnerable", findingsOverBaseline=2, maxSeverity="HIGH",
        findings=[{"id": "CVE-2026-0001", "severity": "HIGH", "package": "openssl, libssl3", "fixAvailable": True},
                  {"id": "CVE-2026-0002", "severity": "MEDIUM", "package": "zlib"}],
    )
    f = to_finding(workload(c), c, policy="critical", context=CTX, now=NOW)
    assert f["SchemaVersion"] == "2018-10-08"
    assert f["ProductArn"] == "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default"
    assert f["GeneratorId"] == "imagepatch/critical"
    assert f["AwsAccountId"] == "123456789012"
    assert f["CreatedAt"] == f["UpdatedAt"] == f["FirstObservedAt"] == f["LastObservedAt"] == "2026-11-27T12:00:00.000Z"
    assert f["Title"] == f"Deployment shop/web, container app: {REPO} has 2 vulnerabilities over the policy baseline"
    assert "app is Vulnerable" in f["Description"] and "policy critical" in f["Description"]
    assert f["Resources"] == [
        {"Type": "Container", "Id": f"{REPO}@{D1}", "Partition": "aws", "Region": "eu-west-1",
         "Details": {"Container": {"Name": "app", "ImageId": D1, "ImageName": IMAGE}}},
        {"Type": "Other", "Id": "k8s://prod-eu/shop/deployments/web", "Partition": "aws", "Region": "eu-west-1",
         "Details": {"Other": {"kubernetes/cluster": "prod-eu", "kubernetes/namespace": "shop",
                               "kubernetes/kind": "Deployment", "kubernetes/name": "web",
                               "kubernetes/uid": "uid-shop-web"}}},
    ]
    assert f["Vulnerabilities"] == [
        {"Id": "CVE-2026-0001", "VulnerablePackages": [{"Name": "openssl"}, {"Name": "libssl3"}], "FixAvailable": "YES"},
        {"Id": "CVE-2026-0002", "VulnerablePackages": [{"Name": "zlib"}]},
    ]
    fields = f["ProductFields"]
    assert {k: fields[k] for k in ("imagepatch/Cluster", "imagepatch/Namespace", "imagepatch/Workload",
                                   "imagepatch/Container", "imagepatch/Repository", "imagepatch/Digest",
                                   "imagepatch/Policy", "imagepatch/State")} == {
        "imagepatch/Cluster": "prod-eu", "imagepatch/Namespace": "shop", "imagepatch/Workload": "web",
        "imagepatch/Container": "app", "imagepatch/Repository": REPO, "imagepatch/Digest": D1,
        "imagepatch/Policy": "critical", "imagepatch/State": "Vulnerable"}
    assert fields["imagepatch/Fingerprint"] == fingerprint(f)
    assert all(isinstance(v, str) and v for v in fields.values())


def test_an_outdated_base_is_described_with_both_digests():
    c = container("BaseImageOutdated", baseCurrent=B_NEW)
    f = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    assert f"built on {B_OLD}, now {B_NEW}" in f["Description"]
    assert f["Title"].endswith(f"{REPO} is built on an outdated base image")


def test_a_failed_patch_says_so_in_the_title():
    c = container("Failed", reason="Vulnerable")
    f = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    assert "failed or was rolled back" in f["Title"]


@pytest.mark.parametrize(
    ("region", "partition"), [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")]
)
def test_the_product_arn_and_resources_carry_the_regions_partition(region, partition):
    ctx = FindingContext(account_id="123456789012", region=region, cluster="c")
    f = to_finding(workload(container()), container(), policy="p", context=ctx, now=NOW)
    assert f["ProductArn"] == f"arn:{partition}:securityhub:{region}:123456789012:product/123456789012/default"
    assert {r["Partition"] for r in f["Resources"]} == {partition}


def test_title_and_description_are_capped_to_asff_limits():
    c = container(message="x" * 5000, name="c" * 63)
    f = to_finding(workload(c, name="w" * 253), c, policy="p" * 253, context=CTX, now=NOW)
    assert len(f["Title"]) == 256 and f["Title"].endswith("...")
    assert len(f["Description"]) == 1024 and f["Description"].endswith("...")
    assert len(json.dumps(f).encode()) < MAX_FINDING_BYTES


def test_at_most_25_vulnerabilities_are_listed():
    c = container(findings=[{"id": f"CVE-{i}", "severity": "HIGH"} for i in range(100)])
    f = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    assert len(f["Vulnerabilities"]) == 25


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"account_id": "12345"}, "12 digits"),
        ({"region": ""}, "region"),
        ({"cluster": ""}, "cluster name"),
        ({"cluster": "a/b"}, "cluster name"),
        ({"cluster": "-x"}, "cluster name"),
        ({"cluster": "x" * 101}, "cluster name"),
    ],
)
def test_a_context_that_would_make_ambiguous_ids_is_refused(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        FindingContext(**{"account_id": "123456789012", "region": "eu-west-1", "cluster": "c", **kwargs})


# -- fingerprints and what is remembered ------------------------------------------------------


def test_the_fingerprint_ignores_timestamps_but_not_content():
    c = container()
    a = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    b = to_finding(workload(c), c, policy="p", context=CTX, now=LATER, created_at=NOW - dt.timedelta(days=3))
    assert fingerprint(a) == fingerprint(b) == a["ProductFields"]["imagepatch/Fingerprint"]
    c2 = container(maxSeverity="CRITICAL")
    assert fingerprint(to_finding(workload(c2), c2, policy="p", context=CTX, now=NOW)) != fingerprint(a)


def test_a_finding_is_remembered_as_sent_and_as_security_hub_returns_it():
    f = to_finding(workload(container()), container(), policy="critical", context=CTX, now=NOW)
    sent = Exported.from_finding(f, context=CTX)
    # Security Hub adds its own fields and writes times its own way.
    returned = {**f, "CreatedAt": "2026-11-27T12:00:00Z", "UpdatedAt": "2026-11-27T12:00:00.000Z",
                "ProductFields": {**f["ProductFields"], "aws/securityhub/FindingId": "arn:..."},
                "Region": "eu-west-1", "WorkflowState": "NEW"}
    assert Exported.from_finding(returned, context=CTX) == sent
    assert sent.policy == "critical" and sent.active and sent.digest == D1 and sent.repository == REPO
    assert sent.created_at == sent.updated_at == sent.first_observed_at == NOW


@pytest.mark.parametrize(
    "change",
    [
        {"ProductArn": "arn:aws:securityhub:eu-west-1::product/aws/inspector"},  # another product
        {"Id": "arn:aws:inspector2:eu-west-1:123456789012:finding/abc"},  # not ours
        {"GeneratorId": "aws-foundational-security-best-practices/v/1.0.0"},
        {"ProductFields": {"imagepatch/Cluster": "staging"}},  # another cluster
        {"CreatedAt": "yesterday"},  # unreadable
    ],
)
def test_findings_of_other_products_clusters_or_unreadable_are_not_ours(change):
    f = to_finding(workload(container()), container(), policy="p", context=CTX, now=NOW)
    assert Exported.from_finding({**f, **change}, context=CTX) is None


# -- the plan ---------------------------------------------------------------------------------


def test_first_export_sends_non_compliant_containers_only():
    results = {"critical": [
        workload(container("Vulnerable"), name="a"),
        workload(container("BaseImageOutdated", baseCurrent=B_NEW), name="b"),
        workload(container("UntrustedBase"), name="c"),
        workload(container("Failed", reason="Vulnerable"), name="d"),
        workload(container("Patching", reason="BaseImageOutdated"), name="e"),
        workload(container("Compliant"), name="f"),
        workload(container("Unknown"), name="g"),
        WorkloadResult(namespace="shop", name="h", uid="h", state="NotAdmitted", message="", containers=[]),
    ]}
    upsert, archive = plan({}, results)
    assert [f["Id"].split("/")[4] for f in upsert] == ["a", "b", "c", "d", "e"]
    assert archive == []
    assert {f["RecordState"] for f in upsert} == {"ACTIVE"}


def test_a_workload_with_several_containers_has_one_finding_per_non_compliant_container():
    w = workload(container("Vulnerable"), container("Compliant", name="proxy", image="envoyproxy/envoy:v1"),
                 container("BaseImageOutdated", name="init", image="busybox:1"))
    upsert, _ = plan({}, {"p": [w]})
    assert [f["ProductFields"]["imagepatch/Container"] for f in upsert] == ["app", "init"]


def first_export(*containers: dict[str, Any], policy: str = "p") -> dict[str, Exported]:
    upsert, _ = plan({}, {policy: [workload(*containers)]})
    return remember(*upsert)


@pytest.mark.parametrize(
    ("before", "now_state", "extra", "expect"),
    [
        (None, "Vulnerable", {}, "upsert"),
        (None, "Compliant", {}, "nothing"),
        (None, "Unknown", {}, "nothing"),
        ("Vulnerable", "Vulnerable", {}, "nothing"),  # unchanged: a restart sends nothing either
        ("Vulnerable", "Vulnerable", {"maxSeverity": "CRITICAL"}, "upsert"),  # severity changed
        ("Vulnerable", "Vulnerable", {"digest": D2}, "upsert"),  # a new digest, still vulnerable
        ("BaseImageOutdated", "Vulnerable", {}, "upsert"),
        ("Vulnerable", "Patching", {"reason": "Vulnerable"}, "upsert"),
        ("Patching", "Failed", {"reason": "Vulnerable"}, "upsert"),
        ("Vulnerable", "Unknown", {}, "nothing"),  # no facts: leave the finding as it is
        ("Vulnerable", "Compliant", {}, "archive"),
        ("Failed", "Compliant", {"digest": D2}, "archive"),
    ],
)
def test_the_plan_by_what_was_exported_and_the_state_now(before, now_state, extra, expect):
    previous = first_export(container(before)) if before else {}
    c = container(now_state, **extra)
    upsert, archive = plan(previous, {"p": [workload(c)]}, now=LATER)
    got = "upsert" if upsert else "archive" if archive else "nothing"
    assert got == expect
    assert not (upsert and archive)
    for f in upsert + archive:
        assert f["Id"] == finding_id("prod-eu", "shop", "web", "app", REPO)
        assert f["UpdatedAt"] == "2026-11-27T12:10:00.000Z"
        if before:  # the same finding, updated: its history stays
            assert f["CreatedAt"] == f["FirstObservedAt"] == "2026-11-27T12:00:00.000Z"


def test_an_archived_finding_that_breaks_the_policy_again_is_reactivated_with_a_new_first_observed():
    previous = first_export(container("Vulnerable"))
    _, archive = plan(previous, {"p": [workload(container("Compliant"))]}, now=LATER)
    previous = remember(*archive)
    assert not next(iter(previous.values())).active
    # While compliant: nothing more is sent.
    assert plan(previous, {"p": [workload(container("Compliant"))]}, now=LATER).empty
    again = NOW + dt.timedelta(days=2)
    upsert, archive = plan(previous, {"p": [workload(container("Vulnerable", digest=D2))]}, now=again)
    f = only(upsert)
    assert (f["RecordState"], f["Compliance"]["Status"], f["Workflow"]["Status"]) == ("ACTIVE", "FAILED", "NEW")
    assert f["CreatedAt"] == "2026-11-27T12:00:00.000Z"
    assert f["FirstObservedAt"] == f["UpdatedAt"] == "2026-11-29T12:00:00.000Z"


def test_an_unchanged_active_finding_is_refreshed_once_a_day_so_security_hub_keeps_it():
    previous = first_export(container("Vulnerable"))
    results = {"p": [workload(container("Vulnerable"))]}
    assert plan(previous, results, now=NOW + dt.timedelta(hours=23)).empty
    refreshed = only(plan(previous, results, now=NOW + dt.timedelta(hours=24)).to_upsert)
    assert refreshed["UpdatedAt"] == "2026-11-28T12:00:00.000Z"
    assert refreshed["FirstObservedAt"] == "2026-11-27T12:00:00.000Z"
    assert plan(previous, results, now=NOW + dt.timedelta(days=30), refresh_after=None).empty


@pytest.mark.parametrize(
    "results_now",
    [
        {"p": []},  # deleted or opted out
        {"p": [WorkloadResult(namespace="shop", name="web", uid="u", state="NotAdmitted", message="", containers=[])]},
        {"p": [workload(container("Vulnerable", name="renamed"))]},  # the container was removed
    ],
)
def test_a_finding_whose_container_its_policy_no_longer_evaluates_is_archived_once_gone_long_enough(results_now):
    previous = first_export(container("Vulnerable"))
    # The first pass that misses it only starts the clock: after a restart, detection
    # may run before the Deployment watch has listed every workload.
    first = plan(previous, results_now, now=LATER)
    assert first.to_archive == []
    assert first.absent == {next(iter(previous)): LATER}

    upsert, archive = plan(previous, results_now, now=LATER + GONE_AFTER, absent_since=first.absent)

    gone = only(archive)
    assert gone["Id"] == next(iter(previous))
    assert (gone["RecordState"], gone["Compliance"]["Status"], gone["Workflow"]["Status"]) == (
        "ARCHIVED", "NOT_AVAILABLE", "RESOLVED")
    assert gone["Severity"]["Label"] == "INFORMATIONAL"
    assert gone["Resources"][0]["Details"]["Container"] == {"Name": "app", "ImageId": D1, "ImageName": IMAGE}
    assert gone["CreatedAt"] == "2026-11-27T12:00:00.000Z"
    assert gone["UpdatedAt"] == "2026-11-27T12:20:00.000Z"
    assert len(upsert) == (1 if results_now["p"] and results_now["p"][0].containers else 0)


def test_a_workload_missing_from_one_pass_only_is_not_archived():
    previous = first_export(container("Vulnerable"))
    first = plan(previous, {"p": []}, now=LATER)  # the watch had not listed it yet
    back = plan(previous, {"p": [workload(container("Vulnerable"))]}, now=LATER + GONE_AFTER,
                absent_since=first.absent)
    assert back.empty and back.absent == {}


def test_the_gone_clock_keeps_running_while_its_policy_is_not_evaluated():
    previous = first_export(container("Vulnerable"))
    first = plan(previous, {"p": []}, now=LATER)
    other = plan(previous, {"q": []}, now=LATER + dt.timedelta(minutes=5), absent_since=first.absent)
    assert other.empty and other.absent == first.absent
    later = plan(previous, {"p": []}, now=LATER + GONE_AFTER, absent_since=other.absent)
    assert len(later.to_archive) == 1


def test_with_no_grace_a_gone_finding_is_archived_at_once():
    previous = first_export(container("Vulnerable"))
    assert len(plan(previous, {"p": []}, now=LATER, gone_after=dt.timedelta(0)).to_archive) == 1


def test_an_image_moved_to_another_repository_archives_the_old_finding_and_opens_a_new_one():
    previous = first_export(container("Vulnerable"))
    moved = container("Vulnerable", image="registry.example.com/team/app-v2:1")
    upsert, archive = plan(previous, {"p": [workload(moved)]}, now=LATER, gone_after=dt.timedelta(0))
    assert only(upsert)["Id"].endswith("/app/registry.example.com/team/app-v2")
    assert only(archive)["Id"].endswith("/app/registry.example.com/team/app")


def test_policies_not_in_this_pass_are_left_alone():
    previous = first_export(container("Vulnerable"), policy="nightly")
    assert plan(previous, {"critical": []}, now=LATER).empty


def test_a_workload_moved_to_another_policy_updates_the_same_finding():
    previous = first_export(container("Vulnerable"), policy="nightly")
    upsert, archive = plan(previous, {"critical": [workload(container("Vulnerable"))]}, now=LATER)
    f = only(upsert)
    assert f["Id"] == next(iter(previous)) and f["GeneratorId"] == "imagepatch/critical"
    assert archive == []


def test_archived_findings_of_gone_workloads_are_not_archived_again():
    previous = first_export(container("Vulnerable"))
    _, archive = plan(previous, {"p": []}, now=LATER, gone_after=dt.timedelta(0))
    assert len(archive) == 1
    assert plan(remember(*archive), {"p": []}, now=LATER + dt.timedelta(days=3), gone_after=dt.timedelta(0)).empty


def test_a_workload_that_opted_out_is_archived_at_once_saying_so_never_resolved():
    previous = first_export(container("Vulnerable"))
    upsert, archive = plan(previous, {"p": []}, now=LATER, opted_out={("Deployment", "shop", "web")})
    f = only(archive)
    assert upsert == [] and f["Id"] == next(iter(previous))
    assert (f["RecordState"], f["Compliance"]["Status"], f["Workflow"]["Status"]) == (
        "ARCHIVED", "NOT_AVAILABLE", "NEW")
    assert "opted out" in f["Title"] and "not fixed" in f["Title"]
    assert "Opting out is not a fix" in f["Description"]
    # Another workload of the same namespace, or another kind of the same name, is not taken for it.
    assert plan(previous, {"p": []}, now=LATER, opted_out={("Deployment", "shop", "api")}).to_archive == []
    assert plan(previous, {"p": []}, now=LATER, opted_out={("StatefulSet", "shop", "web")}).to_archive == []


# -- batches ------------------------------------------------------------------------------------


def many(n: int) -> list[dict[str, Any]]:
    results = {"p": [workload(container("Vulnerable"), name=f"w{i:04d}") for i in range(n)]}
    return plan({}, results).to_upsert


def test_batches_hold_at_most_100_findings():
    assert [len(b) for b in batches(many(250))] == [100, 100, 50]
    assert [len(b) for b in batches(many(100))] == [100]
    assert list(batches([])) == []
    assert [len(b) for b in batches(many(5), size=2)] == [2, 2, 1]


def test_batches_also_respect_a_byte_budget_and_keep_the_order():
    findings = many(10)
    size = len(json.dumps(findings[0], separators=(",", ":")).encode())
    chunks = list(batches(findings, max_bytes=size * 3 + 10))
    assert [len(b) for b in chunks] == [3, 3, 3, 1]
    assert [f["Id"] for b in chunks for f in b] == [f["Id"] for f in findings]


def test_a_finding_over_240_kb_is_a_bug_not_a_batch():
    with pytest.raises(ValueError, match="over 240 KB"):
        list(batches([{"Id": "x", "Description": "x" * MAX_FINDING_BYTES}]))
    with pytest.raises(ValueError, match="batch size"):
        list(batches([], size=MAX_BATCH_FINDINGS + 1))


def test_vulnerabilities_without_an_id_are_left_out_and_a_known_fix_is_yes_or_no():
    c = container(findings=[{"severity": "HIGH"}, {"id": "CVE-1", "fixAvailable": False},
                            {"id": "CVE-2", "package": " , "}])
    f = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    assert f["Vulnerabilities"] == [{"Id": "CVE-1", "FixAvailable": "NO"}, {"Id": "CVE-2"}]


def test_an_unparsable_image_still_names_a_stable_repository():
    c = container(image="Registry.Example.com/Team/App:1.4@sha256:bad")
    f = to_finding(workload(c), c, policy="p", context=CTX, now=NOW)
    assert f["ProductFields"]["imagepatch/Repository"] == "Registry.Example.com/Team/App"
