"""Node AMI currency: which AMI each node runs against the one AWS recommends (pure).

imagepatch reports nodes, it never replaces them (DESIGN.md, v0.2): managed
node groups and Karpenter do that. ``adapters/nodes.py`` gathers the facts
(the Nodes, EC2 ``DescribeInstances`` / ``DescribeImages``, SSM
``GetParameters``); this module decides, with no I/O:

* :func:`node_facts`: what a Node object says: its instance id (from
  ``spec.providerID``, ``aws:///<az>/<instance-id>``), Kubernetes minor
  version, OS image, architecture, and its managed node group or Karpenter
  NodePool (the labels ``eks.amazonaws.com/nodegroup``, ``karpenter.sh/nodepool``).
* :func:`ami_family`: AL2023 (and its variant), AL2, AL2 GPU or Bottlerocket
  (and its flavor), from the OS image and the running AMI's name; anything
  else is a custom AMI that AWS publishes no recommendation for.
* :func:`parameter_name`: the SSM parameter that holds the recommended AMI id
  for a (version, family, architecture), as the EKS user guide publishes them
  (docs/aws.md cites the pages).
* :func:`verdict`: ``Current``, ``Outdated`` (with days behind, from the two
  AMIs' creation dates) or ``Unknown`` with a reason.

The record of a survey (:func:`survey_record`) is JSON the operator writes to
a ConfigMap in its own namespace and ``imagepatch report`` reads back.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = [
    "AL2",
    "AL2023",
    "AL2_GPU",
    "BOTTLEROCKET",
    "CURRENT",
    "DEFAULT_PARAMETER_ROOT",
    "NODEGROUP_LABEL",
    "NODEPOOL_LABEL",
    "NODE_STATES",
    "OUTDATED",
    "SURVEY_CONFIGMAP",
    "SURVEY_DATA_KEY",
    "UNKNOWN",
    "AmiFacts",
    "Family",
    "NodeFacts",
    "NodeVerdict",
    "ami_family",
    "instance_id",
    "node_facts",
    "oldest_ami_age_days",
    "parameter_name",
    "parse_survey",
    "state_counts",
    "survey_record",
    "verdict",
    "wanted_parameter",
]

CURRENT, OUTDATED, UNKNOWN = "Current", "Outdated", "Unknown"
NODE_STATES = (CURRENT, OUTDATED, UNKNOWN)

AL2023, AL2, AL2_GPU, BOTTLEROCKET = "AL2023", "AL2", "AL2GPU", "Bottlerocket"

NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
# AWS publishes its parameters under /aws/service; a test (moto refuses writes
# there, as AWS does) or an account that mirrors its own golden AMIs in the same
# layout names another root.
DEFAULT_PARAMETER_ROOT = "/aws/service"

# Where the operator records its last survey: a ConfigMap in its own namespace.
SURVEY_CONFIGMAP = "imagepatch-nodes"
SURVEY_DATA_KEY = "survey.json"

# Unknown reasons (CamelCase, as every reason imagepatch writes).
NO_PROVIDER_ID = "NoProviderID"
NOT_EC2 = "NotEC2"
INSTANCE_NOT_FOUND = "InstanceNotFound"
CUSTOM_AMI = "CustomAMI"
PARAMETER_MISSING = "ParameterMissing"
NO_VERSION = "NoKubeletVersion"

# aws:///us-east-1a/i-0123456789abcdef0 (older nodes: aws:///i-…, no zone).
_PROVIDER_ID = re.compile(r"^aws://(?:/[a-z0-9-]*)?/(i-[0-9a-f]{8,17})$")
_MINOR = re.compile(r"^v?(\d+)\.(\d+)")
_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


@dataclass(frozen=True, kw_only=True)
class Family:
    """An EKS-optimized AMI family, with its AL2023 variant or Bottlerocket flavor."""

    name: str  # AL2023, AL2, AL2GPU, Bottlerocket
    variant: str = ""  # AL2023: standard|nvidia|neuron; Bottlerocket: ""|nvidia|fips

    @property
    def label(self) -> str:
        return f"{self.name}/{self.variant}" if self.variant else self.name


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What one Node object says about itself."""

    name: str
    provider_id: str
    instance_id: str | None  # None: not an EC2 instance (kwok, on-premises, another cloud)
    kubelet_version: str
    version: str | None  # the Kubernetes minor, e.g. "1.32"
    os_image: str
    architecture: str  # x86_64 | arm64 | what the node said
    node_group: str
    node_pool: str


@dataclass(frozen=True, kw_only=True)
class AmiFacts:
    """What EC2 ``DescribeImages`` says about one AMI."""

    image_id: str
    name: str
    created: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class NodeVerdict:
    """One node's row in the report, the metrics and the survey record."""

    name: str
    instance_id: str
    node_group: str
    node_pool: str
    kubelet_version: str
    os_image: str
    architecture: str
    family: str
    ami_id: str
    ami_created: str  # ISO 8601 or ""
    recommended_ami_id: str
    recommended_created: str
    state: str
    days_behind: int | None
    reason: str  # why Unknown (a CamelCase reason and words), or "" otherwise


