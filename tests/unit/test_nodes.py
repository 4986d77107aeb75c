"""Node AMI currency decisions (core/nodes.py): providerID, family, parameter paths, verdicts."""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.core import nodes
from imagepatch.core.nodes import AmiFacts, Family

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
OLD = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
NEW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
ROOT = nodes.DEFAULT_PARAMETER_ROOT
AL2023_X86 = f"{ROOT}/eks/optimized-ami/1.32/amazon-linux-2023/x86_64/standard/recommended/image_id"


def node(name: str = "n1", *, provider: str | None = "aws:///us-east-1a/i-0123456789abcdef0",
         kubelet: str = "v1.32.3-eks-473151a", os_image: str = "Amazon Linux 2023.6.20241212",
         arch: str = "amd64", labels: dict[str, str] | None = None) -> dict:
    spec = {"providerID": provider} if provider is not None else {}
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"nodeInfo": {"kubeletVersion": kubelet, "osImage": os_image,
                                    "architecture": arch}}}


@pytest.mark.parametrize(("provider", "expected"), [
    ("aws:///us-east-1a/i-0123456789abcdef0", "i-0123456789abcdef0"),
    ("aws:///i-0123abcd", "i-0123abcd"),  # older nodes: no zone
    ("aws:///us-east-1a/i-0123456789abcdef0 ", "i-0123456789abcdef0"),
    ("kwok://node-1", None),
    ("gce://project/zone/vm", None),
    ("aws:///us-east-1a/not-an-instance", None),
    ("", None),
])
def test_instance_id_is_read_from_an_aws_provider_id_only(provider: str, expected: str | None) -> None:
    assert nodes.instance_id(provider) == expected


def test_node_facts_read_version_arch_and_group_labels() -> None:
    facts = nodes.node_facts(node(arch="arm64", labels={
        nodes.NODEGROUP_LABEL: "ng-1", nodes.NODEPOOL_LABEL: "default"}))
    assert (facts.instance_id, facts.version, facts.architecture, facts.node_group,
            facts.node_pool) == ("i-0123456789abcdef0", "1.32", "arm64", "ng-1", "default")
    assert nodes.node_facts(node(arch="amd64")).architecture == "x86_64"
    bare = nodes.node_facts({})
    assert (bare.name, bare.instance_id, bare.version, bare.provider_id) == ("", None, None, "")


@pytest.mark.parametrize(("os_image", "ami_name", "expected"), [
    ("Amazon Linux 2023.6.20241212", "amazon-eks-node-al2023-x86_64-standard-1.32-v20241213",
     Family(name=nodes.AL2023, variant="standard")),
    ("Amazon Linux 2023.6.20241212", "amazon-eks-node-al2023-x86_64-nvidia-1.32-v20241213",
     Family(name=nodes.AL2023, variant="nvidia")),
    ("Amazon Linux 2023.6.20241212", "", Family(name=nodes.AL2023, variant="standard")),
    ("Amazon Linux 2", "amazon-eks-node-1.32-v20241213", Family(name=nodes.AL2)),
    ("Amazon Linux 2", "amazon-eks-arm64-node-1.32-v20241213", Family(name=nodes.AL2)),
    ("Amazon Linux 2", "amazon-eks-gpu-node-1.32-v20241213", Family(name=nodes.AL2_GPU)),
    ("Bottlerocket OS 1.29.0 (aws-k8s-1.32)", "bottlerocket-aws-k8s-1.32-x86_64-v1.29.0-c3e5d2ea",
     Family(name=nodes.BOTTLEROCKET)),
    ("Bottlerocket OS 1.29.0 (aws-k8s-1.32-nvidia)",
     "bottlerocket-aws-k8s-1.32-nvidia-x86_64-v1.29.0-c3e5d2ea",
     Family(name=nodes.BOTTLEROCKET, variant="nvidia")),
    ("Ubuntu 22.04.4 LTS", "ubuntu-eks/k8s_1.32/images/hvm-ssd", None),
])
def test_family_comes_from_os_image_and_ami_name(os_image: str, ami_name: str,
                                                 expected: Family | None) -> None:
    assert nodes.ami_family(os_image, ami_name) == expected


@pytest.mark.parametrize(("family", "arch", "expected"), [
    (Family(name=nodes.AL2023, variant="standard"), "x86_64", AL2023_X86),
    (Family(name=nodes.AL2023, variant="nvidia"), "arm64",
     "/aws/service/eks/optimized-ami/1.32/amazon-linux-2023/arm64/nvidia/recommended/image_id"),
    (Family(name=nodes.AL2), "x86_64",
     "/aws/service/eks/optimized-ami/1.32/amazon-linux-2/recommended/image_id"),
    (Family(name=nodes.AL2), "arm64",
     "/aws/service/eks/optimized-ami/1.32/amazon-linux-2-arm64/recommended/image_id"),
    (Family(name=nodes.AL2_GPU), "x86_64",
     "/aws/service/eks/optimized-ami/1.32/amazon-linux-2-gpu/recommended/image_id"),
    (Family(name=nodes.BOTTLEROCKET), "arm64",
     "/aws/service/bottlerocket/aws-k8s-1.32/arm64/latest/image_id"),
    (Family(name=nodes.BOTTLEROCKET, variant="nvidia"), "x86_64",
     "/aws/service/bottlerocket/aws-k8s-1.32-nvidia/x86_64/latest/image_id"),
])
def test_parameter_names_are_the_published_paths(family: Family, arch: str, expected: str) -> None:
    assert nodes.parameter_name("1.32", family, arch) == expected


