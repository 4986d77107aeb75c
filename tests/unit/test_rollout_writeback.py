"""The planner's Git write-back path (core/rollout/writeback.py), step by step, no cluster.

A Flux-delivered workload under ``rollout.mode: GitWriteBack`` is committed,
not patched: Patching (with gitBranch) is recorded first, then the step asks
for the commit, records it, waits for the GitOps tool to apply it (bounded by
applyTimeout), gates it as a patch; a rollback is a revert commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from imagepatch.core.conditions import format_time
from imagepatch.core.rollout import GitResult, Workload, plan
from tests.unit.test_rollout_plan import (
    DIGEST,
    GATE,
    NEW,
    OLD,
    OPEN,
    T0,
    WEB,
    WEB_CANDIDATE,
    deployment,
    entry,
    fingerprint,
    imagepatch,
    pod,
    policy,
)

URL = "https://git.example.com/team/apps.git"
WRITE_BACK = {**GATE, "mode": "GitWriteBack",
              "gitWriteBack": {"url": URL, "secretRef": {"name": "git"}, "path": "apps/web",
                               "applyTimeout": "5m"}}
FLUX = {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux"}
SHA = "c" * 40
REVERT = "d" * 40


def managed(image: str, **kw: Any) -> dict:
    dep = deployment(image, **kw)
    dep["metadata"]["labels"] = dict(FLUX)
    return dep


def step(status: dict | None, dep: dict, *, pods=(), now=T0, git: GitResult | None = None,
         rollout: dict | None = None):
    return plan(patch=imagepatch(status), policy=policy(rollout=rollout or WRITE_BACK),
                candidates=(WEB_CANDIDATE,), workload=Workload(target=WEB, deployment=dep,
                                                               pods=tuple(pods)),
                window=OPEN, now=now, git=git)


def patching(dep_old: dict, **extra: Any) -> dict:
    extra = {"gitBranch": "main", **extra}
    return {"phase": "RollingOut", "rollouts": [entry(
        "Patching", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
        fingerprint=fingerprint(dep_old), **extra)]}


def test_a_managed_workload_is_committed_not_patched():
    dep = managed(OLD)
    pinned = step({"phase": "RollingOut", "rollouts": [entry("Pending")]}, dep)
    [rec] = pinned.status["rollouts"]
    assert (rec["phase"], rec["gitBranch"], rec["targetImage"]) == ("Patching", "main", NEW)
    assert "rollbackImage" not in rec  # a revert restores what Git said
    asked = step(pinned.status, dep)
    assert asked.action is None and asked.git is not None
    assert (asked.git.image, asked.git.previous, asked.git.revert) == (NEW, OLD, False)


def test_the_push_branch_is_the_branch_recorded():
    rollout = {**WRITE_BACK, "gitWriteBack": {**WRITE_BACK["gitWriteBack"],
                                              "pushBranch": "imagepatch/web"}}
    started = step({"phase": "RollingOut", "rollouts": [entry("Pending")]}, managed(OLD),
                   rollout=rollout)
    assert started.status["rollouts"][0]["gitBranch"] == "imagepatch/web"


def test_the_commit_is_recorded_then_the_apply_awaited_then_gated():
    dep = managed(OLD)
    recorded = step(patching(dep), dep, git=GitResult(target=WEB, sha=SHA, branch="main"))
    [rec] = recorded.status["rollouts"]
    assert rec["gitCommit"] == SHA and rec["phase"] == "Patching"
    assert f"committed {SHA[:12]} to {URL} branch main" in rec["message"]
    waiting = step(recorded.status, dep, now=T0 + dt.timedelta(minutes=1))
    assert waiting.git is None and waiting.action is None and waiting.requeue_after
    assert "waiting for the GitOps tool to apply commit" in waiting.status["history"][-1].get(
        "message", "") or "waiting for the GitOps tool" in str(waiting.status["conditions"])
    applied = step(recorded.status, managed(NEW, generation=2))
    assert applied.status["rollouts"][0]["phase"] == "Gating"


def test_a_result_for_another_target_is_not_recorded():
    dep = managed(OLD)
    other = WEB.__class__(namespace="shop", name="api", container="app")
    again = step(patching(dep), dep, git=GitResult(target=other, sha=SHA))
    assert again.git is not None and "gitCommit" not in again.status["rollouts"][0]


def test_a_commit_not_applied_in_time_fails_naming_the_repository_and_branch():
    dep = managed(OLD)
    late = step(patching(dep, gitCommit=SHA), dep, now=T0 + dt.timedelta(minutes=6))
    [rec] = late.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Failed", "GitApplyTimeout")
    assert f"{URL} branch main" in rec["message"] and "was not applied within 0:05:00" in (
        rec["message"])
    assert late.status["phase"] == "Failed"
    stalled = [c for c in late.status["conditions"] if c["type"] == "Stalled"]
    assert stalled and stalled[0]["reason"] == "GitApplyTimeout"


def test_a_write_back_that_cannot_be_made_fails_with_what_to_fix():
    dep = managed(OLD)
    failed = step(patching(dep), dep, git=GitResult(
        target=WEB, reason="GitImageNotDeclared",
        message="no file under 'apps/web' declares registry.local/app: add one"))
    [rec] = failed.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Failed", "GitImageNotDeclared")
    assert failed.status["phase"] == "Failed" and "add one" in rec["message"]
    assert [e.reason for e in failed.events] == ["GitImageNotDeclared"]


def test_a_passing_git_failure_is_tried_again_until_the_apply_timeout():
    dep = managed(OLD)
    flaky = GitResult(target=WEB, reason="GitFailed", message="the server hung up",
                      transient=True)
    retry = step(patching(dep), dep, git=flaky)
    assert retry.requeue_after == 30.0 and retry.git is None
    assert retry.status["rollouts"][0]["phase"] == "Patching"
    reconciling = [c for c in retry.status["conditions"] if c["type"] == "Reconciling"]
    assert reconciling[0]["reason"] == "GitFailed"
    late = step(patching(dep), dep, git=flaky, now=T0 + dt.timedelta(minutes=6))
    assert late.status["rollouts"][0]["reason"] == "GitFailed"
    assert late.status["phase"] == "Failed"


def rolling_back(dep_old: dict, **extra: Any) -> dict:
    return {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [entry(
        "RollingBack", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
        fingerprint=fingerprint(dep_old), rollbackStartedAt=format_time(T0), gitBranch="main",
        gitCommit=SHA, reason="CrashLoopBackOff", message="web-x/app: CrashLoopBackOff",
        **extra)]}


def test_a_rollback_is_a_revert_commit_then_the_old_image_must_be_back():
    dep_old = managed(OLD)
    on_new = managed(NEW, generation=2)
    crash = [pod(NEW, crash_restarts=3)]
    asked = step(rolling_back(dep_old), on_new, pods=crash)
    assert asked.git is not None and asked.git.revert and asked.git.commit == SHA
    assert asked.git.failed is not None and asked.git.failed.digest == DIGEST
    recorded = step(rolling_back(dep_old), on_new, pods=crash,
                    git=GitResult(target=WEB, revert=True, sha=REVERT, branch="main"))
    [rec] = recorded.status["rollouts"]
    assert rec["gitRevert"] == REVERT and rec["phase"] == "RollingBack"
    waiting = step(recorded.status, on_new, pods=crash, now=T0 + dt.timedelta(minutes=1))
    assert waiting.git is None and waiting.requeue_after
    back = step(recorded.status, managed(OLD, generation=3), pods=[pod(OLD)])
    assert back.status["rollouts"][0]["phase"] == "RolledBack"
    assert back.status["phase"] == "RolledBack"


def test_a_revert_that_fails_or_is_not_applied_fails_the_rollback():
    dep_old, on_new = managed(OLD), managed(NEW, generation=2)
    refused = step(rolling_back(dep_old), on_new, git=GitResult(
        target=WEB, revert=True, reason="GitRevertFailed", message="conflict in deploy.yaml"))
    assert refused.status["rollouts"][0]["reason"] == "RollbackFailed"
    assert "could not revert" in refused.status["rollouts"][0]["message"]
    late = step(rolling_back(dep_old, gitRevert=REVERT), on_new, now=T0 + dt.timedelta(minutes=6))
    assert late.status["rollouts"][0]["reason"] == "RollbackFailed"
    assert f"revert {REVERT[:12]}" in late.status["rollouts"][0]["message"]


def test_skip_stays_the_default_for_a_managed_workload():
    started = step({"phase": "RollingOut", "rollouts": [entry("Pending")]}, managed(OLD),
                   rollout=GATE)
    assert started.status["rollouts"][0]["reason"] == "GitOpsManaged"
    assert "spec.rollout.mode: GitWriteBack" in started.status["rollouts"][0]["message"]


# --- gitWriteBack.pullRequest: opened after the push, recorded, never failing the target -----

PR_URL = "https://github.com/team/apps/pull/7"
WITH_PR = {**WRITE_BACK, "gitWriteBack": {
    **WRITE_BACK["gitWriteBack"], "pushBranch": "imagepatch/web",
    "pullRequest": {"provider": "GitHub", "tokenSecretRef": {"name": "forge"}}}}


def pushed(dep_old: dict, **extra: Any) -> dict:
    return patching(dep_old, gitBranch="imagepatch/web", gitCommit=SHA, **extra)


def test_the_pull_request_opened_with_the_commit_is_recorded():
    dep = managed(OLD)
    done = step(patching(dep, gitBranch="imagepatch/web"), dep, rollout=WITH_PR, git=GitResult(
        target=WEB, sha=SHA, branch="imagepatch/web", pull_request_url=PR_URL,
        pull_request_number=7))
    [rec] = done.status["rollouts"]
    assert (rec["gitCommit"], rec["gitPullRequest"], rec["gitPullRequestNumber"]) == (
        SHA, PR_URL, 7)
    assert f"waiting for pull request {PR_URL} to be merged" in rec["message"]
    # Then the forge is asked what became of it (the next pass), nothing written.
    asked = step(done.status, dep, rollout=WITH_PR, now=T0 + dt.timedelta(minutes=1))
    assert asked.git is not None and asked.git.poll_pull_request
    assert (asked.git.pull_request_number, asked.git.pull_request) == (7, False)


def test_a_pull_request_not_recorded_is_asked_for_again_after_a_restart():
    dep = managed(OLD)
    asked = step(pushed(dep), dep, rollout=WITH_PR)
    assert asked.git is not None and asked.git.pull_request and not asked.git.revert
    assert (asked.git.image, asked.git.previous) == (NEW, OLD)
    # A commit result without a word on the request (no PR settings then) asks for it too.
    again = step(patching(dep, gitBranch="imagepatch/web"), dep, rollout=WITH_PR,
                 git=GitResult(target=WEB, sha=SHA, branch="imagepatch/web"))
    assert again.status["rollouts"][0]["gitCommit"] == SHA
    follow = step(again.status, dep, rollout=WITH_PR)
    assert follow.git is not None and follow.git.pull_request


def test_a_forge_that_refuses_is_shown_and_asked_again_never_failing_the_target():
    dep = managed(OLD)
    refused = GitResult(target=WEB, pull_request_reason="GitForgeAuthFailed",
                        pull_request_message="GitHub api.github.com refused the token (401)")
    retry = step(pushed(dep), dep, rollout=WITH_PR, git=refused)
    [rec] = retry.status["rollouts"]
    assert rec["phase"] == "Patching" and "gitPullRequest" not in rec
    assert "the pull request is not open: GitHub api.github.com refused" in rec["message"]
    assert retry.requeue_after == 30.0 and retry.git is None
    reconciling = [c for c in retry.status["conditions"] if c["type"] == "Reconciling"]
    assert reconciling[0]["reason"] == "GitForgeAuthFailed"
    assert retry.status["phase"] == "RollingOut"
    late = step(pushed(dep), dep, rollout=WITH_PR, git=refused, now=T0 + dt.timedelta(minutes=6))
    assert late.status["rollouts"][0]["reason"] == "GitApplyTimeout"
    assert "the pull request was merged" in late.status["rollouts"][0]["message"]


def test_a_pull_request_is_not_asked_for_without_its_settings_or_once_recorded():
    dep = managed(OLD)
    rollout = {**WRITE_BACK, "gitWriteBack": {**WRITE_BACK["gitWriteBack"],
                                              "pushBranch": "imagepatch/web"}}
    plain = step(pushed(dep), dep, rollout=rollout)
    assert plain.git is None
    recorded = step(pushed(dep, gitPullRequest=PR_URL, gitPullRequestNumber=7), dep,
                    rollout=WITH_PR)
    assert recorded.git is not None and recorded.git.poll_pull_request
    assert not recorded.git.pull_request
    # Without pullRequest any more, a recorded request is not asked after: bounded wait.
    plain = step(pushed(dep, gitPullRequest=PR_URL, gitPullRequestNumber=7), dep,
                 rollout=rollout)
    assert plain.git is None and plain.requeue_after


# --- the review: polled, never bounded while open; closed ends it; merged starts the clock ----

def in_review(dep_old: dict, **extra: Any) -> dict:
    return pushed(dep_old, gitPullRequest=PR_URL, gitPullRequestNumber=7, **extra)


def polled(state: str, **kw: Any) -> GitResult:
    return GitResult(target=WEB, pull_request_state=state, **kw)


def test_an_open_request_waits_for_review_past_the_apply_timeout():
    dep = managed(OLD)
    days = T0 + dt.timedelta(days=3)
    asked = step(in_review(dep), dep, rollout=WITH_PR, now=days)
    assert asked.git is not None and asked.git.poll_pull_request  # not GitApplyTimeout
    open_ = step(in_review(dep), dep, rollout=WITH_PR, now=days, git=polled("open"))
    [rec] = open_.status["rollouts"]
    assert (rec["phase"], rec["gitPullRequestState"]) == ("Patching", "Open")
    assert f"waiting for review of {PR_URL}" in rec["message"]
    assert open_.git is None and open_.requeue_after == 60.0
    reconciling = [c for c in open_.status["conditions"] if c["type"] == "Reconciling"]
    assert reconciling[0]["reason"] == "PullRequestOpen"
    assert f"waiting for review of {PR_URL}" in reconciling[0]["message"]
    assert open_.status["phase"] == "RollingOut"
    # Asking again later leaves that status as it is (nothing to write before the poll).
    again = step(open_.status, dep, rollout=WITH_PR, now=days + dt.timedelta(minutes=1))
    assert again.git is not None and again.git.poll_pull_request and again.status == {}


def test_a_forge_that_cannot_say_keeps_the_review_waiting_with_its_reason():
    dep = managed(OLD)
    down = GitResult(target=WEB, pull_request_reason="GitForgeUnavailable",
                     pull_request_message="GitHub at api.github.com: 502")
    waiting = step(in_review(dep, gitPullRequestState="Open"), dep, rollout=WITH_PR, git=down,
                   now=T0 + dt.timedelta(days=1))
    [rec] = waiting.status["rollouts"]
    assert rec["phase"] == "Patching" and "GitHub at api.github.com: 502" in rec["message"]
    assert waiting.requeue_after == 60.0
    reconciling = [c for c in waiting.status["conditions"] if c["type"] == "Reconciling"]
    assert reconciling[0]["reason"] == "GitForgeUnavailable"


def test_a_request_closed_without_a_merge_ends_the_patch_with_nothing_to_roll_back():
    dep = managed(OLD)
    closed = step(in_review(dep), dep, rollout=WITH_PR, git=polled("closed"))
    [rec] = closed.status["rollouts"]
    assert (rec["phase"], rec["reason"], rec["gitPullRequestState"]) == (
        "Failed", "PullRequestClosed", "Closed")
    assert f"{PR_URL} was closed without being merged" in rec["message"]
    assert "nothing is rolled back" in rec["message"] and "imagepatch/web" in rec["message"]
    assert closed.status["phase"] == "Failed" and closed.git is None and closed.action is None
    assert [e.reason for e in closed.events] == ["PullRequestClosed"]


def test_a_merge_is_recorded_and_the_apply_timeout_counts_from_it():
    dep = managed(OLD)
    merge = "e" * 40
    at = T0 + dt.timedelta(days=2)
    merged = step(in_review(dep), dep, rollout=WITH_PR, now=at + dt.timedelta(minutes=1),
                  git=polled("merged", merge_commit=merge, merged_at=format_time(at)))
    [rec] = merged.status["rollouts"]
    assert (rec["gitPullRequestState"], rec["gitMergeCommit"], rec["gitMergedAt"]) == (
        "Merged", merge, format_time(at))
    assert f"{PR_URL} was merged as {merge[:12]}" in rec["message"]
    waiting = step(merged.status, dep, rollout=WITH_PR, now=at + dt.timedelta(minutes=4))
    assert waiting.git is None and waiting.requeue_after  # no more polling once merged
    late = step(merged.status, dep, rollout=WITH_PR, now=at + dt.timedelta(minutes=6))
    [rec] = late.status["rollouts"]
    assert (rec["phase"], rec["reason"]) == ("Failed", "GitApplyTimeout")
    assert f"pull request {PR_URL} was merged at {format_time(at)} as {merge[:12]}" in (
        rec["message"])
    applied = step(merged.status, managed(NEW, generation=2), rollout=WITH_PR,
                   now=at + dt.timedelta(minutes=3))
    assert applied.status["rollouts"][0]["phase"] == "Gating"


def test_a_merge_without_a_time_or_commit_counts_from_when_it_was_seen():
    dep = managed(OLD)
    seen = T0 + dt.timedelta(hours=1)
    merged = step(in_review(dep), dep, rollout=WITH_PR, now=seen, git=polled("merged"))
    [rec] = merged.status["rollouts"]
    assert rec["gitMergedAt"] == format_time(seen) and "gitMergeCommit" not in rec
    assert f"{PR_URL} was merged; waiting" in rec["message"]


def test_the_revert_of_a_merged_request_names_its_merge_commit_and_the_verdict():
    dep_old, on_new = managed(OLD), managed(NEW, generation=2)
    merge = "e" * 40
    status = rolling_back(dep_old, gitPullRequest=PR_URL,
                          gitPullRequestNumber=7, gitPullRequestState="Merged",
                          gitMergeCommit=merge, gitMergedAt=format_time(T0))
    asked = step(status, on_new, pods=[pod(NEW, crash_restarts=3)], rollout=WITH_PR)
    assert asked.git is not None and asked.git.revert
    assert (asked.git.commit, asked.git.merge_commit, asked.git.pull_request_number) == (
        SHA, merge, 7)
    assert "CrashLoopBackOff" in asked.git.why


def test_a_revert_is_said_to_be_on_the_branch_even_after_a_push_branch():
    dep_old, on_new = managed(OLD), managed(NEW, generation=2)
    crash = [pod(NEW, crash_restarts=3)]
    status = rolling_back(dep_old, gitPullRequest=PR_URL, gitPullRequestNumber=7)
    status["rollouts"][0]["gitBranch"] = "imagepatch/web"
    done = step(status, on_new, pods=crash, rollout=WITH_PR,
                git=GitResult(target=WEB, revert=True, sha=REVERT, branch="main"))
    assert f"reverted by {REVERT[:12]} on {URL} branch main" in (
        done.status["rollouts"][0]["message"])
    # A policy no longer in GitWriteBack mode: the recorded branch is named.
    late = step(rolling_back(dep_old, gitRevert=REVERT), on_new, rollout=GATE,
                now=T0 + dt.timedelta(minutes=11))
    assert f"revert {REVERT[:12]} on branch main" in late.status["rollouts"][0]["message"]


def test_a_revert_that_fails_for_a_passing_reason_is_tried_again():
    dep_old, on_new = managed(OLD), managed(NEW, generation=2)
    flaky = GitResult(target=WEB, revert=True, reason="GitPushRejected",
                      message="rejected 3 times", transient=True)
    retry = step(rolling_back(dep_old), on_new, pods=[pod(NEW, crash_restarts=3)], git=flaky)
    [rec] = retry.status["rollouts"]
    assert rec["phase"] == "RollingBack" and "rejected 3 times; trying again" in rec["message"]
    assert retry.requeue_after == 30.0 and retry.git is None