def instance_id(provider_id: str) -> str | None:
    """The EC2 instance id in ``aws:///<az>/<instance-id>``; None for anything else."""
    match = _PROVIDER_ID.match(provider_id.strip())
    return match.group(1) if match else None


def _minor(kubelet_version: str) -> str | None:
    match = _MINOR.match(kubelet_version.strip())
    return f"{int(match.group(1))}.{int(match.group(2))}" if match else None


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    """A Node object's facts (any field may be missing: the result says so, it never raises)."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    info = (node.get("status") or {}).get("nodeInfo") or {}
    provider = str((node.get("spec") or {}).get("providerID") or "")
    kubelet = str(info.get("kubeletVersion") or "")
    arch = str(info.get("architecture") or "")
    return NodeFacts(
        name=str(meta.get("name") or ""),
        provider_id=provider,
        instance_id=instance_id(provider) if provider else None,
        kubelet_version=kubelet,
        version=_minor(kubelet),
        os_image=str(info.get("osImage") or ""),
        architecture=_ARCH.get(arch, arch),
        node_group=str(labels.get(NODEGROUP_LABEL) or ""),
        node_pool=str(labels.get(NODEPOOL_LABEL) or ""),
    )


def ami_family(os_image: str, ami_name: str = "") -> Family | None:
    """The EKS-optimized family of a node, from its OS image and its AMI's name.

    The OS image tells Bottlerocket, AL2023 and AL2 apart; only the AMI name
    tells the GPU and accelerated variants (``amazon-eks-gpu-node-…``,
    ``amazon-eks-node-al2023-x86_64-nvidia-…``, ``bottlerocket-aws-k8s-1.32-nvidia-…``).
    None: not an EKS-optimized AMI (a custom one), so AWS recommends none.
    """
    image, name = os_image.lower(), ami_name.lower()
    if image.startswith("bottlerocket") or name.startswith("bottlerocket-"):
        flavor = next((f for f in ("nvidia", "fips") if f"-{f}-" in name or
                       re.search(rf"aws-k8s-[\d.]+-{f}\b", name)), "")
        return Family(name=BOTTLEROCKET, variant=flavor)
    if image.startswith("amazon linux 2023") or "-al2023-" in name:
        variant = next((v for v in ("nvidia", "neuron") if f"-{v}-" in name), "standard")
        return Family(name=AL2023, variant=variant)
    if image.startswith("amazon linux 2") or name.startswith("amazon-eks-"):
        return Family(name=AL2_GPU if name.startswith("amazon-eks-gpu-node") else AL2)
    return None


def parameter_name(version: str, family: Family, arch: str,
                   root: str = DEFAULT_PARAMETER_ROOT) -> str:
    """The SSM parameter holding the recommended AMI id for this version, family and arch."""
    root = root.rstrip("/")
    if family.name == BOTTLEROCKET:
        flavor = f"-{family.variant}" if family.variant else ""
        return f"{root}/bottlerocket/aws-k8s-{version}{flavor}/{arch}/latest/image_id"
    base = f"{root}/eks/optimized-ami/{version}"
    if family.name == AL2023:
        variant = family.variant or "standard"
        return f"{base}/amazon-linux-2023/{arch}/{variant}/recommended/image_id"
    if family.name == AL2_GPU:
        return f"{base}/amazon-linux-2-gpu/recommended/image_id"
    if arch == "arm64":
        return f"{base}/amazon-linux-2-arm64/recommended/image_id"
    return f"{base}/amazon-linux-2/recommended/image_id"


def wanted_parameter(
    facts: NodeFacts, amis: Mapping[str, str], running: Mapping[str, AmiFacts],
    root: str = DEFAULT_PARAMETER_ROOT,
) -> str | None:
    """The parameter this node's verdict needs (None: its verdict needs none, it is Unknown).

    ``amis`` maps instance ids to the AMIs they run, ``running`` AMI ids to their facts.
    """
    ami = amis.get(facts.instance_id or "")
    if not ami or facts.version is None:
        return None
    image = running.get(ami)
    family = ami_family(facts.os_image, image.name if image else "")
    return parameter_name(facts.version, family, facts.architecture, root) if family else None


def _iso(when: dt.datetime | None) -> str:
    return when.astimezone(dt.UTC).isoformat() if when else ""


def verdict(
    facts: NodeFacts,
    *,
    instance_ami: str | None,
    running: AmiFacts | None,
    parameter_root: str = DEFAULT_PARAMETER_ROOT,
    recommended: Mapping[str, str],
    images: Mapping[str, AmiFacts],
) -> NodeVerdict:
    """One node's verdict.

    ``instance_ami`` is the AMI ``DescribeInstances`` gave for the node's
    instance (None: the instance was not found); ``running`` that AMI's facts
    (None: EC2 no longer describes it); ``recommended`` maps parameter names
    to AMI ids (a missing name: the parameter does not exist); ``images`` the
    facts of the recommended AMIs.
    """
    row = NodeVerdict(
        name=facts.name, instance_id=facts.instance_id or "", node_group=facts.node_group,
        node_pool=facts.node_pool, kubelet_version=facts.kubelet_version,
        os_image=facts.os_image, architecture=facts.architecture, family="",
        ami_id=instance_ami or "", ami_created=_iso(running.created if running else None),
        recommended_ami_id="", recommended_created="", state=UNKNOWN, days_behind=None,
        reason="",
    )

    def unknown(reason: str, words: str) -> NodeVerdict:
        return replace(row, reason=f"{reason}: {words}")

    if not facts.provider_id:
        return unknown(NO_PROVIDER_ID, "the node has no spec.providerID (kwok or on-premises)")
    if facts.instance_id is None:
        return unknown(NOT_EC2, f"spec.providerID {facts.provider_id!r} is not an EC2 instance")
    if instance_ami is None:
        return unknown(INSTANCE_NOT_FOUND,
                       f"EC2 does not describe instance {facts.instance_id}")
    if facts.version is None:
        return unknown(NO_VERSION, f"kubelet version {facts.kubelet_version!r} names no minor")
    family = ami_family(facts.os_image, running.name if running else "")
    if family is None:
        return unknown(CUSTOM_AMI, f"OS image {facts.os_image!r} is not an EKS-optimized AMI "
                                   "(AWS publishes no recommendation for it)")
    row = replace(row, family=family.label)
    parameter = parameter_name(facts.version, family, facts.architecture, parameter_root)
    target = recommended.get(parameter)
    if not target:
        return unknown(PARAMETER_MISSING, f"SSM parameter {parameter} does not exist")
    target_facts = images.get(target)
    row = replace(row, recommended_ami_id=target,
                  recommended_created=_iso(target_facts.created if target_facts else None))
    if instance_ami == target:
        return replace(row, state=CURRENT)
    mine = running.created if running else None
    theirs = target_facts.created if target_facts else None
    if mine and theirs and mine > theirs:
        # Newer than the recommendation (a release not yet promoted): not behind.
        return replace(row, state=CURRENT)
    return replace(row, state=OUTDATED,
                   days_behind=(theirs - mine).days if mine and theirs else None)


def state_counts(verdicts: Iterable[NodeVerdict]) -> dict[str, int]:
    """Nodes by state, every state present."""
    counts = dict.fromkeys(NODE_STATES, 0)
    for v in verdicts:
        counts[v.state] += 1
    return counts


def oldest_ami_age_days(verdicts: Iterable[NodeVerdict], now: dt.datetime) -> float | None:
    """Days since the oldest running AMI (of those whose creation date is known) was created."""
    created = [dt.datetime.fromisoformat(v.ami_created) for v in verdicts if v.ami_created]
    if not created:
        return None
    return (now - min(created)).total_seconds() / 86400


def survey_record(verdicts: Iterable[NodeVerdict], now: dt.datetime) -> dict[str, Any]:
    """The survey as the JSON the operator records (camelCase keys, nodes by name)."""
    def camel(key: str) -> str:
        head, *rest = key.split("_")
        return head + "".join(part.title() for part in rest)

    return {
        "surveyedAt": now.astimezone(dt.UTC).isoformat(),
        "nodes": [{camel(k): v for k, v in asdict(row).items()}
                  for row in sorted(verdicts, key=lambda r: r.name)],
    }


def parse_survey(record: Mapping[str, Any]) -> tuple[str, list[NodeVerdict]]:
    """A recorded survey read back: its time and its rows (rows that do not parse are skipped)."""
    rows = []
    for item in record.get("nodes") or []:
        if not isinstance(item, Mapping):
            continue
        try:
            days = item.get("daysBehind")
            rows.append(NodeVerdict(
                name=str(item["name"]), instance_id=str(item.get("instanceId") or ""),
                node_group=str(item.get("nodeGroup") or ""),
                node_pool=str(item.get("nodePool") or ""),
                kubelet_version=str(item.get("kubeletVersion") or ""),
                os_image=str(item.get("osImage") or ""),
                architecture=str(item.get("architecture") or ""),
                family=str(item.get("family") or ""), ami_id=str(item.get("amiId") or ""),
                ami_created=str(item.get("amiCreated") or ""),
                recommended_ami_id=str(item.get("recommendedAmiId") or ""),
                recommended_created=str(item.get("recommendedCreated") or ""),
                state=str(item.get("state") or UNKNOWN),
                days_behind=int(days) if isinstance(days, int) else None,
                reason=str(item.get("reason") or ""),
            ))
        except KeyError:
            continue
    return str(record.get("surveyedAt") or ""), rows
