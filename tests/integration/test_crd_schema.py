"""The imagepatch CRDs, as a real API server enforces them.

Given the CRDs from ``crds/`` on a v1.34 API server:

* malformed ImagePatchPolicies and ImagePatches are rejected, each with a
  message that names the bad field;
* DESIGN.md's examples are accepted, and the CRD's defaults are applied on
  create;
* a full status survives a write and a read: nothing the operator records is
  pruned (nolar/kopf#527);
* ``kubectl get`` shows the printer columns, and the short names are not
  taken by any other resource.

Creates use server-side dry-run (``dryRun=All``): fast, and nothing is left
behind. The few tests that need a stored object delete it at the end.

Every policy case is also fed to ``imagepatch.model``: the model must reject
what the API server rejects and default what it defaults, so the CRD and
``model/policy.py`` cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagepatch.model import SpecError, parse_policy, parse_policy_spec
from tests.support.malformed import policy_cases

pytestmark = pytest.mark.cluster

GROUP, VERSION = "imagepatch.dev", "v1alpha1"
POLICIES, PATCHES = "imagepatchpolicies", "imagepatches"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64

# The policy DESIGN.md describes: an AWS cron window, waves staging -> prod,
# an ECR baseline with approve-after-days and an ignore list, CodeBuild.
DESIGN_POLICY_SPEC: dict[str, Any] = {
    "namespaceSelector": {
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["staging", "prod"]}]
    },
    "baseImages": {
        "trusted": ["public.ecr.aws/docker/library/python:3.12-*"],
        "checkInterval": "30m",
    },
    "vulnerabilities": {
        "source": "ecr",
        "minSeverity": "HIGH",
        "fixAvailableOnly": True,
        "approveAfterDays": 7,
        "ignore": ["CVE-2024-12345", "GHSA-jfh8-c2jp-5v3q"],
    },
    "rebuild": {"strategy": "codebuild", "codebuild": {"project": "payments-api"}},
    "rollout": {
        "progressDeadlineSeconds": 600,
        "healthyFor": "5m",
        "maxRestarts": 2,
        "rollback": True,
        "waves": [
            {
                "name": "staging",
                "namespaceSelector": {"matchLabels": {"env": "staging"}},
                "soak": "1h",
            },
            {"name": "prod", "namespaceSelector": {"matchLabels": {"env": "prod"}}},
        ],
    },
    "maintenanceWindow": {
        "schedule": "cron(0 2 ? * SUN *)",
        "timezone": "Europe/Berlin",
        "duration": "3h",
        "cutoff": "1h",
    },
    "approval": "Manual",
}

# What the API server makes of `spec: {namespaceSelector: {}}`.
MINIMAL_POLICY_DEFAULTED: dict[str, Any] = {
    "namespaceSelector": {},
    "suspend": False,
    "baseImages": {"checkInterval": "1h"},
    "vulnerabilities": {
        "source": "none",
        "minSeverity": "HIGH",
        "fixAvailableOnly": True,
        "approveAfterDays": 0,
    },
    "rebuild": {"strategy": "external", "timeout": "1h", "tagPolicy": "New",
                "tagTemplate": "{tag}-patch.{yyyymmdd}.{n}"},
    "rollout": {
        "progressDeadlineSeconds": 600,
        "healthyFor": "5m",
        "maxRestarts": 0,
        "rollback": True,
        "cronJobTrialRun": False,
        "cronJobRunWithin": "192h",
        "onTargetFailure": "Continue",
    },
    "history": {"keepCount": 100, "maxAge": "2160h"},
    "approval": "Automatic",
}

# An ImagePatch as the operator creates it.
OPERATOR_PATCH_SPEC: dict[str, Any] = {
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments-api",
    "currentDigest": DIGEST_A,
    "policy": "critical-fixes",
    "reason": "BaseImageOutdated",
    "evidence": {
        "baseImage": {
            "name": "public.ecr.aws/docker/library/python:3.12-slim",
            "oldDigest": DIGEST_B,
            "newDigest": DIGEST_C,
        },
        "findings": [
            {
                "id": "CVE-2024-12345",
                "severity": "HIGH",
                "package": "openssl",
                "fixAvailable": True,
                "firstObservedAt": "2026-01-01T00:00:00Z",
            }
        ],
    },
    "rebuild": {"strategy": "codebuild", "codebuildProject": "payments-api"},
    "targets": [
        {
            "namespace": "staging",
            "kind": "Deployment",
            "name": "web",
            "container": "app",
            "wave": 0,
        },
        {"namespace": "prod", "name": "web", "container": "app", "wave": 1},
    ],
}


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(kube: Any, crds: list[str]) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def policy_body(spec: dict[str, Any], *, name: str = "test-policy") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImagePatchPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def patch_body(spec: dict[str, Any], *, name: str = "test-patch") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImagePatch",
        "metadata": {"name": name},
        "spec": spec,
    }


def with_fields(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted paths set (``rollout__healthyFor="x"``).

    Double underscores separate path segments; a value of ``DELETE`` removes the key.
    """
    spec = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return spec


