"""AWS Config evaluations (core/awsconfig.py): compliance types, annotations, only on change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from imagepatch.core import awsconfig
from imagepatch.core.awsconfig import COMPLIANT, NON_COMPLIANT, NOT_APPLICABLE, Sent


@dataclass(frozen=True)
class Result:
    kind: str
    namespace: str
    name: str
    state: str
    message: str = ""


@pytest.mark.parametrize(("state", "compliance"), [
    ("Compliant", COMPLIANT),
    ("BaseImageOutdated", NON_COMPLIANT),
    ("Vulnerable", NON_COMPLIANT),
    ("UntrustedBase", NON_COMPLIANT),
    ("Failed", NON_COMPLIANT),
    ("Patching", NON_COMPLIANT),
    ("Unknown", NOT_APPLICABLE),
    ("SomethingNew", NOT_APPLICABLE),
])
def test_each_state_maps_to_a_config_compliance_type(state: str, compliance: str) -> None:
    ev = awsconfig.evaluation("prod", Result("Deployment", "shop", "web", state, "why"),
                              policy="critical")
    assert ev.compliance == compliance
    assert ev.annotation.startswith(f"{state} (policy critical): ")
    assert ev.resource_id == "prod/shop/Deployment/web"


def test_the_annotation_names_the_reason_and_fits_config_s_limit() -> None:
    ev = awsconfig.evaluation("prod", Result("StatefulSet", "db", "pg", "Vulnerable",
                                             "CVE-2026-1 " * 100), policy="p")
    assert len(ev.annotation) == awsconfig.MAX_ANNOTATION and ev.annotation.endswith("…")
    assert "findings over the policy's baseline: CVE-2026-1" in ev.annotation
    assert awsconfig.evaluation("c", Result("Deployment", "n", "w", "Compliant", "ignored"),
                                policy="p").annotation == (
        "Compliant (policy p): runs images that meet the policy")


def test_same_name_workloads_of_two_kinds_are_two_resources() -> None:
    assert awsconfig.resource_id("c", "Deployment", "n", "x") != awsconfig.resource_id(
        "c", "StatefulSet", "n", "x")


def test_only_changes_are_sent() -> None:
    web = Result("Deployment", "shop", "web", "BaseImageOutdated")
    first = awsconfig.plan(cluster="c", policy="p", results=[web], sent={})
    assert [e.compliance for e in first] == [NON_COMPLIANT]
    sent = {e.resource_id: Sent(policy="p", compliance=e.compliance, annotation=e.annotation)
            for e in first}
    assert awsconfig.plan(cluster="c", policy="p", results=[web], sent=sent) == []
    patched = Result("Deployment", "shop", "web", "Compliant")
    (again,) = awsconfig.plan(cluster="c", policy="p", results=[patched], sent=sent)
    assert again.compliance == COMPLIANT


def test_a_workload_no_longer_evaluated_is_sent_once_as_not_applicable() -> None:
    rid = awsconfig.resource_id("c", "Deployment", "shop", "gone")
    sent = {rid: Sent(policy="p", compliance=NON_COMPLIANT, annotation="x")}
    (ev,) = awsconfig.plan(cluster="c", policy="p", results=[], sent=sent)
    assert (ev.resource_id, ev.compliance) == (rid, NOT_APPLICABLE)
    assert "no longer evaluates it" in ev.annotation
    (out,) = awsconfig.plan(cluster="c", policy="p", results=[], sent=sent,
                            opted_out={("Deployment", "shop", "gone")})
    assert "opted out" in out.annotation
    sent[rid] = Sent(policy="p", compliance=NOT_APPLICABLE, annotation=ev.annotation)
    assert awsconfig.plan(cluster="c", policy="p", results=[], sent=sent) == []
    # Another policy's resource is that policy's to retire.
    assert awsconfig.plan(cluster="c", policy="q", results=[], sent={
        rid: Sent(policy="p", compliance=COMPLIANT, annotation="x")}) == []


def test_batches_hold_at_most_100_and_requests_carry_the_type() -> None:
    evs = [awsconfig.Evaluation(resource_id=str(i), compliance=COMPLIANT, annotation="a")
           for i in range(250)]
    assert [len(b) for b in awsconfig.batches(evs)] == [100, 100, 50]
    at = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    assert evs[0].request("T::X::Y", at) == {
        "ComplianceResourceType": "T::X::Y", "ComplianceResourceId": "0",
        "ComplianceType": COMPLIANT, "Annotation": "a", "OrderingTimestamp": at}
