"""The compliance report and history retention, as pure functions of plain dicts.

Given ImagePatchPolicies, opted-in Deployments (with the ``imagepatch.dev/state``
record detection writes) and ImagePatches as the API serves them, and a fixed
``now``, when the report is built, then each workload shows its recorded state,
how long it has been out of compliance, its base's staleness, its findings
and its last patch; filters narrow workloads, policies and patches alike; the
history series counts patches by result per bucket; and retention never
chooses an active patch. The renderers are checked on the same report.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from typing import Any

import pytest

from imagepatch.cli_render import (
    format_age,
    history_svg,
    render_csv,
    render_html,
    render_json,
    render_table,
    report_as_dict,
)
from imagepatch.core.report import Filters, build_report, history_series
from imagepatch.core.retention import retention

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
REPO = "registry.example.com/team/web"


def dg(c: str) -> str:
    return "sha256:" + c * 64


RUNNING, BASE_OLD, BASE_NEW = dg("a"), dg("b"), dg("c")


def t(**delta: float) -> str:
    """NOW minus ``delta``, as the API writes times."""
    when = NOW - dt.timedelta(**delta)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def container(name: str = "app", *, image: str = f"{REPO}:1.0", digest: str = RUNNING,
              state: str = "Compliant", reason: str = "Compliant", **extra: Any) -> dict:
    return {"name": name, "image": image, "digest": digest, "digestSource": "pod-status",
            "base": "registry.example.com/base/python:3.12", "baseDigest": BASE_OLD,
            "baseCurrent": BASE_OLD, "lineage": "manifest-annotations", "state": state,
            "reason": reason, "message": f"{name} is {state}", **extra}


def deployment(name: str, *, namespace: str = "shop", policy: str = "critical",
               state: str | None = "Compliant", since: str | None = None,
               containers: list[dict] | None = None, record_policy: str | None = None) -> dict:
    annotations = {"imagepatch.dev/policy": policy}
    if state is not None:
        annotations["imagepatch.dev/state"] = json.dumps({
            "policy": record_policy or policy, "state": state, "message": f"{name}: {state}",
            "since": since or t(hours=1), "containers": containers if containers is not None
            else [container(state=state, reason=state)],
        })
    return {"metadata": {"namespace": namespace, "name": name, "annotations": annotations}}


def imagepatch(name: str, *, phase: str = "Pending", created: str | None = None,
               history: list[dict] | None = None, policy: str = "critical", image: str = REPO,
               digest: str = RUNNING, reason: str = "BaseImageOutdated",
               rollouts: list[dict] | None = None, approval: dict | None = None,
               findings: list[dict] | None = None, deleting: bool = False,
               conditions: list[dict] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created or t(hours=2)}
    if deleting:
        meta["deletionTimestamp"] = t(minutes=1)
    spec: dict[str, Any] = {"image": image, "currentDigest": digest, "policy": policy,
                            "reason": reason, "evidence": {}}
    if findings:
        spec["evidence"]["findings"] = findings
    if approval:
        spec["approval"] = approval
    status: dict[str, Any] = {"phase": phase, "history": history or [],
                              "rollouts": rollouts or []}
    if conditions:
        status["conditions"] = conditions
    return {"metadata": meta, "spec": spec, "status": status}


def policy(name: str = "critical", *, workloads: dict | None = None, ready: str = "True") -> dict:
    return {"metadata": {"name": name}, "spec": {"namespaceSelector": {}},
            "status": {"workloads": workloads or {"total": 0},
                       "conditions": [{"type": "Ready", "status": ready, "reason": "Reconciled",
                                       "message": "ok"}]}}


def report(deployments, patches=(), pols=None, **filters):
    return build_report(policies=(policy(),) if pols is None else pols, workloads=deployments, imagepatches=patches,
                        now=NOW, filters=Filters(**filters))


def row(rep, name):
    (found,) = [w for w in rep.workloads if w.name == name]
    return found


# --- per workload ---------------------------------------------------------------------------


def test_a_compliant_workload_is_never_out_of_compliance() -> None:
    w = row(report([deployment("web", since=t(days=3))]), "web")
    assert (w.state, w.reason, w.policy, w.namespace) == ("Compliant", "Compliant", "critical", "shop")
    assert w.out_of_compliance_since is None and w.out_of_compliance_seconds is None
    assert w.digests == (RUNNING,)
    assert w.last_patch is None


@pytest.mark.parametrize(
    ("state", "since", "patch_created", "expected"),
    [
        # the state record alone
        ("BaseImageOutdated", t(hours=5), None, 5 * 3600),
        ("Vulnerable", t(minutes=30), None, 1800),
        ("UntrustedBase", t(days=2), None, 2 * 86400),
        # Patching started when the patch was opened: the patch's creation is earlier
        ("Patching", t(minutes=10), t(hours=3), 3 * 3600),
        ("Failed", t(hours=1), t(days=1), 86400),
        # a state the record started before the patch
        ("BaseImageOutdated", t(days=1), t(hours=1), 86400),
        # Unknown proves nothing either way
        ("Unknown", t(hours=5), t(hours=6), None),
        ("NotAdmitted", t(hours=5), None, None),
    ],
)
def test_out_of_compliance_runs_from_the_earliest_evidence(state, since, patch_created, expected) -> None:
    patches = [imagepatch("p1", created=patch_created)] if patch_created else []
    w = row(report([deployment("web", state=state, since=since)], patches), "web")
    assert w.out_of_compliance_seconds == expected


def test_a_closed_patch_or_another_digest_does_not_extend_the_time_out_of_compliance() -> None:
    patches = [
        imagepatch("closed", phase="Closed", created=t(days=9)),
        imagepatch("other-digest", created=t(days=8), digest=dg("9")),
    ]
    w = row(report([deployment("web", state="Vulnerable", since=t(hours=2))], patches), "web")
    assert w.out_of_compliance_seconds == 2 * 3600


def test_base_outdated_since_comes_from_the_patch_for_the_running_digest() -> None:
    c = container(state="Patching", reason="BaseImageOutdated", baseCurrent=BASE_NEW)
    patches = [imagepatch("p1", phase="Building", created=t(hours=7))]
    w = row(report([deployment("web", state="Patching", since=t(hours=6), containers=[c])], patches), "web")
    (only,) = w.containers
    assert only.base_outdated and only.base_outdated_seconds == 7 * 3600
    assert (only.base, only.base_digest, only.base_current) == (
        "registry.example.com/base/python:3.12", BASE_OLD, BASE_NEW)


def test_a_current_base_has_no_age() -> None:
    (only,) = row(report([deployment("web")]), "web").containers
    assert not only.base_outdated and only.base_outdated_seconds is None


def test_findings_are_summed_over_containers_and_named_from_the_patch_evidence() -> None:
    cs = [container("app", state="Vulnerable", reason="Vulnerable", findingsOverBaseline=3),
          container("sidecar", image="registry.example.com/team/side:2", digest=dg("5"),
                    findingsOverBaseline=1),
          container("init-less", image="registry.example.com/team/x:1", digest=dg("6"))]
    patches = [imagepatch("p1", reason="Vulnerable", findings=[
        {"id": "CVE-2026-0002", "severity": "HIGH"}, {"id": "CVE-2026-0001", "severity": "CRITICAL"}])]
    w = row(report([deployment("web", state="Vulnerable", containers=cs)], patches), "web")
    assert w.findings_over_baseline == 4
    assert w.finding_ids == ("CVE-2026-0001", "CVE-2026-0002")
    assert w.reason == "Vulnerable"  # the first container in the workload's state
    assert w.digests == (RUNNING, dg("5"), dg("6"))


def test_no_container_recorded_findings_means_none_not_zero() -> None:
    assert row(report([deployment("web")]), "web").findings_over_baseline is None


def test_the_last_patch_is_the_most_recently_active_and_its_result_is_the_workloads_own() -> None:
    patches = [
        imagepatch("older", phase="Succeeded", created=t(days=3),
                   history=[{"phase": "Succeeded", "at": t(days=2), "message": "all healthy"}]),
        imagepatch("newer", phase="RolledBack", created=t(hours=5), digest=dg("7"),
                   approval={"decision": "Approved", "by": "alice", "reason": "cab-42"},
                   history=[{"phase": "RollingOut", "at": t(hours=2)},
                            {"phase": "RolledBack", "at": t(hours=1), "message": "1 rolled back"}],
                   rollouts=[{"namespace": "shop", "name": "web", "container": "app",
                              "phase": "RolledBack", "reason": "CrashLoopBackOff",
                              "message": "pod web-1 container app restarts"}]),
        imagepatch("elsewhere", phase="Pending", created=t(minutes=1), image="registry.example.com/x/y"),
    ]
    w = row(report([deployment("web", state="Failed")], patches), "web")
    last = w.last_patch
    assert (last.name, last.phase, last.reason) == ("newer", "RolledBack", "BaseImageOutdated")
    assert last.at == NOW - dt.timedelta(hours=1)
    assert last.result == "CrashLoopBackOff: pod web-1 container app restarts"
    assert last.approval == {"decision": "Approved", "by": "alice", "reason": "cab-42"}


@pytest.mark.parametrize(
    ("status_extra", "expected"),
    [
        ({"history": [{"phase": "Succeeded", "at": t(hours=1), "message": "all healthy"}]}, "all healthy"),
        ({"conditions": [{"type": "Ready", "status": "True", "message": "done", "lastTransitionTime": t(hours=1)}]}, "done"),
        ({}, ""),
    ],
)
def test_a_patch_result_falls_back_to_history_then_the_ready_condition(status_extra, expected) -> None:
    p = imagepatch("p1", phase="Succeeded")
    p["status"].update(status_extra)
    assert row(report([deployment("web")], [p]), "web").last_patch.result == expected


def test_a_patch_that_targets_the_workload_counts_even_for_another_repository() -> None:
    p = imagepatch("manual", image="registry.example.com/other/img", reason="Manual",
                   rollouts=[{"namespace": "shop", "name": "web", "container": "app", "phase": "Healthy"}])
    assert row(report([deployment("web")], [p]), "web").last_patch.name == "manual"


@pytest.mark.parametrize(
    ("dep", "state", "reason"),
    [
        (deployment("web", state=None), "Unknown", "NotEvaluated"),
        (deployment("web", record_policy="old-policy"), "Unknown", "NotEvaluated"),
        (deployment("web", state="NotAdmitted", containers=[]), "NotAdmitted", "NotAdmitted"),
        (deployment("web", state="PolicyNotFound", containers=[]), "PolicyNotFound", "PolicyNotFound"),
    ],
)
def test_workloads_without_a_usable_record(dep, state, reason) -> None:
    w = row(report([dep]), "web")
    assert (w.state, w.reason) == (state, reason)


def test_unreadable_state_annotation_is_not_evaluated() -> None:
    dep = deployment("web")
    dep["metadata"]["annotations"]["imagepatch.dev/state"] = "{not json"
    assert row(report([dep]), "web").reason == "NotEvaluated"


def test_deployments_that_did_not_opt_in_are_not_reported() -> None:
    other = {"metadata": {"namespace": "shop", "name": "db", "annotations": {}}}
    assert [w.name for w in report([deployment("web"), other]).workloads] == ["web"]


# --- filters and summaries --------------------------------------------------------------------


FLEET = [
    deployment("web", namespace="shop"),
    deployment("api", namespace="shop", state="Vulnerable", containers=[
        container(image="registry.example.com/team/api:1", digest=dg("1"), state="Vulnerable", reason="Vulnerable")]),
    deployment("batch", namespace="jobs", policy="weekly", state="BaseImageOutdated", containers=[
        container(image="registry.example.com/team/batch:1", digest=dg("2"), state="BaseImageOutdated",
                  reason="BaseImageOutdated")]),
    deployment("ghost", namespace="jobs", policy="missing", state="PolicyNotFound", containers=[]),
]
FLEET_PATCHES = [
    imagepatch("api-1", image="registry.example.com/team/api", digest=dg("1"), reason="Vulnerable"),
    imagepatch("batch-1", policy="weekly", image="registry.example.com/team/batch", digest=dg("2"),
               phase="Succeeded", history=[{"phase": "Succeeded", "at": t(hours=1)}]),
]
POLICIES = (policy("critical", workloads={"total": 2, "compliant": 1, "vulnerable": 1}),
            policy("weekly", ready="False"))


@pytest.mark.parametrize(
    ("filters", "names", "policies", "patches"),
    [
        ({}, ["api", "web", "ghost", "batch"], ["critical", "missing", "weekly"], ["api-1", "batch-1"]),
        ({"namespace": "shop"}, ["api", "web"], ["critical"], ["api-1"]),
        ({"policies": frozenset({"weekly"})}, ["batch"], ["weekly"], ["batch-1"]),
        ({"states": frozenset({"vulnerable"})}, ["api"], ["critical"], ["api-1"]),
        ({"states": frozenset({"Compliant", "BaseImageOutdated"})}, ["web", "batch"], ["critical", "weekly"], ["batch-1"]),
        ({"namespace": "jobs", "states": frozenset({"Compliant"})}, [], [], []),
    ],
)
def test_filters_narrow_workloads_policies_and_patches(filters, names, policies, patches) -> None:
    rep = report(FLEET, FLEET_PATCHES, POLICIES, **filters)
    assert [w.name for w in rep.workloads] == names
    assert [p.name for p in rep.policies] == policies
    assert [p.name for p in rep.patches] == patches


def test_policy_summary_keeps_the_recorded_counts_beside_the_reports_own() -> None:
    rep = report(FLEET, FLEET_PATCHES, POLICIES)
    critical, missing, weekly = rep.policies
    assert critical.status_counts == {"total": 2, "compliant": 1, "vulnerable": 1}
    assert critical.report_counts == {"total": 2, "compliant": 1, "baseImageOutdated": 0, "vulnerable": 1,
                                      "untrustedBase": 0, "patching": 0, "failed": 0}
    assert (critical.open_patches, critical.patches_by_phase) == (1, {"Pending": 1})
    assert critical.ready == {"status": "True", "reason": "Reconciled", "message": "ok"}
    assert (missing.exists, missing.status_counts, missing.ready) == (False, None, None)
    assert missing.report_counts["total"] == 0  # PolicyNotFound is not a compliance state
    assert (weekly.open_patches, weekly.patches_by_phase) == (0, {"Succeeded": 1})


# --- history series -------------------------------------------------------------------------


def test_history_counts_results_per_hour_and_open_patches_at_each_hours_end() -> None:
    patches = [
        imagepatch("ok", phase="Succeeded", created=t(hours=3, minutes=30),
                   history=[{"phase": "RollingOut", "at": t(hours=3)}, {"phase": "Succeeded", "at": t(hours=2, minutes=10)}]),
        imagepatch("back", phase="RolledBack", created=t(hours=3, minutes=5),
                   history=[{"phase": "RolledBack", "at": t(minutes=30)}]),
        imagepatch("open", phase="AwaitingApproval", created=t(hours=1, minutes=15),
                   history=[{"phase": "AwaitingApproval", "at": t(hours=1, minutes=14)}]),
    ]
    unit, buckets = history_series(patches, now=NOW)
    assert unit == "hour"
    assert [b.start for b in buckets] == [NOW - dt.timedelta(hours=h) for h in (4, 3, 2, 1, 0)]
    # ok: 08:30-09:50, back: 08:55-11:30, open: from 10:45
    assert [b.open for b in buckets] == [2, 1, 2, 1, 1]
    assert [b.ended["Succeeded"] for b in buckets] == [0, 1, 0, 0, 0]
    assert [b.ended["RolledBack"] for b in buckets] == [0, 0, 0, 1, 0]
    assert all(b.ended["Failed"] == b.ended["Closed"] == 0 for b in buckets)


def test_history_uses_days_beyond_two_days_and_caps_the_number_of_buckets() -> None:
    patches = [imagepatch("old", phase="Closed", created=t(days=100),
                          history=[{"phase": "Closed", "at": t(days=99)}]),
               imagepatch("new", phase="Failed", created=t(days=1),
                          history=[{"phase": "Failed", "at": t(hours=20)}])]
    unit, buckets = history_series(patches, now=NOW, max_buckets=30)
    assert unit == "day" and len(buckets) == 30
    assert buckets[-1].start == NOW.replace(hour=0) and buckets[-1].end == NOW.replace(hour=0) + dt.timedelta(days=1)
    assert sum(b.ended["Failed"] for b in buckets) == 1
    assert sum(b.ended["Closed"] for b in buckets) == 0  # before the window


def test_a_terminal_patch_without_history_ends_at_its_ready_transition() -> None:
    p = imagepatch("p", phase="Failed", created=t(hours=3),
                   conditions=[{"type": "Ready", "status": "False", "lastTransitionTime": t(hours=1, minutes=30)}])
    _, buckets = history_series([p], now=NOW)
    # 09:00-10:30
    assert [b.ended["Failed"] for b in buckets] == [0, 1, 0, 0]
    assert [b.open for b in buckets] == [1, 0, 0, 0]


def test_a_restored_patch_began_at_its_first_history_entry_not_its_new_creation_time() -> None:
    p = imagepatch("p", phase="Building", created=t(minutes=5),
                   history=[{"phase": "Pending", "at": t(hours=3)}])
    unit, buckets = history_series([p], now=NOW)
    assert buckets[0].start == NOW - dt.timedelta(hours=3) and len(buckets) == 4
    w = row(report([deployment("web", state="Patching", since=t(minutes=1))], [p]), "web")
    assert w.out_of_compliance_seconds == 3 * 3600


def test_no_patches_no_history() -> None:
    assert history_series([], now=NOW) == ("day", ())


# --- retention ------------------------------------------------------------------------------


def ended(name: str, hours_ago: float, phase: str = "Succeeded", policy: str = "critical") -> dict:
    return imagepatch(name, phase=phase, policy=policy, created=t(hours=hours_ago + 1),
                      history=[{"phase": phase, "at": t(hours=hours_ago)}])


ACTIVE = [imagepatch(f"active-{p}", phase=p, created=t(days=400))
          for p in ("Pending", "AwaitingWindow", "AwaitingApproval", "Building", "Verifying", "RollingOut")]
ACTIVE.append({"metadata": {"name": "no-status", "creationTimestamp": t(days=400)},
               "spec": {"image": REPO, "policy": "critical"}})


@pytest.mark.parametrize(
    ("patches", "keep_count", "max_age", "doomed"),
    [
        # count only: the newest 2 per policy stay
        ([ended("a", 1), ended("b", 2), ended("c", 3), ended("d", 4)], 2, None, ["c", "d"]),
        # per policy
        ([ended("a", 1), ended("b", 2), ended("x", 3, policy="weekly")], 1, None, ["b"]),
        # age only
        ([ended("a", 1), ended("b", 30), ended("c", 50)], None, dt.timedelta(days=1), ["b", "c"]),
        # either limit chooses
        ([ended("a", 1), ended("b", 2), ended("c", 50)], 2, dt.timedelta(days=1), ["c"]),
        ([ended("a", 1), ended("b", 2), ended("c", 3)], 1, dt.timedelta(days=1), ["b", "c"]),
        # every terminal phase counts; the order is by when it ended, not created
        ([ended("s", 4, "Succeeded"), ended("r", 3, "RolledBack"), ended("f", 2, "Failed"), ended("c", 1, "Closed")],
         2, None, ["r", "s"]),
        # no limits: nothing
        ([ended("a", 1000)], None, None, []),
        # keep none
        ([ended("a", 1), ended("b", 2)], 0, None, ["a", "b"]),
        # already being deleted
        ([{**ended("a", 100), "metadata": {**ended("a", 100)["metadata"], "deletionTimestamp": t(minutes=1)}}],
         0, None, []),
    ],
)
def test_retention_by_count_and_age(patches, keep_count, max_age, doomed) -> None:
    assert retention(patches, keep_count=keep_count, max_age=max_age, now=NOW) == doomed


@pytest.mark.parametrize(("keep_count", "max_age"), [(0, dt.timedelta(0)), (0, None), (None, dt.timedelta(0))])
def test_retention_never_chooses_an_active_patch(keep_count, max_age) -> None:
    patches = [*ACTIVE, ended("done", 5000)]
    assert retention(patches, keep_count=keep_count, max_age=max_age, now=NOW) == ["done"]


def test_retention_rejects_a_negative_count() -> None:
    with pytest.raises(ValueError, match="keep_count"):
        retention([], keep_count=-1, max_age=None, now=NOW)


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (None, ""), (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (5400, "1h30m"),
    (86400, "1d"), (90000, "1d1h"), (-5, "0s"),
])
def test_format_age(seconds, text) -> None:
    assert format_age(seconds) == text


def test_json_has_the_documented_keys_and_round_trips() -> None:
    rep = report(FLEET, FLEET_PATCHES, POLICIES)
    doc = json.loads(render_json(rep))
    assert doc == json.loads(json.dumps(report_as_dict(rep)))
    assert list(doc) == ["kind", "schemaVersion", "generatedAt", "filters", "warnings", "policies",
                         "workloads", "patches", "history", "nodes"]
    assert doc["generatedAt"] == "2026-11-27T12:00:00Z"
    assert set(doc["workloads"][0]) == {
        "namespace", "name", "kind", "policy", "state", "reason", "message", "since",
        "outOfComplianceSince", "outOfComplianceSeconds", "findingsOverBaseline", "findingIds",
        "digests", "containers", "lastPatch"}
    assert set(doc["history"]["buckets"][0]) == {"start", "end", "open", "succeeded", "rolledBack",
                                                 "failed", "closed"}


def test_csv_has_one_line_per_container_and_one_for_a_workload_without_any() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report(FLEET, FLEET_PATCHES, POLICIES)))))
    assert [(r["name"], r["container"]) for r in rows] == [
        ("api", "app"), ("web", "app"), ("ghost", ""), ("batch", "app")]
    assert rows[0]["digest"] == dg("1") and rows[0]["lastPatch"] == "api-1"
    assert rows[3]["baseOutdated"] == "true"


def test_table_aligns_columns() -> None:
    text = render_table(report(FLEET, FLEET_PATCHES, POLICIES))
    policy_part, workload_part = text.split("\n\n")
    lines = workload_part.splitlines()
    assert lines[0].startswith("NAMESPACE") and len(lines) == 5
    state_col = lines[0].index("STATE")
    assert [ln[state_col:].split()[0] for ln in lines[1:]] == ["Vulnerable", "Compliant", "PolicyNotFound",
                                                               "BaseImageOutdated"]
    assert "critical" in policy_part and "missing (missing)" in policy_part


def test_table_says_when_nothing_matches() -> None:
    assert "No opted-in workloads match." in render_table(report([]))


def test_html_is_self_contained_and_has_one_bar_group_and_point_per_bucket() -> None:
    rep = report(FLEET, [*FLEET_PATCHES, ended("x", 1, "Failed")], POLICIES)
    page = render_html(rep)
    assert page.count('<tr class="workload"') == 4
    assert page.count('<g class="bucket"') == len(rep.history) > 0
    (points,) = re.findall(r'<polyline class="open-line" points="([^"]+)"', page)
    assert len(points.split()) == len(rep.history)
    assert page.count('<rect class="bar') == sum(1 for b in rep.history for n in b.ended.values() if n)
    assert not re.search(r"<script|\b(src|href)=|@import|url\(", page)


def test_html_escapes_what_it_shows() -> None:
    dep = deployment("web", state="Vulnerable")
    record = json.loads(dep["metadata"]["annotations"]["imagepatch.dev/state"])
    record["message"] = '<script>alert("x")</script>'
    dep["metadata"]["annotations"]["imagepatch.dev/state"] = json.dumps(record)
    page = render_html(report([dep]))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_an_empty_history_still_draws_a_chart() -> None:
    assert "No ImagePatches yet." in history_svg(report([]))


# --- the state annotation is a mirror; the operator's memory is the verdict (issue 20) --------


def memory_of(name: str, state: str, since: str, *, uid: str = "") -> dict[str, str]:
    from imagepatch.model import memory as memory_model
    from imagepatch.model.times import parse_time

    record = memory_model.WorkloadMemory(kind="Deployment", namespace="shop", name=name, uid=uid,
                                         state=state, since=parse_time(since))
    return {memory_model.data_key(*record.identity): memory_model.encode(record)}


def test_a_state_annotation_the_owner_edited_is_not_shown_as_the_verdict() -> None:
    edited = deployment("web", state="Compliant", since=t(minutes=1))
    rep = build_report(policies=(policy(),), workloads=[edited], imagepatches=(), now=NOW,
                       memory=memory_of("web", "BaseImageOutdated", t(days=2)))
    w = row(rep, "web")
    assert w.state == "BaseImageOutdated"
    assert w.out_of_compliance_seconds == 2 * 86400
    assert "state annotation says 'Compliant'" in w.message and "mirror" in w.message
    assert not any("mirror" in warning for warning in rep.warnings)


def test_an_annotation_that_agrees_keeps_its_details_with_the_operators_since() -> None:
    rep = build_report(policies=(policy(),), workloads=[deployment("web", state="Vulnerable",
                       since=t(minutes=1))], imagepatches=(), now=NOW,
                       memory=memory_of("web", "Vulnerable", t(hours=5)))
    w = row(rep, "web")
    assert (w.state, w.message, w.out_of_compliance_seconds) == ("Vulnerable", "web: Vulnerable",
                                                                 5 * 3600)
    assert w.containers


def test_a_state_the_operator_never_recorded_is_shown_as_its_annotation_and_named() -> None:
    mine = deployment("web", state="Compliant")
    other_uid = memory_of("web", "Compliant", t(hours=1), uid="old-uid")
    for memory in ({}, other_uid):
        mine["metadata"]["uid"] = "new-uid"
        rep = build_report(policies=(policy(),), workloads=[mine], imagepatches=(), now=NOW,
                           memory=memory)
        assert row(rep, "web").state == "Compliant"
        [warning] = rep.warnings
        assert "shop/web" in warning and "mirror" in warning and "holds none" in warning


def test_a_forged_annotation_with_no_operator_record_of_its_own_is_named() -> None:
    bare = {"metadata": {"namespace": "shop", "name": "web",
                         "annotations": {"imagepatch.dev/policy": "critical"}}}
    w = row(build_report(policies=(policy(),), workloads=[bare], imagepatches=(), now=NOW,
                         memory=memory_of("web", "Failed", t(hours=1))), "web")
    assert w.state == "Failed" and "the operator recorded Failed" in w.message


def test_without_the_operators_memory_the_report_warns_that_states_are_mirrors() -> None:
    rep = report([deployment(f"web-{i}") for i in range(7)] + [deployment("new", state=None)])
    [warning] = rep.warnings
    assert warning.startswith("7 workload state(s)") and "--operator-namespace" in warning
    assert "shop/web-0" in warning and "and more" in warning and "shop/new" not in warning
    assert report([]).warnings == ()


def test_rebuild_not_allowed_is_a_state_report_can_filter_on() -> None:
    from imagepatch.cli_report import _state

    assert _state("rebuildnotallowed,Failed") == ["RebuildNotAllowed", "Failed"]
    refused = deployment("web", state="RebuildNotAllowed")
    rep = report([refused, deployment("api")], states=frozenset({"RebuildNotAllowed"}))
    assert [w.name for w in rep.workloads] == ["web"]


# -- the nodes section (core/nodes.py's recorded survey) -----------------------------------

NODE_SURVEY = {
    "surveyedAt": "2026-12-05T10:00:00+00:00",
    "nodes": [
        {"name": "ip-10-0-1-1", "instanceId": "i-0aaa", "nodeGroup": "ng-1", "nodePool": "",
         "kubeletVersion": "v1.32.3", "osImage": "Amazon Linux 2023", "architecture": "x86_64",
         "family": "AL2023/standard", "amiId": "ami-old", "amiCreated": "2026-10-01T00:00:00+00:00",
         "recommendedAmiId": "ami-new", "recommendedCreated": "2026-11-20T00:00:00+00:00",
         "state": "Outdated", "daysBehind": 50, "reason": ""},
        {"name": "kwok-1", "instanceId": "", "nodeGroup": "", "nodePool": "",
         "kubeletVersion": "v1.34.4", "osImage": "", "architecture": "x86_64", "family": "",
         "amiId": "", "amiCreated": "", "recommendedAmiId": "", "recommendedCreated": "",
         "state": "Unknown", "daysBehind": None,
         "reason": "NoProviderID: the node has no spec.providerID (kwok or on-premises)"},
    ],
}


def test_every_format_shows_the_recorded_node_survey() -> None:
    rep = build_report(policies=[policy()], workloads=[deployment("web")], imagepatches=[],
                       now=NOW, node_survey=NODE_SURVEY)
    doc = json.loads(render_json(rep))["nodes"]
    assert doc["surveyedAt"] == "2026-12-05T10:00:00+00:00"
    assert doc["counts"] == {"Current": 0, "Outdated": 1, "Unknown": 1}
    assert [(n["name"], n["state"], n["daysBehind"]) for n in doc["items"]] == [
        ("ip-10-0-1-1", "Outdated", 50), ("kwok-1", "Unknown", None)]
    table = render_table(rep)
    assert "0 Current, 1 Outdated, 1 Unknown" in table
    assert re.search(r"ip-10-0-1-1\s+ng-1\s+AL2023/standard\s+v1.32.3\s+ami-old\s+ami-new\s+"
                     r"Outdated\s+50d", table)
    assert re.search(r"kwok-1 .*Unknown\s+-\s+NoProviderID", table)
    rows = [r for r in csv.DictReader(io.StringIO(render_csv(rep))) if r["kind"] == "Node"]
    assert [(r["name"], r["state"], r["daysBehind"], r["nodeGroup"]) for r in rows] == [
        ("ip-10-0-1-1", "Outdated", "50", "ng-1"), ("kwok-1", "Unknown", "", "")]
    page = render_html(rep)
    assert '<tr class="node" data-name="ip-10-0-1-1" data-state="Outdated">' in page
    assert "50 days" in page and "NoProviderID" in page


def test_no_survey_read_means_no_nodes_section_and_an_empty_one_says_so() -> None:
    rep = build_report(policies=[], workloads=[], imagepatches=[], now=NOW)
    assert json.loads(render_json(rep))["nodes"] is None
    assert "Nodes" not in render_table(rep) and 'id="nodes"' not in render_html(rep)
    empty = build_report(policies=[], workloads=[], imagepatches=[], now=NOW,
                         node_survey={"surveyedAt": "", "nodes": []})
    assert "No nodes." in render_table(empty) and "No nodes." in render_html(empty)
    assert json.loads(render_json(empty))["nodes"]["surveyedAt"] is None
