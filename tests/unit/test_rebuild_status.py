"""The typed rebuild record: parse and write back the same wire format, one reading of the
stage, one choice of strategy, and an idempotency key recorded once and read back.
"""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.core.rebuild import (
    BuildObservation,
    RebuildChoice,
    choice_for,
    choose_rebuild,
    normalise_rebuild_request,
    rebuild_request_problem,
    requested_rebuild,
)
from imagepatch.model.imagepatch import parse_status
from imagepatch.model.policy import parse_policy_spec
from imagepatch.model.rebuild_status import RebuildStage, RebuildStatus, VerificationStatus
from imagepatch.reconcile.rebuilds import build_request
from tests.unit.test_rebuild_plan import BUILT, KEY, NEW_BASE, REPO, imagepatch, merged, step

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)

FULL_REBUILD = {
    "strategy": "codebuild",
    "startedAt": "2026-11-27T08:00:00Z",
    "buildId": "app:1",
    "buildStatus": "SUCCEEDED",
    "logsUrl": "https://logs/app:1",
    "message": "built",
    "finishedAt": "2026-11-27T08:30:00Z",
    "digest": BUILT,
}
FULL_VERIFICATION = {
    "result": "Passed",
    "message": "base digest, platforms and findings verified",
    "baseDigest": NEW_BASE,
    "platforms": ["linux/amd64", "linux/arm64"],
    "findingsBefore": 3,
    "findingsAfter": 0,
    "checkedAt": "2026-11-27T08:31:00Z",
}


def test_a_recorded_rebuild_and_verification_round_trip_to_the_same_wire_format() -> None:
    assert RebuildStatus.parse(FULL_REBUILD).to_dict() == FULL_REBUILD
    assert VerificationStatus.parse(FULL_VERIFICATION).to_dict() == FULL_VERIFICATION
    assert RebuildStatus.parse(None).to_dict() == {}
    # Zero findings after is a result, not an absence.
    assert VerificationStatus.parse({"result": "Passed", "findingsAfter": 0}).findings_after == 0


def test_what_the_build_was_told_round_trips_too() -> None:
    told = {**FULL_REBUILD, "baseImage": f"registry.local/base@{NEW_BASE}",
            "tag": "1.4-patch.20261127.1", "revision": "9f1c2e7", "sourcePinned": True}
    assert RebuildStatus.parse(told).to_dict() == told
    branch = {**FULL_REBUILD, "sourcePinned": False, "sourceMessage": "no revision label"}
    parsed = RebuildStatus.parse(branch)
    assert (parsed.source_pinned, parsed.source_message) == (False, "no revision label")
    assert parsed.to_dict() == branch
    assert RebuildStatus.parse({**FULL_REBUILD, "sourcePinned": "yes"}).source_pinned is None


def test_fields_of_the_wrong_type_read_as_absent() -> None:
    rebuild = RebuildStatus.parse({"startedAt": 5, "buildId": ["b"], "digest": BUILT})
    assert (rebuild.started_at, rebuild.build_id, rebuild.digest) == ("", "", BUILT)
    verification = VerificationStatus.parse(
        {"result": "Passed", "platforms": ["linux/amd64", 7], "findingsBefore": True,
         "findingsAfter": "3"}
    )
    assert verification.platforms == ("linux/amd64",)
    assert (verification.findings_before, verification.findings_after) == (None, None)


@pytest.mark.parametrize(
    ("recorded", "stage"),
    [
        ({}, RebuildStage.NOT_STARTED),
        ({"strategy": "job", "startedAt": "2026-11-27T08:00:00Z"}, RebuildStage.STARTING),
        ({"startedAt": "2026-11-27T08:00:00Z", "buildId": "b-1"}, RebuildStage.RUNNING),
        (FULL_REBUILD, RebuildStage.FINISHED),
    ],
)
def test_the_stage_is_read_from_what_is_recorded(recorded: dict, stage: RebuildStage) -> None:
    assert RebuildStatus.parse(recorded).stage == stage


def test_the_verified_digest_is_the_rebuilds_only_once_verification_passed() -> None:
    passed = parse_status({"rebuild": FULL_REBUILD, "verification": FULL_VERIFICATION})
    assert passed.verified_digest == BUILT
    pending = parse_status(
        {"rebuild": FULL_REBUILD, "verification": {**FULL_VERIFICATION, "result": "Pending"}}
    )
    assert pending.verified_digest == ""


def test_the_status_to_dict_gives_back_what_the_planner_recorded() -> None:
    recorded = {
        "phase": "Verifying",
        "observedGeneration": 2,
        "targetDigest": "",
        "progress": "0/0",
        "rollouts": [],
        "failedDigests": [],
        "history": [{"phase": "Building", "at": "2026-11-27T08:00:00Z"}],
        "conditions": [],
        "idempotencyKey": f"{REPO}|{NEW_BASE}",
        "rebuild": FULL_REBUILD,
        "verification": FULL_VERIFICATION,
    }
    assert parse_status(recorded).to_dict() == {**recorded, "nextWindowStart": None}
    empty = parse_status(None).to_dict()
    assert (empty["rebuild"], empty["verification"], empty["nextWindowStart"]) == (None,) * 3


