"""Corners of the planner's phases that the step-by-step stories do not reach: a terminal
patch, a rejection after pinning, a rollout whose targets are all done, a rollback still
waiting or changed under it, and the gate's seam on a workload with no fresh conditions.
"""

from __future__ import annotations

import datetime as dt

from imagepatch.core import health
from imagepatch.core.conditions import format_time
from imagepatch.core.rollout import GATE_POLL, Workload, pinned_image
from imagepatch.core.rollout.gate import assess, since
from imagepatch.model.imagepatch import Target
from imagepatch.model.policy import Rollout
from tests.unit.test_rollout_plan import (
    DIGEST,
    NEW,
    OLD,
    OLD_PINNED,
    REPO,
    T0,
    WEB,
    deployment,
    entry,
    fingerprint,
    imagepatch,
    pod,
    step_for,
)

DB = Target(namespace="shop", name="db", container="app")


def test_a_terminal_patch_is_left_as_it_is() -> None:
    step = step_for(imagepatch({"phase": "Succeeded"}))
    assert step.status == {} and step.action is None and not step.again


def test_a_rejection_after_pinning_skips_the_pending_targets_and_keeps_one_failed_digest() -> None:
    status = {"phase": "AwaitingApproval", "failedDigests": [DIGEST],
              "rollouts": [entry("Pending"), entry("Pending", target=DB)]}
    step = step_for(imagepatch(status, approval={"decision": "Rejected"}))
    assert step.status["phase"] == "Failed"
    assert step.status["failedDigests"] == [DIGEST]
    assert [(r["phase"], r.get("reason")) for r in step.status["rollouts"]] == [
        ("Skipped", "Rejected"), ("Skipped", "Rejected")]
    assert step.status["history"][-1]["message"] == "rejected by a human"


def test_a_rollout_whose_targets_are_all_done_ends_with_the_failed_targets_reason() -> None:
    status = {"phase": "RollingOut", "rollouts": [
        entry("Failed", reason="ExternalChange", message="image changed by someone else"),
        entry("Healthy", target=DB)]}
    step = step_for(imagepatch(status))
    assert step.status["phase"] == "Failed"
    assert step.status["history"][-1]["message"] == (
        "shop/web/app: image changed by someone else; 1 of 2 targets patched and healthy")
    stalled = [c for c in step.status["conditions"] if c["type"] == "Stalled"]
    assert stalled[0]["reason"] == "ExternalChange"


def test_a_failed_gate_stops_only_the_targets_that_have_not_started() -> None:
    dep_old = deployment(OLD)
    status = {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [
        entry("Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
              fingerprint=fingerprint(dep_old), patchedGeneration=2),
        entry("Skipped", target=DB, reason="AlreadyUpToDate"),
        entry("Pending", target=Target(namespace="shop", name="api", container="app"))]}
    on_new = deployment(NEW, generation=2)
    step = step_for(imagepatch(status), dep=on_new, pods=[pod(NEW, crash_restarts=3)])
    assert step.status["failedDigests"] == [DIGEST]  # not recorded twice
    phases = [(r["phase"], r.get("reason")) for r in step.status["rollouts"]]
    assert phases[0][0] == "RollingBack"
    assert phases[1:] == [("Skipped", "AlreadyUpToDate"), ("Skipped", "EarlierTargetFailed")]


def rolling_back(dep_old: dict) -> dict:
    return {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [entry(
        "RollingBack", previousImage=OLD, rollbackImage=OLD_PINNED, targetImage=NEW,
        startedAt=format_time(T0), fingerprint=fingerprint(dep_old),
        rollbackStartedAt=format_time(T0), reason="CrashLoopBackOff", message="crashed")]}


def test_a_rollback_waits_for_the_restored_image_to_be_available() -> None:
    back = deployment(OLD_PINNED, generation=3, rolled=False)
    step = step_for(imagepatch(rolling_back(deployment(OLD))), dep=back, pods=[pod(OLD_PINNED)],
                    now=T0 + dt.timedelta(seconds=5))
    assert step.action is None
    assert step.requeue_after == GATE_POLL
    assert step.status["history"][-1]["phase"] == "RollingOut"
    assert step.status["conditions"][-1]["message"] == (
        f"rolling back shop/web/app: waiting for {OLD_PINNED}")


