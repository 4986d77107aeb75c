"""Detection's pure stages (``core.detection``), table-tested without a cluster.

Given a workload body, container facts and the policy's known ImagePatches;
when each stage's function runs; then it returns what the next stage reads:
the workload's usable requests, the followed bases, the plan, the known
patches after the act stage's outcomes, and the workloads' reported states.
"""

from __future__ import annotations

import json

import pytest

from imagepatch.core.compliance import Assessment, ContainerFacts, KnownPatch, State, intent_for
from imagepatch.core.detection import assess, lineage, plan, report, workload
from imagepatch.core.images import ImageRef
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.memory import BaseMemory, WorkloadMemory
from imagepatch.model.names import (
    BASE_ANNOTATION,
    KEY_ANNOTATION,
    POLICY_ANNOTATION,
    REBUILD_ANNOTATION,
    STATE_ANNOTATION,
)
from imagepatch.model.policy import VulnerabilitySource, parse_policy_spec

REPO = "registry.local/app"
RUNNING, OLD_BASE, NEW_BASE = ("sha256:" + c * 64 for c in "abc")
SPEC = parse_policy_spec({"namespaceSelector": {}})
OUTDATED_FACTS = ContainerFacts(
    container="app", image=f"{REPO}:1", repository=REPO, digest=RUNNING,
    base_name="registry.local/base:1", base_digest=OLD_BASE, base_current=NEW_BASE,
)  # fmt: skip
FRESH_FACTS = ContainerFacts(
    container="side", image="registry.local/side:2", repository="registry.local/side",
    digest=NEW_BASE, base_name="registry.local/base:1", base_digest=NEW_BASE,
    base_current=NEW_BASE,
)  # fmt: skip


def body(name: str = "web", kind: str | None = None, **annotations: object) -> dict:
    out: dict = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                     "resourceVersion": "7", "managedFields": [{}],
                     "annotations": {POLICY_ANNOTATION: "p", "other/x": "y", **annotations}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "replicas": 3,
                 "template": {"spec": {"containers": [{"name": "app", "image": f"{REPO}:1",
                                                       "ports": []}],
                                       "initContainers": [{"name": "init", "image": "i:1"}]}}},
    }  # fmt: skip
    if kind:
        out["kind"] = kind
    return out


def observed(dep: dict, *facts: ContainerFacts, memory: WorkloadMemory | None = None,
             labels: dict | None = None) -> assess.Observation:  # fmt: skip
    return assess.assess_workload(dep, facts, SPEC, namespace_labels=labels or {}, memory=memory)


def patch_body(name: str, key: str = "", *, phase: str = "", rollouts: list | None = None,
               targets: list | None = None, close: str = "") -> dict:  # fmt: skip
    annotations = {KEY_ANNOTATION: key} if key else {}
    if close:
        annotations["imagepatch.dev/close"] = close
    return {
        "metadata": {"name": name, "resourceVersion": "3", "annotations": annotations},
        "spec": {"image": f"{REPO}:1", "policy": "p", "currentDigest": RUNNING, "tag": "1",
                 "targets": targets or []},
        "status": {"phase": phase, "rollouts": rollouts or []},
    }  # fmt: skip


# -- workload ------------------------------------------------------------------------------


def test_a_slim_workload_keeps_only_what_detection_reads():
    slim = workload.slim(body(kind="StatefulSet"))
    assert slim["kind"] == "StatefulSet"
    assert "managedFields" not in slim["metadata"]
    assert slim["metadata"]["annotations"] == {POLICY_ANNOTATION: "p"}
    assert slim["spec"]["template"]["spec"] == {
        "containers": [{"name": "app", "image": f"{REPO}:1"}],
        "initContainers": [{"name": "init", "image": "i:1"}],
    }
    assert workload.inputs(slim) == workload.inputs(body())


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("DaemonSet", "DaemonSet"), (None, "Deployment"), ("Pod", "Deployment")],
)
def test_the_kind_of_a_body_without_a_known_kind_is_a_deployments(kind, expected):
    assert workload.kind_of(body(kind=kind)) == expected
    assert workload.identity(body(kind=kind)) == (expected, "ns", "web")


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ({}, ""),
        ({BASE_ANNOTATION: "registry.local/base:1"}, ""),
        ({BASE_ANNOTATION: 7}, "is not a string"),
        ({BASE_ANNOTATION: "x" * 1025}, "1025 characters long"),
        ({BASE_ANNOTATION: "base\n:1"}, "control characters"),
        ({REBUILD_ANNOTATION: "   "}, "is blank"),
        ({BASE_ANNOTATION: "Not An Image!"}, f"annotation {BASE_ANNOTATION}:"),
    ],
)
def test_a_workloads_requests_are_bounded_before_they_are_read(annotations, problem):
    found = workload.annotation_problem(body(**annotations))
    assert (problem in found) if problem else found == ""


