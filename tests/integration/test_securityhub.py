"""The Security Hub exporter against moto in server mode: create, update, archive, restart.

Given detection's results, when the exporter sends them to Security Hub
(moto), then each non-compliant container has exactly one finding, updated in
place as its state changes, archived when it complies again or has been gone
for a while; a new exporter (a restarted operator) reads back what is there and sends
nothing twice; batches, rejections and throttling behave as Security Hub's
limits require.

What came from where:

* **moto, natively:** ``BatchImportFindings`` (upsert by Id, ``FailedFindings``
  for a finding without Resources), ``GetFindings`` pagination, STS
  ``GetCallerIdentity`` (the account id).
* **moto's gaps**, pinned by ``test_what_moto_does_not_do`` so that a moto
  upgrade that closes one shows up: ``GetFindings`` ignores ``Filters`` (the
  exporter filters again on its side, and the restart tests put foreign
  findings in the hub to prove it); ``BatchUpdateFindings`` is not
  implemented (404), so the archive's Workflow RESOLVED is checked as sent by
  ``BatchImportFindings`` (which real Security Hub ignores for an existing
  finding) and the ``BatchUpdateFindings`` call against a canned answer;
  moto needs no ``EnableSecurityHub`` and validates almost nothing of ASFF.
* **a ``before-send`` hook**, inside botocore's retry loop: throttling, a hub
  that is not enabled, access denied, and ``BatchUpdateFindings``' answer.
* **a ``before-parameter-build`` hook:** a finding Security Hub rejects
  (its Resources emptied on the way out, so moto rejects it for real).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import threading
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.adapters.securityhub import SecurityHubExporter, to_finding
from imagepatch.core.securityhub import FindingContext
from imagepatch.reconcile.detection import WorkloadResult
from tests.support.moto import DUMMY_CREDENTIALS

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
B_OLD = "sha256:" + "a" * 64
B_NEW = "sha256:" + "b" * 64
CLUSTER = "test-cluster"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def container(state: str, *, name: str = "app", image: str = "registry.example.com/shop/web:1",
              digest: str = D1, **extra: Any) -> dict[str, Any]:
    record = {"name": name, "image": image, "digest": digest, "base": "python:3.12-slim",
              "baseDigest": B_OLD, "baseCurrent": B_NEW if state == "BaseImageOutdated" else B_OLD,
              "state": state, "reason": extra.pop("reason", state), "message": f"{name} is {state}"}
    return {**record, **extra}


def workload(name: str, *containers: dict[str, Any], namespace: str = "shop") -> WorkloadResult:
    return WorkloadResult(namespace=namespace, name=name, uid=f"uid-{name}",
                          state=containers[0]["state"] if containers else "NotAdmitted",
                          message="", containers=list(containers))


def make_exporter(aws, **kwargs: Any) -> SecurityHubExporter:
    kwargs.setdefault("cluster_name", CLUSTER)
    return SecurityHubExporter(
        aws.region, endpoint_url=aws.endpoint_url,
        session=boto3.Session(**kwargs.pop("credentials", DUMMY_CREDENTIALS)), **kwargs,
    )  # fmt: skip


@pytest.fixture
def hub(aws):
    client = aws.client("securityhub")
    client.enable_security_hub(EnableDefaultStandards=False)  # real Security Hub needs it
    return client


@pytest.fixture
def exporter(aws, hub) -> SecurityHubExporter:
    return make_exporter(aws)


def all_findings(hub) -> list[dict[str, Any]]:
    pages = hub.get_paginator("get_findings").paginate(PaginationConfig={"PageSize": 100})
    return [f for page in pages for f in page["Findings"]]


def by_id(hub) -> dict[str, dict[str, Any]]:
    findings = all_findings(hub)
    counts = Counter(f["Id"] for f in findings)
    assert all(n == 1 for n in counts.values()), f"duplicated: {[i for i, n in counts.items() if n > 1]}"
    return {f["Id"]: f for f in findings}


def fid(workload_name: str, container_name: str = "app", repo: str = "registry.example.com/shop/web",
        namespace: str = "shop", cluster: str = CLUSTER) -> str:
    return f"imagepatch/{cluster}/{namespace}/deployments/{workload_name}/{container_name}/{repo}"


def export(exporter: SecurityHubExporter, results: dict[str, list[WorkloadResult]], now: dt.datetime):
    return asyncio.run(exporter.export(results, now=now))


class Calls:
    """Counts the HTTP sends of one operation (retries included)."""

    def __init__(self, client, operation: str) -> None:
        self.sends = 0
        client.meta.events.register(f"before-send.securityhub.{operation}", self)

    def __call__(self, request, **_: Any) -> None:
        self.sends += 1


class Respond:
    """Answer sends ``skip+1`` .. ``skip+times`` of an operation with a canned HTTP response,
    inside botocore's retry loop (``before-send``); let the others through to moto."""

    def __init__(self, client, operation: str, *, status: int, body: dict[str, Any],
                 times: int = 1, skip: int = 0) -> None:
        self.status, self.body, self.times, self.skip = status, body, times, skip
        self.sends = 0
        self.bodies: list[dict[str, Any]] = []
        client.meta.events.register(f"before-send.securityhub.{operation}", self)

    def __call__(self, request, **_: Any) -> AWSResponse | None:
        self.sends += 1
        if not self.skip < self.sends <= self.skip + self.times:
            return None
        self.bodies.append(json.loads(request.body or b"{}"))
        response = AWSResponse(request.url, self.status, {"content-type": "application/json"}, None)
        response._content = json.dumps(self.body).encode()  # the raw stream is never read
        return response


