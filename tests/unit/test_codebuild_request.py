"""What CodeBuild's StartBuild is asked, on the wire, checked with botocore's Stubber.

The build gets the new tag to push (``spec.rebuild.tagPolicy: New``) and the
source revision the running image records, as ``sourceVersion`` and as
variables its buildspec reads.
"""

from __future__ import annotations

import asyncio

import boto3
from botocore.stub import Stubber

from imagepatch.adapters.builders import BuildRequest
from imagepatch.adapters.builders.codebuild import CodeBuildBuilder, idempotency_token

APP = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments-api"
BASE = "public.ecr.aws/docker/library/python"
BASE_DIGEST = "sha256:" + "b" * 64
REVISION = "9f1c2e7d4b5a69788f0e1d2c3b4a59687f6e5d4c"


def request(**kw) -> BuildRequest:
    return BuildRequest(
        key=f"{APP}|{BASE_DIGEST}", strategy="codebuild", image=APP, tag="1.4",
        current_digest="sha256:" + "a" * 64, base_name=f"{BASE}:3.12", base_digest=BASE_DIGEST,
        codebuild_project="payments-api", **kw,
    )  # fmt: skip


def start_with_stubber(req: BuildRequest, expected: dict) -> str:
    client = boto3.client(
        "codebuild", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",  # noqa: S106 - the Stubber sends nothing
    )  # fmt: skip
    builder = CodeBuildBuilder(registry=None, region="eu-west-1")  # type: ignore[arg-type]
    builder._client = client  # the Stubber answers; nothing leaves the process
    with Stubber(client) as stub:
        # The project's last build ran for another key: no build of this key runs yet.
        stub.add_response(
            "list_builds_for_project", {"ids": ["payments-api:0000"]},
            {"projectName": "payments-api", "sortOrder": "DESCENDING"},
        )  # fmt: skip
        stub.add_response(
            "batch_get_builds",
            {"builds": [{"id": "payments-api:0000", "environment": {
                "type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                "computeType": "BUILD_GENERAL1_SMALL",
                "environmentVariables": env(IMAGEPATCH_KEY=f"{APP}|sha256:" + "0" * 64)}}]},
            {"ids": ["payments-api:0000"]},
        )  # fmt: skip
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
        "idempotencyToken": idempotency_token(req.key),
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
        "idempotencyToken": idempotency_token(req.key),
        "environmentVariablesOverride": env(
            BASE_IMAGE=f"{BASE}@{BASE_DIGEST}",
            TARGET_IMAGE=f"{APP}:1.4",
            IMAGE_TAG="1.4",
            IMAGEPATCH_KEY=req.key,
            SOURCE_REVISION="",
        ),
    }
    assert start_with_stubber(req, expected) == "payments-api:0001"