def test_the_base_override_and_rebuild_request_are_read_normalised():
    dep = body(**{BASE_ANNOTATION: "  registry.local/base:2 ", REBUILD_ANNOTATION: " job : t "})
    assert workload.base_override(dep) == "registry.local/base:2"
    assert workload.requested_rebuild(dep) == "job:t"
    assert workload.base_override(body(**{BASE_ANNOTATION: 3})) == ""
    assert workload.requested_rebuild(body(**{REBUILD_ANNOTATION: 3})) == ""


def test_the_mirror_and_a_clipped_value_are_bounded_text():
    assert workload.mirror({"annotations": {STATE_ANNOTATION: "s"}}) == "s"
    assert workload.mirror({"annotations": {STATE_ANNOTATION: 1}}) == ""
    assert workload.clip("x" * 200) == "x" * 117 + "..."
    assert workload.clip(["a"]) == "['a']"


def test_failed_facts_name_the_container_and_a_bounded_image():
    facts = workload.failed_facts({"name": "app", "image": f"{REPO}:1"}, "R", "m")
    assert (facts.repository, facts.error_reason, facts.error) == (REPO, "R", "m")
    long = workload.failed_facts({"name": "app", "image": "x" * 700}, "R", "m")
    assert len(long.image) == len(long.repository) == 600
    assert workload.failed_facts({"name": "app", "image": 5}, "R", "m").image == ""
    assert workload.image_name("Not An Image!") == "Not An Image!"


# -- lineage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "override", "follow"),
    [
        ("registry.local/base:1", "", "registry.local/base:1"),
        ("registry.local/base@" + OLD_BASE, "", None),
        ("registry.local/base@" + OLD_BASE, "registry.local/base:2", "registry.local/base:2"),
        ("registry.local/base", "", "registry.local/base:latest"),
        ("Not An Image!", "", None),
        ("", "", None),
    ],
)
def test_the_base_tag_followed(base, override, follow):
    ref = lineage.base_to_follow(base, override)
    assert (str(ref) if ref else None) == follow


def test_a_remembered_base_digest_is_used_only_for_the_same_digest_and_base():
    record = WorkloadMemory(kind="Deployment", namespace="ns", name="web", bases={
        "app": BaseMemory(digest=RUNNING, base="b:1", base_digest=OLD_BASE),
        "bad": BaseMemory(digest=RUNNING, base="b:1", base_digest="not-a-digest")})
    assert lineage.remembered_base_digest(record, "app", RUNNING, "b:1") == OLD_BASE
    assert lineage.remembered_base_digest(record, "app", NEW_BASE, "b:1") == ""
    assert lineage.remembered_base_digest(record, "bad", RUNNING, "b:1") == ""
    assert lineage.remembered_base_digest(record, "none", RUNNING, "b:1") == ""


def test_an_override_that_does_not_parse_is_not_used():
    assert lineage.override_use("registry.local/base:1", "Not An Image!") == ("", "")
    assert lineage.override_use("", "registry.local/base:1") == ("", "")
    assert lineage.override_use(
        "registry.local/base@" + OLD_BASE, "registry.local/base:2"
    ) == ("registry.local/base:2", "")


# -- assess --------------------------------------------------------------------------------


def test_a_note_in_the_facts_is_appended_to_the_assessment():
    seen = observed(body(), ContainerFacts(container="app", image=f"{REPO}:1", repository=REPO,
                                           error_reason="R", error="e", note="n"))
    [(_, assessment)] = seen.assessed
    assert assessment.state == State.UNKNOWN and assessment.message.endswith("(n)")
    assert seen.target("app") == ("Deployment", "ns", "web", "app") and seen.uid == "uid-web"


# -- plan ----------------------------------------------------------------------------------


def test_a_known_patch_is_read_through_the_imagepatch_model():
    known = plan.known_patch(parse_imagepatch(patch_body(
        "p1", "k", phase="RollingOut", close="why",
        targets=[{"namespace": "ns", "name": "web", "container": "app"}],
        rollouts=[{"namespace": "ns", "name": "web", "container": "app", "phase": "Gating"},
                  {"namespace": "ns", "name": "db", "container": "app", "kind": "StatefulSet",
                   "phase": "Pending"}])))  # fmt: skip
    assert known == KnownPatch(
        name="p1", key="k", image=REPO, current_digest=RUNNING, phase="RollingOut",
        started=True, tag="1", targets=frozenset({("Deployment", "ns", "web", "app")}),
        held=frozenset({("Deployment", "ns", "web", "app")}), close_requested=True,
    )  # fmt: skip
    fresh = plan.known_patch(parse_imagepatch(patch_body("p2")))
    assert (fresh.phase, fresh.started, fresh.close_requested) == ("Pending", False, False)


