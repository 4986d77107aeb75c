"""The SQS event consumer against moto in server mode: EventBridge → SQS → image signals.

Given an SQS queue that an EventBridge rule (``source: aws.ecr,
aws.inspector2``) targets, when ECR and Inspector2 events are put on the bus,
then the consumer hands their image signals to the callback and deletes the
messages; malformed messages are dropped without stopping it; a failing
callback gets its message again after the visibility timeout; receive errors
are classified, logged once and outlived; and a stop ends it within one poll.

What came from where:

* **moto, natively:** the queue, the rule, ``put_events`` and its delivery to
  the queue, long polling, visibility timeouts and redelivery, batch delete,
  ``QueueDoesNotExist``. moto's ECR emits no events, so the tests put the
  events ECR and Inspector2 would send (shapes from AWS's user guides)
  themselves, under their ``aws.*`` sources, which real EventBridge refuses
  from a customer and moto accepts.
* **moto's gap, worked around:** moto's default target input leaves the
  envelope's ``account`` out (real EventBridge delivers the whole event), and
  the registry host cannot be named without it. The rule's target therefore
  uses the input transformer ``<aws.events.event.json>``, EventBridge's own
  variable for the whole, unchanged event, which behaves the same on AWS.
* **botocore's Stubber on the consumer's real client:** AccessDenied, KMS,
  expired credentials, throttling and 5xx, which moto (without IAM or KMS
  enforcement) cannot produce.
* **a closed port:** an unreachable endpoint.

The latency from ``put_events`` to the callback is a benchmark:
``tests/bench/test_event_latency.py`` (``make bench``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from imagepatch.adapters.errors import ConfigurationError, NotFoundError, TransientError
from imagepatch.adapters.events import EVENT_QUEUE_NOT_FOUND, SqsEventSource
from imagepatch.core.events import ImageSignal
from tests.support.moto import DUMMY_CREDENTIALS
from tests.support.ports import free_port

AT = dt.datetime(2026, 11, 27, 9, 30, 15, tzinfo=dt.UTC)
LOGGER = "imagepatch.adapters.events"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


D1, D2, D3 = digest_of("app v1"), digest_of("app v2"), digest_of("base v7")


# -- events, as ECR and Inspector2 put them on the bus ----------------------------------


def push_entry(repository: str, digest: str, tag: str | None = "latest", *, action: str = "PUSH") -> dict:
    detail = {"result": "SUCCESS", "repository-name": repository, "image-digest": digest,
              "action-type": action, "image-tag": tag,
              "manifest-media-type": "application/vnd.oci.image.manifest.v1+json"}
    return {"Source": "aws.ecr", "DetailType": "ECR Image Action", "Detail": json.dumps(detail), "Time": AT}


def ecr_scan_entry(aws, repository: str, digest: str, tags: list[str]) -> dict:
    detail = {"scan-status": "COMPLETE", "repository-name": repository, "image-digest": digest,
              "image-tags": tags, "finding-severity-counts": {"HIGH": 3, "MEDIUM": 14}}
    return {"Source": "aws.ecr", "DetailType": "ECR Image Scan", "Detail": json.dumps(detail), "Time": AT,
            "Resources": [f"arn:aws:ecr:{aws.region}:{aws.account_id}:repository/{repository}"]}


def inspector_finding_entry(aws, repository: str, digest: str, tags: list[str]) -> dict:
    image_arn = f"arn:aws:ecr:{aws.region}:{aws.account_id}:repository/{repository}/{digest}"
    detail = {
        "awsAccountId": aws.account_id,
        "findingArn": f"arn:aws:inspector2:{aws.region}:{aws.account_id}:finding/0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2024-6387", "source": "DEBIAN_CVE",
                                        "vulnerablePackages": [{"name": "openssh-client", "version": "9.2p1",
                                                                "release": "2+deb12u2", "fixedInVersion": "1:9.2p1-2+deb12u3"}]},
        "resources": [{"details": {"awsEcrContainerImage": {"architecture": "amd64", "imageHash": digest,
                                                             "imageTags": tags, "platform": "DEBIAN_12",
                                                             "registry": aws.account_id, "repositoryName": repository}},
                       "id": image_arn, "partition": "N/A", "region": "N/A", "type": "AWS_ECR_CONTAINER_IMAGE"}],
        "severity": "HIGH", "status": "ACTIVE", "title": "CVE-2024-6387 - openssh-client",
        "type": "PACKAGE_VULNERABILITY", "fixAvailable": "YES",
    }
    return {"Source": "aws.inspector2", "DetailType": "Inspector2 Finding", "Detail": json.dumps(detail),
            "Time": AT, "Resources": [image_arn]}


def inspector_scan_entry(aws, repository: str, digest: str, tags: list[str]) -> dict:
    repo_arn = f"arn:aws:ecr:{aws.region}:{aws.account_id}:repository/{repository}"
    detail = {"scan-status": "INITIAL_SCAN_COMPLETE", "repository-name": repo_arn, "image-digest": digest,
              "image-tags": tags, "finding-severity-counts": {"CRITICAL": 0, "HIGH": 1, "TOTAL": 1}}
    return {"Source": "aws.inspector2", "DetailType": "Inspector2 Scan", "Detail": json.dumps(detail),
            "Time": AT, "Resources": [repo_arn]}


def host(aws) -> str:
    return f"{aws.account_id}.dkr.ecr.{aws.region}.amazonaws.com"


# -- the queue and the rule --------------------------------------------------------------


class Bus:
    """An SQS queue, and an EventBridge rule on the default bus that targets it."""

    def __init__(self, aws, *, name: str = "imagepatch-events", visibility_timeout: int = 30) -> None:
        self.aws = aws
        self.sqs = aws.client("sqs")
        self.events = aws.client("events")
        self.queue_url = self.sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)}
        )["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        rule_arn = self.events.put_rule(
            Name=f"{name}-rule",
            EventPattern=json.dumps({"source": ["aws.ecr", "aws.inspector2"]}),
        )["RuleArn"]
        # What AWS requires for EventBridge to send to a queue (moto does not check it).
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}}]}
        self.sqs.set_queue_attributes(QueueUrl=self.queue_url, Attributes={"Policy": json.dumps(policy)})
        self.events.put_targets(Rule=f"{name}-rule", Targets=[{
            "Id": "queue", "Arn": queue_arn,
            # The whole event, unchanged: works around moto leaving "account" out.
            "InputTransformer": {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"},
        }])

    def put(self, *entries: dict) -> None:
        response = self.events.put_events(Entries=list(entries))
        assert response["FailedEntryCount"] == 0, response

    def send_raw(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def counts(self) -> tuple[int, int]:
        """(visible, in flight) messages on the queue."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def make_source(aws, queue_url: str, **kwargs: Any) -> SqsEventSource:
    kwargs.setdefault("wait_seconds", 1)  # a stop waits for at most one poll
    return SqsEventSource(
        queue_url,
        region=aws.region,
        endpoint_url=kwargs.pop("endpoint_url", aws.endpoint_url),
        session=boto3.Session(**DUMMY_CREDENTIALS, region_name=aws.region),
        **kwargs,
    )


