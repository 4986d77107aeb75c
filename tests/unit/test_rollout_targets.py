"""What a rollout may write, and where: exact targets, gone targets, digest rollback,
one actor per container, close requests, and failed digests remembered on the workload.

Each case is one planner step (or a settle loop) with an injected clock, as in
``test_rollout_plan.py``, whose helpers these reuse.
"""

from __future__ import annotations

import json

import pytest

from imagepatch.core.conditions import format_time
from imagepatch.core.rollout import (
    FAILED_ANNOTATION,
    Candidate,
    FailedDigest,
    PatchImage,
    Workload,
    is_pinned,
    pin_targets,
    plan,
    running_digest,
    runs_patch_image,
)
from imagepatch.model.imagepatch import Target, parse_imagepatch
from tests.unit.test_rollout_plan import (
    DIGEST,
    GATE,
    NEW,
    OLD,
    OLD_DIGEST,
    OLD_PINNED,
    OPEN,
    REPO,
    T0,
    WEB,
    deployment,
    entry,
    fingerprint,
    imagepatch,
    pod,
    policy,
    settle,
    step_for,
)

API = Target(namespace="shop", name="api", container="app")


def with_image_id(p: dict, digest: str) -> dict:
    p["status"]["containerStatuses"][0]["imageID"] = f"{REPO}@{digest}"
    return p


def without_container(dep: dict) -> dict:
    dep["spec"]["template"]["spec"]["containers"][0]["name"] = "renamed"
    return dep


def two_targets(first: dict) -> dict:
    return {"phase": "RollingOut", "rollouts": [first, entry("Pending", target=API)]}


# --- 1. a deleted or renamed target is skipped, and the patch goes on ---------------------


