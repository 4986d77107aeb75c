"""ImagePatchPolicy status: Ready, or Stalled/InvalidSpec naming the field, and recovery."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagepatch.core.policy import REQUESTED_AT_ANNOTATION, policy_status

T0 = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)


def policy(generation: int = 1, status: dict | None = None, annotations: dict | None = None,
           **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "imagepatch.dev/v1alpha1",
        "kind": "ImagePatchPolicy",
        "metadata": {"name": "critical-fixes", "generation": generation,
                     "annotations": annotations or {}},
        "spec": {"namespaceSelector": {}, **spec},
        "status": status or {},
    }


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_valid_policy_is_ready_for_its_generation() -> None:
    status = policy_status(policy(generation=3), now=T0)
    assert status["observedGeneration"] == 3
    conds = conditions(status)
    assert set(conds) == {"Ready"}
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("True", "Reconciled")
    assert conds["Ready"]["observedGeneration"] == 3


@pytest.mark.parametrize(
    ("window", "field", "detail"),
    [
        ({"schedule": "cron(0 25 ? * SUN *)", "duration": "4h"},
         "spec.maintenanceWindow.schedule", "not a valid cron expression"),
        ({"schedule": "0 2 30 2 *", "duration": "4h"},
         "spec.maintenanceWindow.schedule", "never matches"),
        ({"schedule": "0 2 * * 0", "timezone": "Europe/Atlantis", "duration": "4h"},
         "spec.maintenanceWindow.timezone", "unknown timezone"),
    ],
)
def test_what_cel_cannot_check_stalls_with_the_field_named(window, field, detail) -> None:
    status = policy_status(policy(maintenanceWindow=window), now=T0)
    conds = conditions(status)
    assert conds["Stalled"]["status"] == "True"
    assert conds["Stalled"]["reason"] == "InvalidSpec"
    assert conds["Stalled"]["message"].startswith(field + ":")
    assert detail in conds["Stalled"]["message"]
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "InvalidSpec")


def test_model_errors_stall_with_the_field_named() -> None:
    status = policy_status(policy(rollout={"healthyFor": "soon"}), now=T0)
    assert conditions(status)["Stalled"]["message"].startswith("spec.rollout.healthyFor:")


def test_fixing_the_spec_clears_stalled_and_turns_ready() -> None:
    bad = policy_status(policy(maintenanceWindow={"schedule": "0 2 * *", "duration": "4h"}), now=T0)
    later = T0 + dt.timedelta(minutes=5)
    fixed = policy(generation=2, status=bad,
                   maintenanceWindow={"schedule": "cron(0 2 ? * SUN *)", "duration": "4h"})
    status = policy_status(fixed, now=later)
    conds = conditions(status)
    assert set(conds) == {"Ready"}
    assert conds["Ready"]["status"] == "True"
    assert conds["Ready"]["lastTransitionTime"] == "2026-11-27T08:05:00Z"
    assert status["observedGeneration"] == 2


def test_suspended_policy_says_so() -> None:
    ready = conditions(policy_status(policy(suspend=True), now=T0))["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Suspended")


def test_manual_retrigger_is_echoed() -> None:
    obj = policy(annotations={REQUESTED_AT_ANNOTATION: "2026-11-27T08:00:00Z"})
    assert policy_status(obj, now=T0)["lastHandledReconcileAt"] == "2026-11-27T08:00:00Z"


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        pytest.param({"readable": False, "reason": "FindingsUnavailable", "message": "image x: no AWS region configured"},
                     ("False", "FindingsUnavailable", "no AWS region configured"), id="no-region"),
        pytest.param({"readable": False, "reason": "AccessDenied", "message": "image x: findings unreadable: AccessDeniedException"},
                     ("False", "AccessDenied", "AccessDeniedException"), id="access-denied"),
        pytest.param({"readable": True, "reason": "FindingsRead", "message": ""},
                     ("True", "FindingsRead", "read"), id="readable"),
    ],
)
def test_unreadable_findings_show_as_a_policy_condition(findings, expected) -> None:
    status = policy_status(policy(status={"findings": findings}, vulnerabilities={"source": "ecr"}), now=T0)
    cond = conditions(status)["FindingsReadable"]
    assert (cond["status"], cond["reason"]) == expected[:2]
    assert expected[2] in cond["message"]
    assert conditions(status)["Ready"]["status"] == "True"


def test_no_findings_condition_when_the_policy_reads_none() -> None:
    recorded = {"findings": {"readable": False, "reason": "FindingsUnavailable", "message": "m"},
                "conditions": [{"type": "FindingsReadable", "status": "False", "reason": "FindingsUnavailable",
                                "message": "m", "lastTransitionTime": "2026-11-27T07:00:00Z"}]}
    status = policy_status(policy(status=recorded, vulnerabilities={"source": "none"}), now=T0)
    assert "FindingsReadable" not in conditions(status)


@pytest.mark.parametrize(("template", "detail"), [
    ("imagepatch: {workload} to {image}", "unknown placeholder {image}"),
    ("imagepatch: {workload", "a lone '{' or '}'"),
])
def test_a_bad_commit_message_template_stalls_naming_it(template, detail) -> None:
    write_back = {"url": "https://git.example.com/a.git", "secretRef": {"name": "git"},
                  "messageTemplate": template}
    status = policy_status(policy(rollout={"mode": "GitWriteBack", "gitWriteBack": write_back}),
                           now=T0)
    stalled = conditions(status)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert stalled["message"].startswith("spec.rollout.gitWriteBack.messageTemplate:")
    assert detail in stalled["message"]
    fixed = {**write_back, "messageTemplate": "imagepatch: {workload} to {new} ({{x}})"}
    ready = policy_status(policy(rollout={"mode": "GitWriteBack", "gitWriteBack": fixed}), now=T0)
    assert conditions(ready)["Ready"]["status"] == "True"
