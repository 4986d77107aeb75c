"""Rebuild and verification steps: intent first, one build per key, verify before rollout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagepatch.core.rebuild import (
    BuildObservation,
    RebuildChoice,
    Verification,
    idempotency_key,
    is_current_key,
    verify,
)
from imagepatch.core.rollout import Candidate, Window, plan
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.policy import parse_policy_spec

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
REPO = "registry.local/app"
CURRENT = "sha256:" + "c" * 64
OLD_BASE, NEW_BASE = "sha256:" + "1" * 64, "sha256:" + "2" * 64
BUILT = "sha256:" + "b" * 64
WEB = Target(namespace="shop", name="web", container="app")
KEY = idempotency_key(image=REPO, tag="1.4", current_digest=CURRENT, new_base_digest=NEW_BASE,
                      builder="external")  # the policy's default strategy


def policy(**spec: Any):
    return parse_policy_spec({"namespaceSelector": {}, **spec})


def imagepatch(status: dict | None = None, **spec: Any):
    body = {"metadata": {"name": "p1", "generation": 1},
            "spec": {"image": REPO, "policy": "pol", "reason": "BaseImageOutdated",
                     "currentDigest": CURRENT, "tag": "1.4",
                     "evidence": {"baseImage": {"name": "registry.local/base:3", "oldDigest": OLD_BASE,
                                                "newDigest": NEW_BASE}},
                     **spec},
            "status": status or {}}
    return parse_imagepatch(body)


def step(status: dict | None = None, *, pol=None, build=None, verification=None, **spec):
    return plan(patch=imagepatch(status, **spec), policy=pol or policy(), workload=None,
                candidates=(Candidate(namespace="shop", name="web", container="app",
                                      image=f"{REPO}:1.4", digest=CURRENT),),
                window=Window(), now=T0, build=build, verification=verification)


def merged(status: dict, s) -> dict:
    return {**status, **{k: v for k, v in s.status.items() if v is not None}}


def test_a_rebuild_goes_building_then_verifying_then_rolls_out_the_verified_digest() -> None:
    first = step()
    assert first.status["phase"] == "Building"
    assert first.status["idempotencyKey"] == KEY
    assert first.status["rebuild"] == {"strategy": "external", "startedAt": "2026-11-27T09:00:00Z"}
    status = merged({}, first)

    start = step(status)
    assert start.start_build and not start.status  # nothing new to record before starting

    started = step(status, build=BuildObservation(state="Started", build_id="b-1"))
    assert started.status["rebuild"]["buildId"] == "b-1"
    status = merged(status, started)

    running = step(status, build=BuildObservation(state="Running", build_id="b-1",
                                                  builder_status="IN_PROGRESS"))
    assert running.requeue_after and not running.start_build
    status = merged(status, running)

    done = step(status, build=BuildObservation(state="Succeeded", build_id="b-1", digest=BUILT,
                                               builder_status="SUCCEEDED"))
    assert done.status["phase"] == "Verifying"
    assert done.status["rebuild"]["digest"] == BUILT
    status = merged(status, done)

    passed = step(status, verification=Verification(result="Passed", message="ok",
                                                    base_digest=NEW_BASE))
    status = merged(status, passed)
    assert status["verification"]["result"] == "Passed"

    rolling = step(status)
    assert rolling.status["phase"] == "RollingOut"
    assert rolling.status["targetDigest"] == BUILT
    assert [r["name"] for r in rolling.status["rollouts"]] == ["web"]


def test_a_restart_between_starting_and_recording_starts_again_with_the_same_key() -> None:
    status = {"phase": "Building", "idempotencyKey": KEY,
              "rebuild": {"strategy": "job", "startedAt": "2026-11-27T08:59:00Z"}}
    again = step(status)
    assert again.start_build  # the builder is idempotent on the key: same build comes back
    assert again.status.get("idempotencyKey", KEY) == KEY


def test_a_v02_key_of_a_build_not_started_yet_is_replaced_before_the_builder_is_asked() -> None:
    # v0.2 recorded "<image>|<base digest>": app:1 and app:2 on one base shared it.
    status = {"phase": "Building", "idempotencyKey": f"{REPO}|{NEW_BASE}",
              "rebuild": {"strategy": "job", "startedAt": "2026-11-27T08:59:00Z"}}
    rekeyed = step(status)
    assert not rekeyed.start_build  # the new key is recorded first
    assert rekeyed.status["idempotencyKey"] == KEY and rekeyed.again
    assert rekeyed.status["phase"] == "Building"
    assert step(merged(status, rekeyed)).start_build


def test_a_v02_key_of_a_build_already_recorded_is_kept_it_names_that_build() -> None:
    status = {"phase": "Building", "idempotencyKey": f"{REPO}|{NEW_BASE}",
              "rebuild": {"strategy": "job", "startedAt": "2026-11-27T08:59:00Z",
                          "buildId": "imagepatch-build-0123456789"}}
    polled = step(status, build=BuildObservation(state="Running", build_id="b-1"))
    assert "idempotencyKey" not in polled.status and not polled.start_build


def test_the_key_names_repository_tag_source_digest_target_base_digest_and_builder() -> None:
    assert KEY == f"v2|{REPO}:1.4|{CURRENT}|{NEW_BASE}|external"
    assert is_current_key(KEY) and not is_current_key(f"{REPO}|{NEW_BASE}")
    keys = {
        idempotency_key(image=REPO, tag=tag, current_digest=current, new_base_digest=base)
        for tag in ("1", "2")
        for current in (CURRENT, BUILT)
        for base in (OLD_BASE, NEW_BASE)
    }
    assert len(keys) == 8  # two tags of one repository on one base are two builds
    # Unknown parts are spelled out, and no tag is the build request's "latest".
    assert idempotency_key(image=REPO, tag="", current_digest="", new_base_digest="") == (
        f"v2|{REPO}:latest|-|-|-")


def test_two_rebuild_requests_for_one_image_are_two_builds() -> None:
    # Two teams' patches of one image asking for two Job templates never share a build.
    pol = policy(rebuild={"strategy": "codebuild", "codebuild": {"project": "platform"}})
    keys = {
        spec_rebuild.get("jobTemplate") or spec_rebuild.get("codebuildProject") or "default":
            step(pol=pol, rebuild=spec_rebuild).status["idempotencyKey"]
        for spec_rebuild in ({"strategy": "job", "jobTemplate": "team-a"},
                             {"strategy": "job", "jobTemplate": "team-b"},
                             {"strategy": "codebuild", "codebuildProject": "team-c"},
                             {"strategy": "codebuild"})
    }
    assert {k: v.rsplit("|", 1)[1] for k, v in keys.items()} == {
        "team-a": "job:team-a", "team-b": "job:team-b", "team-c": "codebuild:team-c",
        "default": "codebuild:platform"}
    assert RebuildChoice(strategy="rebase").builder == "rebase"
    assert RebuildChoice(strategy="job").builder == "job"  # no template named anywhere


def test_a_failed_build_fails_the_patch_with_the_builders_status() -> None:
    status = {"phase": "Building", "rebuild": {"strategy": "codebuild", "startedAt": "x", "buildId": "b-9"}}
    failed = step(status, build=BuildObservation(state="Failed", build_id="b-9", reason="BuildFailed",
                                                 builder_status="FAILED", message="BUILD: exit 2"))
    assert failed.status["phase"] == "Failed"
    assert failed.status["rebuild"]["buildStatus"] == "FAILED"
    stalled = {c["type"]: c for c in failed.status["conditions"]}["Stalled"]
    assert stalled["reason"] == "BuildFailed" and "exit 2" in stalled["message"]


def test_a_refused_verification_fails_and_remembers_the_digest() -> None:
    status = {"phase": "Verifying", "rebuild": {"strategy": "external", "startedAt": "x",
                                                "buildId": "e", "finishedAt": "y", "digest": BUILT}}
    refused = step(status, verification=Verification(result="Failed", message="no better by findings"))
    assert refused.status["phase"] == "Failed"
    assert refused.status["failedDigests"] == [BUILT]
    assert {c["type"]: c for c in refused.status["conditions"]}["Stalled"]["reason"] == "VerificationFailed"


def test_manual_approval_comes_before_any_build() -> None:
    waiting = step(pol=policy(approval="Manual"))
    assert waiting.status["phase"] == "AwaitingApproval"
    assert "rebuild" not in waiting.status and not waiting.start_build


BASE_ARGS = dict(target_base_digest=NEW_BASE, target_base_platforms=frozenset(),
                 recorded_base_digest=NEW_BASE, old_platforms=frozenset(), new_platforms=frozenset(),
                 comparison_accepted=None)


@pytest.mark.parametrize(("overrides", "result", "words"), [
    ({}, "Passed", "verified"),
    ({"recorded_base_digest": OLD_BASE}, "Failed", "not on the target base"),
    ({"recorded_base_digest": "sha256:" + "a" * 64,
      "target_base_platforms": frozenset({"sha256:" + "a" * 64})}, "Passed", "verified"),
    ({"recorded_base_digest": ""}, "Failed", "records no base"),
    ({"old_platforms": frozenset({"linux/amd64", "linux/arm64"}),
      "new_platforms": frozenset({"linux/amd64"})}, "Failed", "platforms changed"),
    ({"scan_pending": True}, "Pending", "waiting for the scan"),
    ({"scan_pending": True, "waited": dt.timedelta(hours=1)}, "Failed", "did not finish"),
    ({"comparison_accepted": False, "comparison_reason": "2 over the baseline before, 2 after"},
     "Failed", "2 after"),
    ({"comparison_accepted": True, "findings_before": 3, "findings_after": 0}, "Passed", "findings"),
    ({"comparison_accepted": True, "comparison_reason": "fixed CVE-B1; still present: CVE-APP"},
     "Passed", "(fixed CVE-B1; still present: CVE-APP)"),
    ({"recorded_base_digest": "", "base_told": "r.example/base@" + NEW_BASE}, "Failed",
     "layers do not start with those of r.example/base@" + NEW_BASE),
], ids=["same-base", "old-base", "index-platform", "no-base", "platforms", "scan-pending",
        "scan-timeout", "no-better", "better", "better-says-why", "no-base-nor-its-layers"])
def test_verification(overrides, result, words) -> None:
    verdict = verify(**{**BASE_ARGS, **overrides})
    assert verdict.result == result
    assert words in verdict.message


def test_the_findings_that_made_the_patch_are_read_from_its_evidence() -> None:
    recorded = imagepatch(evidence={"findings": [{"id": "CVE-APP", "severity": "HIGH"},
                                                 {"id": "CVE-B1"}, {"severity": "LOW"}]})
    assert recorded.evidence_findings == ("CVE-APP", "CVE-B1")
    # No record (a human's patch, an older operator's): verification falls back to the scan.
    assert imagepatch().evidence_findings is None


def test_the_rollout_writes_the_tag_the_rebuild_was_pushed_under_with_its_digest() -> None:
    from imagepatch.core.rollout.targets import pinned_image, pushed_tag

    verified = {"rebuild": {"digest": BUILT, "tag": "1.4-patch.20261127.1"},
                "verification": {"result": "Passed"}}
    patch = imagepatch(verified)
    assert pushed_tag(patch, BUILT) == "1.4-patch.20261127.1"
    assert pinned_image(f"{REPO}:1.4", REPO, BUILT, pushed_tag(patch, BUILT)) == (
        f"{REPO}:1.4-patch.20261127.1@{BUILT}")
    # tagPolicy Overwrite (the tag recorded is the running one), or an older record: as it was.
    assert pinned_image(f"{REPO}:1.4", REPO, BUILT, pushed_tag(imagepatch(
        {"rebuild": {"digest": BUILT}, "verification": {"result": "Passed"}}), BUILT)) == (
        f"{REPO}:1.4@{BUILT}")
    # A human's pinned digest is not the rebuild: the running tag stays readable.
    pinned = imagepatch(verified, targetDigest="sha256:" + "d" * 64)
    assert pushed_tag(pinned, "sha256:" + "d" * 64) == ""
    assert pinned_image(f"{REPO}@{CURRENT}", REPO, BUILT) == f"{REPO}@{BUILT}"
