"""A base push event re-evaluates only that base's workloads, and asks the registry only for it.

Given 12 Deployments deployed by tag (``app-i:1``, no digest, no pods), running
4 app images built on 2 bases, evaluated and Compliant; when base 0 is pushed
and its ECR event reaches the operator through EventBridge → SQS (moto); then
an ImagePatch opens for each app on base 0, the pass evaluates only the 6
workloads on it, and the registry (behind a counting proxy) sees the base's
HEAD and no request for any app tag. The request count is printed and
asserted; times are printed only. Unit version: tests/unit/test_detection_events.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.bench.fleet import push_app
from tests.support.faultproxy import FaultProxy
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

ACCOUNT, REGION = "123456789012", "us-east-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
APPS, BASES, WORKLOADS = 4, 2, 12
PREFIX = f"evt-{uuid.uuid4().hex[:5]}"  # the operator watches only namespaces PREFIX-*


@pytest.fixture(scope="module")
def queue(moto_server):
    """An SQS queue fed by an EventBridge rule for ECR events (the whole event, unchanged)."""
    sqs, events = moto_server.client("sqs"), moto_server.client("events")
    url = sqs.create_queue(QueueName=PREFIX)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=PREFIX, EventPattern=json.dumps({"source": ["aws.ecr"]}))
    events.put_targets(Rule=PREFIX, Targets=[{"Id": "q", "Arn": arn, "InputTransformer": {
        "InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}}])
    return url


@pytest.fixture(scope="module")
def proxy(registry) -> Iterator[FaultProxy]:
    """Every registry request of the operator, counted (no faults)."""
    p = FaultProxy.start(upstream=registry.host)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def operator(kube, crds, proxy, moto_server, queue, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("event-targeted")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}=http://{proxy.host}", "--aws-region", REGION,
                    "--events-queue-url", queue, "--detect-tick", "1",
                    "--namespace", f"{PREFIX}-*", "--lease-name", f"{PREFIX}-leader"],
        extra_env={**moto_server.env(), "AWS_ENDPOINT_URL": moto_server.endpoint_url},
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def test_a_base_push_event_re_evaluates_only_that_bases_workloads(
        given, registry, proxy, operator, moto_server) -> None:
    repos = unique("tgt")
    bases = [make_base_image(registry, f"{repos}/base-{k}", "1", marker=f"{repos}-{k}-v1")
             for k in range(BASES)]
    for i in range(APPS):
        push_app(registry, f"{repos}/app-{i}", base_name=f"{ECR}/{repos}/base-{i % BASES}:1",
                 base_digest=bases[i % BASES].digest, lineage="manifest-annotations")
    policy = unique("pol")
    # Manual approval: the patches wait, so no rollout changes a workload during the count.
    given.policy(policy, baseImages={"checkInterval": "1h"}, approval="Manual")
    ns = given.namespace(PREFIX)
    items = [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"w{w}", "namespace": ns, "annotations": {"imagepatch.dev/policy": policy}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": f"w{w}"}},
                 "template": {"metadata": {"labels": {"app": f"w{w}"}},
                              "spec": {"containers": [{"name": "app",
                                                       "image": f"{ECR}/{repos}/app-{w % APPS}:1"}]}}},
    } for w in range(WORKLOADS)]
    given.kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def counts() -> dict:
        return given.get("imagepatchpolicy", policy).get("status", {}).get("workloads", {})
    wait_for(lambda: counts().get("compliant") == WORKLOADS, timeout=90, interval=0.5,
             what=f"{WORKLOADS} workloads Compliant")
    cold = proxy.count()

    offset = len(operator.log())
    v2 = make_base_image(registry, f"{repos}/base-0", "1", marker=f"{repos}-0-v2")
    proxy.clear()
    pushed = time.monotonic()
    moto_server.client("events").put_events(Entries=[{
        "Source": "aws.ecr", "DetailType": "ECR Image Action",
        "Detail": json.dumps({"action-type": "PUSH", "result": "SUCCESS",
                              "repository-name": f"{repos}/base-0", "image-digest": v2.digest,
                              "image-tag": "1"})}])

    def opened() -> list[dict] | None:
        out = json.loads(given.kube.kubectl("get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}",
                                            "-o", "json"))["items"]
        return out if len(out) >= APPS // BASES else None
    patches = wait_for(opened, timeout=60, interval=0.1, what="the ImagePatches of the apps on base 0")
    latency = time.monotonic() - pushed
    line = re.compile(rf"policy {re.escape(policy)}: (\d+) workloads evaluated .*targeted: (\d+) of (\d+)")
    match = wait_for(lambda: line.search(operator.log()[offset:]), timeout=30, interval=0.2,
                     what="the targeted pass's log line")
    wait_for(lambda: counts().get("total") == WORKLOADS and counts().get("compliant") == WORKLOADS // 2,
             timeout=30, interval=0.5, what="the policy counting every workload")
    # This test's repositories only: ImagePatches that earlier modules of the session
    # left behind are this operator's too, and their builds poll their own tags.
    requests = [f"{r.method} {r.path}" for r in list(proxy.requests)
                if r.path.startswith(f"/v2/{repos}/")]
    print(f"\n[measured] {WORKLOADS} workloads by tag: cold evaluation {cold} registry requests; "
          f"one base push event → {len(patches)} ImagePatches in {latency:.2f}s, "
          f"{len(requests)} registry requests: {requests}")
    print("[measured] " + match.group(0))

    assert sorted(p["spec"]["image"] for p in patches) == [f"{ECR}/{repos}/app-0", f"{ECR}/{repos}/app-2"]
    assert sorted(t["name"] for p in patches for t in p["spec"]["targets"]) == sorted(
        f"w{w}" for w in range(WORKLOADS) if w % APPS % BASES == 0)
    # Only base 0's workloads were evaluated, and no app tag was asked again.
    assert match.groups() == (str(WORKLOADS // 2), str(WORKLOADS // 2), str(WORKLOADS))
    assert not [r for r in requests if "/app-" in r], requests
    assert [r for r in requests if r.startswith("HEAD")] == [f"HEAD /v2/{repos}/base-0/manifests/1"]
    assert len(requests) <= 5
