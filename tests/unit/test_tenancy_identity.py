"""Identity is the full key (issue 20, item 1), as pure decisions and in-memory passes.

Given workloads of different kinds that share a namespace and a name, one of
them asking for a rebuild the policy refuses, when detection opens patches,
then each patch's ``spec.rebuild`` comes only from its own targets' request;
when a build starts, ``spec.rebuild.allowed`` is checked again; a Security
Hub finding's Id and resource id name the workload's kind; and the report has
one row per kind, namespace and name. The cluster-level versions are
``tests/e2e/test_tenancy_identity.py`` and ``tests/integration/test_report.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from imagepatch.adapters.registry import ManifestInfo
from imagepatch.adapters.securityhub import Exported, to_finding
from imagepatch.adapters.securityhub import plan_asff_findings as plan_findings
from imagepatch.cli_render import render_csv, render_html, render_table, report_as_dict
from imagepatch.core import rebuild
from imagepatch.core.oci import OCI_MANIFEST
from imagepatch.core.report import build_report
from imagepatch.core.securityhub import FindingContext, finding_id, kind_path
from imagepatch.model import parse_policy_spec
from imagepatch.reconcile.detection import Detector, WorkloadResult
from tests.unit.test_detection_isolation import ECR, MemoryKube, MemoryRegistry, policy

# --- detection: a patch's rebuild comes from its own targets ----------------------------------

GOVERNED = {"strategy": "external", "allowed": {"strategies": ["external", "job"],
                                                "jobTemplates": ["team-a-build"]}}


class KindKube(MemoryKube):
    """MemoryKube keyed by kind too: two workloads of one name are two records."""

    async def annotate_workload(
        self, kind: str, ns: str, name: str, annotations: Mapping[str, Any]
    ) -> None:
        self.annotations.setdefault((kind, ns, name), {}).update(annotations)  # type: ignore[index]

    def state_of(self, kind: str, name: str) -> dict:
        return json.loads(self.annotations[(kind, "ns", name)]["imagepatch.dev/state"])  # type: ignore[index]


def outdated_registry() -> MemoryRegistry:
    registry = MemoryRegistry()

    async def moved(image: Any, ref: str | None = None) -> ManifestInfo:
        return ManifestInfo("sha256:" + "c" * 64, OCI_MANIFEST, 100)  # the base tag moved

    registry.head_manifest = moved  # type: ignore[method-assign]
    return registry


def workload(kind: str, name: str, **annotations: str) -> dict:
    pod = {"containers": [{"name": "app", "image": f"{ECR}/app:1"}]}
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": {"spec": pod}}
    if kind == "CronJob":
        spec = {"jobTemplate": {"spec": {"template": {"spec": pod}}}}
    return {"kind": kind,
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{kind}-{name}",
                         "annotations": {"imagepatch.dev/policy": "a", **annotations}},
            "spec": spec}


def detect(*workloads: dict) -> KindKube:
    kube = KindKube([policy("a", rebuild=GOVERNED)])
    detector = Detector(kube=kube, registry=outdated_registry())
    for body in workloads:  # in this order: the Deployment is seen first
        detector.observe("ADDED", body, kind=body["kind"])
    asyncio.run(detector.evaluate_all())
    return kube


def targets(patch: dict) -> list[tuple[str, str, str]]:
    return [(t["kind"], t["name"], t["container"]) for t in patch["spec"]["targets"]]


def test_a_refused_rebuild_never_rides_on_the_patch_of_another_kind_with_the_same_name():
    kube = detect(workload("Deployment", "web", **{"imagepatch.dev/rebuild": "job:team-b-build"}),
                  workload("CronJob", "web"))

    [patch] = kube.patches.values()
    assert targets(patch) == [("CronJob", "web", "app")]
    assert patch["spec"]["rebuild"] == {"strategy": "external"}  # the policy's default
    assert "team-b-build" not in json.dumps(patch)
    refused = kube.state_of("Deployment", "web")
    assert refused["state"] == "RebuildNotAllowed" and "team-b-build" in refused["message"]
    assert kube.state_of("CronJob", "web")["state"] == "Patching"


def test_targets_that_ask_for_different_rebuilds_get_one_patch_each_with_their_own():
    kube = detect(workload("Deployment", "web", **{"imagepatch.dev/rebuild": " job:team-a-build "}),
                  workload("CronJob", "web"), workload("StatefulSet", "web"))

    by_rebuild = {json.dumps(p["spec"]["rebuild"], sort_keys=True): p for p in kube.patches.values()}
    assert set(by_rebuild) == {'{"jobTemplate": "team-a-build", "strategy": "job"}',
                               '{"strategy": "external"}'}
    assert targets(by_rebuild['{"jobTemplate": "team-a-build", "strategy": "job"}']) == [
        ("Deployment", "web", "app")]
    assert sorted(targets(by_rebuild['{"strategy": "external"}'])) == [
        ("CronJob", "web", "app"), ("StatefulSet", "web", "app")]


# --- the allowed re-check when the build starts -----------------------------------------------


def spec_of(rebuild_spec: dict):
    return parse_policy_spec({"namespaceSelector": {}, "rebuild": rebuild_spec})


JOB_A = rebuild.RebuildChoice(strategy="job", job_template="team-a-build")


@pytest.mark.parametrize(
    ("policy_rebuild", "choice", "refused_with"),
    [
        (GOVERNED, JOB_A, None),
        (GOVERNED, rebuild.RebuildChoice(strategy="external"), None),
        # The admin took team-a-build back after the patch was opened.
        ({**GOVERNED, "allowed": {"strategies": ["external", "job"], "jobTemplates": ["other"]}},
         JOB_A, "Job template 'team-a-build' is not in spec.rebuild.allowed.jobTemplates"),
        ({**GOVERNED, "allowed": {"strategies": ["external"]}},
         JOB_A, "strategy 'job' is not in spec.rebuild.allowed.strategies"),
        ({"strategy": "external", "allowed": {"strategies": ["codebuild"],
                                              "codebuildProjects": ["team-a-*"]}},
         rebuild.RebuildChoice(strategy="codebuild", codebuild_project="team-a-api"), None),
        ({"strategy": "external", "allowed": {"strategies": ["codebuild"],
                                              "codebuildProjects": ["team-a-*"]}},
         rebuild.RebuildChoice(strategy="codebuild", codebuild_project="admin-deploy"),
         "CodeBuild project 'admin-deploy' is not in spec.rebuild.allowed.codebuildProjects"),
        # The policy's own default is always allowed, even when allowed leaves it out.
        ({"strategy": "job", "job": {"template": "team-a-build"},
          "allowed": {"strategies": ["rebase"]}}, JOB_A, None),
        # No allowed list, and the policy's own template changed since: only the new one.
        ({"strategy": "job", "job": {"template": "team-a-build-v2"}}, JOB_A,
         "spec.rebuild.allowed is not set: only the policy's own"),
    ],
)
def test_allowed_is_checked_again_when_the_build_starts(policy_rebuild, choice, refused_with):
    refusal = rebuild.refusal_at_start(choice, spec_of(policy_rebuild))
    if refused_with is None:
        assert refusal == ""
    else:
        assert refused_with in refusal
        assert "no longer allowed" in refusal and "nothing was built" in refusal


def test_without_a_policy_nothing_allows_a_build():
    refusal = rebuild.refusal_at_start(JOB_A, None)
    assert "missing or invalid" in refusal and "job (Job template 'team-a-build')" in refusal


def test_a_refused_build_is_never_asked_of_a_builder():
    from imagepatch.adapters.builders import BuildRequest
    from imagepatch.reconcile import rebuilds

    class Recording:
        started: list[Any] = []

        async def start(self, request: Any) -> str:
            self.started.append(request)
            return "build-1"

    builder = Recording()
    request = BuildRequest(key="k", strategy="job", image=f"{ECR}/app", tag="1",
                           current_digest="sha256:" + "a" * 64, base_name="", base_digest="",
                           old_base_digest="", codebuild_project="", job_template="team-a-build",
                           started_at=None, timeout=dt.timedelta(hours=1))
    taken_back = spec_of({**GOVERNED, "allowed": {"strategies": ["external"]}})
    seen = asyncio.run(rebuilds.start({"job": builder}, request, policy=taken_back))  # type: ignore[dict-item]
    assert (seen.state, seen.reason) == ("Failed", "RebuildNotAllowed")
    assert "spec.rebuild.allowed.strategies" in seen.message
    assert builder.started == []
    # The step the planner makes of it: Failed, Stalled with the reason, nothing to roll out.
    from imagepatch.model.rebuild_status import RebuildStatus

    step = rebuild.decide_rebuild(
        rebuild=RebuildStatus(strategy="job", started_at="2026-12-05T17:00:00Z"), key="k",
        strategy="job", build=seen, verification=None, now=dt.datetime(2026, 12, 5, 17, tzinfo=dt.UTC))
    assert (step.phase, step.stalled, step.start_build) == ("Failed", "RebuildNotAllowed", False)
    assert "Job template 'team-a-build'" in step.message


# --- Security Hub: the kind is part of the Id --------------------------------------------------

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
CTX = FindingContext(account_id="123456789012", region="eu-west-1", cluster="prod-eu")
IMAGE = "registry.example.com/team/app:1.4"


def result(kind: str, name: str = "web") -> WorkloadResult:
    record = {"name": "app", "image": IMAGE, "digest": "sha256:" + "1" * 64,
              "state": "BaseImageOutdated", "reason": "BaseImageOutdated", "message": "moved"}
    return WorkloadResult(kind=kind, namespace="shop", name=name, uid=f"uid-{kind}",
                          state="BaseImageOutdated", message="", containers=[record])


def test_a_statefulset_and_a_deployment_of_one_name_are_two_findings():
    upsert, _ = plan_findings({}, {"p": [result("Deployment"), result("StatefulSet"),
                                         result("DaemonSet"), result("CronJob")]},
                              context=CTX, now=NOW)
    ids = [f["Id"] for f in upsert]
    assert len(set(ids)) == 4
    # A Deployment keeps the Id it had before kinds were told apart (no duplicate on upgrade).
    assert "imagepatch/prod-eu/shop/deployments/web/app/registry.example.com/team/app" in ids
    for kind, plural in (("StatefulSet", "statefulsets"), ("DaemonSet", "daemonsets"),
                         ("CronJob", "cronjobs")):
        [finding] = [f for f in upsert if f["ProductFields"]["imagepatch/Kind"] == kind]
        assert finding["Id"] == f"imagepatch/prod-eu/shop/{plural}/web/app/registry.example.com/team/app"
        workload = finding["Resources"][1]
        assert workload["Id"] == f"k8s://prod-eu/shop/{plural}/web"
        assert workload["Details"]["Other"]["kubernetes/kind"] == kind
        assert finding["Title"].startswith(f"{kind} shop/web, container app")


def test_finding_ids_default_to_deployments_and_unknown_kinds_get_a_plural():
    assert finding_id("c", "ns", "web", "app", "r/app") == finding_id(
        "c", "ns", "web", "app", "r/app", kind="Deployment")
    assert kind_path("Rollout") == "rollouts"


def test_a_remembered_finding_keeps_its_kind_and_is_archived_as_gone_with_it():
    document = to_finding(result("StatefulSet"), result("StatefulSet").containers[0], policy="p",
                          context=CTX, now=NOW)
    assert document is not None
    exported = Exported.from_finding(document, context=CTX)
    assert exported is not None and exported.kind == "StatefulSet"
    # A finding from before kinds were told apart names no kind: it was a Deployment's.
    older = json.loads(json.dumps(document))
    del older["ProductFields"]["imagepatch/Kind"]
    assert Exported.from_finding(older, context=CTX).kind == "Deployment"  # type: ignore[union-attr]

    later = NOW + dt.timedelta(minutes=30)
    absent = plan_findings({exported.id: exported}, {"p": []}, context=CTX, now=NOW).absent
    _, archive = plan_findings({exported.id: exported}, {"p": []}, context=CTX, now=later,
                               absent_since=absent)
    [gone] = archive
    assert gone["Id"] == exported.id and gone["RecordState"] == "ARCHIVED"
    assert gone["Resources"][1]["Id"] == "k8s://prod-eu/shop/statefulsets/web"
    assert gone["Title"].startswith("StatefulSet shop/web")


# --- the report: one row per kind, namespace and name ------------------------------------------


def report_workload(kind: str, name: str, state: str, repo: str) -> dict:
    record = {"policy": "critical", "state": state, "message": f"{kind} {name}: {state}",
              "since": "2026-11-27T11:00:00Z",
              "containers": [{"name": "app", "image": f"registry.example.com/{repo}:1.0",
                              "digest": "sha256:" + "a" * 64, "state": state, "reason": state,
                              "message": state}]}
    return {"kind": kind, "metadata": {"namespace": "shop", "name": name, "annotations": {
        "imagepatch.dev/policy": "critical", "imagepatch.dev/state": json.dumps(record)}}}


def kinds_report():
    workloads = [report_workload("Deployment", "web", "Compliant", "team/web"),
                 report_workload("StatefulSet", "web", "Failed", "team/db"),
                 report_workload("DaemonSet", "agent", "Compliant", "team/agent"),
                 report_workload("CronJob", "nightly", "BaseImageOutdated", "team/batch")]
    # A rolled-back patch of the StatefulSet's image that targeted it.
    patch = {"metadata": {"name": "db-1", "creationTimestamp": "2026-11-27T10:00:00Z"},
             "spec": {"image": "registry.example.com/team/db", "currentDigest": "sha256:" + "a" * 64,
                      "policy": "critical", "reason": "BaseImageOutdated",
                      "targets": [{"kind": "StatefulSet", "namespace": "shop", "name": "web",
                                   "container": "app"}]},
             "status": {"phase": "RolledBack",
                        "history": [{"phase": "RolledBack", "at": "2026-11-27T11:00:00Z"}],
                        "rollouts": [{"kind": "StatefulSet", "namespace": "shop", "name": "web",
                                      "container": "app", "phase": "RolledBack",
                                      "reason": "CrashLoopBackOff", "message": "db-0/app"}]}}
    return build_report(policies=[], workloads=workloads, imagepatches=[patch], now=NOW)


def test_the_report_lists_every_kind_keyed_by_kind_namespace_and_name():
    report = kinds_report()
    assert [(w.kind, w.name, w.state) for w in report.workloads] == [
        ("DaemonSet", "agent", "Compliant"), ("CronJob", "nightly", "BaseImageOutdated"),
        ("Deployment", "web", "Compliant"), ("StatefulSet", "web", "Failed")]
    rows = {w.key: w for w in report.workloads}
    # The StatefulSet's patch is its own: never the Deployment's of the same name.
    sts = rows[("StatefulSet", "shop", "web")]
    assert sts.last_patch is not None and sts.last_patch.result == "CrashLoopBackOff: db-0/app"
    assert rows[("Deployment", "shop", "web")].last_patch is None
    assert report.patches[0].rollouts[0]["kind"] == "StatefulSet"
    # A workload body without a kind is a Deployment's.
    bare = report_workload("Deployment", "api", "Compliant", "team/api")
    del bare["kind"]
    again = build_report(policies=[], workloads=[bare], imagepatches=[], now=NOW)
    assert again.workloads[0].kind == "Deployment"


def test_the_kind_is_shown_in_every_format():
    report = kinds_report()
    doc = report_as_dict(report)
    assert [(w["kind"], w["name"]) for w in doc["workloads"]] == [
        ("DaemonSet", "agent"), ("CronJob", "nightly"), ("Deployment", "web"), ("StatefulSet", "web")]
    table = render_table(report).splitlines()
    header = next(line for line in table if line.startswith("NAMESPACE"))
    assert header.split()[:3] == ["NAMESPACE", "KIND", "NAME"]
    body = table[table.index(header) + 1:]
    assert [line.split()[:3] for line in body] == [
        ["shop", w["kind"], w["name"]] for w in doc["workloads"]]
    csv_lines = render_csv(report).splitlines()
    assert csv_lines[0].startswith("namespace,kind,name,")
    assert [line.split(",")[:3] for line in csv_lines[1:]] == [
        ["shop", w["kind"], w["name"]] for w in doc["workloads"]]
    page = render_html(report)
    assert page.count('data-kind="StatefulSet" data-name="web"') == 1
    assert page.count('data-kind="Deployment" data-name="web"') == 1
    assert "<th>Kind</th>" in page


class RetargetingKube(KindKube):
    async def set_imagepatch_targets(self, name: str, targets: list[dict], *,
                                     resource_version: str) -> None:
        self.patches[name]["spec"]["targets"] = targets


def test_a_workload_added_to_an_open_patch_reads_patching_in_the_same_pass():
    kube = RetargetingKube([policy("a", rebuild=GOVERNED)])
    detector = Detector(kube=kube, registry=outdated_registry())
    detector.observe("ADDED", workload("Deployment", "web"), kind="Deployment")
    asyncio.run(detector.evaluate_all())
    [patch] = kube.patches.values()
    assert targets(patch) == [("Deployment", "web", "app")]

    detector.observe("ADDED", workload("StatefulSet", "web"), kind="StatefulSet")
    asyncio.run(detector.evaluate_all())
    assert sorted(targets(patch)) == [("Deployment", "web", "app"), ("StatefulSet", "web", "app")]
    assert kube.state_of("StatefulSet", "web")["state"] == "Patching"
