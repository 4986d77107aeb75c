"""Notifications from the operator itself: real rollouts reach real sinks, and a dead sink costs nothing.

Given the operator under its shipped RBAC, a local HTTP receiver (standing in
for Slack, Teams and a signed webhook: the same requests reach it that would
reach them) and SNS on moto read back through an SQS subscription:

* a patch rolled forward reaches every sink type as ``Patched``, naming the
  workload and its old and new digest-pinned references (the webhook's HMAC
  checked as a receiver would);
* a crash-looping digest rolled back reaches the webhook as ``RolledBack``;
* a patch awaiting approval reaches the webhook with the command to approve,
  and running that very command rolls it out;
* a sink that answers 500 forever does not slow a rollout (the rollout times
  with and without it are printed; no timed assertion), and the policy shows
  ``NotificationsDegraded`` naming the sink.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shlex
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.operator import (
    NAMESPACE,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.receiver import Receiver
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}
TOKEN = "e2e-hmac-key"
TAG = uuid.uuid4().hex[:5]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver.start()
    server.answer("/broken", 500)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sns(moto_server):
    """An SNS topic, and an SQS queue subscribed to it to read what was published."""
    topic = moto_server.client("sns").create_topic(Name=f"patches-{TAG}")["TopicArn"]
    sqs = moto_server.client("sqs")
    queue = sqs.create_queue(QueueName=f"patches-{TAG}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    moto_server.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, sqs, queue


def put_secret(kube, name: str, **data: str) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}))


@pytest.fixture(scope="module")
def operator(kube, crds, moto_server, receiver, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    put_secret(kube, f"slack-{TAG}", address=receiver.url("/slack"))
    put_secret(kube, f"teams-{TAG}", address=receiver.url("/teams"))
    put_secret(kube, f"hook-{TAG}", address=receiver.url("/hook"), token=TOKEN)
    put_secret(kube, f"broken-{TAG}", address=receiver.url("/broken"))
    work = tmp_path_factory.mktemp("notifications")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        # A dead sink gives up after 3 s here (300 s by default), so its condition shows soon.
        extra_args=["--notification-retry-timeout", "3", "--lease-name", f"notify-{TAG}"],
        extra_env={**moto_server.env(), "AWS_ENDPOINT_URL": moto_server.endpoint_url},
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])
    log = proc.log_path.read_text()
    # Never a URL (a Slack or Teams webhook URL is its credential) or a token in the log.
    assert TOKEN not in log and receiver.url("/") not in log


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def hook(name: str, **extra) -> dict:
    return {"name": name, "type": "Webhook", "secretRef": {"name": f"hook-{TAG}"}, **extra}


def webhook_messages(receiver: Receiver, patch: str, reason: str) -> list[dict]:
    found = []
    for request in receiver.at("/hook"):
        expected = "sha256=" + hmac.new(TOKEN.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-signature"] == expected, "a webhook request with a bad signature"
        doc = request.json()
        if doc.get("imagePatch", {}).get("name") == patch and doc["reason"] == reason:
            found.append(doc)
    return found


def wait_webhook(receiver: Receiver, patch: str, reason: str) -> dict:
    return wait_for(lambda: webhook_messages(receiver, patch, reason), timeout=60, interval=0.2,
                    what=f"a {reason} webhook for {patch}")[0]


def test_a_patch_rolled_forward_reaches_every_sink_type(given: Scenario, receiver, sns) -> None:
    topic, sqs, queue = sns
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("notified")
    given.policy(policy, rollout=FAST_GATE, notifications=[
        hook("hook"),
        {"name": "slack", "type": "Slack", "secretRef": {"name": f"slack-{TAG}"}},
        {"name": "teams", "type": "MSTeams", "secretRef": {"name": f"teams-{TAG}"}},
        {"name": "sns", "type": "SNS", "topicArn": topic},
    ])
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=2)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]

    doc = wait_webhook(receiver, patch, "Patched")
    assert doc["policy"] == policy and doc["severity"] == "info"
    assert doc["workloads"] == [{
        "kind": "Deployment", "namespace": ns, "name": "web", "container": "app",
        "oldImage": OLD, "newImage": f"{APP}:1.4@{digest}", "outcome": "Healthy",
        "message": doc["workloads"][0]["message"]}]
    slack = wait_for(lambda: [r.json() for r in receiver.at("/slack") if patch in r.body.decode()],
                     timeout=30, what="the Slack message")[0]
    assert slack["blocks"][0]["text"]["text"] == f"Patched: {APP}"  # a human patch names no tag
    assert any(f"`{APP}:1.4@{digest}`" in b["text"]["text"] for b in slack["blocks"]
               if b["type"] == "section")
    teams = wait_for(lambda: [r.json() for r in receiver.at("/teams") if patch in r.body.decode()],
                     timeout=30, what="the Teams message")[0]
    assert teams["attachments"][0]["content"]["type"] == "AdaptiveCard"

    def published():
        for message in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []):
            envelope = json.loads(message["Body"])
            body = json.loads(envelope["Message"])
            if body.get("imagePatch", {}).get("name") == patch:
                return envelope, body
        return None
    envelope, body = wait_for(published, timeout=30, what="the SNS message")
    assert envelope["Subject"] == f"imagepatch: Patched: {APP}"
    assert body["reason"] == "Patched" and body["workloads"][0]["newImage"] == f"{APP}:1.4@{digest}"
    # Exactly once per patch and reason, though the loop reconciled it many times.
    time.sleep(1)
    assert len(webhook_messages(receiver, patch, "Patched")) == 1


def test_a_rollback_reaches_the_webhook(given: Scenario, receiver) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("notified-bad")
    given.policy(policy, rollout=FAST_GATE, notifications=[hook("hook")])
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=2, crashloop_on=digest)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "RolledBack", done["status"]

    doc = wait_webhook(receiver, patch, "RolledBack")
    assert doc["severity"] == "warning"
    [workload] = doc["workloads"]
    assert (workload["outcome"], workload["newImage"], workload["oldImage"]) == (
        "RolledBack", f"{APP}:1.4@{digest}", OLD)
    assert "CrashLoopBackOff" in workload["message"]
    assert webhook_messages(receiver, patch, "Patched") == []


def test_awaiting_approval_says_what_to_run_and_that_command_approves(given: Scenario, receiver) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("notified-approval")
    given.policy(policy, rollout=FAST_GATE, approval="Manual", notifications=[hook("hook")])
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=1)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    doc = wait_webhook(receiver, patch, "AwaitingApproval")
    command = doc["approve"]["command"].replace("<you>", "alice")
    argv = shlex.split(command)
    assert argv[:2] == ["kubectl", "patch"]
    given.kube.kubectl(*argv[1:])

    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert any(h.get("by") == "alice" for h in done["status"]["history"])
    wait_webhook(receiver, patch, "Patched")


def _rollout_seconds(given: Scenario, policy: str) -> float:
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=1)
    patch = unique("patch")
    started = time.monotonic()
    given.imagepatch(patch, image=APP, policy=policy, target_digest=fake_digest(patch))
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    took = time.monotonic() - started
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return took


def test_a_sink_that_fails_forever_does_not_slow_a_rollout(given: Scenario, receiver) -> None:
    quiet, noisy = unique("pol"), unique("pol")
    given.policy(quiet, rollout=FAST_GATE)
    given.policy(noisy, rollout=FAST_GATE, notifications=[
        {"name": "dead", "type": "Slack", "secretRef": {"name": f"broken-{TAG}"}}])

    without = _rollout_seconds(given, quiet)
    with_dead = _rollout_seconds(given, noisy)
    print(f"\nrollout to Succeeded: {without:.1f} s without a sink, "
          f"{with_dead:.1f} s with a sink answering 500 forever")

    def degraded():
        status = given.get("imagepatchpolicy", noisy).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        found = conditions.get("NotificationsDegraded")
        return found if found and found["status"] == "True" else None
    condition = wait_for(degraded, timeout=60, what="NotificationsDegraded on the policy")
    assert condition["message"] == ("sink dead (Slack): NotificationUnavailable: "
                                     "Slack sink 'dead' answered HTTP 500")
    assert len(receiver.at("/broken")) >= 2  # retried before it counted as failed
