"""AWS Config evaluations, end to end: a workload's evaluation follows it through a patch.

Given the operator reporting to AWS Config (``--aws-config-result-token``),
an opted-in Deployment on base v1 is evaluated ``COMPLIANT``; when the base
moves it is ``NON_COMPLIANT`` (base outdated, then patching); once CI has
rebuilt it and the patch rolled out it is ``COMPLIANT`` again, and a pass
that changes nothing sends nothing.

moto implements ``PutEvaluations`` only with ``TestMode`` (it raises
NotImplementedError otherwise) and stores nothing it could be asked about, so
the operator runs with ``--aws-config-test-mode`` and Config's endpoint
(``AWS_ENDPOINT_URL_CONFIG_SERVICE``) is a recording proxy in front of moto:
the test reads the requests Config received, and moto's answers to them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

ACCOUNT, REGION = "123456789012", "us-east-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
CLUSTER = "e2e-config"
RESOURCE_TYPE = "Imagepatch::Kubernetes::Workload"


@pytest.fixture(scope="module")
def config_proxy(moto_server) -> Iterator[FaultProxy]:
    proxy = FaultProxy.start(upstream=moto_server.endpoint_url.removeprefix("http://"))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def reporter(kube, crds, registry, moto_server, config_proxy, tmp_path_factory
             ) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("awsconfig")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}=http://{registry.host}", "--aws-region", REGION,
                    "--detect-tick", "1", "--cluster-name", CLUSTER,
                    "--aws-config-result-token", "e2e-token", "--aws-config-test-mode"],
        extra_env={**moto_server.env(), "AWS_ENDPOINT_URL_CONFIG_SERVICE": config_proxy.url},
        metrics=True,
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, reporter) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def evaluations(proxy: FaultProxy, resource_id: str) -> list[dict]:
    """Every evaluation of ``resource_id`` Config received, in order."""
    out = []
    for request in list(proxy.requests):
        if request.header("X-Amz-Target") != "StarlingDoveService.PutEvaluations":
            continue
        body = json.loads(request.body)
        assert body["ResultToken"] == "e2e-token" and body["TestMode"] is True
        assert len(body["Evaluations"]) <= 100
        out += [e for e in body["Evaluations"] if e["ComplianceResourceId"] == resource_id]
    return out


def compliance_sequence(proxy: FaultProxy, resource_id: str) -> list[str]:
    seq: list[str] = []
    for e in evaluations(proxy, resource_id):
        if not seq or seq[-1] != e["ComplianceType"]:
            seq.append(e["ComplianceType"])
    return seq


def test_config_evaluations_change_when_a_workload_is_patched(
        given, registry, buildah, config_proxy, reporter) -> None:
    started = time.monotonic()
    base_repo, app_repo = unique("cbase"), unique("capp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    buildah.build_app(base_v1, app_repo, "1", pinned=False)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, rebuild={"strategy": "external"},
                 rollout={"progressDeadlineSeconds": 60, "healthyFor": "2s", "maxRestarts": 0})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    rid = f"{CLUSTER}/{ns}/Deployment/web"

    wait_for(lambda: compliance_sequence(config_proxy, rid) == ["COMPLIANT"], timeout=60,
             what="a COMPLIANT evaluation")
    (first,) = evaluations(config_proxy, rid)
    assert first["ComplianceResourceType"] == RESOURCE_TYPE
    assert first["Annotation"].startswith(f"Compliant (policy {policy}): ")

    # Only on change: passes that change nothing send nothing more for it.
    passes = reporter.metric("imagepatch_detection_passes_total")
    reporter.wait_passes(3, after=passes)
    assert len(evaluations(config_proxy, rid)) == 1

    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={time.time()}")
    wait_for(lambda: compliance_sequence(config_proxy, rid) == ["COMPLIANT", "NON_COMPLIANT"],
             timeout=60, what="a NON_COMPLIANT evaluation once the base moved")
    bad = [e for e in evaluations(config_proxy, rid) if e["ComplianceType"] == "NON_COMPLIANT"]
    assert bad[0]["Annotation"].split(" ")[0] in ("BaseImageOutdated", "Patching")

    patches = json.loads(given.kube.kubectl(
        "get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}", "-o", "json"))["items"]
    name = patches[0]["metadata"]["name"]
    buildah.build_app(base_v2, app_repo, given.pushed_tag(name), pinned=False)  # CI rebuilds
    done = given.wait_phase(name, "Succeeded", "RolledBack", "Failed", "Closed", timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    wait_for(lambda: compliance_sequence(config_proxy, rid) == [
        "COMPLIANT", "NON_COMPLIANT", "COMPLIANT"], timeout=60,
        what="COMPLIANT again once patched")
    print(f"evaluations of {rid}: {[e['Annotation'] for e in evaluations(config_proxy, rid)]}; "
          f"{time.monotonic() - started:.1f}s")
    # The proxy saw the request before the operator counted Config's answer; the
    # pass that sent it counts it before it ends.
    reporter.wait_passes()
    assert reporter.metric("imagepatch_config_evaluations_total", compliance="COMPLIANT") >= 2
