"""``docs/iam-policy.json`` grants exactly what the code calls, feature by feature.

moto does not enforce IAM, so no other test notices a missing grant (issue
#16: Security Hub's ``GetFindings``/``BatchUpdateFindings`` and the rebase's
push were both missing). This test derives the actions from the code itself:

* **boto3 calls** are found by reading the adapters' source with :mod:`ast`:
  a client is whatever a function builds with ``….client("<service>")`` (the
  ``sqs``/``ecr``/``client`` properties), and every ``<client>.<method>(…)``
  or ``<client>.get_paginator("<method>")`` on it is an operation of that
  service's **botocore service model** (``xform_name`` maps the model's
  operation names to boto3's method names). The IAM action is
  ``<signingName>:<OperationName>``, save for the few operations IAM
  authorises under another action (:data:`AUTHORISED_AS`).
* **Registry API calls** (``/v2/…`` over HTTP: manifests, blobs, uploads)
  are not boto3 calls; ECR authorises them as the actions listed in
  :data:`REGISTRY_API_ACTIONS`, per feature.

Each statement belongs to one feature by its ``Sid`` prefix
(:data:`FEATURES`). The test fails when a feature lacks an action it uses,
when a statement grants an action its feature never uses, or when an action
that AWS can scope is granted on ``Resource: "*"``.
"""

from __future__ import annotations

import ast
import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name
from botocore.session import get_session

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "imagepatch"
POLICY = REPO / "docs" / "iam-policy.json"

# Feature -> the statements' Sid prefix and the modules whose boto3 calls it makes.
# Detection is always on; every other feature is added to it.
FEATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "detection": ("Detection", ("adapters/registry/credentials.py", "adapters/registry/pullthrough.py")),
    "findings": ("Findings", ("adapters/findings.py",)),
    "codebuild": ("CodeBuild", ("adapters/builders/codebuild.py",)),
    "sqs": ("Sqs", ("adapters/events.py",)),
    "securityhub": ("SecurityHub", ("adapters/securityhub.py",)),
    "rebase": ("Rebase", ()),
    "nodes": ("Nodes", ("adapters/nodes.py",)),
    "config": ("Config", ("adapters/awsconfig.py",)),
    "sns": ("Sns", ("adapters/notify/senders.py",)),
    # spec.verification.signatures and spec.rebuild.rebase.signingKey with KMS keys.
    "signatures": ("Signatures", ("adapters/signatures.py",)),
}
ALWAYS_ON = "detection"

# The registry API (the OCI distribution API on <account>.dkr.ecr.<region>.
# amazonaws.com) is plain HTTP, not boto3, so no source scan can see it. ECR
# authorises each request as an IAM action (ECR's "Amazon ECR registry
# permissions" for docker/OCI clients):
REGISTRY_API_ACTIONS: dict[str, set[str]] = {
    # adapters/registry/ reads: the login token (boto3, found by the scan too),
    # HEAD/GET manifests -> BatchGetImage, GET blobs (image configs: base-image
    # lineage) -> GetDownloadUrlForLayer.
    "detection": {"ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"},
    # adapters/builders/rebase.py pushes through the registry client's writes:
    # HEAD blob -> BatchCheckLayerAvailability; POST/PATCH/PUT uploads (and a
    # cross-repository mount) -> Initiate/UploadLayerPart/CompleteLayerUpload;
    # PUT manifest -> PutImage. It logs in and reads bases like detection does.
    "rebase": {
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
    },
}

# Operations IAM authorises as another action: SQS's batch calls are
# authorised as their single-message action.
AUTHORISED_AS = {
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:SendMessageBatch": "sqs:SendMessage",
}
# Operations that need no IAM permission at all: AWS documents that
# GetCallerIdentity works even when a policy denies it.
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}

# Actions AWS cannot scope to a resource ("*" is the only valid Resource).
UNSCOPABLE = {"ecr:GetAuthorizationToken", "ecr:DescribePullThroughCacheRules", "inspector2:ListFindings",
              "ec2:DescribeInstances", "ec2:DescribeImages", "config:PutEvaluations"}
# Where the scopable ones must point.
RESOURCE_SHAPES = {
    "ecr": ":repository/",
    "codebuild": ":project/",
    "sqs": "arn:aws:sqs:",
    "sns": "arn:aws:sns:",
    "kms": ":key/",
    "securityhub:BatchImportFindings": ":product/",
    "securityhub:GetFindings": ":hub/default",
    "securityhub:BatchUpdateFindings": ":hub/default",
    # The public parameters AWS publishes the recommended AMIs in (no account in their ARN).
    "ssm": "::parameter/aws/service/",
}


# -- what the code calls ------------------------------------------------------------


