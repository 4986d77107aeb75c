"""What CodeBuild's StartBuild is asked, on the wire, checked with botocore's Stubber.

The build gets the new tag to push (``spec.rebuild.tagPolicy: New``) and the
source revision the running image records, as ``sourceVersion`` and as
variables its buildspec reads. A build that exists already is adopted only
when it ran for the same key, target and tag: two tags of one repository on
one base are two builds, and one's exported digest never goes to the other.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import boto3
from botocore.stub import Stubber

from imagepatch.adapters.builders import BuildRequest, BuildState
from imagepatch.adapters.builders.codebuild import CodeBuildBuilder, idempotency_token
from imagepatch.core.rebuild import idempotency_key

APP = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments-api"
BASE = "public.ecr.aws/docker/library/python"
BASE_DIGEST = "sha256:" + "b" * 64
REVISION = "9f1c2e7d4b5a69788f0e1d2c3b4a59687f6e5d4c"
CURRENT = {"1.4": "sha256:" + "a" * 64, "1.5": "sha256:" + "c" * 64}
DAY = "20261129"


def request(tag: str = "1.4", **kw) -> BuildRequest:
    return BuildRequest(
        key=idempotency_key(image=APP, tag=tag, current_digest=CURRENT[tag],
                            new_base_digest=BASE_DIGEST),
        strategy="codebuild", image=APP, tag=tag,
        current_digest=CURRENT[tag], base_name=f"{BASE}:3.12", base_digest=BASE_DIGEST,
        codebuild_project="payments-api", **kw,
    )  # fmt: skip


def stubbed_builder() -> tuple[CodeBuildBuilder, object]:
    client = boto3.client(
        "codebuild", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",  # noqa: S106 - the Stubber sends nothing
    )  # fmt: skip
    builder = CodeBuildBuilder(registry=None, region="eu-west-1")  # type: ignore[arg-type]
    builder._client = client  # the Stubber answers; nothing leaves the process
    return builder, client


def a_build(build_id: str, status: str = "IN_PROGRESS", **variables: str) -> dict:
    return {"id": build_id, "buildStatus": status, "environment": {
        "type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
        "computeType": "BUILD_GENERAL1_SMALL", "environmentVariables": env(**variables)}}


def recorded_by(req: BuildRequest) -> dict[str, str]:
    """The variables a build started for ``req`` runs with (those that identify it)."""
    return {"IMAGEPATCH_KEY": req.key, "TARGET_IMAGE": req.target, "IMAGE_TAG": req.push_to}


def start_with_stubber(req: BuildRequest, expected: dict | None, *, recent: list[dict] | None = None) -> str:
    """``start`` against a project whose recent builds are ``recent`` (default: one of
    another key); ``expected`` is the StartBuild call, or None when none may be made."""
    builder, client = stubbed_builder()
    if recent is None:
        recent = [a_build("payments-api:0000", IMAGEPATCH_KEY=f"{APP}|sha256:" + "0" * 64)]
    ids = [b["id"] for b in recent]
    with Stubber(client) as stub:
        stub.add_response(
            "list_builds_for_project", {"ids": ids},
            {"projectName": "payments-api", "sortOrder": "DESCENDING"},
        )  # fmt: skip
        stub.add_response("batch_get_builds", {"builds": recent}, {"ids": ids})
        if expected is not None:
            stub.add_response("start_build", {"build": {"id": "payments-api:0001"}}, expected)
        build_id = asyncio.run(builder.start(req))
        stub.assert_no_pending_responses()
    return build_id


def env(**values: str) -> list[dict]:
    return [{"name": k, "value": v, "type": "PLAINTEXT"} for k, v in values.items()]


def test_start_build_carries_the_new_tag_and_the_running_source_revision():
    req = request(push_tag="1.4-patch.20261129.1", revision=REVISION)
    expected = {
        "projectName": "payments-api",
        "idempotencyToken": idempotency_token(req.key, req.target),
        "sourceVersion": REVISION,
        "environmentVariablesOverride": env(
            BASE_IMAGE=f"{BASE}@{BASE_DIGEST}",
            TARGET_IMAGE=f"{APP}:1.4-patch.20261129.1",
            IMAGE_TAG="1.4-patch.20261129.1",
            IMAGEPATCH_KEY=req.key,
            SOURCE_REVISION=REVISION,
        ),
    }
    assert start_with_stubber(req, expected) == "payments-api:0001"


def test_without_a_revision_the_project_builds_its_branch_and_overwrite_keeps_the_tag():
    req = request()  # tagPolicy Overwrite: no push tag; the image records no revision
    expected = {
        "projectName": "payments-api",
        "idempotencyToken": idempotency_token(req.key, req.target),
        "environmentVariablesOverride": env(
            BASE_IMAGE=f"{BASE}@{BASE_DIGEST}",
            TARGET_IMAGE=f"{APP}:1.4",
            IMAGE_TAG="1.4",
            IMAGEPATCH_KEY=req.key,
            SOURCE_REVISION="",
        ),
    }
    assert start_with_stubber(req, expected) == "payments-api:0001"


def test_the_build_of_another_tag_on_the_same_base_is_not_adopted() -> None:
    # payments-api:1.4 and :1.5 run on one base, which moved; 1.4's build runs.
    one_four = request("1.4", push_tag=f"1.4-patch.{DAY}.1")
    one_five = request("1.5", push_tag=f"1.5-patch.{DAY}.1")
    assert one_four.key != one_five.key
    assert idempotency_token(one_four.key, one_four.target) != idempotency_token(
        one_five.key, one_five.target)
    recent = [a_build("payments-api:0000", **recorded_by(one_four))]
    expected = {
        "projectName": "payments-api",
        "idempotencyToken": idempotency_token(one_five.key, one_five.target),
        "environmentVariablesOverride": env(
            BASE_IMAGE=f"{BASE}@{BASE_DIGEST}", TARGET_IMAGE=f"{APP}:1.5-patch.{DAY}.1",
            IMAGE_TAG=f"1.5-patch.{DAY}.1", IMAGEPATCH_KEY=one_five.key, SOURCE_REVISION="",
        ),
    }  # fmt: skip
    assert start_with_stubber(one_five, expected, recent=recent) == "payments-api:0001"


def test_a_v02_build_with_the_shared_key_is_not_adopted_by_another_tag() -> None:
    # v0.2's key was "<image>|<base digest>", the same for both tags; the target tells them apart.
    shared = f"{APP}|{BASE_DIGEST}"
    one_four = request("1.4", push_tag=f"1.4-patch.{DAY}.1")
    one_five = replace(request("1.5", push_tag=f"1.5-patch.{DAY}.1"), key=shared)
    recent = [a_build("payments-api:0000", **{**recorded_by(one_four), "IMAGEPATCH_KEY": shared})]
    expected = {
        "projectName": "payments-api",
        "idempotencyToken": idempotency_token(shared, one_five.target),
        "environmentVariablesOverride": env(
            BASE_IMAGE=f"{BASE}@{BASE_DIGEST}", TARGET_IMAGE=f"{APP}:1.5-patch.{DAY}.1",
            IMAGE_TAG=f"1.5-patch.{DAY}.1", IMAGEPATCH_KEY=shared, SOURCE_REVISION="",
        ),
    }  # fmt: skip
    assert start_with_stubber(one_five, expected, recent=recent) == "payments-api:0001"


def test_the_build_of_the_same_key_target_and_tag_is_adopted_without_a_start() -> None:
    req = request("1.4", push_tag=f"1.4-patch.{DAY}.1")
    other = request("1.5", push_tag=f"1.5-patch.{DAY}.1")
    recent = [
        a_build("payments-api:0003", **recorded_by(other)),  # newer, another tag's
        a_build("payments-api:0002", **{**recorded_by(req), "TARGET_IMAGE": f"{APP}:elsewhere"}),
        a_build("payments-api:0001", **recorded_by(req)),
    ]
    assert start_with_stubber(req, None, recent=recent) == "payments-api:0001"


def poll_with_stubber(req: BuildRequest, build: dict):
    builder, client = stubbed_builder()
    with Stubber(client) as stub:
        stub.add_response("batch_get_builds", {"builds": [build]}, {"ids": [build["id"]]})
        status = asyncio.run(builder.poll(build["id"], req))
        stub.assert_no_pending_responses()
    return status


def test_a_recorded_build_of_another_tag_is_not_rolled_out() -> None:
    # A v0.2 patch for 1.5 recorded 1.4's build (their keys were one): its digest is not taken.
    one_four = request("1.4", push_tag=f"1.4-patch.{DAY}.1")
    one_five = request("1.5", push_tag=f"1.5-patch.{DAY}.1")
    build = {**a_build("payments-api:0000", "SUCCEEDED", **recorded_by(one_four)),
             "exportedEnvironmentVariables": [{"name": "IMAGE_DIGEST", "value": "sha256:" + "e" * 64}]}
    status = poll_with_stubber(one_five, build)
    assert status.state is BuildState.FAILED and status.reason == "BuildMismatch"
    assert not status.digest
    assert "IMAGEPATCH_KEY, IMAGE_TAG, TARGET_IMAGE differ" in status.message


def test_a_recorded_build_that_records_no_variables_is_followed() -> None:
    # Nothing says it ran for something else (moto, for one, drops the overrides).
    req = request("1.4", push_tag=f"1.4-patch.{DAY}.1")
    status = poll_with_stubber(req, a_build("payments-api:0001", "IN_PROGRESS"))
    assert status.state is BuildState.RUNNING