DELETE = object()
MINIMAL = {"namespaceSelector": {}}


def minimal(**changes: Any) -> dict[str, Any]:
    return with_fields(MINIMAL, **changes)


def rejection_message(call: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 422, caught.value.body
    return json.loads(caught.value.body)["message"]


def dry_run_create(api: client.CustomObjectsApi, plural: str, body: dict[str, Any]) -> Any:
    return api.create_cluster_custom_object(GROUP, VERSION, plural, body, dry_run="All")


@pytest.fixture
def stored(api: client.CustomObjectsApi) -> Iterator[Callable[[str, dict[str, Any]], Any]]:
    """Create real objects (for updates and status writes); delete them afterwards."""
    created: list[tuple[str, str]] = []

    def create(plural: str, body: dict[str, Any]) -> Any:
        obj = api.create_cluster_custom_object(GROUP, VERSION, plural, body)
        created.append((plural, body["metadata"]["name"]))
        return obj

    yield create
    for plural, name in created:
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, plural, name)
        except ApiException as e:
            if e.status != 404:
                raise


# -- ImagePatchPolicy: rejected ---------------------------------------------------------

WAVE = {"name": "staging", "namespaceSelector": {"matchLabels": {"env": "staging"}}}
WINDOW = {"schedule": "cron(0 2 ? * SUN *)", "duration": "3h"}

# Shared with tests/unit/test_policy_model.py: one folder of malformed specs,
# each with the API server's message and the model's field (tests/data/policies/).
BAD_POLICIES = [
    pytest.param(spec, expected["crd"], expected.get("model"), id=name.removesuffix(".yaml"))
    for name, spec, expected in policy_cases()
    if "crd" in expected
]


@pytest.mark.parametrize(("spec", "expected", "model"), BAD_POLICIES)
def test_malformed_policy_is_rejected_naming_the_field(api, spec, expected, model):
    message = rejection_message(lambda: dry_run_create(api, POLICIES, policy_body(spec)))
    assert expected in message

    # The model mirrors the CRD: what the server rejects, it rejects too.
    with pytest.raises(SpecError) as caught:
        parse_policy_spec(spec)
    if model:
        assert caught.value.field == model["field"]


def test_policy_name_longer_than_a_label_value_is_rejected(api):
    name = "p" * 64
    message = rejection_message(
        lambda: dry_run_create(api, POLICIES, policy_body(MINIMAL, name=name))
    )
    assert "metadata.name must be at most 63 characters" in message
    with pytest.raises(SpecError, match=r"^metadata\.name: "):
        parse_policy(policy_body(MINIMAL, name=name))


# -- ImagePatchPolicy: accepted and defaulted -------------------------------------------


def test_minimal_policy_gets_every_default(api):
    created = dry_run_create(api, POLICIES, policy_body(MINIMAL))

    assert created["spec"] == MINIMAL_POLICY_DEFAULTED
    # The model applies the same defaults to an undefaulted spec.
    assert parse_policy_spec(created["spec"]) == parse_policy_spec(MINIMAL)