class Recorder:
    """An ``on_signals`` callback that records each batch and when it came."""

    def __init__(self, *, fail_times: int = 0) -> None:
        self.batches: list[tuple[ImageSignal, ...]] = []
        self.arrivals: list[tuple[float, ImageSignal]] = []
        self.calls = 0
        self._fail_times = fail_times

    async def __call__(self, signals: tuple[ImageSignal, ...]) -> None:
        self.calls += 1
        now = time.monotonic()
        if self.calls <= self._fail_times:
            raise RuntimeError("reconciler queue is full")
        self.batches.append(signals)
        self.arrivals.extend((now, s) for s in signals)

    @property
    def signals(self) -> list[ImageSignal]:
        return [s for batch in self.batches for s in batch]


async def run_until(
    source: SqsEventSource,
    on_signals,
    done: Callable[[], bool],
    *,
    timeout: float = 15.0,
    during: Callable[[], Any] | None = None,
) -> float:
    """Run the consumer until ``done()``; then stop it, and return how long the stop took."""
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(on_signals, stop=stop))
    try:
        if during is not None:
            await asyncio.to_thread(during)
        deadline = time.monotonic() + timeout
        while not done():
            assert not task.done(), f"the consumer ended early: {task.exception()!r}"
            assert time.monotonic() < deadline, "timed out waiting for the consumer"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, timeout=source.wait_seconds + 10)
    return time.monotonic() - started


# -- delivery ------------------------------------------------------------------------------