GONE = [
    # (recorded entry of WEB, observed Deployment, reason)
    (entry("Pending"), None, "WorkloadDeleted"),
    (entry("Pending"), without_container(deployment(OLD)), "ContainerNotFound"),
    (entry("Patching", previousImage=OLD, targetImage=NEW), None, "WorkloadDeleted"),
    (entry("Patching", previousImage=OLD, targetImage=NEW),
     without_container(deployment(OLD)), "ContainerNotFound"),
    (entry("Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0)),
     None, "WorkloadDeleted"),
    (entry("Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0)),
     without_container(deployment(NEW)), "ContainerNotFound"),
]


@pytest.mark.parametrize(("recorded", "dep", "reason"), GONE)
def test_a_gone_target_is_skipped_and_the_next_target_starts(recorded, dep, reason) -> None:
    step = step_for(imagepatch(two_targets(recorded)), dep=dep)
    first, second = step.status["rollouts"]
    assert (first["phase"], first["reason"]) == ("Skipped", reason)
    assert first["finishedAt"] == format_time(T0)
    assert second["phase"] == "Pending"
    assert step.again and step.action is None
    # The next step concerns the second target, which then starts normally.
    nxt = step_for(imagepatch({**two_targets(recorded), **step.status}), dep=deployment(OLD),
                   target=API)
    assert nxt.status["rollouts"][1]["phase"] == "Patching"


def test_a_target_deleted_mid_rollback_ends_the_patch() -> None:
    rolling_back = {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [entry(
        "RollingBack", previousImage=OLD, rollbackImage=OLD_PINNED, targetImage=NEW,
        startedAt=format_time(T0), rollbackStartedAt=format_time(T0), reason="CrashLoopBackOff")]}
    step = step_for(imagepatch(rolling_back), dep=None)
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Skipped", "WorkloadDeleted")
    assert "mid-rollback" in rec["message"]
    assert step.status["phase"] == "Succeeded" and step.action is None


def test_a_deleted_only_target_finishes_the_patch_instead_of_wedging() -> None:
    status, step, _ = settle({"phase": "RollingOut", "rollouts": [entry(
        "Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0))]}, dep=None)
    assert status["phase"] == "Succeeded"
    assert status["rollouts"][0]["reason"] == "WorkloadDeleted"
    assert not step.again and step.requeue_after is None


# --- 2. exact targets ------------------------------------------------------------------------

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.mark.parametrize(("spec", "image", "digest", "matches"), [
    ({"tag": "1.4"}, f"{REPO}:1.4", "", True),
    ({"tag": "1.4"}, f"{REPO}:1.5", "", False),  # another tag: never (a silent downgrade)
    ({"tag": "1.4"}, f"{REPO}@{A}", "", False),  # digest only, no tag
    ({"tag": "1.4", "currentDigest": A}, f"{REPO}:1.4", A, True),
    ({"tag": "1.4", "currentDigest": A}, f"{REPO}:1.4", B, False),  # the tag moved since
    ({"tag": "1.4", "currentDigest": A}, f"{REPO}:1.4@{B}", "", False),
    ({"tag": "1.4", "currentDigest": A}, f"{REPO}:1.4", "", True),  # digest unknown: tag decides
    ({"tag": "1.4"}, "registry.local/other:1.4", "", False),
    ({}, f"{REPO}:1.5", "", True),  # a human's patch without a tag: every tag
    ({"currentDigest": A}, f"{REPO}:1.5", B, False),
    ({"tag": "1.4"}, "not a reference", "", False),
])
def test_a_container_is_a_target_only_at_the_patch_tag_and_digest(spec, image, digest,
                                                                  matches) -> None:
    patch = imagepatch(**spec)
    assert runs_patch_image(patch, image, digest) is matches


def test_discovered_candidates_on_another_tag_are_not_pinned() -> None:
    patch = imagepatch(tag="1.4", currentDigest=A)
    candidates = [
        Candidate(namespace="a", name="on-14", container="app", image=f"{REPO}:1.4", digest=A),
        Candidate(namespace="a", name="on-15", container="app", image=f"{REPO}:1.5", digest=B),
        Candidate(namespace="a", name="moved", container="app", image=f"{REPO}:1.4", digest=B),
    ]
    assert [t.name for t in pin_targets(patch, candidates, policy())] == ["on-14"]


def test_a_patch_without_targets_asks_for_discovery_once_it_can_pin() -> None:
    patch = imagepatch(tag="1.4")
    step = plan(patch=patch, policy=policy(rollout=GATE), candidates=None, workload=None,
                window=OPEN, now=T0)
    assert step.discover and not step.status.get("rollouts")
    # While it waits for approval there is nothing to discover.
    waiting = plan(patch=patch, policy=policy(approval="Manual"), candidates=None, workload=None,
                   window=OPEN, now=T0)
    assert not waiting.discover and waiting.status["phase"] == "AwaitingApproval"


def test_spec_targets_are_used_without_discovery() -> None:
    body = {"metadata": {"name": "p1", "generation": 1},
            "spec": {"image": REPO, "tag": "1.4", "policy": "pol", "targetDigest": DIGEST,
                     "targets": [{"namespace": "shop", "name": "web", "container": "app"}]}}
    step = plan(patch=parse_imagepatch(body), policy=policy(rollout=GATE), candidates=None,
                workload=None, window=OPEN, now=T0)
    assert not step.discover
    assert [r["name"] for r in step.status["rollouts"]] == ["web"]


def test_a_target_that_moved_to_another_tag_before_it_started_is_skipped() -> None:
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}, tag="1.4"),
                    dep=deployment(f"{REPO}:1.5"))
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Skipped", "ImageChanged")
    assert f"{REPO}:1.5" in rec["message"] and step.action is None


def test_a_target_whose_pods_run_another_digest_is_skipped() -> None:
    patch = imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}, tag="1.4",
                       currentDigest=A)
    step = step_for(patch, dep=deployment(OLD), pods=[with_image_id(pod(OLD), B)])
    assert step.status["rollouts"][0]["reason"] == "ImageChanged"


# --- 3. rollback restores the digest that ran, not the tag -----------------------------------


@pytest.mark.parametrize(("current", "pods", "spec", "restore"), [
    (OLD_PINNED, [], {}, OLD_PINNED),  # the reference has its digest
    (OLD, [with_image_id(pod(OLD), OLD_DIGEST)], {}, OLD_PINNED),  # from the pods' imageID
    (OLD, [], {"tag": "1.4", "currentDigest": OLD_DIGEST}, OLD_PINNED),  # from the patch
    (OLD, [], {}, OLD),  # never known: the tag, and the entry says so
])
def test_the_rollback_image_is_pinned_to_the_digest_that_ran(current, pods, spec, restore) -> None:
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}, **spec),
                    dep=deployment(current), pods=pods)
    [rec] = step.status["rollouts"]
    assert rec["phase"] == "Patching"
    assert rec["previousImage"] == current
    assert rec.get("rollbackImage") == restore


def crash(rollback_image: str) -> tuple[dict, dict]:
    dep_old = deployment(OLD)
    gating = {"phase": "RollingOut", "rollouts": [entry(
        "Gating", previousImage=OLD, rollbackImage=rollback_image, targetImage=NEW,
        startedAt=format_time(T0), fingerprint=fingerprint(dep_old), patchedGeneration=2)]}
    return gating, deployment(NEW, generation=2)


def test_rollback_writes_the_pinned_previous_image_and_remembers_the_failed_digest() -> None:
    gating, dep = crash(OLD_PINNED)
    status, step, events = settle(gating, dep=dep, pods=[pod(NEW, crash_restarts=3)])
    act = step.action
    assert act is not None and (act.image, act.pinned) == (OLD_PINNED, True)
    # Named for the operator's memory (the reconciler records it before it writes);
    # the workload's annotation is not read to build it.
    assert act.failed == FailedDigest(digest=DIGEST, key="", patch="p1", at=T0)
    assert FAILED_ANNOTATION not in act.annotations
    assert "no digest was ever known" not in status["rollouts"][0]["message"]
    assert events == ["RollingBack"]