def throttled() -> dict[str, Any]:
    return {"__type": "TooManyRequestsException", "message": "Rate exceeded"}


MIXED = {
    "critical": [
        workload("vulnerable", container("Vulnerable", maxSeverity="CRITICAL", findingsOverBaseline=3)),
        workload("outdated", container("BaseImageOutdated")),
        workload("untrusted", container("UntrustedBase")),
        workload("rolled-back", container("Failed", reason="Vulnerable")),
        workload("patching", container("Patching", reason="BaseImageOutdated")),
        workload("compliant", container("Compliant")),
        workload("unknown", container("Unknown", reason="RegistryUnavailable")),
    ]
}
MIXED_IDS = {fid(n) for n in ("vulnerable", "outdated", "untrusted", "rolled-back", "patching")}


# -- create, update, archive ---------------------------------------------------------------------


def test_findings_are_created_for_non_compliant_workloads_only(aws, hub, exporter):
    result = export(exporter, MIXED, T0)

    found = by_id(hub)
    assert set(found) == MIXED_IDS
    assert (result.upserted, result.archived, result.failed, result.calls) == (5, 0, 0, 1)
    v = found[fid("vulnerable")]
    # The account came from STS (moto's), the region from the exporter.
    assert v["ProductArn"] == f"arn:aws:securityhub:{aws.region}:{aws.account_id}:product/{aws.account_id}/default"
    assert v["AwsAccountId"] == aws.account_id and v["GeneratorId"] == "imagepatch/critical"
    assert (v["Severity"]["Label"], v["RecordState"], v["Workflow"]["Status"], v["Compliance"]["Status"]) == (
        "CRITICAL", "ACTIVE", "NEW", "FAILED")
    assert v["Resources"][0]["Details"]["Container"] == {
        "Name": "app", "ImageId": D1, "ImageName": "registry.example.com/shop/web:1"}
    assert v["Resources"][1] == {
        "Type": "Other", "Id": f"k8s://{CLUSTER}/shop/deployments/vulnerable", "Partition": "aws",
        "Region": aws.region, "Details": {"Other": {
            "kubernetes/cluster": CLUSTER, "kubernetes/namespace": "shop", "kubernetes/kind": "Deployment",
            "kubernetes/name": "vulnerable", "kubernetes/uid": "uid-vulnerable"}}}
    severities = {i.split("/")[4]: f["Severity"]["Label"] for i, f in found.items()}
    assert severities == {"vulnerable": "CRITICAL", "outdated": "MEDIUM", "untrusted": "HIGH",
                          "rolled-back": "HIGH", "patching": "MEDIUM"}


