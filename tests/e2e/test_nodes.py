"""Node AMI currency, end to end: EC2 and SSM in moto, Nodes in the local cluster.

Given two AMIs registered in moto (an older and a newer EKS-optimized AL2023
build), an instance running each, the newer one published as the recommended
AMI in SSM Parameter Store, and two kwok Nodes whose ``spec.providerID``
points at those instances (providerID is immutable, so the test creates new
Nodes rather than editing the session's), the operator with ``--node-survey``
reports one node Current, one Outdated, and the session's own kwok node(s)
Unknown (no providerID), in ``imagepatch report`` (every format) and in its
metrics.

moto refuses writes under ``/aws/`` (as AWS does), so the recommended AMI is
published under another root, named with ``--node-ami-parameter-root``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.operator import REPO, OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

ROOT = f"/imagepatch-test-{uuid.uuid4().hex[:6]}"
VERSION = "1.32"
PARAMETER = f"{ROOT}/eks/optimized-ami/{VERSION}/amazon-linux-2023/x86_64/standard/recommended/image_id"
# kwok places no pod on them: the session's other modules keep their nodes to themselves.
TAINT = {"key": "imagepatch.dev/test-node", "value": "ami-survey", "effect": "NoSchedule"}


def _node(name: str, instance: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"eks.amazonaws.com/nodegroup": "ng-e2e",
                                              "type": "kwok"},
                     "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"providerID": f"aws:///us-east-1a/{instance}", "taints": [TAINT]},
        "status": {"nodeInfo": {"kubeletVersion": f"v{VERSION}.3-eks-473151a",
                                "osImage": "Amazon Linux 2023.6.20241212",
                                "architecture": "amd64"}},
    }


@pytest.fixture(scope="module")
def fleet(kube, moto_server) -> Iterator[dict[str, str]]:
    """Two instances on an old and a new AMI, the new one recommended; a Node for each."""
    ec2, ssm = moto_server.client("ec2"), moto_server.client("ssm")
    amis = {}
    # Registered in this order, so the old AMI's CreationDate is never after the new one's.
    for age in ("old", "new"):
        amis[age] = ec2.register_image(
            Name=f"amazon-eks-node-al2023-x86_64-standard-{VERSION}-v{age}-{uuid.uuid4().hex[:6]}",
            Architecture="x86_64", RootDeviceName="/dev/xvda",
        )["ImageId"]
    instances = {
        age: ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        for age, ami in amis.items()
    }
    ssm.put_parameter(Name=PARAMETER, Value=amis["new"], Type="String")
    names = {age: f"ip-e2e-{age}-{uuid.uuid4().hex[:5]}" for age in amis}
    for age, name in names.items():
        kube.kubectl("create", "-f", "-", input=json.dumps(_node(name, instances[age])))
    try:
        yield {**{f"{age}-node": n for age, n in names.items()},
               **{f"{age}-ami": a for age, a in amis.items()}}
    finally:
        kube.kubectl("delete", "node", *names.values(), "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def surveyor(kube, crds, moto_server, fleet, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("nodes")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--node-survey", "--node-survey-interval", "3600",
                    "--node-ami-parameter-root", ROOT, "--aws-region", moto_server.region],
        extra_env=moto_server.env(),
        metrics=True,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


def report(kube, output: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    res = subprocess.run(
        [sys.executable, "-m", "imagepatch", "report", "--kubeconfig", str(kube.kubeconfig),
         "-o", output], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_report_and_metrics_show_current_outdated_and_unknown_nodes(
        kube, fleet, surveyor) -> None:
    started = time.monotonic()

    def surveyed() -> bool:
        try:
            return surveyor.metric("imagepatch_node_surveys_total") >= 1
        except OSError:  # metrics are served once the operator leads
            return False

    wait_for(surveyed, timeout=60, what="a completed node survey")
    print(f"first survey after {time.monotonic() - started:.1f}s")
    all_nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json"))["items"]
    bare = sorted(n["metadata"]["name"] for n in all_nodes if not n["spec"].get("providerID"))
    assert bare, "the session's kwok nodes have no providerID"

    doc = json.loads(report(kube, "json"))["nodes"]
    rows = {n["name"]: n for n in doc["items"]}
    old, new = rows[fleet["old-node"]], rows[fleet["new-node"]]
    assert (new["state"], new["amiId"], new["recommendedAmiId"], new["family"], new["nodeGroup"]) \
        == ("Current", fleet["new-ami"], fleet["new-ami"], "AL2023/standard", "ng-e2e")
    assert (old["state"], old["amiId"], old["recommendedAmiId"]) == (
        "Outdated", fleet["old-ami"], fleet["new-ami"])
    # moto dates both AMIs at registration, seconds apart: 0 whole days behind.
    assert old["daysBehind"] == 0
    for name in bare:
        assert rows[name]["state"] == "Unknown"
        assert rows[name]["reason"].startswith("NoProviderID: ")
    assert doc["counts"]["Current"] == 1 and doc["counts"]["Outdated"] == 1

    table = report(kube, "table")
    assert "1 Current, 1 Outdated" in table and fleet["old-node"] in table
    csv_rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report(kube, "csv")))
                if r["kind"] == "Node"}
    assert csv_rows[fleet["old-node"]]["state"] == "Outdated"
    assert f'data-name="{fleet["new-node"]}" data-state="Current"' in report(kube, "html")

    assert surveyor.metric("imagepatch_nodes", state="Current") == 1
    assert surveyor.metric("imagepatch_nodes", state="Outdated") == 1
    assert surveyor.metric("imagepatch_nodes", state="Unknown") == doc["counts"]["Unknown"] >= 1
    assert surveyor.metric("imagepatch_node_oldest_ami_age_days") >= 0