def test_the_plan_creates_one_patch_for_every_container_that_needs_it():
    one, two = body("one"), body("two", **{BASE_ANNOTATION: "registry.local/pinned:3"})
    planned = plan.plan_pass(
        [observed(one, OUTDATED_FACTS, FRESH_FACTS), observed(two, OUTDATED_FACTS)],
        SPEC, [], targeted=False,
    )  # fmt: skip
    [intent] = planned.patches.create
    assert {t.name for t in intent.targets} == {"one", "two"}
    assert planned.bases == {"registry.local/base", "registry.local/pinned"}
    assert planned.follows["uid-two"] >= {("registry.local/pinned", "3"), (REPO, "")}
    assert planned.refused == {}


def test_a_refused_rebuild_request_makes_no_target_and_is_reported():
    refused = body(**{REBUILD_ANNOTATION: "job:other"})
    planned = plan.plan_pass([observed(refused, OUTDATED_FACTS)], SPEC, [], targeted=False)
    assert planned.patches.create == () and "uid-web" in planned.refused


def test_a_rebuild_that_failed_here_before_is_not_opened_again():
    key = intent_for(OUTDATED_FACTS, Assessment(
        state=State.BASE_IMAGE_OUTDATED, reason="", message="")).key  # fmt: skip
    memory = WorkloadMemory(kind="Deployment", namespace="ns", name="web",
                            failed=({"key": key, "digest": NEW_BASE},))  # fmt: skip
    planned = plan.plan_pass([observed(body(), OUTDATED_FACTS, memory=memory)], SPEC, [],
                             targeted=False)  # fmt: skip
    assert planned.patches.create == ()


def test_a_targeted_pass_closes_no_patch_with_a_target_it_did_not_evaluate():
    other = frozenset({("Deployment", "ns", "elsewhere", "app")})
    known = [KnownPatch(name="p1", key="k", image=REPO, current_digest=RUNNING, phase="Pending",
                        started=False, targets=other)]  # fmt: skip
    compliant = ContainerFacts(container="app", image=f"{REPO}:1", repository=REPO,
                               digest=RUNNING)  # fmt: skip
    full = plan.plan_pass([observed(body(), compliant)], SPEC, known, targeted=False)
    targeted = plan.plan_pass([observed(body(), compliant)], SPEC, known, targeted=True)
    assert [k.name for k in full.patches.close] == ["p1"]
    assert targeted.patches.close == ()


def test_targets_keep_the_existing_entries_then_add_each_new_container_once():
    old = Target(namespace="ns", name="web", container="app", wave=1)
    new = Target(namespace="ns", name="db", container="app", kind="StatefulSet")
    assert plan.targets_field([new, old], [old]) == [
        {"kind": "Deployment", "namespace": "ns", "name": "web", "container": "app", "wave": 1},
        {"kind": "StatefulSet", "namespace": "ns", "name": "db", "container": "app", "wave": 0},
    ]


def test_a_patch_body_carries_the_intents_key_targets_and_rebuild():
    planned = plan.plan_pass([observed(body(), OUTDATED_FACTS)], SPEC, [], targeted=False)
    [intent] = planned.patches.create
    made = plan.patch_body("p", SPEC, intent)
    assert made["metadata"]["annotations"] == {KEY_ANNOTATION: intent.key}
    assert made["spec"]["targets"][0]["name"] == "web" and made["spec"]["tag"] == "1"
    assert made["spec"]["rebuild"]["strategy"] == str(SPEC.rebuild.strategy)
    untagged = plan.patch_body("p", SPEC, intent.__class__(**{
        **{f: getattr(intent, f) for f in intent.__slots__}, "tag": ""}))  # fmt: skip
    assert "tag" not in untagged["spec"]


def test_settling_applies_each_outcome_in_order():
    known = [KnownPatch(name=n, key=n, image=REPO, current_digest=RUNNING, phase="Pending",
                        started=False) for n in ("a", "b")]  # fmt: skip
    made = KnownPatch(name="c", key="c", image=REPO, current_digest=RUNNING, phase="Pending",
                      started=False)  # fmt: skip
    key = ("Deployment", "ns", "web", "app")
    settled = plan.settle(known, [
        plan.Created(known=made), plan.Created(known=None),
        plan.Refused(image=REPO, digest=NEW_BASE, message="no"),
        plan.CloseRequested(name="a"),
        plan.Retargeted(name="b", added=frozenset({key})), plan.Retargeted(name="c"),
    ])  # fmt: skip
    assert [k.name for k in settled.known] == ["a", "b", "c"]
    assert settled.known[0].close_requested and settled.known[1].targets == {key}
    assert settled.rejected == {(REPO, NEW_BASE): "no"}