def test_design_policy_is_accepted_and_defaulted(api):
    created = dry_run_create(api, POLICIES, policy_body(DESIGN_POLICY_SPEC, name="critical-fixes"))

    spec = created["spec"]
    assert spec["maintenanceWindow"] == {**DESIGN_POLICY_SPEC["maintenanceWindow"]}
    assert [w["soak"] for w in spec["rollout"]["waves"]] == ["1h", "0s"]
    assert spec["rebuild"]["timeout"] == "1h"
    assert spec["suspend"] is False
    assert parse_policy_spec(spec) == parse_policy_spec(DESIGN_POLICY_SPEC)


GOOD_POLICIES = [
    pytest.param(
        minimal(maintenanceWindow={"schedule": "0 2 * * 0", "duration": "90m", "timezone": "UTC"}),
        id="five-field-cron",
    ),
    pytest.param(
        minimal(
            maintenanceWindow={
                "schedule": "cron(30 22 ? * MON-FRI *)",
                "duration": "1.5h",
                "cutoff": "30m",
                "timezone": "America/Argentina/Buenos_Aires",
            }
        ),
        id="aws-cron-fractional-duration",
    ),
    pytest.param(
        # SSM_OPTIONS (maintenance-windows-schedule-options.html) example 4, with a period.
        minimal(
            maintenanceWindow={
                "schedule": "cron(0 30 23 ? * TUE#3 *)",
                "duration": "4h",
                "cutoff": "1h",
                "scheduleOffset": 2,
                "startDate": "2021-01-01T00:00:00-08:00",
                "endDate": "2021-06-30T00:00:00-08:00",
            }
        ),
        id="ssm-seven-field-cron-offset-and-period",
    ),
    pytest.param(
        minimal(rebuild={"strategy": "job", "job": {"template": "kaniko-build"}}),
        id="job-strategy",
    ),
    pytest.param(
        minimal(
            rebuild={
                "strategy": "codebuild",
                "codebuild": {
                    "project": "arn:aws:codebuild:eu-west-1:123456789012:project/payments"
                },
            }
        ),
        id="codebuild-project-arn",
    ),
    pytest.param(minimal(rebuild={"strategy": "rebase", "timeout": "20m"}), id="rebase-strategy"),
    pytest.param(minimal(rebuild={"tagPolicy": "Overwrite"}), id="tag-overwrite"),
    pytest.param(minimal(rebuild={"tagTemplate": "{tag}_p{yyyymmdd}.{n}"}), id="tag-template"),
    pytest.param(
        minimal(rebuild={"strategy": "codebuild", "codebuild": {"project": "payments"},
                         "allowed": {"strategies": ["codebuild", "job"],
                                     "codebuildProjects": ["payments", "team-a-*"],
                                     "jobTemplates": ["buildah-rebuild"]}}),
        id="rebuild-allowed",
    ),
    pytest.param(
        minimal(
            namespaceSelector={
                "matchLabels": {"imagepatch.dev/enabled": "true"},
                "matchExpressions": [
                    {"key": "env", "operator": "Exists"},
                    {"key": "tier", "operator": "NotIn", "values": ["batch"]},
                    {"key": "legacy", "operator": "DoesNotExist", "values": []},
                ],
            }
        ),
        id="selector-every-operator",
    ),
    pytest.param(
        minimal(rollout={"waves": [], "healthyFor": "0s", "maxRestarts": 3}), id="no-waves"
    ),
    pytest.param(
        minimal(registryCredentials={"secretName": "registry-creds"}, suspend=True),
        id="registry-credentials-suspended",
    ),
    pytest.param(
        minimal(notifications=[
            {"name": "team", "type": "Slack", "secretRef": {"name": "slack-webhook"}},
            {"name": "teams", "type": "MSTeams", "secretRef": {"name": "teams-workflow"},
             "reasons": ["Failed", "RolledBack"]},
            {"name": "hook", "type": "Webhook", "secretRef": {"name": "hook"},
             "reasons": ["AwaitingApproval", "BaseImageOutdated"]},
            {"name": "audit", "type": "SNS",
             "topicArn": "arn:aws:sns:eu-west-1:123456789012:imagepatch-notifications"},
        ]),
        id="notifications-every-sink-type",
    ),
    pytest.param(
        minimal(
            rebuild={"strategy": "rebase", "rebase": {"signingKey": {"secretName": "rebase-key"}}},
            verification={
                "signatures": {
                    "keys": [{"secretName": "cosign-ci"},
                             {"kmsKey": "arn:aws:kms:us-east-1:123456789012:alias/ci-signing"}],
                    "keyless": [{"issuer": "https://token.actions.githubusercontent.com",
                                 "subjectRegExp": "^https://github.com/org/.*$"}],
                    "waitFor": "2m",
                },
                "provenance": {"builderIdRegExp": "^https://github.com/org/.*$"},
            },
        ),
        id="signatures-and-provenance",
    ),
]