def test_a_state_change_updates_the_same_finding(hub, exporter):
    export(exporter, {"p": [workload("web", container("BaseImageOutdated"))]}, T0)
    before = by_id(hub)[fid("web")]

    result = export(exporter, {"p": [workload("web", container("Vulnerable", digest=D2, maxSeverity="CRITICAL"))]}, at(10))

    found = by_id(hub)
    assert list(found) == [fid("web")] and result.upserted == 1
    after = found[fid("web")]
    assert after["UpdatedAt"] == "2026-11-27T12:10:00.000Z" > before["UpdatedAt"]
    assert after["CreatedAt"] == after["FirstObservedAt"] == before["CreatedAt"] == "2026-11-27T12:00:00.000Z"
    assert (before["Severity"]["Label"], after["Severity"]["Label"]) == ("MEDIUM", "CRITICAL")
    assert after["FindingProviderFields"]["Severity"]["Label"] == "CRITICAL"
    assert after["Resources"][0]["Details"]["Container"]["ImageId"] == D2
    assert after["ProductFields"]["imagepatch/State"] == "Vulnerable"


def test_an_unchanged_state_is_not_sent_again(hub, exporter):
    results = {"p": [workload("web", container("Vulnerable"))]}
    export(exporter, results, T0)
    calls = Calls(exporter.securityhub, "BatchImportFindings")

    result = export(exporter, results, at(10))

    assert (result.calls, calls.sends) == (0, 0)
    assert by_id(hub)[fid("web")]["UpdatedAt"] == "2026-11-27T12:00:00.000Z"


def test_a_compliant_workload_archives_its_finding_and_a_relapse_reactivates_it(hub, exporter):
    export(exporter, {"p": [workload("web", container("Vulnerable"))]}, T0)

    result = export(exporter, {"p": [workload("web", container("Compliant", digest=D2))]}, at(10))

    archived = by_id(hub)[fid("web")]
    assert (archived["RecordState"], archived["Workflow"]["Status"], archived["Compliance"]["Status"]) == (
        "ARCHIVED", "RESOLVED", "PASSED")
    assert archived["Severity"]["Label"] == "INFORMATIONAL"
    assert archived["Resources"][0]["Details"]["Container"]["ImageId"] == D2  # the patched digest
    assert (result.archived, result.upserted) == (1, 0)
    # moto has no BatchUpdateFindings: the best-effort workflow step fails without failing the export.
    assert (result.resolved, result.resolve_failed) == (0, 1)

    # Compliant and archived: nothing more to send.
    assert export(exporter, {"p": [workload("web", container("Compliant", digest=D2))]}, at(20)).calls == 0

    export(exporter, {"p": [workload("web", container("BaseImageOutdated", digest=D2))]}, at(30))
    relapsed = by_id(hub)[fid("web")]
    assert (relapsed["RecordState"], relapsed["Workflow"]["Status"], relapsed["Compliance"]["Status"]) == (
        "ACTIVE", "NEW", "FAILED")
    assert relapsed["CreatedAt"] == "2026-11-27T12:00:00.000Z"
    assert relapsed["FirstObservedAt"] == "2026-11-27T12:30:00.000Z"


def test_a_workload_gone_from_its_policy_archives_its_finding_and_other_policies_are_untouched(hub, exporter):
    export(exporter, {"p": [workload("web", container("Vulnerable")), workload("api", container("Vulnerable"))],
                      "q": [workload("batch", container("Vulnerable"))]}, T0)
    assert exporter.active_policies() == {"p", "q"}
    # "web" was deleted; only policy p is evaluated in these passes.
    remaining = {"p": [workload("api", container("Vulnerable"))]}

    first = export(exporter, remaining, at(10))  # missing once: maybe the watch is not synced yet
    later = export(exporter, remaining, at(20))  # missing for gone_after (10 minutes): gone

    found = by_id(hub)
    assert (first.calls, later.archived) == (0, 1)
    assert (found[fid("web")]["RecordState"], found[fid("web")]["Compliance"]["Status"]) == ("ARCHIVED", "NOT_AVAILABLE")
    assert found[fid("web")]["UpdatedAt"] == "2026-11-27T12:20:00.000Z"
    assert found[fid("api")]["RecordState"] == found[fid("batch")]["RecordState"] == "ACTIVE"