# -- report --------------------------------------------------------------------------------


def memory_of(*seen: assess.Observation) -> dict:
    return {s.uid: WorkloadMemory(kind="Deployment", namespace="ns", name="web") for s in seen}


def test_a_refused_patch_makes_its_containers_unknown_saying_why():
    seen = observed(body(), OUTDATED_FACTS, FRESH_FACTS)
    settled = plan.Settled(known=(), rejected={(REPO, RUNNING): "refused: 422"})
    [one] = report.report_pass([seen], settled, refused={}, memory=memory_of(seen))
    assert one.state == "Unknown" and one.message == "app: refused: 422"
    assert [c.reason for c in one.containers][0] == "ImagePatchRejected"
    assert one.result.containers[0]["name"] == "app"


def test_an_outdated_workload_whose_rebuild_is_refused_reports_rebuild_not_allowed():
    seen = observed(body(), OUTDATED_FACTS)
    [one] = report.report_pass([seen], plan.Settled(known=(), rejected={}),
                               refused={"uid-web": "not allowed"}, memory=memory_of(seen))
    assert one.state == "RebuildNotAllowed"
    assert one.message == "BaseImageOutdated, but no rebuild is started: not allowed"
    assert one.result.state == "BaseImageOutdated"


def test_an_open_patch_for_the_container_overlays_its_state():
    seen = observed(body(), OUTDATED_FACTS)
    [intent] = plan.plan_pass([seen], SPEC, [], targeted=False).patches.create
    known = (KnownPatch(name="p1", key=intent.key, image=REPO, current_digest=RUNNING,
                        phase="Building", started=False, tag="1",
                        targets=frozenset({seen.target("app")})),)  # fmt: skip
    [one] = report.report_pass([seen], plan.Settled(known=known, rejected={}), refused={},
                               memory=memory_of(seen))  # fmt: skip
    assert one.result.state == "Patching"


def test_the_policy_status_counts_and_says_whether_findings_were_read():
    results = [report.WorkloadResult(namespace="ns", name="w", uid="u", state="Compliant",
                                     message="", containers=[])]  # fmt: skip
    plain = report.policy_status(results, source=VulnerabilitySource.NONE, findings_errors=[])
    assert plain["workloads"]["total"] == 1 and "findings" not in plain
    read = report.policy_status(results, source=VulnerabilitySource.ECR, findings_errors=[])
    assert read["findings"] == {"readable": True, "reason": "FindingsRead", "message": ""}
    unread = report.policy_status(results, source=VulnerabilitySource.ECR,
                                  findings_errors=[("AccessDenied", "x" * 2000), ("B", "b")])
    assert unread["findings"]["reason"] == "AccessDenied"
    assert len(unread["findings"]["message"]) == 1000


def test_a_container_state_counts_findings_over_the_baseline_by_severity():
    state = report.container_state(OUTDATED_FACTS, Assessment(
        state=State.BASE_IMAGE_OUTDATED, reason="r", message="m"), State.BASE_IMAGE_OUTDATED)
    assert state.findings_over_baseline is None and state.findings_by_severity == {}
    assert json.loads(json.dumps(state.to_record()))["state"] == "BaseImageOutdated"


def test_an_image_ref_is_what_the_follow_names():
    assert lineage.base_to_follow("", "registry.local/base:9") == ImageRef(
        host="registry.local", repository="base", tag="9")


def test_an_event_reaches_a_workload_through_what_it_runs_or_follows():
    ok = Assessment(state=State.COMPLIANT, reason="", message="")
    followed = lineage.follows([(OUTDATED_FACTS, ok)], "registry.local/pinned@" + OLD_BASE)
    assert followed == {(REPO, ""), ("registry.local/base", "1"), ("registry.local/pinned", "")}
    assert lineage.named(followed, {"registry.local/base"}, {"registry.local/base": {"1"}})
    assert not lineage.named(followed, {"registry.local/base"}, {"registry.local/base": {"2"}})
    assert lineage.named(followed, {"registry.local/pinned"}, {"registry.local/pinned": {"9"}})
    assert not lineage.named(followed, {"elsewhere"}, {})
    assert lineage.follows([(OUTDATED_FACTS, ok)], "Not An Image!") == {
        (REPO, ""), ("registry.local/base", "1")}


def test_an_override_naming_another_base_is_noted_and_not_followed():
    used, note = lineage.override_use("registry.local/base:1", "registry.local/other:1")
    assert used == "" and "registry.local/other:1" in note and "image's base is followed" in note