def test_a_template_changed_mid_rollback_is_reported_not_overwritten() -> None:
    changed = deployment(NEW, generation=2, env=[{"name": "DEBUG", "value": "1"}])
    step = step_for(imagepatch(rolling_back(deployment(OLD))), dep=changed, pods=[pod(NEW)])
    assert step.action is None
    assert step.status["phase"] == "Failed"
    assert step.status["rollouts"][0]["reason"] == "ExternalChange"
    assert [e.reason for e in step.events] == ["ExternalChange"]


def test_an_image_that_does_not_parse_is_pinned_without_a_tag() -> None:
    assert pinned_image("not a reference", REPO, DIGEST) == f"{REPO}@{DIGEST}"
    assert pinned_image(OLD, REPO, DIGEST) == NEW


def test_the_gate_seam_judges_the_workload_as_observed_when_no_start_is_recorded() -> None:
    dep = deployment(NEW, generation=2)
    dep["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                    "reason": "ProgressDeadlineExceeded",
                                    "lastUpdateTime": "2026-11-27T08:00:00Z"}]
    assert since(dep, None) is dep
    verdict = assess(Workload(target=WEB, deployment=dep, pods=(pod(NEW),)), container="app",
                     image=NEW, gate=Rollout(), started_at="", healthy_since=None, now=T0)
    # With no recorded start, the old condition counts: the gate fails on it.
    assert verdict.state == health.HealthState.FAILED
    fresh = assess(Workload(target=WEB, deployment=dep, pods=(pod(NEW),)), container="app",
                   image=NEW, gate=Rollout(), started_at=format_time(T0), healthy_since=None,
                   now=T0)
    assert fresh.state != health.HealthState.FAILED


def test_a_workload_observed_for_another_target_is_observed_again() -> None:
    status = {"phase": "RollingOut", "rollouts": [entry("Pending"), entry("Pending", target=DB)]}
    step = step_for(imagepatch(status), dep=deployment(OLD), target=DB)
    assert step.action is None and step.again
    assert [r["phase"] for r in step.status["rollouts"]] == ["Pending", "Pending"]


def test_an_image_changed_by_a_human_before_the_patch_is_reported_not_overwritten() -> None:
    dep_old = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [entry(
        "Patching", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
        fingerprint=fingerprint(dep_old))]}
    step = step_for(imagepatch(status), dep=deployment(f"{REPO}:1.5", generation=2))
    assert step.action is None
    assert step.status["rollouts"][0]["reason"] == "ExternalChange"
    assert "image changed to registry.local/app:1.5 by someone else" in (
        step.status["rollouts"][0]["message"])


# -- corners the moved modules kept: a removed container, an empty pin, soak edges --------


def test_drift_names_a_container_that_was_removed() -> None:
    from imagepatch.core.rollout.drift import drift

    gating = imagepatch({"phase": "RollingOut", "rollouts": [entry("Gating", targetImage=NEW)]})
    renamed = deployment(NEW)
    renamed["spec"]["template"]["spec"]["containers"][0]["name"] = "other"
    assert drift(gating.status.rollouts[0], renamed, expected_image=NEW) == (
        "container app was removed")
    assert drift(gating.status.rollouts[0], deployment(NEW), expected_image=NEW) == ""


def test_a_patch_that_finds_no_workload_to_pin_succeeds_with_nothing_to_do() -> None:
    step = step_for(imagepatch({}), candidates=())
    assert step.status["phase"] == "Succeeded"
    assert step.status["rollouts"] == [] or "rollouts" not in step.status
    assert step.action is None


def _waves(*waves: dict):
    from tests.unit.test_rollout_plan import GATE, policy

    return policy(rollout={**GATE, "waves": list(waves)})


def test_the_soak_is_not_waited_for_a_wave_the_policy_no_longer_has_or_one_without_soak() -> None:
    from imagepatch.core.rollout.targets import soak_remaining

    prod = Target(namespace="prod", name="web", container="app", wave=1)
    done = imagepatch({"phase": "RollingOut", "rollouts": [
        entry("Healthy", finishedAt=format_time(T0)), entry("Pending", target=prod, wave=1)]})
    entries = done.status.rollouts
    staging = {"name": "staging", "namespaceSelector": {"matchLabels": {"stage": "staging"}}}
    soon = T0 + dt.timedelta(minutes=1)
    # The previous wave (index 0) is gone from the policy: nothing to wait for.
    assert soak_remaining(entries, 1, _waves(), soon) is None
    # The wave has no soak: nothing to wait for.
    assert soak_remaining(entries, 1, _waves(staging), soon) is None
    # With a soak it waits, which shows the two answers above are the edges, not the rule.
    assert soak_remaining(entries, 1, _waves({**staging, "soak": "10m"}), soon) == 540.0