# -- restart -------------------------------------------------------------------------------------


def test_a_restarted_exporter_loads_what_is_there_and_duplicates_nothing(aws, hub, exporter):
    export(exporter, MIXED, T0)
    results = {"critical": [*MIXED["critical"][1:], workload("vulnerable", container("Compliant"))]}
    export(exporter, results, at(5))  # one of them archived
    before = by_id(hub)
    # Foreign findings in the same hub: another cluster's, and another product's.
    export(make_exporter(aws, cluster_name="other-cluster"), {"critical": [workload("web", container("Vulnerable"))]}, T0)
    foreign = copy.deepcopy(before[fid("outdated")])
    foreign.update(Id="arn:aws:inspector2:us-east-1:123456789012:finding/1",
                   ProductArn="arn:aws:securityhub:us-east-1::product/aws/inspector", GeneratorId="AWSInspector")
    assert hub.batch_import_findings(Findings=[foreign])["SuccessCount"] == 1
    total = len(all_findings(hub))

    restarted = make_exporter(aws)
    loaded = asyncio.run(restarted.load_previous())
    calls = Calls(restarted.securityhub, "BatchImportFindings")
    result = export(restarted, results, at(15))

    assert loaded == len(before) == 5  # 4 active and the archived one; nothing foreign
    assert not restarted.previous[fid("vulnerable")].active
    assert (result.calls, calls.sends) == (0, 0)
    after = by_id(hub)  # asserts every Id is there once
    assert len(after) == total
    assert all(after[i]["UpdatedAt"] == before[i]["UpdatedAt"] for i in before)
    assert after[fid("web", cluster="other-cluster")]["RecordState"] == "ACTIVE"  # not ours to archive

    # A change after the restart is sent once, to the same Id.
    changed = {"critical": [workload("outdated", container("Vulnerable")), *results["critical"][1:]]}
    assert export(restarted, changed, at(20)).upserted == 1
    assert len(by_id(hub)) == total
    assert by_id(hub)[fid("outdated")]["CreatedAt"] == "2026-11-27T12:00:00.000Z"


def test_the_first_export_loads_what_is_there_by_itself(aws, hub, exporter):
    export(exporter, MIXED, T0)
    restarted = make_exporter(aws)
    calls = Calls(restarted.securityhub, "BatchImportFindings")

    assert export(restarted, MIXED, at(10)).calls == 0
    assert calls.sends == 0 and restarted.loaded
    assert set(by_id(hub)) == MIXED_IDS


def test_a_restarts_first_pass_before_the_watch_listed_the_workloads_archives_nothing(aws, hub, exporter):
    export(exporter, MIXED, T0)
    restarted = make_exporter(aws)
    calls = Calls(restarted.securityhub, "BatchImportFindings")

    export(restarted, {"critical": []}, at(10))  # the Deployment watch has not listed anything yet
    export(restarted, MIXED, at(11))  # now it has

    assert calls.sends == 0
    assert {f["RecordState"] for f in by_id(hub).values()} == {"ACTIVE"}


def test_a_restart_after_a_workload_was_deleted_still_archives_it(aws, hub, exporter):
    export(exporter, {"p": [workload("web", container("Vulnerable"))]}, T0)
    restarted = make_exporter(aws)

    first = export(restarted, {"p": []}, at(10))
    later = export(restarted, {"p": []}, at(20))

    assert (first.archived, later.archived) == (0, 1)
    assert by_id(hub)[fid("web")]["RecordState"] == "ARCHIVED"


# -- batches, rejections, throttling --------------------------------------------------------------


def test_250_findings_go_in_three_calls_and_all_land(hub, exporter):
    results = {"p": [workload(f"w{i:03d}", container("Vulnerable")) for i in range(250)]}
    calls = Calls(exporter.securityhub, "BatchImportFindings")

    result = export(exporter, results, T0)

    assert (result.calls, calls.sends, result.upserted) == (3, 3, 250)
    assert len(by_id(hub)) == 250


