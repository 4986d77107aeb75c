"""Metric series go with their objects (adapters/metrics.py).

A deleted policy's detection series are removed (``keep_policies``), and a
policy that no ImagePatch names any more loses its ``imagepatch_patches``
series instead of keeping them at 0 for the life of the process.
"""

from __future__ import annotations

from imagepatch.adapters import metrics
from imagepatch.adapters.metrics import REGISTRY


def patches(policy: str, *phases: str) -> list[dict]:
    return [{"spec": {"policy": policy}, "status": {"phase": p}} for p in phases]


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_phase_that_emptied_is_zero_and_a_policy_without_patches_loses_its_series() -> None:
    metrics.record_patches(patches("ms-a", "Patching", "Succeeded") + patches("ms-b", "Failed"))
    assert value("imagepatch_patches", policy="ms-a", phase="Patching") == 1
    metrics.record_patches(patches("ms-a", "Succeeded", "Succeeded") + patches("ms-b", "Failed"))
    assert value("imagepatch_patches", policy="ms-a", phase="Patching") == 0  # still a policy with patches
    assert value("imagepatch_patches", policy="ms-a", phase="Succeeded") == 2
    metrics.record_patches(patches("ms-b", "Failed"))
    assert value("imagepatch_patches", policy="ms-a", phase="Succeeded") is None
    assert value("imagepatch_patches", policy="ms-a", phase="Patching") is None
    assert value("imagepatch_patches", policy="ms-b", phase="Failed") == 1


def test_a_deleted_policys_detection_series_are_removed_and_the_others_kept() -> None:
    for policy in ("ms-kept", "ms-gone"):
        metrics.record_policy(policy, {"total": 2, "compliant": 2}, {"HIGH": 1}, 30.0)
    metrics.keep_policies({"ms-kept"})
    for name, labels in (("imagepatch_workloads", {"state": "compliant"}),
                         ("imagepatch_findings_over_baseline", {"severity": "HIGH"}),
                         ("imagepatch_oldest_unpatched_seconds", {}),
                         ("imagepatch_last_pass_timestamp_seconds", {})):
        assert value(name, policy="ms-gone", **labels) is None, name
        assert value(name, policy="ms-kept", **labels) is not None, name
    metrics.keep_policies({"ms-kept"})  # nothing left to remove: no error