@pytest.mark.parametrize("spec", GOOD_POLICIES)
def test_valid_policy_is_accepted_and_the_model_agrees(api, spec):
    created = dry_run_create(api, POLICIES, policy_body(spec))

    assert parse_policy_spec(created["spec"]) == parse_policy_spec(spec)


# -- ImagePatch -----------------------------------------------------------------------------

BAD_PATCHES = [
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, image="registry.example.com/team/app:1.2"),
        "spec.image must not contain a tag",
        id="image-with-tag",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, image=f"registry.example.com/team/app@{DIGEST_A}"),
        "spec.image must not contain a digest",
        id="image-with-digest",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, targetDigest=DIGEST_A),
        "spec.targetDigest must differ from spec.currentDigest",
        id="targetDigest-equals-currentDigest",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, currentDigest="sha256:abc"),
        "spec.currentDigest in body should match",
        id="currentDigest-malformed",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, reason="Outdated"),
        'spec.reason: Unsupported value: "Outdated"',
        id="reason-enum",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, policy=DELETE),
        "spec.policy: Required value",
        id="policy-missing",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, rebuild={"strategy": "codebuild"}),
        "spec.rebuild.codebuildProject is required when spec.rebuild.strategy is codebuild",
        id="codebuild-without-project",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, rebuild={"strategy": "job"}),
        "spec.rebuild.jobTemplate is required when spec.rebuild.strategy is job",
        id="job-without-template",
    ),
    pytest.param(
        with_fields(OPERATOR_PATCH_SPEC, approval={"decision": "Maybe"}),
        'spec.approval.decision: Unsupported value: "Maybe"',
        id="approval-decision-enum",
    ),
    pytest.param(
        with_fields(
            OPERATOR_PATCH_SPEC,
            targets=[{"namespace": "prod", "kind": "ReplicaSet", "name": "web", "container": "app"}],
        ),
        'spec.targets[0].kind: Unsupported value: "ReplicaSet"',
        id="target-kind-enum",
    ),
    pytest.param(
        with_fields(
            OPERATOR_PATCH_SPEC,
            targets=[
                {"namespace": "prod", "name": "web", "container": "app"},
                {"namespace": "prod", "kind": "Deployment", "name": "web", "container": "app"},
            ],
        ),
        "spec.targets[1]: Duplicate value",
        id="target-duplicate",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), BAD_PATCHES)
def test_malformed_imagepatch_is_rejected_naming_the_field(api, spec, expected):
    message = rejection_message(lambda: dry_run_create(api, PATCHES, patch_body(spec)))
    assert expected in message


def test_operator_imagepatch_is_accepted_and_defaulted(api):
    created = dry_run_create(api, PATCHES, patch_body(OPERATOR_PATCH_SPEC))

    assert [t["kind"] for t in created["spec"]["targets"]] == ["Deployment", "Deployment"]
    assert created["spec"]["evidence"] == OPERATOR_PATCH_SPEC["evidence"]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            {"image": "localhost:5000/team/app", "policy": "critical-fixes", "reason": "Manual"},
            id="manual-with-registry-port",
        ),
        pytest.param(
            {
                "image": "nginx",
                "policy": "p",
                "reason": "Manual",
                "currentDigest": DIGEST_A,
                "targetDigest": DIGEST_B,
                "approval": {"decision": "Approved", "by": "alice", "reason": "hotfix"},
            },
            id="manual-pinned-and-approved",
        ),
    ],
)
def test_human_imagepatch_is_accepted(api, spec):
    dry_run_create(api, PATCHES, patch_body(spec))