def test_parameter_root_can_be_another_path() -> None:
    assert nodes.parameter_name("1.31", Family(name=nodes.AL2), "x86_64", "/mirror/") == (
        "/mirror/eks/optimized-ami/1.31/amazon-linux-2/recommended/image_id")


def judge(raw: dict, *, ami: str | None = "ami-old", running: AmiFacts | None = None,
          recommended: dict[str, str] | None = None,
          images: dict[str, AmiFacts] | None = None) -> nodes.NodeVerdict:
    running = running or AmiFacts(image_id="ami-old", name="amazon-eks-node-al2023-x86_64-"
                                  "standard-1.32-v20261001", created=OLD)
    return nodes.verdict(
        nodes.node_facts(raw), instance_ami=ami, running=running,
        recommended={AL2023_X86: "ami-new"} if recommended is None else recommended,
        images={"ami-new": AmiFacts(image_id="ami-new", name="x", created=NEW)}
        if images is None else images,
    )


def test_a_node_on_the_recommended_ami_is_current() -> None:
    v = judge(node(), ami="ami-new",
              running=AmiFacts(image_id="ami-new", name="amazon-eks-node-al2023", created=NEW))
    assert (v.state, v.days_behind, v.reason, v.recommended_ami_id) == (
        nodes.CURRENT, None, "", "ami-new")


def test_a_node_on_an_older_ami_is_outdated_by_the_days_between_creation_dates() -> None:
    v = judge(node())
    assert (v.state, v.days_behind, v.family, v.ami_id) == (
        nodes.OUTDATED, 50, "AL2023/standard", "ami-old")
    assert v.ami_created == OLD.isoformat() and v.recommended_created == NEW.isoformat()


def test_outdated_without_dates_has_no_days_behind() -> None:
    v = judge(node(), images={})
    assert (v.state, v.days_behind, v.recommended_created) == (nodes.OUTDATED, None, "")


def test_a_node_newer_than_the_recommendation_is_current() -> None:
    v = judge(node(), running=AmiFacts(image_id="ami-old", name="amazon-eks-node-al2023",
                                       created=NEW + dt.timedelta(days=2)))
    assert v.state == nodes.CURRENT


@pytest.mark.parametrize(("raw", "kwargs", "reason"), [
    (node(provider=None), {}, "NoProviderID"),
    (node(provider="kwok://n1"), {}, "NotEC2"),
    (node(), {"ami": None}, "InstanceNotFound"),
    (node(kubelet="unknown"), {}, "NoKubeletVersion"),
    (node(os_image="Ubuntu 22.04"), {"running": AmiFacts(image_id="ami-old", name="ubuntu",
                                                         created=OLD)}, "CustomAMI"),
    (node(), {"recommended": {}}, "ParameterMissing"),
])
def test_unknown_says_why(raw: dict, kwargs: dict, reason: str) -> None:
    v = judge(raw, **kwargs)
    assert v.state == nodes.UNKNOWN and v.reason.startswith(f"{reason}: ")


def test_wanted_parameter_only_for_nodes_that_need_one() -> None:
    running = {"ami-old": AmiFacts(image_id="ami-old", name="bottlerocket-aws-k8s-1.32-x86_64",
                                   created=OLD)}
    amis = {"i-0123456789abcdef0": "ami-old"}
    facts = nodes.node_facts(node(os_image="Bottlerocket OS 1.29.0 (aws-k8s-1.32)"))
    assert nodes.wanted_parameter(facts, amis, running) == (
        "/aws/service/bottlerocket/aws-k8s-1.32/x86_64/latest/image_id")
    assert nodes.wanted_parameter(facts, {}, running) is None
    custom = nodes.node_facts(node(os_image="Ubuntu"))
    assert nodes.wanted_parameter(custom, amis, {}) is None


def test_counts_age_and_record_round_trip() -> None:
    rows = [judge(node("a")), judge(node("b", provider=None)),
            judge(node("c"), ami="ami-new",
                  running=AmiFacts(image_id="ami-new", name="al2023", created=NEW))]
    assert nodes.state_counts(rows) == {"Current": 1, "Outdated": 1, "Unknown": 1}
    assert nodes.oldest_ami_age_days(rows, NOW) == pytest.approx((NOW - OLD).total_seconds() / 86400)
    assert nodes.oldest_ami_age_days([judge(node(provider=None), running=AmiFacts(
        image_id="x", name="", created=None))], NOW) is None
    record = nodes.survey_record(reversed(rows), NOW)
    assert record["nodes"][0]["name"] == "a" and "daysBehind" in record["nodes"][0]
    at, back = nodes.parse_survey(record)
    assert at == NOW.isoformat() and back == sorted(rows, key=lambda r: r.name)


def test_a_malformed_record_is_read_as_far_as_it_goes() -> None:
    at, rows = nodes.parse_survey({"nodes": ["junk", {"state": "Current"}, {"name": "x"}]})
    assert at == "" and [(r.name, r.state, r.days_behind) for r in rows] == [
        ("x", nodes.UNKNOWN, None)]
    assert nodes.Family(name=nodes.AL2).label == "AL2"
