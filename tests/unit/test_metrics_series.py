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


def test_breaker_state_per_host_follows_the_hosts_in_use() -> None:
    from prometheus_client import CollectorRegistry

    from imagepatch.adapters.registry.gate import HostGate
    from imagepatch.core.breaker import BreakerSettings

    now = [0.0]
    gate = HostGate(breaker=BreakerSettings(failures=1, cooldown=30.0, idle=60.0),
                    clock=lambda: now[0])
    gate.board.get("up.example").admit(0.0)
    gate.board.get("down.example").admit(0.0)
    gate.board.get("down.example").failed(0.0)
    registry = CollectorRegistry()
    registry.register(metrics._RegistryBreakers(gate))
    name = "imagepatch_registry_breaker_state"
    assert registry.get_sample_value(name, {"host": "up.example"}) == 0
    assert registry.get_sample_value(name, {"host": "down.example"}) == 2
    now[0] = 31.0
    gate.board.get("down.example").admit(31.0)  # the half-open probe
    assert registry.get_sample_value(name, {"host": "down.example"}) == 1
    now[0] = 61.0  # up.example unused for a minute: its series goes
    assert registry.get_sample_value(name, {"host": "up.example"}) is None
    assert registry.get_sample_value(name, {"host": "down.example"}) == 1
