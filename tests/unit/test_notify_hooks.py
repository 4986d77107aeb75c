"""The hooks that queue notifications: a patch's recorded phase, a workload's recorded state.

Detection runs on the in-memory stand-ins of tests/unit/test_detection_isolation.py;
the notifier is the real one, never started: what reaches its queue is checked.
"""

from __future__ import annotations

import datetime as dt

from imagepatch.adapters.notify import Notifier, Senders
from imagepatch.model.imagepatch import parse_imagepatch
from imagepatch.model.workload_state import ContainerState
from imagepatch.reconcile.detection import Detector
from imagepatch.reconcile.notifications import patch_recorded, workload_state_changed
from tests.unit.test_detection_base_memory import (
    BASE,
    BASE_V2,
    D_APP,
    ECR,
    MemoryKube,
    MovingBaseRegistry,
    deployment,
    evaluate,
    policy,
)

NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
DIGEST = "sha256:" + "b" * 64


def notifier(kube: object = None, reasons: list[str] | None = None) -> Notifier:
    """A notifier that knows policy ``p``, its one sink wanting ``reasons`` (all by default)."""
    n = Notifier(kube=kube, senders=Senders(kube, "imagepatch-system"))  # type: ignore[arg-type]
    sink = {"name": "team", "type": "Slack", "secretRef": {"name": "s"},
            "reasons": reasons or ["Patched", "RolledBack", "Failed", "AwaitingApproval",
                                   "Vulnerable", "BaseImageOutdated"]}
    n.observe_policy("ADDED", {"metadata": {"name": "p"},
                               "spec": {"namespaceSelector": {}, "notifications": [sink]}})
    return n


def test_only_what_a_sink_of_the_policy_wants_is_queued() -> None:
    n = notifier(reasons=["Failed"])
    before = parse_imagepatch(body("Pending"))
    assert not patch_recorded(n, before, body("AwaitingApproval"), NOW)  # no sink wants it
    assert patch_recorded(n, before, body("Failed"), NOW)
    other = {**body("Failed"), "metadata": {"name": "app-2"}}
    other["spec"] = {**other["spec"], "policy": "no-sinks"}
    assert not patch_recorded(n, before, other, NOW)  # a policy the notifier knows no sink of
    n.observe_policy("MODIFIED", {"metadata": {"name": "p"}, "spec": {"namespaceSelector": 5}})
    assert not patch_recorded(n, before, {**body("Failed"), "metadata": {"name": "app-3"}}, NOW)
    n.observe_policy("ADDED", {"metadata": {"name": "p"}, "spec": {"namespaceSelector": {},
                     "notifications": [{"name": "x", "type": "SNS",
                                        "topicArn": "arn:aws:sns:eu-west-1:123456789012:t"}]}})
    assert patch_recorded(n, before, {**body("Failed"), "metadata": {"name": "app-4"}}, NOW)
    n.observe_policy("DELETED", {"metadata": {"name": "p"}})
    assert not patch_recorded(n, before, {**body("Failed"), "metadata": {"name": "app-5"}}, NOW)
    assert [note.key for note in queued(n)] == ["imagepatch/app-1/Failed", "imagepatch/app-4/Failed"]


def queued(n: Notifier) -> list:
    return [note for _, note in list(n.queue._queue)]  # type: ignore[attr-defined]


def body(phase: str) -> dict:
    return {"metadata": {"name": "app-1"},
            "spec": {"image": "r/app", "tag": "1", "policy": "p", "targetDigest": DIGEST,
                     "targets": [{"namespace": "n", "name": "w", "container": "c"}]},
            "status": {"phase": phase}}


def test_a_phase_change_worth_a_message_is_queued_once() -> None:
    n = notifier()
    before = parse_imagepatch(body("Pending"))
    assert patch_recorded(n, before, body("AwaitingApproval"), NOW)
    assert not patch_recorded(n, before, body("AwaitingApproval"), NOW)  # the same key again
    assert not patch_recorded(n, before, body("Pending"), NOW)  # no change
    assert not patch_recorded(n, before, body("RollingOut"), NOW)  # nothing to say
    assert not patch_recorded(None, before, body("Failed"), NOW)
    assert not patch_recorded(n, before, None, NOW)
    assert not patch_recorded(n, before, {"metadata": {"name": "x"}, "spec": {}}, NOW)  # unparseable
    [note] = queued(n)
    assert (note.reason, note.key, note.at) == ("AwaitingApproval", "imagepatch/app-1/AwaitingApproval",
                                                "2026-12-05T12:00:00Z")


def test_a_workload_state_worth_a_message_is_queued() -> None:
    n = notifier()
    vulnerable = ContainerState(name="c", image="r/app:1", digest=DIGEST, state="Vulnerable",
                                reason="Vulnerable", findings_by_severity={"CRITICAL": 2})
    dep = {"metadata": {"namespace": "n", "name": "w"}}
    assert workload_state_changed(n, policy="p", kind="Deployment", workload=dep, state="Vulnerable",
                                  message="2 findings", containers=[vulnerable], now=NOW)
    for state in ("Compliant", "Unknown", "Failed"):
        assert not workload_state_changed(n, policy="p", kind="Deployment", workload=dep, state=state,
                                          message="m", containers=[vulnerable], now=NOW)
    # Patching for a reason that is not one to notify about.
    other = ContainerState(name="c", image="r/app:1", state="Patching", reason="Manual")
    assert not workload_state_changed(n, policy="p", kind="Deployment", workload=dep, state="Patching",
                                      message="m", containers=[other], now=NOW)
    assert not workload_state_changed(None, policy="p", kind="Deployment", workload=dep,
                                      state="Vulnerable", message="m", containers=[vulnerable], now=NOW)
    [note] = queued(n)
    assert note.key == f"workload/Deployment/n/w/Vulnerable/{DIGEST}"
    assert note.findings == ("2 CRITICAL",) and "patch" not in note.summary


def test_detection_notifies_a_base_push_once_with_the_patch_it_opened() -> None:
    kube, registry = MemoryKube([policy("p")]), MovingBaseRegistry()
    n = notifier(kube)
    detector = Detector(kube=kube, registry=registry, notifier=n)
    dep = deployment("web", f"{ECR}/app:1@{D_APP}", "p", **{"imagepatch.dev/base-image": BASE})
    assert evaluate(detector, kube, dep)["state"] == "Compliant"
    assert queued(n) == []

    registry.base = BASE_V2
    # Recorded as Patching at once: the patch was opened in the same pass.
    assert evaluate(detector, kube, dep)["state"] == "Patching"
    evaluate(detector, kube, dep)
    [note] = queued(n)
    assert note.reason == "BaseImageOutdated" and note.policy == "p"
    assert note.key == f"workload/Deployment/ns/web/BaseImageOutdated/{D_APP}"
    assert note.summary.endswith("a patch for it was opened")
    [change] = note.changes
    assert (change.name, change.container, change.old) == ("web", "app", f"{ECR}/app:1@{D_APP}")