def test_rollback_of_a_never_pinned_image_restores_the_tag_and_says_so() -> None:
    gating, dep = crash("")
    status, step, _ = settle(gating, dep=dep, pods=[pod(NEW, crash_restarts=3)])
    assert step.action is not None
    assert (step.action.image, step.action.pinned) == (OLD, False)
    assert "no digest was ever known" in status["rollouts"][0]["message"]


def test_rollback_detects_a_human_change_to_the_restored_image() -> None:
    gating, _ = crash(OLD_PINNED)
    gating["rollouts"][0].update(phase="RollingBack", rollbackStartedAt=format_time(T0))
    step = step_for(imagepatch(gating), dep=deployment(f"{REPO}:9.9", generation=3))
    assert step.status["rollouts"][0]["reason"] == "ExternalChange"


# --- 4. one actor per container --------------------------------------------------------------


def test_a_container_held_by_another_patch_waits_with_conflict_naming_the_holder() -> None:
    patch = imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]})
    workload = Workload(target=WEB, deployment=deployment(OLD))
    step = plan(patch=patch, policy=policy(rollout=GATE), candidates=None, workload=workload,
                window=OPEN, now=T0, held_by={WEB.key: "other-patch"})
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Pending", "Conflict")
    assert "other-patch" in rec["message"]
    ready = next(c for c in step.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Conflict")
    assert "other-patch" in ready["message"]
    assert step.action is None and step.requeue_after and step.requeue_after > 0
    # Once the holder is done, it starts.
    free = plan(patch=patch, policy=policy(rollout=GATE), candidates=None, workload=workload,
                window=OPEN, now=T0, held_by={})
    assert free.status["rollouts"][0]["phase"] == "Patching"


def test_its_own_hold_is_no_conflict() -> None:
    patch = imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]})
    step = plan(patch=patch, policy=policy(rollout=GATE), candidates=None,
                workload=Workload(target=WEB, deployment=deployment(OLD)), window=OPEN, now=T0,
                held_by={WEB.key: "p1"})
    assert step.status["rollouts"][0]["phase"] == "Patching"


def close_requested(status: dict | None = None):
    body = {"metadata": {"name": "p1", "generation": 1,
                         "annotations": {"imagepatch.dev/close": "no longer needed"}},
            "spec": {"image": REPO, "policy": "pol", "targetDigest": DIGEST},
            "status": status or {}}
    return parse_imagepatch(body)


def test_a_close_request_closes_a_patch_that_has_not_started() -> None:
    for status in ({}, {"phase": "Building"}, {"phase": "RollingOut",
                                                "rollouts": [entry("Pending")]}):
        step = plan(patch=close_requested(status), policy=policy(), candidates=None,
                    workload=None, window=OPEN, now=T0)
        assert step.status["phase"] == "Closed"
        ready = next(c for c in step.status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "NoLongerNeeded")
        assert all(r["phase"] == "Skipped" for r in step.status["rollouts"])


def test_a_close_request_never_interrupts_a_started_rollout() -> None:
    gating, dep = crash(OLD_PINNED)
    step = plan(patch=close_requested(gating), policy=policy(rollout=GATE), candidates=None,
                workload=Workload(target=WEB, deployment=dep, pods=(pod(NEW),)), window=OPEN,
                now=T0)
    assert step.status.get("phase", "RollingOut") == "RollingOut"


# --- 5. failed digests outlive the patch -----------------------------------------------------


def test_a_digest_remembered_as_failed_on_the_workload_is_not_rolled_out_there_again() -> None:
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}),
                    dep=deployment(OLD), failed=frozenset({DIGEST}))
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Skipped", "DigestFailedBefore")
    assert step.action is None


def test_the_failed_digests_annotation_a_tenant_edits_is_not_read() -> None:
    dep = deployment(OLD)
    dep["metadata"]["annotations"] = {FAILED_ANNOTATION: json.dumps(
        [{"digest": DIGEST, "patch": "forged", "at": "2026-01-01T00:00:00Z"}])}
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}), dep=dep)
    assert step.status["rollouts"][0]["phase"] == "Patching"


