"""The audit-log and RBAC reading behind tests/e2e/test_rbac_use.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.audit import (
    OPERATOR_USER,
    Call,
    Grant,
    calls,
    grants,
    load_grants,
    uncovered,
    unused,
)

REPO = Path(__file__).resolve().parents[2]
SA = ("imagepatch-system", "imagepatch")


def event(verb: str, resource: str, *, group: str = "", namespace: str | None = None,
          subresource: str | None = None, user: str = OPERATOR_USER, audit_id: str = "a1") -> str:
    ref = {"resource": resource, "apiGroup": group}
    if namespace:
        ref["namespace"] = namespace
    if subresource:
        ref["subresource"] = subresource
    return json.dumps({"auditID": audit_id, "verb": verb, "user": {"username": user}, "objectRef": ref})


def test_calls_keep_the_operators_resource_requests_once() -> None:
    lines = [
        event("watch", "deployments", group="apps", audit_id="w"),
        event("watch", "deployments", group="apps", audit_id="w"),  # ResponseStarted, then ResponseComplete
        event("patch", "imagepatches", group="imagepatch.dev", subresource="status", audit_id="s"),
        event("get", "secrets", namespace="imagepatch-system", audit_id="g"),
        event("delete", "secrets", namespace="x", user="system:admin", audit_id="other"),
        json.dumps({"auditID": "api", "verb": "get", "user": {"username": OPERATOR_USER}}),  # /apis
        "",
    ]
    assert calls(lines) == {
        Call("apps", "deployments", "watch", None),
        Call("imagepatch.dev", "imagepatches/status", "patch", None),
        Call("", "secrets", "get", "imagepatch-system"),
    }


def test_role_grants_only_its_namespace_and_cluster_role_grants_everywhere() -> None:
    granted = load_grants(REPO / "deploy" / "rbac.yaml", service_account=SA)
    assert Grant("", "secrets", "get", "imagepatch-system") in granted
    assert uncovered([Call("", "secrets", "get", "imagepatch-system")], granted) == []
    assert uncovered([Call("", "secrets", "get", "payments")], granted) == [Call("", "secrets", "get", "payments")]
    assert uncovered([Call("", "secrets", "list", "imagepatch-system")], granted)
    assert uncovered([Call("apps", "deployments", "patch", "payments")], granted) == []
    # Build Jobs are read and deleted only in the build namespace; creating a Job in a
    # workload namespace is a CronJob's trial run (from its own template, which the
    # operator may patch anyway).
    for verb in ("get", "delete"):
        assert uncovered([Call("batch", "jobs", verb, "payments")], granted), \
            "build Jobs only in the build namespace"
    assert uncovered([Call("batch", "jobs", "create", "payments")], granted) == []
    assert uncovered([Call("", "configmaps", "get", "payments")], granted), \
        "Job templates only in the build namespace"
    # A ClusterRole grant is used by a call in any namespace.
    assert Grant("apps", "deployments", "patch", None) not in unused(
        granted, [Call("apps", "deployments", "patch", "payments")])


def test_grants_follow_bindings_of_the_service_account_only() -> None:
    docs = [
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
        {"kind": "ClusterRole", "metadata": {"name": "unbound"},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "r"},
         "subjects": [{"kind": "ServiceAccount", "name": "imagepatch", "namespace": "imagepatch-system"}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "c"},
         "roleRef": {"kind": "ClusterRole", "name": "unbound"},
         "subjects": [{"kind": "ServiceAccount", "name": "someone-else", "namespace": "imagepatch-system"}]},
    ]
    assert grants(docs, service_account=SA) == {Grant("", "pods", "list", None)}


def test_wildcards_are_refused_rather_than_misread() -> None:
    docs = [
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["list"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "r"},
         "subjects": [{"kind": "ServiceAccount", "name": "imagepatch", "namespace": "imagepatch-system"}]},
    ]
    with pytest.raises(ValueError, match="wildcards"):
        grants(docs, service_account=SA)
