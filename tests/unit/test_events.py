"""EventBridge events on SQS become image signals: which image, and what happened to it.

The payloads follow AWS's own examples (ECR user guide, "Amazon ECR events and
EventBridge" and "EventBridge events sent for enhanced scanning"; Inspector
user guide, "EventBridge event schema"), with real-length digests in place of
the guides' truncated ``...EXAMPLE`` ones.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagepatch.core.events import (
    ImageSignal,
    MalformedEvent,
    ecr_registry_host,
    parse_event,
    parse_message,
)
from imagepatch.core.images import EcrRegistry, is_ecr_host, parse_image

D = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd12345678"
D2 = "sha256:36c7b282abd0186e01419f2e58743e1bf635808231049bbc9d77e5ab12345678"
ACCOUNT = "123456789012"
HOST_W2 = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
HOST_E2 = "123456789012.dkr.ecr.us-east-2.amazonaws.com"
AT = dt.datetime(2019, 11, 16, 1, 54, 34, tzinfo=dt.UTC)
AT2 = dt.datetime(2021, 12, 3, 18, 2, 30, tzinfo=dt.UTC)


def envelope(source: str, detail_type: str, detail: dict[str, Any], **extra: Any) -> dict:
    event = {
        "version": "0",
        "id": "13cde686-328b-6117-af20-0e5566167482",
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": "2019-11-16T01:54:34Z",
        "region": "us-west-2",
        "resources": [],
        "detail": detail,
    }
    event.update(extra)
    return event


def ecr_push(**detail: Any) -> dict:
    return envelope(
        "aws.ecr",
        "ECR Image Action",
        {
            "result": "SUCCESS",
            "repository-name": "my-repository-name",
            "image-digest": D,
            "action-type": "PUSH",
            "image-tag": "latest",
            **detail,
        },
    )


def ecr_scan(**detail: Any) -> dict:
    return envelope(
        "aws.ecr",
        "ECR Image Scan",
        {
            "scan-status": "COMPLETE",
            "repository-name": "my-repository-name",
            "finding-severity-counts": {"CRITICAL": 10, "MEDIUM": 9},
            "image-digest": D,
            "image-tags": [],
            **detail,
        },
        time="2019-10-29T02:36:48Z",
        resources=["arn:aws:ecr:us-west-2:123456789012:repository/my-repository-name"],
    )


def inspector_finding(*resources: dict, **detail: Any) -> dict:
    return envelope(
        "aws.inspector2",
        "Inspector2 Finding",
        {
            "awsAccountId": ACCOUNT,
            "description": "In libssh2 v1.9.0 and earlier versions, ...",
            "findingArn": "arn:aws:inspector2:us-east-2:123456789012:finding/be674aaddd0f75ac632055",
            "firstObservedAt": "Dec 3, 2021, 6:02:30 PM",
            "inspectorScore": 6.5,
            "lastObservedAt": "Dec 3, 2021, 6:02:30 PM",
            "packageVulnerabilityDetails": {
                "source": "REDHAT_CVE",
                "vulnerabilityId": "CVE-2019-17498",
                "vulnerablePackages": [
                    {"arch": "X86_64", "epoch": 0, "name": "libssh2", "packageManager": "OS",
                     "release": "12.amzn2.2", "version": "1.4.3"},
                ],
            },
            "remediation": {"recommendation": {"text": "Update all packages ..."}},
            "resources": list(resources) or [ecr_image_resource()],
            "severity": "MEDIUM",
            "status": "ACTIVE",
            "title": "CVE-2019-17498 - libssh2",
            "type": "PACKAGE_VULNERABILITY",
            "updatedAt": "Dec 3, 2021, 6:02:30 PM",
            **detail,
        },
        time="2021-12-03T18:02:30Z",
        region="us-east-2",
        resources=[f"arn:aws:ecr:us-east-2:123456789012:repository/amazon/amazon-ecs-sample/{D2}"],
    )


def ecr_image_resource(**image: Any) -> dict:
    return {
        "details": {
            "awsEcrContainerImage": {
                "architecture": "amd64",
                "imageHash": D2,
                "imageTags": ["latest"],
                "platform": "AMAZON_LINUX_2",
                "pushedAt": "Dec 3, 2021, 6:02:13 PM",
                "registry": ACCOUNT,
                "repositoryName": "amazon/amazon-ecs-sample",
                **image,
            }
        },
        "id": f"arn:aws:ecr:us-east-2:123456789012:repository/amazon/amazon-ecs-sample/{D2}",
        "partition": "N/A",
        "region": "N/A",
        "type": "AWS_ECR_CONTAINER_IMAGE",
    }


EC2_RESOURCE = {
    "details": {"awsEc2Instance": {"imageId": "ami-0b5eea76982371e91", "platform": "AMAZON_LINUX_2"}},
    "id": "i-0c2a343f1948d5205",
    "partition": "aws",
    "region": "us-east-1",
    "type": "AWS_EC2_INSTANCE",
}


def inspector_scan(**detail: Any) -> dict:
    return envelope(
        "aws.inspector2",
        "Inspector2 Scan",
        {
            "scan-status": "INITIAL_SCAN_COMPLETE",
            "repository-name": "arn:aws:ecr:us-east-2:123456789012:repository/amazon/amazon-ecs-sample",
            "finding-severity-counts": {"CRITICAL": 7, "HIGH": 61, "MEDIUM": 62, "TOTAL": 158},
            "image-digest": D2,
            "image-tags": ["latest"],
            **detail,
        },
        time="2021-12-03T18:03:16Z",
        region="us-east-2",
        resources=["arn:aws:ecr:us-east-2:123456789012:repository/amazon/amazon-ecs-sample"],
    )


def sig(kind, host, repo, digest, tag, at):
    return ImageSignal(kind=kind, registry_host=host, repository=repo, digest=digest, tag=tag, at=at)


SCAN_AT = dt.datetime(2019, 10, 29, 2, 36, 48, tzinfo=dt.UTC)
ISCAN_AT = dt.datetime(2021, 12, 3, 18, 3, 16, tzinfo=dt.UTC)
SAMPLE = "amazon/amazon-ecs-sample"


# -- events that name images ------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(ecr_push(), [sig("push", HOST_W2, "my-repository-name", D, "latest", AT)], id="ecr-push"),
        pytest.param(ecr_push(**{"image-tag": ""}), [sig("push", HOST_W2, "my-repository-name", D, None, AT)], id="ecr-push-by-digest-empty-tag"),
        pytest.param(ecr_push(**{"image-tag": None}), [sig("push", HOST_W2, "my-repository-name", D, None, AT)], id="ecr-push-by-digest-no-tag"),
        pytest.param(
            ecr_push(**{"repository-name": "team/payments-api", "image-tag": "v1.2.3",
                        "manifest-media-type": "application/vnd.oci.image.index.v1+json",
                        "artifact-media-type": "application/vnd.oci.image.config.v1+json"}),
            [sig("push", HOST_W2, "team/payments-api", D, "v1.2.3", AT)], id="ecr-push-index-nested-repo",
        ),
        pytest.param(ecr_scan(), [sig("scan", HOST_W2, "my-repository-name", D, None, SCAN_AT)], id="ecr-scan-untagged"),
        pytest.param(
            ecr_scan(**{"image-tags": ["3862", "latest", "3862"]}),
            [sig("scan", HOST_W2, "my-repository-name", D, "3862", SCAN_AT),
             sig("scan", HOST_W2, "my-repository-name", D, "latest", SCAN_AT)],
            id="ecr-scan-one-signal-per-tag-no-repeats",
        ),
        # A failed scan changes what the image's evaluation shows, so it is a signal too.
        pytest.param(ecr_scan(**{"scan-status": "FAILED"}), [sig("scan", HOST_W2, "my-repository-name", D, None, SCAN_AT)], id="ecr-scan-failed"),
        pytest.param(inspector_finding(), [sig("finding", HOST_E2, SAMPLE, D2, "latest", AT2)], id="inspector-finding-ecr"),
        # A closed finding can make the image compliant again: look again.
        pytest.param(inspector_finding(status="CLOSED"), [sig("finding", HOST_E2, SAMPLE, D2, "latest", AT2)], id="inspector-finding-closed"),
        pytest.param(
            inspector_finding(EC2_RESOURCE, ecr_image_resource(imageTags=[])),
            [sig("finding", HOST_E2, SAMPLE, D2, None, AT2)], id="inspector-finding-skips-non-ecr-resources",
        ),
        # A delegated administrator receives its members' findings: the image's
        # registry, not the envelope's account, names the host.
        pytest.param(
            inspector_finding(ecr_image_resource(registry="210987654321")),
            [sig("finding", "210987654321.dkr.ecr.us-east-2.amazonaws.com", SAMPLE, D2, "latest", AT2)],
            id="inspector-finding-member-account",
        ),
        # Inspector2 Scan names the repository by ARN, not by name.
        pytest.param(inspector_scan(), [sig("scan", HOST_E2, SAMPLE, D2, "latest", ISCAN_AT)], id="inspector-scan-arn"),
        pytest.param(inspector_scan(**{"repository-name": SAMPLE}), [sig("scan", HOST_E2, SAMPLE, D2, "latest", ISCAN_AT)], id="inspector-scan-plain-name"),
        pytest.param(
            inspector_scan(**{"repository-name": None}),
            [sig("scan", HOST_E2, SAMPLE, D2, "latest", ISCAN_AT)], id="inspector-scan-name-from-resources",
        ),
        pytest.param(
            inspector_scan(**{"repository-name": "arn:aws:ecr:eu-central-1:520666953574:repository/azure-agent",
                              "image-tags": ["latest", "5715"]}),
            [sig("scan", "520666953574.dkr.ecr.eu-central-1.amazonaws.com", "azure-agent", D2, "latest", ISCAN_AT),
             sig("scan", "520666953574.dkr.ecr.eu-central-1.amazonaws.com", "azure-agent", D2, "5715", ISCAN_AT)],
            id="inspector-scan-account-and-region-from-arn",
        ),
        pytest.param(
            envelope("aws.ecr", "ECR Image Action",
                     {"result": "SUCCESS", "repository-name": "base/python", "image-digest": D,
                      "action-type": "PUSH", "image-tag": "3.12-slim"},
                     region="cn-north-1", account="123456789012"),
            [sig("push", "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "base/python", D, "3.12-slim", AT)],
            id="china-partition-host",
        ),
    ],
)
def test_events_that_name_an_image_become_signals(event, expected):
    assert list(parse_message(json.dumps(event))) == expected


def test_a_signal_names_the_image_as_image_references_do():
    (signal,) = parse_message(json.dumps(ecr_push(**{"repository-name": "team/app"})))
    ref = parse_image(f"{HOST_W2}/team/app:latest@{D}")
    assert (signal.name, signal.registry_host, signal.tag, signal.digest) == (ref.name, ref.host, ref.tag, ref.digest)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "cn-northwest-1", "il-central-1"])
def test_every_host_made_here_is_recognised_as_ecr(region):
    # core/images.py routes ECR hosts to ECR credentials and scanning; a signal
    # for a host it did not recognise would never meet a workload.
    assert is_ecr_host(ecr_registry_host(ACCOUNT, region)) == EcrRegistry(ACCOUNT, region)


def test_an_sns_wrapped_event_is_unwrapped():
    body = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:image-events",
        "Message": json.dumps(ecr_push()),
        "Timestamp": "2019-11-16T01:54:35.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+..",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-0000.pem",
    }
    assert parse_message(json.dumps(body)) == (sig("push", HOST_W2, "my-repository-name", D, "latest", AT),)


def test_bytes_bodies_are_accepted():
    assert parse_message(json.dumps(ecr_push()).encode()) == parse_message(json.dumps(ecr_push()))


def test_event_time_is_utc_whatever_its_offset():
    (signal,) = parse_message(json.dumps(ecr_push() | {"time": "2019-11-16T03:54:34+02:00"}))
    assert signal.at == AT and signal.at.tzinfo == dt.UTC


def test_an_event_without_time_has_no_time():
    event = ecr_push()
    del event["time"]
    (signal,) = parse_event(event)
    assert signal.at is None


def test_signals_are_hashable_and_frozen():
    (signal,) = parse_event(ecr_push())
    assert {signal, copy.copy(signal)} == {signal}
    with pytest.raises(AttributeError):
        signal.digest = D2  # type: ignore[misc]


# -- well-formed events that name no image: () ------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(ecr_push(**{"action-type": "DELETE"}), id="ecr-delete"),
        pytest.param(ecr_push(result="FAILURE"), id="ecr-push-failure"),
        pytest.param(ecr_push(result="FAILED"), id="ecr-push-failed"),
        pytest.param(inspector_finding(EC2_RESOURCE), id="inspector-finding-ec2"),
        pytest.param(inspector_finding() | {"detail": {"resources": []}}, id="inspector-finding-no-resources"),
        pytest.param(inspector_scan(**{"repository-name": None}) | {"resources": ["arn:aws:lambda:us-east-2:123456789012:function:f"]}, id="inspector-scan-lambda"),
        pytest.param(envelope("aws.ecr", "ECR Pull Through Cache Action", {"sync-status": "SUCCESS", "ecr-repository-prefix": "docker-hub", "rule-version": "1"}), id="ecr-pull-through-cache"),
        pytest.param(envelope("aws.ecr", "ECR Replication Action", {"result": "SUCCESS", "repository-name": "r", "image-digest": D, "action-type": "REPLICATE"}), id="ecr-replication"),
        pytest.param(envelope("aws.ecr", "ECR Scan Resource Change", {"action-type": "SCAN_FREQUENCY_CHANGE", "repositories": []}), id="ecr-scan-frequency"),
        pytest.param(envelope("aws.inspector2", "Inspector2 Coverage", {"scanStatus": {"reason": "SUCCESSFUL", "statusCodeValue": "ACTIVE"}}), id="inspector-coverage"),
        pytest.param(envelope("aws.ec2", "EC2 Instance State-change Notification", {"instance-id": "i-1", "state": "running"}), id="other-service"),
        # An event of another source is not checked any further, even its detail.
        pytest.param(envelope("aws.s3", "Object Created", "not-an-object"), id="other-service-odd-detail"),
    ],
)
def test_valid_events_about_no_image_give_no_signals(event):
    assert parse_message(json.dumps(event)) == ()


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_sns_subscription_messages_give_no_signals(kind):
    body = {"Type": kind, "MessageId": "m", "Token": "2336412f37...", "TopicArn": "arn:aws:sns:us-west-2:123456789012:t",
            "Message": "You have chosen to subscribe to the topic ...", "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"}
    assert parse_message(json.dumps(body)) == ()


# -- garbage: MalformedEvent, saying what is wrong --------------------------------------


def _without(event: dict, key: str) -> dict:
    event = copy.deepcopy(event)
    del event["detail"][key]
    return event


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param("", "not JSON", id="empty"),
        pytest.param("hello", "not JSON", id="text"),
        pytest.param('{"source": "aws.ecr", ', "not JSON", id="truncated"),
        pytest.param(b"{\"source\": \"\xc3\x28\"}", "not UTF-8", id="not-utf8"),
        pytest.param("[1, 2]", "JSON list", id="list"),
        pytest.param('"aws.ecr"', "JSON str", id="string"),
        pytest.param("null", "JSON NoneType", id="null"),
        pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="deep"),
        pytest.param("x" * 300_000, "larger than an SQS message", id="huge"),
        pytest.param(json.dumps({"hello": "world"}), "no 'source'", id="not-an-event"),
        pytest.param(json.dumps({"source": "aws.ecr"}), "no 'detail-type'", id="no-detail-type"),
        pytest.param(json.dumps({"source": 3, "detail-type": "ECR Image Action"}), "no 'source'", id="source-not-string"),
        pytest.param(json.dumps(ecr_push() | {"detail": "PUSH"}), "no 'detail' object", id="detail-not-object"),
        pytest.param(json.dumps({k: v for k, v in ecr_push().items() if k != "detail"}), "no 'detail' object", id="no-detail"),
        pytest.param(json.dumps(_without(ecr_push(), "action-type")), "no 'detail.action-type'", id="push-no-action"),
        pytest.param(json.dumps(_without(ecr_push(), "result")), "no 'detail.result'", id="push-no-result"),
        pytest.param(json.dumps(_without(ecr_push(), "repository-name")), "no 'detail.repository-name'", id="push-no-repository"),
        pytest.param(json.dumps(ecr_push(**{"repository-name": "Upper/Case"})), "not an ECR repository name", id="push-bad-repository"),
        pytest.param(json.dumps(ecr_push(**{"repository-name": "../../etc"})), "not an ECR repository name", id="push-path-repository"),
        pytest.param(json.dumps(ecr_push(**{"image-tag": "has space"})), "invalid tag", id="push-bad-tag"),
        pytest.param(json.dumps(ecr_push(**{"image-tag": 7})), "invalid tag", id="push-tag-not-string"),
        pytest.param(json.dumps(ecr_push() | {"account": "1234"}), "not 12 digits", id="short-account"),
        pytest.param(json.dumps({k: v for k, v in ecr_push().items() if k != "account"}), "not 12 digits", id="no-account"),
        pytest.param(json.dumps(ecr_push() | {"region": "mars"}), "not a region", id="bad-region"),
        pytest.param(json.dumps(ecr_push() | {"region": "us-east-1.evil.com/x"}), "not a region", id="region-injection"),
        pytest.param(json.dumps(ecr_push() | {"time": "yesterday"}), "not an ISO 8601 time", id="bad-time"),
        pytest.param(json.dumps(ecr_push() | {"time": 1573869274}), "'time' is not a string", id="numeric-time"),
        pytest.param(json.dumps(_without(ecr_scan(), "scan-status")), "no 'detail.scan-status'", id="scan-no-status"),
        pytest.param(json.dumps(ecr_scan(**{"image-tags": "latest"})), "image-tags is not a list", id="scan-tags-not-list"),
        pytest.param(json.dumps(ecr_scan(**{"image-tags": ["ok", None]})), "invalid tag", id="scan-null-tag"),
        pytest.param(json.dumps(_without(inspector_finding(), "resources")), "no 'detail.resources' list", id="finding-no-resources"),
        pytest.param(json.dumps(inspector_finding("i-123")), "resources[0] is not an object", id="finding-resource-not-object"),
        pytest.param(json.dumps(inspector_finding({"type": "AWS_ECR_CONTAINER_IMAGE", "id": "arn:..."})), "without details.awsEcrContainerImage", id="finding-ecr-no-details"),
        pytest.param(json.dumps(inspector_finding(ecr_image_resource(repositoryName=""))), "repositoryName", id="finding-no-repository"),
        pytest.param(json.dumps(inspector_finding(ecr_image_resource(registry="me"))), "not 12 digits", id="finding-bad-registry"),
        pytest.param(json.dumps(inspector_scan(**{"repository-name": "arn:aws:s3:::bucket"})), "not an ECR repository ARN", id="iscan-not-ecr-arn"),
        pytest.param(json.dumps(inspector_scan(**{"repository-name": 5})), "not a string", id="iscan-name-not-string"),
        pytest.param(json.dumps({"Type": "Notification", "Message": {"source": "aws.ecr"}}), "no Message string", id="sns-message-not-string"),
        pytest.param(json.dumps({"Type": "Notification", "Message": "not json"}), "SNS Message is not JSON", id="sns-message-garbage"),
        pytest.param(json.dumps({"Type": "Notification", "Message": json.dumps([1])}), "JSON list", id="sns-message-list"),
    ],
)
def test_garbage_is_malformed_and_says_why(body, problem):
    with pytest.raises(MalformedEvent) as caught:
        parse_message(body)
    assert problem in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_a_malformed_reason_quotes_at_most_a_short_prefix_of_a_bad_value():
    secret_ish = "AKIA" + "X" * 200
    with pytest.raises(MalformedEvent) as caught:
        parse_message(json.dumps(ecr_push(**{"repository-name": secret_ish})))
    assert secret_ish not in caught.value.reason
    assert len(caught.value.reason) < 160


# The digest AWS's ECR user guide prints in its sample events ("Amazon ECR
# events and EventBridge"): 60 hex digits, a placeholder, not a sha256.
AWS_SAMPLE_DIGEST = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234"


@pytest.mark.parametrize(
    ("event", "kind", "tag"),
    [
        pytest.param(ecr_push(**{"image-digest": AWS_SAMPLE_DIGEST}), "push", "latest", id="push-aws-sample-digest"),
        pytest.param(ecr_push(**{"image-digest": "sha256:abc"}), "push", "latest", id="push-short-digest"),
        pytest.param(ecr_push(**{"image-digest": "md5:" + "a" * 32}), "push", "latest", id="push-md5"),
        pytest.param(_without(ecr_push(), "image-digest"), "push", "latest", id="push-no-digest"),
        pytest.param(ecr_push(**{"image-digest": 42}), "push", "latest", id="push-digest-not-string"),
        pytest.param(ecr_scan(**{"image-digest": AWS_SAMPLE_DIGEST, "image-tags": ["v1"]}), "scan", "v1", id="scan-aws-sample-digest"),
        pytest.param(inspector_finding(ecr_image_resource(imageHash="sha256:0000", imageTags=["v2"])), "finding", "v2", id="finding-bad-hash"),
        pytest.param(inspector_finding(ecr_image_resource(imageHash=None, imageTags=["v2"])), "finding", "v2", id="finding-no-hash"),
        pytest.param(_without(inspector_scan(**{"image-tags": ["v3"]}), "image-digest"), "scan", "v3", id="iscan-no-digest"),
    ],
)
def test_a_malformed_or_placeholder_digest_still_names_repository_and_tag(event, kind, tag):
    signals = parse_message(json.dumps(event))
    assert signals, "the event must not be dropped for its digest"
    assert {(s.kind, s.tag, s.digest) for s in signals} == {(kind, tag, None)}
    assert all(s.repository for s in signals)


# -- the folder of malformed SQS bodies (tests/data/sqs) -----------------------------------

_SQS = Path(__file__).resolve().parents[1] / "data" / "sqs"
_SQS_EXPECTED = yaml.safe_load((_SQS / "expected.yaml").read_text())


def test_every_sqs_body_in_the_folder_has_an_expected_outcome():
    assert {p.name for p in _SQS.iterdir() if p.name != "expected.yaml"} == set(_SQS_EXPECTED)


@pytest.mark.parametrize(("name", "expected"), sorted(_SQS_EXPECTED.items()), ids=sorted(_SQS_EXPECTED))
def test_sqs_bodies_from_the_folder_give_their_outcome(name, expected):
    body = (_SQS / name).read_bytes()
    if expected == "ignored":
        assert parse_message(body) == ()
    elif "malformed" in expected:
        with pytest.raises(MalformedEvent) as caught:
            parse_message(body)
        assert expected["malformed"] in caught.value.reason
    else:
        signals = parse_message(body)
        assert [[s.kind, s.repository, s.tag, s.digest] for s in signals] == expected["signals"]