class ServiceModels:
    """botocore's service models: boto3 method names and IAM prefixes, per service."""

    def __init__(self) -> None:
        self._session = get_session()
        self._methods: dict[str, dict[str, str]] = {}
        self._prefixes: dict[str, str] = {}

    def known(self, service: str) -> bool:
        return service in self._session.get_available_services()

    def action(self, service: str, method: str) -> str | None:
        """``<prefix>:<OperationName>`` for a boto3 method of ``service``, or None."""
        if service not in self._methods:
            model = self._session.get_service_model(service)
            self._methods[service] = {xform_name(op): op for op in model.operation_names}
            self._prefixes[service] = model.signing_name or model.endpoint_prefix
        operation = self._methods[service].get(method)
        if operation is None:
            return None
        return f"{self._prefixes[service]}:{operation}"


def _service_literal(call: ast.Call, models: ServiceModels) -> str | None:
    """``"sqs"`` for ``session.client("sqs", …)``, ``boto3.client(…)``, ``self._client(…)``."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in {"client", "_client"} or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and models.known(first.value):
        return first.value
    return None


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def boto3_actions(source: str, models: ServiceModels) -> set[str]:
    """The IAM actions of the boto3 calls in one module's ``source``."""
    tree = ast.parse(source)
    # A function (method, property) that builds one service's client names that client.
    clients: dict[str, str] = {}
    services: set[str] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        found = {s for c in ast.walk(fn) if isinstance(c, ast.Call)
                 if (s := _service_literal(c, models))}
        services |= found
        if len(found) == 1:
            clients[fn.name] = found.pop()
    # A module with one service: a local `client` (say, from a factory) is that service's.
    fallback = next(iter(services)) if len(services) == 1 else None

    actions: set[str] = set()
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        receiver = _receiver_name(call.func.value)
        service = clients.get(receiver or "")
        if service is None and receiver == "client":
            service = fallback
        if service is None:
            continue
        method = call.func.attr
        if method == "get_paginator" and call.args and isinstance(call.args[0], ast.Constant):
            method = call.args[0].value
        action = models.action(service, method)
        if action is not None:
            actions.add(AUTHORISED_AS.get(action, action))
    return actions - NEEDS_NO_PERMISSION


@pytest.fixture(scope="module")
def models() -> ServiceModels:
    return ServiceModels()


@pytest.fixture(scope="module")
def used(models: ServiceModels) -> dict[str, set[str]]:
    """Feature -> the IAM actions its code needs."""
    out: dict[str, set[str]] = {}
    for feature, (_, modules) in FEATURES.items():
        actions = set(REGISTRY_API_ACTIONS.get(feature, ()))
        for module in modules:
            actions |= boto3_actions((PACKAGE / module).read_text(), models)
        out[feature] = actions
    return out


# -- what the document grants ---------------------------------------------------------