def test_ecr_and_inspector_events_reach_the_callback_and_the_queue_ends_empty(aws):
    bus = Bus(aws)
    bus.put(
        push_entry("team/payments-api", D1, "v1.4.2"),
        ecr_scan_entry(aws, "team/payments-api", D1, ["v1.4.2", "latest"]),
        inspector_finding_entry(aws, "team/payments-api", D2, ["v1.5.0"]),
        inspector_scan_entry(aws, "base/python", D3, []),
        # Well-formed, matched by the rule, and about no image: deleted without a call.
        push_entry("team/payments-api", D1, "old", action="DELETE"),
    )
    source = make_source(aws, bus.queue_url)
    recorder = Recorder()

    asyncio.run(run_until(source, recorder, lambda: source.received == 5))

    h = host(aws)
    assert set(recorder.signals) == {
        ImageSignal("push", h, "team/payments-api", D1, "v1.4.2", AT),
        ImageSignal("scan", h, "team/payments-api", D1, "v1.4.2", AT),
        ImageSignal("scan", h, "team/payments-api", D1, "latest", AT),
        ImageSignal("finding", h, "team/payments-api", D2, "v1.5.0", AT),
        ImageSignal("scan", h, "base/python", D3, None, AT),
    }
    assert (source.received, source.handled, source.ignored, source.dropped_malformed, source.errors) == (5, 4, 1, 0, 0)
    assert bus.counts() == (0, 0)


# -- malformed messages --------------------------------------------------------------------


