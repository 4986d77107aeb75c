"""Every reconcile error becomes a condition and a requeue time (reconcile/outcomes.py).

The ImagePatch reconcile runs against an in-memory implementation of the
project's own ``Kube`` interface (tests/support/memkube.py), with an injected
clock and a pinned back-off jitter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest

from imagepatch.adapters.errors import ConfigurationError, ConflictError, TransientError
from imagepatch.core.schedule import ScheduleError
from imagepatch.model.errors import SpecError
from imagepatch.reconcile import outcomes, rollouts
from imagepatch.reconcile.outcomes import (
    CONFLICT_RETRY,
    RECONCILE_ERROR,
    SPEC_RESYNC,
    Backoff,
    classify,
    reconcile_imagepatch_guarded,
    reconcile_policy_guarded,
)
from tests.support.memkube import MemoryKube, unavailable

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
APP = "registry.local/app"
DIGEST = "sha256:" + "a" * 64


def clock() -> dt.datetime:
    return T0


def run(coro):
    return asyncio.run(coro)


def conditions(kube: MemoryKube, name: str) -> dict[str, dict]:
    return {c["type"]: c for c in kube.patches[name].get("status", {}).get("conditions", [])}


def reconcile(kube: MemoryKube, name: str = "p1", backoff: Backoff | None = None):
    return run(reconcile_imagepatch_guarded(
        name=name, kube=kube, backoff=backoff or Backoff(rng=lambda: 0.0), clock=clock))


@pytest.fixture
def kube() -> MemoryKube:
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}, "approval": "Manual"})
    kube.add_deployment("shop", "web", image=f"{APP}:1.4", policy="pol")
    return kube


# -- the mapping, as a table -----------------------------------------------------------

@pytest.mark.parametrize(("error", "reason", "stalled", "spec"), [
    (SpecError("spec.targetDigest", "not a digest"), "InvalidSpec", True, True),
    (ScheduleError("unknown timezone 'Mars/Olympus'"), "InvalidSpec", True, True),
    (TransientError("get: HTTP 503", reason="APIUnavailable"), "APIUnavailable", False, False),
    (ConfigurationError("get: HTTP 403", reason="Forbidden"), "Forbidden", True, False),
    (RuntimeError("boom"), RECONCILE_ERROR, False, False),
])
def test_each_error_kind_maps_to_one_condition(error, reason, stalled, spec) -> None:
    failure = classify(error, policy="pol")
    assert (failure.reason, failure.stalled, failure.spec) == (reason, stalled, spec)


def test_a_schedule_error_names_the_policy_field() -> None:
    failure = classify(ScheduleError("unknown timezone 'Mars/Olympus'"), policy="nightly")
    assert failure.message == ("ImagePatchPolicy 'nightly' spec.maintenanceWindow: "
                               "unknown timezone 'Mars/Olympus'")


def test_a_conflict_is_no_failure() -> None:
    assert classify(ConflictError("changed", reason="Conflict")) is None


def test_backoff_grows_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(base=10, cap=300, jitter=0.2, rng=lambda: 0.0)
    assert [backoff.next_delay("p") for _ in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    backoff.reset("p")
    assert backoff.next_delay("p") == 10
    jittered = Backoff(base=10, cap=300, jitter=0.2, rng=lambda: 1.0)
    assert jittered.next_delay("p") == pytest.approx(8.0)
    assert backoff.next_delay("other") == 10  # per object


# -- the guarded ImagePatch reconcile ----------------------------------------------------

def test_waiting_for_approval_requeues_only_when_woken(kube: MemoryKube) -> None:
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    assert reconcile(kube) is None
    assert kube.patches["p1"]["status"]["phase"] == "AwaitingApproval"
    assert "Stalled" not in conditions(kube, "p1")


def test_malformed_imagepatch_stalls_naming_the_field_and_clears_when_fixed(kube) -> None:
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual",
                          "targetDigest": "latest"})
    assert reconcile(kube) == SPEC_RESYNC  # no hot retry
    stalled = conditions(kube, "p1")["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "spec.targetDigest" in stalled["message"]
    assert conditions(kube, "p1")["Ready"]["status"] == "False"
    writes = kube.calls["write_imagepatch_status"]
    assert reconcile(kube) == SPEC_RESYNC
    assert kube.calls["write_imagepatch_status"] == writes  # shown once, not rewritten

    kube.edit_patch_spec("p1", targetDigest=DIGEST)
    assert reconcile(kube) is None
    assert "Stalled" not in conditions(kube, "p1")
    assert conditions(kube, "p1")["Ready"]["reason"] != "InvalidSpec"


def test_a_timezone_failing_at_run_time_stalls_the_patch(kube: MemoryKube) -> None:
    kube.add_policy("pol", {"namespaceSelector": {}, "maintenanceWindow": {
        "schedule": "0 2 * * *", "timezone": "Mars/Olympus", "duration": "4h"}})
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    assert reconcile(kube) == SPEC_RESYNC
    stalled = conditions(kube, "p1")["Stalled"]
    assert stalled["reason"] == "InvalidSpec"
    assert "ImagePatchPolicy 'pol' spec.maintenanceWindow" in stalled["message"]


def test_transient_errors_show_ready_false_and_back_off_growing(kube: MemoryKube) -> None:
    kube.add_policy("pol", {"namespaceSelector": {}})
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    kube.fail["list_opted_in_workloads"] = unavailable("list Deployments")
    backoff = Backoff(rng=lambda: 0.0)
    assert reconcile(kube, backoff=backoff) == 10
    assert reconcile(kube, backoff=backoff) == 20
    ready = conditions(kube, "p1")["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "APIUnavailable")
    assert "Stalled" not in conditions(kube, "p1")

    del kube.fail["list_opted_in_workloads"]
    assert reconcile(kube, backoff=backoff) is not None  # rolling out: polls the gate
    assert conditions(kube, "p1")["Ready"]["reason"] != "APIUnavailable"
    assert backoff.failures == {}  # a success resets the back-off


def test_retry_after_from_the_server_wins_when_longer(kube: MemoryKube) -> None:
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    kube.fail["get_policy"] = TransientError("429", reason="APIUnavailable", retry_after=42.0)
    assert reconcile(kube) == 42.0


def test_an_unexpected_error_is_logged_with_traceback_and_shown(kube, monkeypatch, caplog) -> None:
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})

    def broken(**_):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(rollouts, "plan", broken)
    with caplog.at_level(logging.ERROR, logger="imagepatch.reconcile"):
        assert reconcile(kube) == 10
    ready = conditions(kube, "p1")["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", RECONCILE_ERROR)
    assert "RecursionError" in ready["message"]
    assert any(r.exc_info for r in caplog.records)


def test_a_conflict_replans_soon_without_a_condition(kube, monkeypatch) -> None:
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual", "targetDigest": DIGEST})
    kube.fail["write_imagepatch_status"] = ConflictError("changed", reason="Conflict")
    assert reconcile(kube) == CONFLICT_RETRY
    assert "status" not in kube.patches["p1"]


def test_an_error_on_a_deleted_patch_records_nothing(kube, monkeypatch) -> None:
    async def gone_midway(**_):
        raise unavailable()

    monkeypatch.setattr(outcomes, "reconcile_imagepatch", gone_midway)
    assert reconcile(kube, name="missing") == 10
    assert kube.calls["write_imagepatch_status"] == 0


def test_a_failed_error_write_is_logged_not_raised(kube, monkeypatch, caplog) -> None:
    kube.add_patch("p1", {"image": APP, "policy": "pol", "reason": "Manual",
                          "targetDigest": "latest"})
    kube.fail["write_imagepatch_status"] = unavailable("record status")
    with caplog.at_level(logging.WARNING):
        assert reconcile(kube) == SPEC_RESYNC
    assert "could not record the error" in caplog.text


# -- policies ------------------------------------------------------------------------

def test_policy_reconcile_error_becomes_ready_false(monkeypatch, caplog) -> None:
    from imagepatch.reconcile import policies

    def broken(*_, **__):
        raise KeyError("spec")

    monkeypatch.setattr(policies, "policy_status", broken)
    body = {"metadata": {"name": "pol", "generation": 3}, "spec": {}}
    patch: dict = {}
    with caplog.at_level(logging.ERROR):
        assert reconcile_policy_guarded(body=body, patch=patch, clock=clock) is None
    [ready] = patch["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", RECONCILE_ERROR)
    assert ready["observedGeneration"] == 3
    assert any(r.exc_info for r in caplog.records)


def test_policy_reconcile_passes_through_when_it_works() -> None:
    body = {"metadata": {"name": "pol", "generation": 1}, "spec": {"namespaceSelector": {}}}
    patch: dict = {}
    status = reconcile_policy_guarded(body=body, patch=patch, clock=clock)
    assert status["conditions"][0]["reason"] == "Reconciled"