def test_a_rejected_finding_is_counted_logged_and_sent_again_next_time(hub, exporter, caplog):
    bad = fid("b")
    spoiled = []

    def spoil(params, **_: Any) -> None:
        if not spoiled:  # the first call only: Security Hub rejects a finding without Resources
            spoiled.append(True)
            params["Findings"] = [{**f, "Resources": []} if f["Id"] == bad else f for f in params["Findings"]]

    exporter.securityhub.meta.events.register("before-parameter-build.securityhub.BatchImportFindings", spoil)
    results = {"p": [workload(n, container("Vulnerable")) for n in ("a", "b", "c")]}

    first = export(exporter, results, T0)

    assert (first.upserted, first.failed_ids) == (2, [bad])
    assert set(by_id(hub)) == {fid("a"), fid("c")}
    assert bad not in exporter.previous
    assert f"Security Hub rejected finding {bad} (InvalidInput)" in caplog.text

    again = export(exporter, results, at(10))

    assert (again.upserted, again.failed) == (1, 0)  # only the rejected one, not the others
    assert set(by_id(hub)) == {fid("a"), fid("b"), fid("c")}
    assert exporter.totals["failed"] == 1 and exporter.totals["upserted"] == 3


def test_throttling_is_retried_by_the_standard_mode(hub, exporter):
    throttle = Respond(exporter.securityhub, "BatchImportFindings", status=429, body=throttled(), times=1)

    result = export(exporter, {"p": [workload("web", container("Vulnerable"))]}, T0)

    assert throttle.sends == 2 and result.upserted == 1
    assert set(by_id(hub)) == {fid("web")}


def test_throttling_that_outlasts_the_retries_keeps_what_was_sent_and_sends_the_rest_next_time(aws, hub):
    exporter = make_exporter(aws, max_attempts=2)
    results = {"p": [workload(f"w{i:03d}", container("Vulnerable")) for i in range(150)]}
    # The first call (100 findings) goes through; the second is throttled on both attempts.
    Respond(exporter.securityhub, "BatchImportFindings", status=429, body=throttled(), times=2, skip=1)

    with pytest.raises(TransientError) as err:
        export(exporter, results, T0)

    assert err.value.reason == "AwsThrottled" and "TooManyRequestsException" in str(err.value)
    assert len(by_id(hub)) == 100 and len(exporter.previous) == 100
    calls = Calls(exporter.securityhub, "BatchImportFindings")
    result = export(exporter, results, at(1))
    assert (result.upserted, calls.sends) == (50, 1)
    assert len(by_id(hub)) == 150


# -- workflow and errors ---------------------------------------------------------------------------


def test_archived_findings_are_resolved_with_batch_update_findings(aws, hub, exporter):
    export(exporter, {"p": [workload(n, container("Vulnerable")) for n in ("a", "b")]}, T0)
    product = f"arn:aws:securityhub:{aws.region}:{aws.account_id}:product/{aws.account_id}/default"
    answer = Respond(exporter.securityhub, "BatchUpdateFindings", status=200, body={
        "ProcessedFindings": [{"Id": fid("a"), "ProductArn": product}],
        "UnprocessedFindings": [{"FindingIdentifier": {"Id": fid("b"), "ProductArn": product},
                                 "ErrorCode": "FindingNotFound", "ErrorMessage": SECRET}]})

    result = export(exporter, {"p": [workload(n, container("Compliant")) for n in ("a", "b")]}, at(10))

    assert answer.bodies == [{
        "FindingIdentifiers": [{"Id": fid("a"), "ProductArn": product}, {"Id": fid("b"), "ProductArn": product}],
        "Workflow": {"Status": "RESOLVED"}}]
    assert (result.archived, result.resolved, result.resolve_failed) == (2, 1, 1)


def test_an_opted_out_workloads_finding_is_archived_but_never_resolved(aws, hub, exporter):
    export(exporter, {"p": [workload(n, container("Vulnerable")) for n in ("a", "b")]}, T0)
    calls = Calls(exporter.securityhub, "BatchUpdateFindings")

    result = asyncio.run(exporter.export({"p": [workload("b", container("Vulnerable"))]}, now=at(10),
                                         opted_out={("Deployment", "shop", "a")}))

    assert result.archived == 1 and calls.sends == 0
    held = by_id(hub)[fid("a")]
    assert held["RecordState"] == "ARCHIVED" and held["Workflow"]["Status"] != "RESOLVED"
    assert "opted out" in held["Title"]


