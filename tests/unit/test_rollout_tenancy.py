"""Blast radius is one team: the planner with several teams' targets in one patch.

Given a patch whose targets belong to different namespaces (teams), a CronJob
among them whose schedule does not fire soon, and the policy's
``rollout.onTargetFailure``; when one target fails, is changed by someone else
or waits for a scheduled run; then the other teams' targets still get their
patch (``Continue``, the default), or every target not started is stopped
(``StopAll``), and the patch's final message names what was stopped and why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from imagepatch.core import health, kinds
from imagepatch.core.conditions import format_time
from imagepatch.core.rollout import Window, Workload, active_target, next_in_line, on_the_side, plan
from imagepatch.core.rollout.context import outcome_summary, stall_reason
from imagepatch.model.imagepatch import RolloutEntry, Target, TargetPhase, parse_imagepatch
from imagepatch.model.policy import Rollout
from tests.unit.test_rollout_plan import (
    DIGEST,
    GATE,
    NEW,
    OLD,
    T0,
    deployment,
    entry,
    fingerprint,
    imagepatch,
    pod,
    policy,
    step_for,
)

TEAM_A = Target(namespace="team-a", name="web", container="app")
TEAM_A2 = Target(namespace="team-a", name="api", container="app")
TEAM_B = Target(namespace="team-b", name="web", container="app")
TEAM_B_LATER = Target(namespace="team-b", name="web", container="app", wave=1)
TEAM_C_LATER = Target(namespace="team-c", name="web", container="app", wave=1)
CRON = Target(namespace="team-a", name="report", container="app", kind="CronJob")
NEVER = "0 0 30 2 *"  # 30 February: a schedule the API server accepts that never fires


def on(target: Target, phase: str, **extra: Any) -> dict:
    return entry(phase, target=target, wave=target.wave, kind=target.kind, **extra)


def gating(target: Target, dep: dict, **extra: Any) -> dict:
    return on(target, "Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
              fingerprint=fingerprint(dep), patchedGeneration=2, **extra)


def cronjob(schedule: str, image: str = OLD, *, suspend: bool = False, uid: str = "u-cj") -> dict:
    return {
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "team-a", "uid": uid, "generation": 1,
                     "resourceVersion": "rv1"},
        "spec": {"schedule": schedule, "suspend": suspend, "jobTemplate": {"spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}},
        "status": {},
    }


def job(name: str, *, created: dt.datetime, condition: str = "") -> dict:
    status: dict[str, Any] = {"startTime": format_time(created)}
    if condition:
        status["conditions"] = [{"type": condition, "status": "True"}]
    return {"metadata": {"name": name, "namespace": "team-a", "creationTimestamp": format_time(created),
                         "ownerReferences": [{"kind": "CronJob", "uid": "u-cj"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}},
            "status": status}


def phases(step) -> list[tuple[str, str]]:
    return [(r["phase"], r.get("reason", "")) for r in step.status["rollouts"]]


# --- a CronJob's gate never holds the other targets ------------------------------------


def test_a_cronjob_whose_schedule_never_fires_is_not_patched_and_says_when_it_would_run() -> None:
    status = {"phase": "RollingOut", "rollouts": [on(CRON, "Pending"), on(TEAM_B, "Pending")]}
    step = step_for(imagepatch(status), dep=cronjob(NEVER), target=CRON)
    assert step.action is None and step.again
    assert phases(step) == [("Skipped", "CronJobRunTooFar"), ("Pending", "")]
    message = step.status["rollouts"][0]["message"]
    assert "never fires" in message and "cronJobTrialRun" in message
    assert [e.reason for e in step.events] == ["CronJobRunTooFar"]
    # The next team's Deployment starts at once.
    nxt = step_for(imagepatch({**status, **step.status}), dep=deployment(OLD), target=TEAM_B)
    assert nxt.status["rollouts"][1]["phase"] == "Patching"


def test_a_yearly_cronjob_names_its_next_run_and_a_bound_that_reaches_it_patches_it() -> None:
    status = {"phase": "RollingOut", "rollouts": [on(CRON, "Pending")]}
    step = step_for(imagepatch(status), dep=cronjob("@yearly"), target=CRON)
    assert "2027-01-01T00:00:00Z" in step.status["rollouts"][0]["message"]
    month = policy(rollout={**GATE, "cronJobRunWithin": "744h"})
    started = step_for(imagepatch(status), pol=month, dep=cronjob("0 0 1 12 *"), target=CRON)
    assert started.status["rollouts"][0]["phase"] == "Patching"


def test_a_suspended_or_trial_run_cronjob_is_patched_whatever_its_schedule() -> None:
    status = {"phase": "RollingOut", "rollouts": [on(CRON, "Pending")]}
    suspended = step_for(imagepatch(status), dep=cronjob(NEVER, suspend=True), target=CRON)
    assert suspended.status["rollouts"][0]["phase"] == "Patching"
    trial = policy(rollout={**GATE, "cronJobTrialRun": True})
    tried = step_for(imagepatch(status), pol=trial, dep=cronjob(NEVER), target=CRON)
    assert tried.status["rollouts"][0]["phase"] == "Patching"


def test_a_gating_cronjob_is_awaited_on_the_side_while_the_next_target_starts() -> None:
    cj = cronjob("*/5 * * * *", NEW)
    status = {"phase": "RollingOut", "rollouts": [gating(CRON, cj), on(TEAM_B, "Pending")]}
    patch = imagepatch(status)
    # The one in line is team B's Deployment; the CronJob comes after it in a pass.
    assert active_target(patch) == TEAM_B
    assert active_target(patch, skip={TEAM_B.key}) == CRON
    assert active_target(patch, skip={TEAM_B.key, CRON.key}) is None
    started = step_for(patch, dep=deployment(OLD), target=TEAM_B)
    assert phases(started) == [("Gating", ""), ("Patching", "")]
    # The CronJob's own step waits for its run, polling no faster than it must.
    waiting = step_for(patch, dep=cj, target=CRON, now=T0 + dt.timedelta(seconds=10))
    assert waiting.status["rollouts"][0]["reason"] == "AwaitingRun"
    assert 2.0 <= waiting.requeue_after <= 30.0
    assert "due 2026-11-27T09:05:00Z" in waiting.status["rollouts"][0]["message"]


def test_the_patch_ends_only_when_the_cronjob_awaited_on_the_side_has_its_verdict() -> None:
    cj = cronjob("*/5 * * * *", NEW)
    healthy_b = on(TEAM_B, "Healthy", finishedAt=format_time(T0))
    status = {"phase": "RollingOut", "rollouts": [gating(CRON, cj), healthy_b]}
    # Observed for the finished Deployment: nothing to do there, and the patch is not over.
    moved_on = step_for(imagepatch(status), dep=deployment(NEW), target=TEAM_B)
    assert moved_on.again and moved_on.status.get("phase", "RollingOut") == "RollingOut"
    done = plan(patch=imagepatch(status), policy=policy(rollout=GATE), candidates=(),
                workload=Workload(target=CRON, deployment=cj, jobs=(
                    job("report-1", created=T0 + dt.timedelta(minutes=5), condition="Complete"),)),
                window=Window(), now=T0 + dt.timedelta(minutes=6))
    assert phases(done)[0] == ("Healthy", "Healthy")
    final = step_for(imagepatch({**status, **done.status}), dep=None, target=CRON)
    assert final.status["phase"] == "Succeeded"


def test_a_cronjob_that_starts_no_run_in_time_fails_its_gate_and_is_rolled_back() -> None:
    cj = cronjob("*/5 * * * *", NEW)
    status = {"phase": "RollingOut", "rollouts": [gating(CRON, cj), on(TEAM_A2, "Pending"),
                                                  on(TEAM_B, "Pending")]}
    # Due at 09:05, plus progressDeadlineSeconds (60 s): by 09:07 no run has started.
    late = step_for(imagepatch(status), dep=cj, target=CRON, now=T0 + dt.timedelta(minutes=7))
    assert phases(late) == [("RollingBack", "NoRunWithinBound"),
                            ("Skipped", "EarlierTargetFailed"), ("Pending", "")]
    assert "started no run" in late.status["rollouts"][0]["message"]


def test_a_cronjob_rolled_back_on_the_side_lets_the_rollout_go_on() -> None:
    back = cronjob("*/5 * * * *", OLD)
    status = {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [
        on(CRON, "RollingBack", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
           rollbackStartedAt=format_time(T0), reason="JobFailed", message="failed"),
        on(TEAM_B, "Gating", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0))]}
    assert on_the_side(imagepatch(status).status.rollouts[0])
    step = step_for(imagepatch(status), dep=back, target=CRON)
    assert phases(step)[0] == ("RolledBack", "JobFailed")
    assert step.again and step.status["phase"] == "RollingOut"


# --- onTargetFailure -------------------------------------------------------------------


def test_an_outside_change_stops_only_its_namespace_and_other_teams_go_on() -> None:
    dep_a = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [
        gating(TEAM_A, dep_a), on(TEAM_A2, "Pending"), on(TEAM_B, "Pending"),
        on(TEAM_C_LATER, "Pending")]}
    restarted = deployment(NEW, generation=3)
    restarted["spec"]["template"]["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/restartedAt": "2026-11-27T09:00:30Z"}
    step = step_for(imagepatch(status), dep=restarted, target=TEAM_A)
    assert phases(step) == [("Failed", "ExternalChange"), ("Skipped", "ExternalChange"),
                            ("Pending", ""), ("Pending", "")]
    assert step.status["phase"] == "RollingOut" and step.again
    assert "other targets go on" in step.status["conditions"][-1]["message"]
    assert "no other target in namespace team-a" in step.events[0].message
    # Team B's target starts next.
    nxt = step_for(imagepatch({**status, **step.status}), dep=deployment(OLD), target=TEAM_B)
    assert nxt.status["rollouts"][2]["phase"] == "Patching"


def test_with_stop_all_an_outside_change_stops_every_target_not_started() -> None:
    dep_a = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [gating(TEAM_A, dep_a), on(TEAM_B, "Pending")]}
    stop_all = policy(rollout={**GATE, "onTargetFailure": "StopAll"})
    changed = deployment(NEW, generation=3, env=[{"name": "X", "value": "1"}])
    step = step_for(imagepatch(status), pol=stop_all, dep=changed, target=TEAM_A)
    assert phases(step) == [("Failed", "ExternalChange"), ("Skipped", "ExternalChange")]
    assert step.status["phase"] == "Failed"
    message = step.status["history"][-1]["message"]
    assert message.startswith("team-a/web/app: the pod template was changed by someone else")
    assert "0 of 2 targets patched and healthy" in message
    assert "skipped (ExternalChange): team-b/web/app" in message
    assert step.status["rollouts"][1]["message"].startswith("stopped: team-a/web/app failed")
    assert "rollout stopped" in step.events[0].message


def test_a_failed_gate_stops_its_namespace_and_later_waves_but_not_its_wave() -> None:
    dep_a = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [
        gating(TEAM_A, dep_a), on(TEAM_A2, "Pending"), on(TEAM_B, "Pending"),
        on(TEAM_C_LATER, "Pending")]}
    crashing = deployment(NEW, generation=2)
    step = step_for(imagepatch(status), dep=crashing, pods=[pod(NEW, crash_restarts=3)],
                    target=TEAM_A)
    assert phases(step) == [("RollingBack", "CrashLoopBackOff"),
                            ("Skipped", "EarlierTargetFailed"), ("Pending", ""),
                            ("Skipped", "EarlierWaveFailed")]
    assert "in wave 0" in step.status["rollouts"][3]["message"]


def test_rollback_disabled_fails_the_target_and_the_other_teams_still_go_on() -> None:
    no_rollback = policy(rollout={**GATE, "rollback": False})
    dep_a = deployment(OLD)
    status = {"phase": "RollingOut", "rollouts": [gating(TEAM_A, dep_a), on(TEAM_B, "Pending")]}
    step = step_for(imagepatch(status), pol=no_rollback, dep=deployment(NEW, generation=2),
                    pods=[pod(NEW, crash_restarts=3)], target=TEAM_A)
    assert phases(step) == [("Failed", "CrashLoopBackOff"), ("Pending", "")]
    assert step.status["phase"] == "RollingOut"
    # When the rest is done, the patch ends Failed, stalled on the disabled rollback.
    done = {**status, **step.status}
    done["rollouts"][1] = on(TEAM_B, "Healthy", finishedAt=format_time(T0))
    final = step_for(imagepatch(done), pol=no_rollback, dep=None, target=TEAM_B)
    assert final.status["phase"] == "Failed"
    stalled = {c["type"]: c for c in final.status["conditions"]}["Stalled"]
    assert stalled["reason"] == "RollbackDisabled"
    assert "1 of 2 targets patched and healthy" in final.status["history"][-1]["message"]


def test_a_failed_rollback_ends_the_patch_only_after_the_others() -> None:
    back = deployment(OLD, generation=3)
    status = {"phase": "RollingOut", "failedDigests": [DIGEST], "rollouts": [
        on(TEAM_A, "RollingBack", previousImage=OLD, targetImage=NEW, startedAt=format_time(T0),
           rollbackStartedAt=format_time(T0), reason="CrashLoopBackOff"),
        on(TEAM_B, "Pending")]}
    step = step_for(imagepatch(status), dep=back, pods=[pod(OLD, crash_restarts=3)],
                    target=TEAM_A)
    assert phases(step) == [("Failed", "RollbackFailed"), ("Pending", "")]
    assert step.status["phase"] == "RollingOut"


# --- small pieces ----------------------------------------------------------------------


def test_outcome_summary_groups_by_reason_and_bounds_the_names() -> None:
    entries = [RolloutEntry(target=Target(namespace=f"ns{i}", name="w", container="c"),
                            phase=TargetPhase.SKIPPED, reason="EarlierWaveFailed")
               for i in range(7)]
    entries.append(RolloutEntry(target=TEAM_B, phase=TargetPhase.HEALTHY))
    text = outcome_summary(entries, lead=True)
    assert text.startswith("; 1 of 8 targets patched and healthy; skipped (EarlierWaveFailed): ")
    assert text.endswith("ns4/w/c and 2 more")
    assert outcome_summary(entries[-1:], lead=False) == ""


def test_stall_reason_and_next_in_line() -> None:
    failed = RolloutEntry(target=TEAM_A, phase=TargetPhase.FAILED, reason="CrashLoopBackOff")
    assert stall_reason(failed, Rollout(rollback=False)) == "RollbackDisabled"
    assert stall_reason(failed, Rollout()) == "CrashLoopBackOff"
    side = RolloutEntry(target=CRON, phase=TargetPhase.GATING)
    assert next_in_line([side, RolloutEntry(target=TEAM_B)]) == 1
    assert next_in_line([side]) is None


def test_next_cronjob_run_reads_macros_time_zones_and_says_when_it_cannot_tell() -> None:
    now = dt.datetime(2026, 12, 5, 17, 0, tzinfo=dt.UTC)
    berlin = cronjob("0 3 * * *")
    berlin["spec"]["timeZone"] = "Europe/Berlin"
    assert kinds.next_cronjob_run(berlin, now).at == dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)
    assert kinds.next_cronjob_run(cronjob("@hourly"), now).at == now
    never = kinds.next_cronjob_run(cronjob(NEVER), now)
    assert (never.at, never.known) == (None, True)
    unknown = kinds.next_cronjob_run(cronjob("@every 5m"), now)
    assert (unknown.at, unknown.known) == (None, False)
    bad_zone = cronjob("0 3 * * *")
    bad_zone["spec"]["timeZone"] = "Mars/Olympus"
    assert kinds.next_cronjob_run(bad_zone, now).known is False
    # Nothing is promised for a schedule it cannot read: the gate's bound decides.
    assert kinds.cronjob_run_too_far("CronJob", cronjob("@every 5m"), Rollout(), now) is None
    assert kinds.cronjob_run_too_far("Deployment", cronjob(NEVER), Rollout(), now) is None


def test_the_cronjob_gate_waits_for_an_unreadable_schedule_no_longer_than_its_bound() -> None:
    cj = cronjob("@every 5m", NEW)
    gate = Rollout(progress_deadline_seconds=60, cron_job_run_within=dt.timedelta(hours=1))

    def verdict(after: dt.timedelta) -> health.HealthVerdict:
        return kinds.assess_cronjob(cronjob=cj, jobs=(), target_images={"app": NEW}, gate=gate,
                                    started_at=T0, now=T0 + after)

    waiting = verdict(dt.timedelta(minutes=30))
    assert waiting.reason == health.HealthReason.AWAITING_RUN
    assert waiting.recheck_after == dt.timedelta(minutes=30)
    assert verdict(dt.timedelta(minutes=60, seconds=30)).state is health.HealthState.PROGRESSING
    late = verdict(dt.timedelta(minutes=61, seconds=1))
    assert (late.state, late.reason) == (health.HealthState.FAILED,
                                         health.HealthReason.NO_RUN_WITHIN_BOUND)


def test_a_patch_record_with_a_cronjob_on_the_side_parses_back() -> None:
    patch = parse_imagepatch({"metadata": {"name": "p", "generation": 1},
                              "spec": {"image": "r/a", "policy": "pol", "reason": "Manual"},
                              "status": {"rollouts": [on(CRON, "Gating")]}})
    assert on_the_side(patch.status.rollouts[0])


def test_a_container_held_by_another_patch_lets_the_free_targets_of_its_wave_go_first() -> None:
    # Given: team A's CronJob is held by an older patch (its gate awaits a run for hours).
    status = {"phase": "RollingOut", "rollouts": [
        on(CRON, "Pending"), on(TEAM_B, "Pending"), on(TEAM_C_LATER, "Pending")]}
    held = {CRON.key: "older-patch"}
    step = plan(patch=imagepatch(status), policy=policy(rollout=GATE), candidates=(),
                workload=Workload(target=CRON, deployment=cronjob("*/5 * * * *")),
                window=Window(), now=T0, held_by=held)
    # Then: it goes behind team B's Deployment (same wave), not behind the later wave.
    order = [(r["namespace"], r["name"], r.get("reason", "")) for r in step.status["rollouts"]]
    assert order == [("team-b", "web", ""), ("team-a", "report", "Conflict"),
                     ("team-c", "web", "")]
    assert step.again and step.action is None
    nxt = imagepatch({**status, **step.status})
    assert active_target(nxt) == TEAM_B
    # Back in line with no free target left in its wave, it waits for the holder.
    done_b = {**status, **step.status}
    done_b["rollouts"][0] = on(TEAM_B, "Healthy", finishedAt=format_time(T0))
    waits = plan(patch=imagepatch(done_b), policy=policy(rollout=GATE), candidates=(),
                 workload=Workload(target=CRON, deployment=cronjob("*/5 * * * *")),
                 window=Window(), now=T0, held_by=held)
    assert waits.requeue_after == 10.0  # CONFLICT_POLL
    assert [r["phase"] for r in waits.status["rollouts"]] == ["Healthy", "Pending", "Pending"]


def test_with_the_default_bound_a_weekly_cronjob_is_patched_and_a_monthly_one_is_not() -> None:
    # Given the defaults a user really has: no trial run, cronJobRunWithin 192h (8 days)
    now = dt.datetime(2026, 12, 5, 17, 0, tzinfo=dt.UTC)  # a Saturday
    weekly = cronjob("0 2 * * 0")  # Sundays 02:00: due in 9 hours
    sunday_just_gone = cronjob("0 16 * * 6")  # Saturdays 16:00: next run in 6 days 23 hours
    monthly = cronjob("0 2 1 * *")  # the 1st: 26 days away
    # Then both weekly schedules are patched (their next run verifies them) and the monthly is not
    assert kinds.cronjob_run_too_far("CronJob", weekly, Rollout(), now) is None
    assert kinds.cronjob_run_too_far("CronJob", sunday_just_gone, Rollout(), now) is None
    reason, message = kinds.cronjob_run_too_far("CronJob", monthly, Rollout(), now) or ("", "")
    assert reason == "CronJobRunTooFar" and "not within 192h" in message