def test_a_malformed_message_is_dropped_and_the_consumer_keeps_consuming(aws, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bus = Bus(aws)
    bus.send_raw("this is not an event " + "x" * 500)
    bus.put(push_entry("team/web", D1, "v1"))
    source = make_source(aws, bus.queue_url)
    recorder = Recorder()

    def then_more() -> None:
        # Wait until the first pair is dealt with, then send another pair.
        deadline = time.monotonic() + 10
        while source.received < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        bus.send_raw(json.dumps({"source": "aws.ecr", "detail-type": "ECR Image Action",
                                 "account": aws.account_id, "region": aws.region, "detail": {"action-type": "PUSH"}}))
        bus.put(push_entry("team/web", D2, "v2"))

    asyncio.run(run_until(source, recorder, lambda: len(recorder.signals) == 2, during=then_more))

    h = host(aws)
    assert recorder.signals == [ImageSignal("push", h, "team/web", D1, "v1", AT),
                                ImageSignal("push", h, "team/web", D2, "v2", AT)]
    assert (source.dropped_malformed, source.handled, source.errors) == (2, 2, 0)
    assert bus.counts() == (0, 0)
    drops = [r.getMessage() for r in caplog.records if "Dropping malformed" in r.getMessage()]
    assert len(drops) == 2
    assert "message body is not JSON" in drops[0]
    assert "x" * 200 not in drops[0]  # the body is shown truncated
    assert "ReceiptHandle" not in drops[0] and "no 'detail.result'" in drops[1]


# -- redelivery ----------------------------------------------------------------------------


def test_a_failing_callback_leaves_the_message_to_be_redelivered_and_handled(aws, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bus = Bus(aws)
    bus.put(inspector_finding_entry(aws, "team/web", D1, ["v1"]))
    # A 1 s visibility timeout makes the failed message come back quickly.
    source = make_source(aws, bus.queue_url, visibility_timeout=1)
    recorder = Recorder(fail_times=1)

    asyncio.run(run_until(source, recorder, lambda: recorder.signals != []))

    assert recorder.calls == 2
    assert recorder.signals == [ImageSignal("finding", host(aws), "team/web", D1, "v1", AT)]
    assert (source.received, source.handled, source.errors) == (2, 1, 1)
    assert bus.counts() == (0, 0)
    (failure,) = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert "RuntimeError: reconciler queue is full" in failure and "redelivered (receive counts 1)" in failure


# -- stopping ------------------------------------------------------------------------------


def test_stop_ends_the_consumer_within_one_poll_and_releases_what_it_brought_back(aws):
    bus = Bus(aws, visibility_timeout=30)
    source = make_source(aws, bus.queue_url, wait_seconds=2)
    recorder = Recorder()
    polling = threading.Event()
    # Mark when a receive is on the wire, so the stop lands inside a long poll.
    source.sqs.meta.events.register("before-send.sqs.ReceiveMessage", lambda **_: polling.set())

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(recorder, stop=stop))
        await asyncio.to_thread(polling.wait, 10)
        await asyncio.sleep(0.2)
        stop.set()
        started = time.monotonic()
        # Arrives while the poll is still open: the poll returns it after the stop.
        await asyncio.to_thread(bus.put, push_entry("team/web", D1, "v1"))
        await asyncio.wait_for(task, timeout=10)
        return time.monotonic() - started

    took = asyncio.run(scenario())

    assert took < source.wait_seconds + 5  # within about one poll
    assert recorder.calls == 0 and source.polls == 1
    # Released, not left hidden for the queue's 30 s visibility timeout.
    again = bus.sqs.receive_message(QueueUrl=bus.queue_url, WaitTimeSeconds=1).get("Messages", [])
    assert len(again) == 1 and json.loads(again[0]["Body"])["detail"]["image-digest"] == D1


def test_an_idle_consumer_stops_within_one_poll(aws):
    bus = Bus(aws)
    source = make_source(aws, bus.queue_url, wait_seconds=1)
    took = asyncio.run(run_until(source, Recorder(), lambda: source.polls >= 2))
    assert took < source.wait_seconds + 5  # within about one poll


# -- receive errors ------------------------------------------------------------------------


def test_a_missing_queue_is_logged_once_outlived_and_recovered_from(aws, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    queue_url = f"{aws.endpoint_url}/{aws.account_id}/created-later"
    source = make_source(aws, queue_url, configuration_backoff=0.1)
    recorder = Recorder()
    seen: dict[str, Any] = {}

    def create_the_queue_after_a_while() -> None:
        deadline = time.monotonic() + 10
        while source.errors < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["error"] = source.last_error
        bus = Bus(aws, name="created-later")
        assert bus.queue_url == queue_url
        bus.put(push_entry("team/web", D1, "v1"))

    asyncio.run(run_until(source, recorder, lambda: len(recorder.signals) == 1, during=create_the_queue_after_a_while))

    error = seen["error"]
    assert isinstance(error, NotFoundError) and error.reason == EVENT_QUEUE_NOT_FOUND
    assert "'created-later' does not exist" in str(error)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and EVENT_QUEUE_NOT_FOUND in errors[0].getMessage()
    assert any("again after" in r.getMessage() for r in caplog.records)
    assert source.last_error is None and source.errors >= 4


def test_an_unreachable_endpoint_is_transient_and_backs_off(aws, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    dead = f"http://127.0.0.1:{free_port()}"
    source = make_source(aws, f"{dead}/{aws.account_id}/q", endpoint_url=dead, max_attempts=1,
                         transient_backoff_max=0.2)

    took = asyncio.run(run_until(source, Recorder(), lambda: source.errors >= 4))

    assert isinstance(source.last_error, TransientError) and source.last_error.reason == "AwsUnavailable"
    assert "could not be completed (EndpointConnectionError)" in str(source.last_error)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # once per distinct error, not once per attempt
    assert took < 5  # promptly, not after the backoff


@pytest.mark.parametrize(
    ("code", "status", "kind", "reason"),
    [
        ("AccessDenied", 403, ConfigurationError, "AwsAccessDenied"),
        ("KMS.AccessDeniedException", 400, ConfigurationError, "AwsAccessDenied"),
        ("InvalidClientTokenId", 403, ConfigurationError, "AwsCredentialsInvalid"),
        ("ExpiredToken", 403, ConfigurationError, "AwsCredentialsExpired"),
        ("RequestThrottled", 400, TransientError, "AwsThrottled"),
        ("OverLimit", 403, TransientError, "AwsThrottled"),
        ("InternalError", 500, TransientError, "AwsUnavailable"),
        ("InvalidParameterValue", 400, ConfigurationError, "AwsRequestRejected"),
    ],
)
def test_receive_errors_are_classified_without_quoting_aws(aws, code, status, kind, reason):
    source = make_source(aws, f"{aws.endpoint_url}/{aws.account_id}/q", transient_backoff_max=60,
                         configuration_backoff=60)
    stubber = Stubber(source.sqs)
    for _ in range(3):
        stubber.add_client_error(
            "receive_message", service_error_code=code, http_status_code=status,
            service_message="User: arn:aws:sts::123456789012:assumed-role/prod-secret-role/i-0abc is not authorized",
        )
    with stubber:
        took = asyncio.run(run_until(source, Recorder(), lambda: source.last_error is not None))

    error = source.last_error
    assert type(error) is kind and error.reason == reason
    assert code in str(error) and "prod-secret-role" not in str(error)
    assert source.errors == 1 and took < 5  # a stop cuts the backoff short


def test_an_unexpected_receive_failure_is_outlived_with_its_traceback_logged_once(aws, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bus = Bus(aws)
    bus.put(push_entry("team/web", D1, "v1"))
    source = make_source(aws, bus.queue_url, transient_backoff_max=0.2)
    raised = []

    def break_twice(**_: Any) -> None:
        # An exception from an event hook reaches the caller unwrapped, like a
        # bug or an exception botocore does not know.
        if len(raised) < 2:
            raised.append(1)
            raise RuntimeError("boom")

    source.sqs.meta.events.register("before-send.sqs.ReceiveMessage", break_twice)
    recorder = Recorder()

    asyncio.run(run_until(source, recorder, lambda: recorder.signals != []))

    assert recorder.signals == [ImageSignal("push", host(aws), "team/web", D1, "v1", AT)]
    assert source.errors == 2 and source.last_error is None
    (logged,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "failed unexpectedly (RuntimeError)" in logged.getMessage() and logged.exc_info