def test_imagepatch_image_is_immutable(api, stored):
    name = unique("immutable")
    stored(PATCHES, patch_body(OPERATOR_PATCH_SPEC, name=name))

    message = rejection_message(
        lambda: api.patch_cluster_custom_object(
            GROUP,
            VERSION,
            PATCHES,
            name,
            {"spec": {"image": "registry.example.com/other"}},
            dry_run="All",
        )
    )
    assert "spec.image is immutable" in message

    # Approving, by contrast, is one patch.
    approved = api.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PATCHES,
        name,
        {"spec": {"approval": {"decision": "Approved", "by": "alice"}}},
        dry_run="All",
    )
    assert approved["spec"]["approval"] == {"decision": "Approved", "by": "alice"}


# -- status: nothing recorded is pruned ----------------------------------------------------

CONDITION = {
    "type": "Ready",
    "status": "True",
    "observedGeneration": 1,
    "lastTransitionTime": "2026-01-01T00:00:00Z",
    "reason": "Reconciled",
    "message": "12 workloads, 11 compliant",
}

FULL_POLICY_STATUS = {
    "observedGeneration": 1,
    "conditions": [CONDITION],
    "lastHandledReconcileAt": "2026-01-01T00:00:00Z",
    "findings": {"readable": False, "reason": "AccessDenied", "message": "image x: findings unreadable"},
    "notifications": {"failing": [{"sink": "team", "type": "Slack", "reason": "NotificationRejected",
                                   "message": "Slack sink 'team' refused the message with HTTP 404",
                                   "at": "2026-01-01T00:00:00Z"}]},
    "workloads": {
        "total": 12,
        "compliant": 11,
        "baseImageOutdated": 1,
        "vulnerable": 0,
        "untrustedBase": 0,
        "patching": 1,
        "failed": 0,
    },
}

FULL_PATCH_STATUS = {
    "phase": "RollingOut",
    "observedGeneration": 1,
    "conditions": [{**CONDITION, "type": "Reconciling", "reason": "RollingOut"}],
    "idempotencyKey": f"payments-api@{DIGEST_C}",
    "progress": "1/2",
    "nextWindowStart": "2026-01-04T02:00:00Z",
    "rebuild": {
        "strategy": "codebuild",
        "buildId": "payments-api:1b2c",
        "startedAt": "2026-01-01T00:01:00Z",
        "finishedAt": "2026-01-01T00:09:00Z",
        "digest": DIGEST_B,
        "logsUrl": "https://console.aws.amazon.com/codesuite/codebuild/projects/payments-api",
        "buildStatus": "SUCCEEDED",
        "message": "built on the new base",
        "tag": "1.4-patch.20260101.1",
        "baseImage": f"public.ecr.aws/docker/library/python@{DIGEST_C}",
    },
    "verification": {
        "result": "Passed",
        "baseDigest": DIGEST_C,
        "platforms": ["linux/amd64", "linux/arm64"],
        "findingsBefore": 3,
        "findingsAfter": 0,
        "message": "base digest matches",
        "checkedAt": "2026-01-01T00:10:00Z",
        "signature": {"result": "Verified", "key": "secret:cosign-ci/cosign.pub",
                      "keysTried": ["secret:cosign-ci/cosign.pub"], "source": "tag",
                      "message": "signed by secret:cosign-ci/cosign.pub (tag)"},
        "provenance": {"result": "Verified", "builderId": "https://ci.example/build",
                       "key": "secret:cosign-ci/cosign.pub", "message": "SLSA provenance"},
    },
    "rollouts": [
        {
            "wave": 0,
            "namespace": "staging",
            "kind": "Deployment",
            "name": "web",
            "container": "app",
            "previousImage": f"{OPERATOR_PATCH_SPEC['image']}@{DIGEST_A}",
            "targetImage": f"{OPERATOR_PATCH_SPEC['image']}@{DIGEST_B}",
            "phase": "Healthy",
            "startedAt": "2026-01-01T00:11:00Z",
            "healthySince": "2026-01-01T00:12:00Z",
            "finishedAt": "2026-01-01T00:17:00Z",
            "reason": "Healthy",
            "message": "3/3 replicas available for 5m",
        },
        {
            "wave": 1,
            "namespace": "prod",
            "kind": "Deployment",
            "name": "web",
            "container": "app",
            "phase": "Pending",
        },
    ],
    "failedDigests": [DIGEST_A],
    "history": [
        {"phase": "Pending", "at": "2026-01-01T00:00:00Z", "by": "imagepatch"},
        {"phase": "RollingOut", "at": "2026-01-01T00:11:00Z", "message": "wave staging"},
    ],
}


