"""``core.rebuild.plan_rebuild`` step by step: each recorded state and build observation.

A table of (recorded rebuild status, what the builder said this pass) and the
one step it gives: the phase, what is recorded, and whether a build starts.
The planner-level flow is in test_rebuild_plan.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.core.rebuild import (
    BUILD_POLL,
    VERIFY_POLL,
    BuildObservation,
    Verification,
    plan_rebuild,
)

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
BUILT = "sha256:" + "b" * 64
STARTED = {"strategy": "job", "startedAt": "2026-11-27T08:00:00Z"}
RUNNING = {**STARTED, "buildId": "b-1", "buildStatus": "Started"}
FINISHED = {**RUNNING, "finishedAt": "2026-11-27T08:30:00Z", "digest": BUILT}


def step(rebuild=None, *, strategy="job", build=None, verification=None):
    recorded = {"rebuild": rebuild} if rebuild else {}
    return plan_rebuild(recorded=recorded, key="k", strategy=strategy, build=build,
                        verification=verification, now=T0)


def test_no_strategy_stalls_with_a_hint() -> None:
    s = step(strategy="")
    assert (s.phase, s.stalled) == ("Failed", "RebuildNotConfigured")
    assert "spec.targetDigest" in s.message


def test_intent_is_recorded_before_the_build_starts() -> None:
    s = step()
    assert s.phase == "Building" and s.again and not s.start_build
    assert s.fields["idempotencyKey"] == "k"
    assert s.fields["rebuild"]["startedAt"] == "2026-11-27T09:00:00Z"


def test_recorded_intent_starts_the_build() -> None:
    assert step(STARTED).start_build


def test_a_started_build_records_its_id_and_logs() -> None:
    s = step(STARTED, build=BuildObservation(state="Started", build_id="b-1",
                                             logs_url="https://logs/b-1"))
    assert s.fields["rebuild"]["buildId"] == "b-1"
    assert s.fields["rebuild"]["logsUrl"] == "https://logs/b-1"
    assert s.fields["rebuild"]["buildStatus"] == "Started"


def test_a_started_build_records_the_base_it_was_told_to_use() -> None:
    told = "r.example/base@sha256:" + "c" * 64
    s = step(STARTED, build=BuildObservation(state="Started", build_id="b-1", base_image=told))
    assert s.fields["rebuild"]["baseImage"] == told
    assert "baseImage" not in step(STARTED, build=BuildObservation(
        state="Started", build_id="b-1")).fields["rebuild"]


def test_a_started_build_records_the_source_revision_or_that_it_builds_its_branch() -> None:
    pinned = step(STARTED, build=BuildObservation(state="Started", build_id="b-1",
                                                  revision="9f1c2e7", tag="1.4-patch.20261129.1"))
    assert pinned.fields["rebuild"]["revision"] == "9f1c2e7"
    assert pinned.fields["rebuild"]["sourcePinned"] is True
    assert pinned.fields["rebuild"]["tag"] == "1.4-patch.20261129.1"
    branch = step(STARTED, build=BuildObservation(state="Started", build_id="b-1",
                                                  source_not_pinned="app@sha256:… has no label"))
    assert branch.fields["rebuild"]["sourcePinned"] is False
    assert branch.fields["rebuild"]["sourceMessage"] == "app@sha256:… has no label"
    assert "revision" not in branch.fields["rebuild"]


def test_a_build_that_fails_to_start_fails_the_patch() -> None:
    s = step(STARTED, build=BuildObservation(state="Failed", reason="BuildRejected",
                                             message="no such project", build_id="b-0",
                                             logs_url="https://logs/b-0"))
    assert (s.phase, s.stalled) == ("Failed", "BuildRejected")
    assert s.fields["rebuild"]["buildId"] == "b-0"
    assert s.fields["rebuild"]["logsUrl"] == "https://logs/b-0"


@pytest.mark.parametrize("build", [
    None, BuildObservation(state="Running", builder_status="IN_PROGRESS",
                           logs_url="https://logs/b-1", message="step 3/7")])
def test_a_running_build_is_polled(build) -> None:
    s = step(RUNNING, build=build)
    assert (s.phase, s.requeue_after) == ("Building", BUILD_POLL)
    if build is not None:
        assert s.fields["rebuild"]["buildStatus"] == "IN_PROGRESS"
        assert s.fields["rebuild"]["message"] == "step 3/7"


def test_a_failed_build_records_why() -> None:
    s = step(RUNNING, build=BuildObservation(state="Failed", builder_status="FAILED",
                                             reason="BuildFailed"))
    assert (s.phase, s.stalled) == ("Failed", "BuildFailed")
    assert s.fields["rebuild"]["finishedAt"] == "2026-11-27T09:00:00Z"


def test_a_finished_build_goes_to_verification() -> None:
    s = step(RUNNING, build=BuildObservation(state="Succeeded", digest=BUILT,
                                             logs_url="https://logs/b-1"))
    assert s.phase == "Verifying" and s.again
    assert s.fields["rebuild"]["digest"] == BUILT
    assert s.fields["rebuild"]["logsUrl"] == "https://logs/b-1"


def test_verification_not_yet_observed_waits() -> None:
    s = step(FINISHED)
    assert (s.phase, s.requeue_after) == ("Verifying", VERIFY_POLL)


def test_pending_verification_records_and_waits() -> None:
    s = step(FINISHED, verification=Verification(result="Pending", message="scan running"))
    assert s.requeue_after == VERIFY_POLL
    assert s.fields["verification"]["result"] == "Pending"


def test_failed_verification_remembers_the_digest() -> None:
    s = step(FINISHED, verification=Verification(result="Failed", message="more findings",
                                                 findings_before=3, findings_after=5))
    assert (s.phase, s.stalled, s.failed_digest) == ("Failed", "VerificationFailed", BUILT)
    assert s.fields["verification"]["findingsAfter"] == 5


def test_passed_verification_moves_on() -> None:
    s = step(FINISHED, verification=Verification(result="Passed", message="ok",
                                                 platforms=("linux/amd64",)))
    assert s.again and s.fields["verification"]["platforms"] == ["linux/amd64"]


# -- schedules: the AWS day-of-week forms (core.schedule) ----------------------------

@pytest.mark.parametrize(("source", "expression"), [
    ("cron(0 2 ? * 2-6/2 *)", "0 2 * * 1-5/2 0 *"),
    ("cron(0 2 ? * */2 *)", "0 2 * * */2 0 *"),
    ("cron(0 2 ? * MON,3 *)", "0 2 * * MON,2 0 *"),
])
def test_aws_day_of_week_ranges_steps_and_lists(source, expression) -> None:
    from imagepatch.core.schedule import to_croniter

    assert to_croniter(source) == expression


@pytest.mark.parametrize("source", ["cron(0 2 ? * 8 *)", "cron(0 2 ? * FUNDAY *)"])
def test_aws_day_of_week_out_of_range_is_refused(source) -> None:
    from imagepatch.core.schedule import ScheduleError, to_croniter

    with pytest.raises(ScheduleError, match="day-of-week"):
        to_croniter(source)