def _listed(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def feature_of(sid: str) -> str | None:
    return next((f for f, (prefix, _) in FEATURES.items() if sid.startswith(prefix)), None)


def granted(policy: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {f: set() for f in FEATURES}
    for st in policy["Statement"]:
        feature = feature_of(st["Sid"])
        if feature is not None and st["Effect"] == "Allow":
            out[feature] |= set(_listed(st["Action"]))
    return out


def problems(policy: dict[str, Any], used: dict[str, set[str]]) -> list[str]:
    """Everything wrong with ``policy`` against what the code uses (empty: all good)."""
    found: list[str] = []
    grants = granted(policy)
    for st in policy["Statement"]:
        sid = st.get("Sid", "")
        if feature_of(sid) is None:
            found.append(f"{sid}: its Sid names no feature ({[p for p, _ in FEATURES.values()]})")
    for feature, needs in used.items():
        available = grants[feature] | grants[ALWAYS_ON]
        for action in sorted(needs - available):
            found.append(f"{feature} calls {action}, which no {FEATURES[feature][0]}* statement grants")
        for action in sorted(grants[feature] - needs):
            found.append(f"{FEATURES[feature][0]}* grants {action}, which the {feature} code never calls")
    for st in policy["Statement"]:
        feature = feature_of(st.get("Sid", ""))
        if st["Effect"] == "Deny":
            # A Deny narrows a grant of its own feature (a condition AWS supports).
            for action in _listed(st["Action"]):
                if feature is None or action not in grants[feature]:
                    found.append(f"{st['Sid']}: denies {action}, which its feature does not grant")
            continue
        resources = _listed(st["Resource"])
        for action in _listed(st["Action"]):
            if "*" in resources:
                if action not in UNSCOPABLE:
                    found.append(f"{st['Sid']}: Resource * for {action}, which AWS can scope")
                continue
            if action in UNSCOPABLE:
                found.append(f"{st['Sid']}: {action} supports only Resource *")
                continue
            shape = RESOURCE_SHAPES.get(action) or RESOURCE_SHAPES.get(action.split(":")[0])
            if shape is None or not all(shape in r for r in resources):
                found.append(f"{st['Sid']}: {action} on {resources}, expected ARNs with {shape!r}")
    return found


# -- tests --------------------------------------------------------------------------


def load_policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())


def test_every_boto3_call_in_the_package_belongs_to_a_feature(models: ServiceModels) -> None:
    assigned = {m for _, modules in FEATURES.values() for m in modules}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        actions = boto3_actions(path.read_text(), models)
        if actions:
            assert module in assigned, f"{module} calls {sorted(actions)}: add it to FEATURES"
        elif module in assigned:
            pytest.fail(f"{module} is listed in FEATURES but no boto3 call was found in it")


def test_scan_finds_the_calls_each_adapter_makes(used: dict[str, set[str]]) -> None:
    # Anchors for the scanner itself: a call it missed would let a missing grant pass.
    assert {"codebuild:StartBuild", "codebuild:BatchGetBuilds", "codebuild:ListBuildsForProject",
            "codebuild:StopBuild"} <= used["codebuild"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= used["sqs"]
    assert {"securityhub:GetFindings", "securityhub:BatchImportFindings",
            "securityhub:BatchUpdateFindings"} == used["securityhub"]
    assert {"ecr:DescribeImageScanFindings", "ecr:StartImageScan",
            "inspector2:ListFindings"} == used["findings"]
    assert "ecr:GetAuthorizationToken" in used["detection"]
    assert {"kms:GetPublicKey", "kms:Sign"} == used["signatures"]


def test_iam_policy_grants_exactly_what_each_feature_calls(used: dict[str, set[str]]) -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    for st in policy["Statement"]:
        assert st["Effect"] in {"Allow", "Deny"} and st["Sid"].isalnum(), st
        assert not any("*" in a for a in _listed(st["Action"])), f"wildcard action in {st['Sid']}"
    assert problems(policy, used) == []
    assert {f for f, actions in granted(policy).items() if actions} == set(FEATURES)


def granted_pairs() -> Iterable[tuple[str, str]]:
    for st in load_policy()["Statement"]:
        if st["Effect"] == "Allow":
            for action in _listed(st["Action"]):
                yield st["Sid"], action


@pytest.mark.parametrize(("sid", "action"), list(granted_pairs()))
def test_removing_any_granted_action_is_caught(
    used: dict[str, set[str]], sid: str, action: str
) -> None:
    policy = copy.deepcopy(load_policy())
    (st,) = [s for s in policy["Statement"] if s["Sid"] == sid]
    st["Action"] = [a for a in _listed(st["Action"]) if a != action]
    assert any(action in p for p in problems(policy, used)), f"dropping {action} went unnoticed"


@pytest.mark.parametrize(
    ("sid", "action"),
    [
        ("DetectionReadImagesOfNamedRepositories", "ecr:DescribeImages"),  # granted in v0.1, never called
        ("SqsConsumeEventsQueue", "sqs:GetQueueAttributes"),
        ("FindingsEcrScansOfNamedRepositories", "ecr:PutImage"),  # push belongs to the rebase only
    ],
)
def test_a_grant_nothing_uses_is_caught(used: dict[str, set[str]], sid: str, action: str) -> None:
    policy = copy.deepcopy(load_policy())
    (st,) = [s for s in policy["Statement"] if s["Sid"] == sid]
    st["Action"] = [*_listed(st["Action"]), action]
    assert any(action in p and "never calls" in p for p in problems(policy, used))


def test_widening_a_scoped_action_to_any_resource_is_caught(used: dict[str, set[str]]) -> None:
    policy = copy.deepcopy(load_policy())
    (st,) = [s for s in policy["Statement"] if s["Sid"] == "RebasePushToNamedRepositories"]
    st["Resource"] = "*"
    assert any("ecr:PutImage" in p and "can scope" in p for p in problems(policy, used))


def test_security_hub_updates_are_limited_to_resolving() -> None:
    deny = [s for s in load_policy()["Statement"] if s["Effect"] == "Deny"]
    assert [s["Action"] for s in deny] == [["securityhub:BatchUpdateFindings"]]
    # securityhub.py only ever sets Workflow RESOLVED on findings it archived.
    assert deny[0]["Condition"] == {
        "StringNotEquals": {"securityhub:ASFFSyntaxPath/Workflow.Status": "RESOLVED"}
    }
    source = (PACKAGE / "adapters" / "securityhub.py").read_text()
    assert 'Workflow={"Status": "RESOLVED"}' in source


def test_aws_doc_names_every_statement() -> None:
    doc = (REPO / "docs" / "aws.md").read_text()
    for st in load_policy()["Statement"]:
        assert f"`{st['Sid']}`" in doc, f"docs/aws.md does not explain {st['Sid']}"
