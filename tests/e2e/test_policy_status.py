"""The operator reconciles ImagePatchPolicies into kstatus conditions.

Given the operator running under its shipped ServiceAccount and RBAC,
when a policy is created, broken in ways CEL cannot see, and fixed again,
then its status follows: Ready, Stalled/InvalidSpec naming the field, Ready.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.wait import wait_for

GROUP_VERSION = "imagepatch.dev/v1alpha1"


@pytest.fixture
def policy_name(kube):
    name = f"p-{uuid.uuid4().hex[:8]}"
    yield name
    kube.kubectl("delete", "imagepatchpolicy", name, "--wait=false", check=False)


def apply_policy(kube, name: str, window: dict | None) -> None:
    spec = {"namespaceSelector": {"matchLabels": {"team": "payments"}}}
    if window:
        spec["maintenanceWindow"] = window
    doc = {"apiVersion": GROUP_VERSION, "kind": "ImagePatchPolicy",
           "metadata": {"name": name}, "spec": spec}
    kube.kubectl("apply", "--server-side", "--field-manager=test", "-f", "-", input=json.dumps(doc))


def status_of(kube, name: str) -> dict:
    obj = json.loads(kube.kubectl("get", "imagepatchpolicy", name, "-o", "json"))
    return {"generation": obj["metadata"]["generation"], **obj.get("status", {})}


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status.get("conditions", [])}


def wait_condition(kube, name: str, ctype: str, cstatus: str, *, reason: str | None = None) -> dict:
    def probe():
        st = status_of(kube, name)
        cond = conditions(st).get(ctype, {})
        current = st.get("observedGeneration") == st["generation"]
        if current and cond.get("status") == cstatus and (reason is None or cond.get("reason") == reason):
            return st
        return None

    return wait_for(probe, timeout=30, what=f"{name} {ctype}={cstatus} {reason or ''}")


def test_operator_serves_liveness(operator) -> None:
    # As the kubelet probes it (failureThreshold 3): right after start, in a session
    # whose earlier modules left hundreds of objects for this cluster-wide operator to
    # list and feed its store, one probe may wait behind that burst.
    assert any(operator.healthz() == 200 for _ in range(3))


def test_valid_policy_turns_ready(kube, operator, policy_name) -> None:
    apply_policy(kube, policy_name, {"schedule": "cron(0 2 ? * SUN *)", "duration": "4h",
                                     "cutoff": "1h", "timezone": "Europe/Berlin"})
    status = wait_condition(kube, policy_name, "Ready", "True", reason="Reconciled")
    assert "Stalled" not in conditions(status)
    printed = kube.kubectl("get", "imagepatchpolicy", policy_name)
    assert "True" in printed  # the Ready printer column


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"schedule": "cron(0 25 ? * SUN *)", "duration": "4h"}, "spec.maintenanceWindow.schedule"),
        ({"schedule": "0 2 * * 0", "timezone": "Europe/Atlantis", "duration": "4h"},
         "spec.maintenanceWindow.timezone"),
    ],
    ids=["bad-cron", "unknown-timezone"],
)
def test_invalid_spec_stalls_then_recovers_when_fixed(kube, operator, policy_name, broken, field) -> None:
    apply_policy(kube, policy_name, broken)
    status = wait_condition(kube, policy_name, "Stalled", "True", reason="InvalidSpec")
    stalled = conditions(status)["Stalled"]
    assert stalled["message"].startswith(f"{field}:")
    assert conditions(status)["Ready"]["status"] == "False"

    apply_policy(kube, policy_name, {"schedule": "cron(0 2 ? * SUN *)", "duration": "4h"})
    status = wait_condition(kube, policy_name, "Ready", "True", reason="Reconciled")
    assert "Stalled" not in conditions(status)
    assert status["observedGeneration"] == 2
