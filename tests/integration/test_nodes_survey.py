"""The node survey's adapter (adapters/nodes.py) against moto and the real API server.

* The AWS half against moto: an instance EC2 no longer knows is ``Unknown``
  (``InstanceNotFound``) without failing the batched call; a version AWS
  publishes no parameter for is ``ParameterMissing``; Bottlerocket nodes read
  their own parameter; more than 10 distinct parameters take several
  ``GetParameters`` calls.
* The record against the API server: created when absent, patched when
  present, and a stale copy (another writer) is read again, not overwritten blindly.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import boto3
import pytest

from imagepatch.adapters.kube import Kube
from imagepatch.adapters.nodes import CONFIGMAP, DATA_KEY, NodeSurvey
from imagepatch.core import nodes as core
from tests.support.moto import DUMMY_CREDENTIALS

pytestmark = pytest.mark.cluster

ROOT = f"/survey-{uuid.uuid4().hex[:6]}"


def facts(name: str, instance: str | None, *, version: str = "1.32",
          os_image: str = "Amazon Linux 2023.6") -> core.NodeFacts:
    provider = f"aws:///us-east-1a/{instance}" if instance else ""
    return core.NodeFacts(name=name, provider_id=provider, instance_id=instance,
                          kubelet_version=f"v{version}.1", version=version, os_image=os_image,
                          architecture="x86_64", node_group="", node_pool="")


@pytest.fixture
def survey(moto_server, kube) -> NodeSurvey:
    session = boto3.Session(region_name=moto_server.region, **DUMMY_CREDENTIALS)
    s = NodeSurvey(Kube(kube.api_client), namespace="default", region=moto_server.region,
                   parameter_root=ROOT, session=session)
    # moto's endpoint for both clients (AWS_ENDPOINT_URL is the operator's env, not ours).
    s._clients = {svc: session.client(svc, endpoint_url=moto_server.endpoint_url,
                                      region_name=moto_server.region) for svc in ("ec2", "ssm")}
    return s


def test_unknown_instances_and_missing_parameters_are_per_node(moto_server, survey) -> None:
    ec2, ssm = moto_server.client("ec2"), moto_server.client("ssm")
    al2023 = ec2.register_image(Name="amazon-eks-node-al2023-x86_64-standard-1.32-v1",
                                RootDeviceName="/dev/xvda")["ImageId"]
    rocket = ec2.register_image(Name="bottlerocket-aws-k8s-1.32-x86_64-v1.29.0",
                                RootDeviceName="/dev/xvda")["ImageId"]
    on_al2023 = ec2.run_instances(ImageId=al2023, MinCount=1, MaxCount=1)["Instances"][0]
    on_rocket = ec2.run_instances(ImageId=rocket, MinCount=1, MaxCount=1)["Instances"][0]
    ssm.put_parameter(Name=f"{ROOT}/bottlerocket/aws-k8s-1.32/x86_64/latest/image_id",
                      Value=rocket, Type="String")
    rows = {v.name: v for v in survey.verdicts([
        facts("al2023", on_al2023["InstanceId"]),
        facts("rocket", on_rocket["InstanceId"], os_image="Bottlerocket OS 1.29.0 (aws-k8s-1.32)"),
        facts("gone", "i-0000000000000dead"),
        facts("kwok", None),
    ])}
    assert rows["rocket"].state == core.CURRENT and rows["rocket"].family == "Bottlerocket"
    assert rows["al2023"].state == core.UNKNOWN
    assert rows["al2023"].reason.startswith("ParameterMissing: SSM parameter "
                                            f"{ROOT}/eks/optimized-ami/1.32/")
    assert rows["gone"].reason.startswith("InstanceNotFound: ")
    assert rows["kwok"].reason.startswith("NoProviderID: ")


def test_more_than_ten_parameters_are_read_in_several_calls(moto_server, survey) -> None:
    ssm = moto_server.client("ssm")
    names = [f"{ROOT}/many/p{i}" for i in range(23)]
    for i, name in enumerate(names):
        ssm.put_parameter(Name=name, Value=f"ami-{i}", Type="String")
    calls = []
    survey.ssm.meta.events.register("before-parameter-build.ssm.GetParameters",
                                    lambda **kw: calls.append(kw["params"]["Names"]))
    got = survey.parameters([*names, f"{ROOT}/many/absent"])
    assert got == {name: f"ami-{i}" for i, name in enumerate(names)}
    assert [len(c) for c in calls] == [10, 10, 4]
    assert survey.verdicts([]) == []  # nothing to ask AWS


def test_the_record_is_created_then_patched_and_survives_another_writer(kube) -> None:
    ns = f"nodes-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    try:
        async def scenario() -> None:
            first = NodeSurvey(Kube(kube.api_client), namespace=ns)
            await first.record({"surveyedAt": "t1", "nodes": []})
            other = NodeSurvey(Kube(kube.api_client), namespace=ns)
            await other.record({"surveyedAt": "t2", "nodes": []})  # finds it, patches it
            await first.record({"surveyedAt": "t3", "nodes": []})  # stale version: re-read
        asyncio.run(scenario())
        cm = json.loads(kube.kubectl("get", "configmap", CONFIGMAP, "-n", ns, "-o", "json"))
        assert json.loads(cm["data"][DATA_KEY])["surveyedAt"] == "t3"
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_failed_survey_is_logged_and_tried_again(kube, caplog) -> None:
    """EC2 unreachable: the loop logs the classified error and tries again after ``retry``."""
    session = boto3.Session(region_name="us-east-1", **DUMMY_CREDENTIALS)
    survey = NodeSurvey(Kube(kube.api_client), namespace="default", region="us-east-1",
                        session=session, interval=60, retry=0.05, max_attempts=1)
    survey._clients = {"ec2": session.client("ec2", endpoint_url="http://127.0.0.1:9",
                                             region_name="us-east-1")}
    # One EC2 node, so EC2 is asked.
    fake = {"metadata": {"name": "ip-unreachable"},
            "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"}}
    survey.kube.list_nodes = _returning([fake])  # type: ignore[method-assign]

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(survey.run(stop))
        while caplog.text.count("node survey failed") < 2:
            await asyncio.sleep(0.05)
        stop.set()
        await task

    with caplog.at_level("WARNING", logger="imagepatch.nodes"):
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert "ec2:DescribeInstances" in caplog.text and "trying again in 0s" in caplog.text


def _returning(value):
    async def call():
        return value
    return call
