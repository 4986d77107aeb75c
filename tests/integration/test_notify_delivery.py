"""Notification delivery against real receivers: a local HTTP server, SNS (moto), the API server.

The notifier (``adapters/notify``) reads a real ImagePatchPolicy and real
Secrets from the API server, posts to a real HTTP receiver (Slack, Teams and
Webhook sinks, the Webhook's HMAC checked here as a receiver would), and
publishes to an SNS topic on moto whose message is read back through an SQS
subscription. A sink that answers 500 is retried and then recorded in the
policy's status as NotificationsDegraded, naming the sink but no URL or
token; its next success clears it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator

import boto3
import pytest

from imagepatch.adapters.kube import Kube
from imagepatch.adapters.notify import Notifier, RetrySettings, Senders
from imagepatch.core import notify
from imagepatch.reconcile import refresh_policy
from tests.support.moto import DUMMY_CREDENTIALS
from tests.support.receiver import Receiver

pytestmark = pytest.mark.cluster

TOKEN = "hmac-key-" + "s" * 16
FAST = RetrySettings(attempts=3, timeout=10.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0)
AT = "2026-12-05T12:00:00Z"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver.start()
    yield server
    server.stop()


@pytest.fixture
def namespace(kube) -> Iterator[str]:
    name = f"notify-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def secret(kube, namespace: str, name: str, **data: str) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}))


def policy(kube, name: str, sinks: list[dict]) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
        "metadata": {"name": name}, "spec": {"namespaceSelector": {}, "notifications": sinks}}))


def status_of(kube, name: str) -> dict:
    return json.loads(kube.kubectl("get", "imagepatchpolicy", name, "-o", "json")).get("status") or {}


def note(reason: str = "Patched", key: str = "") -> notify.Notification:
    change = notify.Change(kind="Deployment", namespace="team-a", name="web", container="app",
                           old="registry.local/app:1.4@sha256:" + "a" * 64,
                           new="registry.local/app:1.4@sha256:" + "b" * 64, outcome="Healthy")
    return notify.Notification(
        key=key or f"imagepatch/app-{uuid.uuid4().hex[:6]}/{reason}", reason=reason,
        severity="info", title="Patched: registry.local/app:1.4", summary="1 of 1 targets",
        policy="p", at=AT, patch="app-1", image="registry.local/app:1.4",
        patch_reason="BaseImageOutdated", changes=(change,), findings_label="Findings fixed",
        findings=("CVE-2026-1111",))


@pytest.fixture
def sns(aws, monkeypatch) -> Iterator[tuple[str, object]]:
    """An SNS topic on moto, and an SQS queue subscribed to it (to read messages back)."""
    for key, value in aws.env().items():
        monkeypatch.setenv(key, value)
    topic = aws.client("sns").create_topic(Name=f"patches-{uuid.uuid4().hex[:6]}")["TopicArn"]
    sqs = aws.client("sqs")
    queue = sqs.create_queue(QueueName=f"sub-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    yield topic, (sqs, queue)


def notifier(kube, namespace: str, *, queue_size: int = 16) -> Notifier:
    api = Kube(kube.api_client)
    session = boto3.Session(**DUMMY_CREDENTIALS)
    return Notifier(kube=api, senders=Senders(api, namespace, session=session),
                    on_status=lambda name: refresh_policy(api, name), retry=FAST,
                    queue_size=queue_size)


def test_each_sink_type_gets_its_payload(kube, crds, namespace, receiver, sns) -> None:
    topic, (sqs, queue) = sns
    name = f"notify-{uuid.uuid4().hex[:6]}"
    secret(kube, namespace, "slack", address=receiver.url("/slack"))
    secret(kube, namespace, "teams", address=receiver.url("/teams"))
    secret(kube, namespace, "hook", address=receiver.url("/hook"), token=TOKEN)
    policy(kube, name, [
        {"name": "slack", "type": "Slack", "secretRef": {"name": "slack"}},
        {"name": "teams", "type": "MSTeams", "secretRef": {"name": "teams"}},
        {"name": "hook", "type": "Webhook", "secretRef": {"name": "hook"}},
        {"name": "sns", "type": "SNS", "topicArn": topic},
        {"name": "failures-only", "type": "Webhook", "secretRef": {"name": "hook"},
         "reasons": ["Failed"]},
    ])
    sent = note()

    async def scenario() -> None:
        n = notifier(kube, namespace)
        await n.deliver(name, sent)
        await n.aclose()

    asyncio.run(scenario())

    [slack] = receiver.at("/slack")
    assert slack.headers["content-type"] == "application/json"
    assert slack.json() == notify.slack_payload(sent)
    [teams] = receiver.at("/teams")
    assert teams.json() == notify.teams_payload(sent)
    assert teams.json()["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    # Only the sink that wants Patched: one request, signed as Flux's generic-hmac.
    [hook] = receiver.at("/hook")
    expected = "sha256=" + hmac.new(TOKEN.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-signature"] == expected
    assert hook.json() == sent.as_document()
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    envelope = json.loads(messages[0]["Body"])
    assert envelope["Subject"] == "imagepatch: Patched: registry.local/app:1.4"
    assert json.loads(envelope["Message"]) == sent.as_document()
    status = status_of(kube, name)
    assert not (status.get("notifications") or {}).get("failing")


def test_a_failing_sink_is_retried_then_shown_and_cleared(kube, crds, namespace, receiver) -> None:
    name = f"notify-{uuid.uuid4().hex[:6]}"
    secret(kube, namespace, "broken", address=receiver.url("/broken?token=do-not-show"))
    secret(kube, namespace, "gone", address=receiver.url("/gone"))
    secret(kube, namespace, "unsigned", address=receiver.url("/unsigned"))
    receiver.answer("/broken?token=do-not-show", 500)
    receiver.answer("/gone", 404)
    policy(kube, name, [
        {"name": "broken", "type": "Slack", "secretRef": {"name": "broken"}},
        {"name": "gone", "type": "MSTeams", "secretRef": {"name": "gone"}},
        {"name": "unsigned", "type": "Webhook", "secretRef": {"name": "unsigned"}},
        {"name": "missing", "type": "Slack", "secretRef": {"name": "no-such-secret"}},
    ])

    async def deliver(*notes: notify.Notification) -> None:
        n = notifier(kube, namespace)
        for one in notes:
            await n.deliver(name, one)
        await n.aclose()

    asyncio.run(deliver(note()))

    # 500: retried (3 attempts in all); 404: refused at once, not retried.
    assert len(receiver.at("/broken?token=do-not-show")) == FAST.attempts
    assert len(receiver.at("/gone")) == 1
    assert receiver.at("/unsigned") == []  # a Webhook sink without its HMAC key sends nothing
    status = status_of(kube, name)
    failing = {f["sink"]: f for f in status["notifications"]["failing"]}
    assert {k: f["reason"] for k, f in failing.items()} == {
        "broken": "NotificationUnavailable", "gone": "NotificationRejected",
        "unsigned": "NotificationSecretUnusable", "missing": "NotificationSecretUnusable"}
    assert failing["broken"]["message"] == "Slack sink 'broken' answered HTTP 500"
    assert "no key 'token'" in failing["unsigned"]["message"]
    assert f"Secret {namespace}/no-such-secret not found" == failing["missing"]["message"]
    condition = {c["type"]: c for c in status["conditions"]}["NotificationsDegraded"]
    assert condition["status"] == "True" and condition["reason"] == "NotificationFailed"
    shown = json.dumps(status)
    assert "do-not-show" not in shown and "127.0.0.1" not in shown

    # The receivers recover: the next delivery clears them.
    receiver.answer("/broken?token=do-not-show", 200)
    receiver.answer("/gone", 202)
    secret(kube, namespace, "unsigned", address=receiver.url("/unsigned"), token=TOKEN)
    secret(kube, namespace, "no-such-secret", address=receiver.url("/late"))
    asyncio.run(deliver(note()))
    status = status_of(kube, name)
    assert status["notifications"]["failing"] == []
    condition = {c["type"]: c for c in status["conditions"]}["NotificationsDegraded"]
    assert (condition["status"], condition["reason"]) == ("False", "NotificationsDelivered")


def test_submit_deduplicates_and_bounds_the_queue_and_workers_deliver(
        kube, crds, namespace, receiver) -> None:
    name = f"notify-{uuid.uuid4().hex[:6]}"
    secret(kube, namespace, "hook", address=receiver.url("/q"), token=TOKEN)
    policy(kube, name, [{"name": "hook", "type": "Webhook", "secretRef": {"name": "hook"}}])
    first, second, third = note(key="k1"), note(key="k2"), note(key="k3")

    async def scenario() -> tuple[list[bool], int]:
        n = notifier(kube, namespace, queue_size=2)
        n.observe_policy("ADDED", json.loads(kube.kubectl("get", "imagepatchpolicy", name, "-o", "json")))
        accepted = [n.submit(name, first), n.submit(name, first), n.submit(name, second),
                    n.submit(name, third), n.submit(name, None),
                    n.submit(name, note("BaseImageOutdated", key="k4"))]  # no sink asks for it
        stop = asyncio.Event()
        task = asyncio.create_task(n.run(stop))
        await asyncio.wait_for(n.queue.join(), timeout=30)
        stop.set()
        await task
        await n.aclose()
        return accepted, n.queue.qsize()

    accepted, left = asyncio.run(scenario())
    # The repeat is dropped, so is the one that found the queue (of 2) full, and the one no sink wants.
    assert accepted == [True, False, True, False, False, False]
    assert left == 0
    assert sorted(r.json()["id"] for r in receiver.at("/q")) == ["k1", "k2"]


def test_each_refusal_names_its_problem_and_a_429_is_retried(kube, crds, namespace, receiver, aws,
                                                             monkeypatch) -> None:
    for key, value in aws.env().items():
        monkeypatch.setenv(key, value)
    name = f"notify-{uuid.uuid4().hex[:6]}"
    secret(kube, namespace, "ftp", address="ftp://example.com/hook")
    secret(kube, namespace, "binary", address="")
    kube.kubectl("patch", "secret", "binary", "-n", namespace, "--type", "merge", "-p",
                 json.dumps({"data": {"address": base64.b64encode(b"\xff\xfe").decode()}}))
    secret(kube, namespace, "busy", address=receiver.url("/busy"))
    receiver.answer("/busy", 429)
    missing_topic = f"arn:aws:sns:{aws.region}:123456789012:no-such-topic"
    policy(kube, name, [
        {"name": "ftp", "type": "Slack", "secretRef": {"name": "ftp"}},
        {"name": "binary", "type": "Slack", "secretRef": {"name": "binary"}},
        {"name": "busy", "type": "MSTeams", "secretRef": {"name": "busy"}},
        {"name": "gone-topic", "type": "SNS", "topicArn": missing_topic},
    ])

    async def scenario(policy_name: str) -> None:
        n = notifier(kube, namespace)
        await n.deliver(policy_name, note())
        await n.aclose()

    asyncio.run(scenario(name))
    failing = {f["sink"]: f for f in status_of(kube, name)["notifications"]["failing"]}
    assert failing["ftp"]["message"] == f"Secret {namespace}/ftp: key 'address' is not an http(s) URL"
    assert failing["binary"]["message"] == f"Secret {namespace}/binary holds a value that is not text"
    # 429 is transient: retried, then failed as unavailable.
    assert len(receiver.at("/busy")) == FAST.attempts
    assert failing["busy"]["reason"] == "NotificationUnavailable"
    assert failing["gone-topic"]["reason"] == "AwsRequestRejected"
    assert failing["gone-topic"]["message"].startswith("sns:Publish")
    assert "no-such-topic" in failing["gone-topic"]["message"]
    # A policy that is gone: nothing to send, nothing recorded.
    asyncio.run(scenario("no-such-policy"))