# --- the strategy, resolved once ------------------------------------------------------

CODEBUILD_POLICY = parse_policy_spec(
    {"namespaceSelector": {},
     "rebuild": {"strategy": "codebuild", "codebuild": {"project": "platform-build"},
                 "job": {"template": "build-template"}}}
).rebuild


@pytest.mark.parametrize(
    ("annotation", "spec"),
    [
        ("", {"strategy": "codebuild", "codebuildProject": "platform-build"}),
        ("codebuild:team-build", {"strategy": "codebuild", "codebuildProject": "team-build"}),
        # An empty project or template means the policy's own.
        ("codebuild", {"strategy": "codebuild", "codebuildProject": "platform-build"}),
        ("job:", {"strategy": "job", "jobTemplate": "build-template"}),
        ("job:team-template", {"strategy": "job", "jobTemplate": "team-template"}),
        ("external", {"strategy": "external"}),
        # Normalised once: whitespace around the value and its parts is dropped.
        ("  codebuild : team-build  ", {"strategy": "codebuild", "codebuildProject": "team-build"}),
        (" external ", {"strategy": "external"}),
        # Only spaces asks for nothing: the policy's own (detection reports it invalid).
        ("   ", {"strategy": "codebuild", "codebuildProject": "platform-build"}),
    ],
)
def test_a_workloads_annotation_is_chosen_over_the_policys_default(
    annotation: str, spec: dict
) -> None:
    requested = requested_rebuild(annotation) if annotation else {}
    assert choose_rebuild(CODEBUILD_POLICY, **requested).as_spec() == spec


def test_without_a_policy_only_the_request_counts() -> None:
    assert choose_rebuild(None) == RebuildChoice()
    assert choose_rebuild(None, strategy="rebase") == RebuildChoice(strategy="rebase")


def test_a_patchs_spec_rebuild_wins_and_its_build_request_uses_the_same_choice() -> None:
    pol = parse_policy_spec(
        {"namespaceSelector": {},
         "rebuild": {"strategy": "codebuild", "codebuild": {"project": "platform-build"}}}
    )
    patch = imagepatch(
        {"rebuild": {"strategy": "job", "startedAt": "2026-11-27T08:00:00Z"},
         "idempotencyKey": "recorded-key"},
        rebuild={"strategy": "job", "jobTemplate": "team-template"},
    )
    assert choice_for(patch, pol) == RebuildChoice(
        strategy="job", codebuild_project="platform-build", job_template="team-template"
    )
    request = build_request(patch, pol)
    assert (request.strategy, request.job_template, request.codebuild_project) == (
        "job", "team-template", "platform-build")
    # The key is read back from status, as recorded with the intent.
    assert request.key == "recorded-key"
    assert request.started_at == dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)


def test_the_idempotency_key_is_recorded_with_the_intent_and_never_recomputed() -> None:
    first = step()
    status = merged({}, first)
    assert status["idempotencyKey"] == KEY
    # A later step of the same rebuild keeps the recorded key, even were the inputs to change.
    status["idempotencyKey"] = "v2|as-recorded"
    started = step(status, build=BuildObservation(state="Started", build_id="b-1"))
    assert started.status["rebuild"]["buildId"] == "b-1"
    assert "idempotencyKey" not in started.status
    assert build_request(imagepatch(status), None).key == "v2|as-recorded"


@pytest.mark.parametrize(
    ("annotation", "normalised", "problem"),
    [
        ("codebuild:team-build", "codebuild:team-build", ""),
        (" codebuild : team-build ", "codebuild:team-build", ""),
        ("codebuild:", "codebuild", ""),
        ("external", "external", ""),
        ("   ", "", "is blank"),
        ("", "", "is blank"),
        ("job:team template", "job:team template", "whitespace inside a name"),
        ("codebuild:" + "p" * 600, "codebuild:" + "p" * 600, "at most 512 are admitted"),
        ("job:" + "t" * 254, "job:" + "t" * 254, "at most 253 are admitted"),
        # A strategy the policy does not know is a refusal (RebuildNotAllowed), not a problem.
        ("make", "make", ""),
    ],
)
def test_a_rebuild_request_is_normalised_once_and_a_value_no_patch_admits_is_a_problem(
    annotation: str, normalised: str, problem: str
) -> None:
    assert normalise_rebuild_request(annotation) == normalised
    found = rebuild_request_problem(annotation)
    assert (problem in found) if problem else found == ""