def test_resolving_can_be_turned_off(aws, hub):
    exporter = make_exporter(aws, resolve_workflow=False)
    export(exporter, {"p": [workload("a", container("Vulnerable"))]}, T0)
    calls = Calls(exporter.securityhub, "BatchUpdateFindings")

    result = export(exporter, {"p": [workload("a", container("Compliant"))]}, at(10))

    assert result.archived == 1 and calls.sends == 0 and result.resolve_failed == 0


@pytest.mark.parametrize(
    ("code", "status", "reason", "advice"),
    [
        ("InvalidAccessException", 401, "SecurityHubNotEnabled", "Security Hub is not enabled"),
        ("AccessDeniedException", 403, "AwsAccessDenied", "allow securityhub:BatchImportFindings"),
        ("InternalException", 500, "AwsUnavailable", "failed on the AWS side"),
    ],
)
def test_errors_are_classified_with_advice_and_no_aws_text(aws, hub, code, status, reason, advice):
    exporter = make_exporter(aws, max_attempts=1, account_id=aws.account_id, credentials={
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": SECRET})
    exporter.loaded = True  # straight to the import
    leaky = f"User: arn:aws:sts::123456789012:assumed-role/x is not authorized; {SECRET}"
    Respond(exporter.securityhub, "BatchImportFindings", status=status,
            body={"__type": code, "message": leaky}, times=5)

    with pytest.raises((ConfigurationError, TransientError)) as err:
        export(exporter, {"p": [workload("web", container("Vulnerable"))]}, T0)

    assert err.value.reason == reason
    assert advice in str(err.value)
    for secret in (SECRET, "AKIAIOSFODNN7EXAMPLE", "assumed-role", "not authorized"):
        assert secret not in str(err.value)
    assert exporter.previous == {}  # nothing is remembered as sent


def test_a_bad_cluster_name_is_a_configuration_error(aws, hub):
    with pytest.raises(ConfigurationError, match="cluster name"):
        export(make_exporter(aws, cluster_name="prod/eu"), {"p": []}, T0)


def test_boto3_runs_in_a_worker_thread(hub, exporter):
    threads = []
    exporter.securityhub.meta.events.register(
        "before-call.securityhub.BatchImportFindings", lambda **_: threads.append(threading.get_ident()))

    export(exporter, {"p": [workload("web", container("Vulnerable"))]}, T0)

    assert threads and threading.get_ident() not in threads


# -- moto's gaps, pinned ---------------------------------------------------------------------------


def test_what_moto_does_not_do(aws, hub, exporter):
    export(exporter, MIXED, T0)
    only_one = hub.get_findings(Filters={"Id": [{"Value": fid("outdated"), "Comparison": "EQUALS"}]})
    # GetFindings ignores Filters: the exporter filters again itself.
    assert len(only_one["Findings"]) == len(MIXED_IDS)
    # BatchUpdateFindings is not implemented.
    with pytest.raises(Exception, match="404"):
        hub.batch_update_findings(FindingIdentifiers=[{"Id": fid("outdated"), "ProductArn": "x"}],
                                  Workflow={"Status": "RESOLVED"})
    # No EnableSecurityHub needed, and BatchImportFindings keeps Workflow changes that real
    # Security Hub ignores on an existing finding.
    aws.reset()
    fresh = aws.client("securityhub")
    f = _a_finding(aws)
    assert fresh.batch_import_findings(Findings=[f])["SuccessCount"] == 1
    fresh.batch_import_findings(Findings=[{**f, "Workflow": {"Status": "SUPPRESSED"}}])
    assert fresh.get_findings()["Findings"][0]["Workflow"]["Status"] == "SUPPRESSED"


def _a_finding(aws) -> dict[str, Any]:
    ctx = FindingContext(account_id=aws.account_id, region=aws.region, cluster=CLUSTER)
    c = container("Vulnerable")
    return to_finding(workload("web", c), c, policy="p", context=ctx, now=T0)