@pytest.mark.parametrize(
    ("plural", "body", "status"),
    [
        pytest.param(POLICIES, policy_body(MINIMAL), FULL_POLICY_STATUS, id="policy"),
        pytest.param(PATCHES, patch_body(OPERATOR_PATCH_SPEC), FULL_PATCH_STATUS, id="imagepatch"),
    ],
)
def test_full_status_survives_a_round_trip(api, stored, plural, body, status):
    name = unique("status")
    body = copy.deepcopy(body)
    body["metadata"]["name"] = name
    stored(plural, body)

    api.patch_cluster_custom_object_status(GROUP, VERSION, plural, name, {"status": status})

    assert api.get_cluster_custom_object(GROUP, VERSION, plural, name)["status"] == status


# -- printer columns -------------------------------------------------------------------------


def table(api: client.CustomObjectsApi, plural: str, name: str) -> dict[str, str]:
    response = api.get_cluster_custom_object(
        GROUP,
        VERSION,
        plural,
        name,
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        _preload_content=False,
    )
    data = json.loads(response.data)
    columns = [c["name"] for c in data["columnDefinitions"]]
    return dict(zip(columns, data["rows"][0]["cells"], strict=True))


def test_kubectl_get_shows_the_printer_columns(api, stored):
    policy_name, patch_name = unique("columns"), unique("columns")
    stored(POLICIES, policy_body(MINIMAL, name=policy_name))
    api.patch_cluster_custom_object_status(
        GROUP, VERSION, POLICIES, policy_name, {"status": FULL_POLICY_STATUS}
    )
    stored(PATCHES, patch_body(OPERATOR_PATCH_SPEC, name=patch_name))
    api.patch_cluster_custom_object_status(
        GROUP, VERSION, PATCHES, patch_name, {"status": FULL_PATCH_STATUS}
    )

    row = table(api, POLICIES, policy_name)
    assert {k: row[k] for k in ("Ready", "Reason", "Workloads", "Compliant")} == {
        "Ready": "True",
        "Reason": "Reconciled",
        "Workloads": 12,
        "Compliant": 11,
    }
    row = table(api, PATCHES, patch_name)
    assert {k: row[k] for k in ("Image", "Reason", "Phase", "Progress")} == {
        "Image": OPERATOR_PATCH_SPEC["image"],
        "Reason": "BaseImageOutdated",
        "Phase": "RollingOut",
        "Progress": "1/2",
    }
    assert "Age" in row


def test_short_names_and_categories_resolve_to_our_kinds_only(kube, crds):
    """`kubectl get ipp`, `kubectl get ipatch NAME`, `kubectl get imagepatch NAME` and
    `kubectl get imagepatch-all` must each mean what they say.

    kubectl expands a category before it looks up a resource, so a category
    must not share its name with any resource's name, singular or short name.
    """
    api_client = kube.api_client
    names: dict[str, list[str]] = {}
    categories: dict[str, list[str]] = {}

    def note(group_version: str, resources: Any) -> None:
        for r in resources.resources:
            if "/" in r.name:  # a subresource
                continue
            resource = f"{r.name}.{group_version}"
            for name in [r.name, r.singular_name, *(r.short_names or [])]:
                if name:
                    names.setdefault(name, []).append(resource)
            for category in r.categories or []:
                categories.setdefault(category, []).append(resource)

    note("v1", client.CoreV1Api(api_client).get_api_resources())
    custom = client.CustomObjectsApi(api_client)
    for group in client.ApisApi(api_client).get_api_versions().groups:
        version = group.preferred_version.version
        note(f"{group.name}/{version}", custom.get_api_resources(group.name, version))

    policies, patches = f"{POLICIES}.{GROUP}/{VERSION}", f"{PATCHES}.{GROUP}/{VERSION}"
    assert names["ipp"] == [policies]
    assert names["ipatch"] == [patches]
    assert names["imagepatch"] == [patches]
    assert sorted(categories["imagepatch-all"]) == sorted([policies, patches])
    assert not set(categories) & set(names)