def test_a_rollback_names_detections_key_when_the_patch_has_one() -> None:
    gating, dep = crash(OLD_PINNED)
    gating_patch = imagepatch(gating)
    body = {"metadata": {"name": "p1", "generation": 1, "annotations": {"imagepatch.dev/key": "k1"}},
            "spec": {"image": REPO, "policy": "pol", "targetDigest": NEW.split("@")[-1],
                     "tag": gating_patch.tag},
            "status": gating}
    step = plan(patch=parse_imagepatch(body), policy=policy(rollout=GATE), candidates=None,
                workload=Workload(target=WEB, deployment=dep, pods=(pod(NEW, crash_restarts=3),)),
                window=OPEN, now=T0)
    for _ in range(5):
        if step.action is not None:
            break
        body["status"] = {**body["status"], **step.status}
        step = plan(patch=parse_imagepatch(body), policy=policy(rollout=GATE), candidates=None,
                    workload=Workload(target=WEB, deployment=dep,
                                      pods=(pod(NEW, crash_restarts=3),)),
                    window=OPEN, now=T0)
    assert step.action is not None and step.action.failed is not None
    assert step.action.failed.key == "k1"


# --- suspend, and a policy deleted mid-rollout -----------------------------------------------


def test_a_suspended_policy_starts_no_build() -> None:
    step = step_for(imagepatch(targetDigest=None), pol=policy(suspend=True))
    assert not step.start_build and step.status.get("phase", "Pending") == "Pending"
    assert "suspended" in step.status["conditions"][0]["message"]
    assert step.requeue_after and step.requeue_after > 0


def test_a_suspended_policy_pins_and_patches_nothing() -> None:
    step = step_for(imagepatch(), pol=policy(suspend=True))
    assert not step.status.get("rollouts") and step.action is None and not step.discover


def test_a_policy_deleted_mid_rollout_finishes_the_target_in_flight_then_stops() -> None:
    gating, dep = crash(OLD_PINNED)
    status = two_targets(gating["rollouts"][0])
    patch = imagepatch(status)
    # The target in its gate is still judged (default gate) ...
    step = plan(patch=patch, policy=None, candidates=None,
                workload=Workload(target=WEB, deployment=dep, pods=(pod(NEW, crash_restarts=3),)),
                window=OPEN, now=T0)
    assert step.status["rollouts"][0]["phase"] == "RollingBack"
    # ... and once it is done, nothing new starts.
    done = {**status, "rollouts": [{**status["rollouts"][0], "phase": "Healthy"},
                                   status["rollouts"][1]]}
    step = plan(patch=imagepatch(done), policy=None, candidates=None,
                workload=Workload(target=API, deployment=deployment(OLD)), window=OPEN, now=T0)
    second = step.status["rollouts"][1]
    assert (second["phase"], second["reason"]) == ("Skipped", "PolicyDeleted")
    assert step.status["phase"] == "Succeeded" and step.action is None


# --- helpers ---------------------------------------------------------------------------------


def test_running_digest_needs_every_current_pod_to_agree() -> None:
    assert running_digest([with_image_id(pod(OLD), A)], "app", OLD) == A
    assert running_digest([with_image_id(pod(OLD), A), with_image_id(pod(OLD), B)],
                          "app", OLD) == ""
    # Pods of an older template (another image in their spec) do not count.
    assert running_digest([with_image_id(pod(f"{REPO}:1.3"), B), with_image_id(pod(OLD), A)],
                          "app", OLD) == A
    assert running_digest([pod(OLD)], "app", OLD) == ""


@pytest.mark.parametrize(("image", "pinned"), [
    (NEW, True), (OLD_PINNED, True), (OLD, False), (f"{REPO}@{A}", True), ("", False),
    ("UPPER/case:1", False),
])
def test_is_pinned(image, pinned) -> None:
    assert is_pinned(image) is pinned


def test_the_forward_write_is_pinned() -> None:
    dep = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [entry(
        "Patching", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
        fingerprint=fingerprint(dep))]}
    step = step_for(imagepatch(status), dep=dep)
    assert step.action == PatchImage(target=WEB, image=NEW, resource_version="rv1")
    assert is_pinned(step.action.image)


def test_suspending_mid_rollout_starts_no_new_target() -> None:
    status = {"phase": "RollingOut", "rollouts": [
        entry("Healthy", previousImage=OLD, targetImage=NEW), entry("Pending", target=API)]}
    step = step_for(imagepatch(status), pol=policy(suspend=True), dep=deployment(OLD), target=API)
    assert step.status["rollouts"][1]["phase"] == "Pending" and step.action is None
    ready = next(c for c in step.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Suspended" and step.requeue_after and step.requeue_after > 0


def test_a_container_whose_image_is_no_valid_reference_is_never_patched() -> None:
    # The API server accepts image strings the reference grammar refuses: not ours to rewrite.
    step = step_for(imagepatch({"phase": "RollingOut", "rollouts": [entry("Pending")]}),
                    dep=deployment("registry.local/app:1.4 "))
    [rec] = step.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Skipped", "ImageChanged") and step.action is None
