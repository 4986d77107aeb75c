"""Detection's bounded time: a pass budget per policy, and slow policies beside the others.

Given a policy whose images live on a registry that never answers (each call
holds a slot of the registry gate, as the real client's calls do) and a
healthy policy; when a pass runs with a short budget; then the slow policy's
containers are ``Unknown`` with ``PassBudgetExceeded`` naming the slow host,
and the healthy policy is evaluated beside it, before the slow one ends. The
cluster-level version is ``tests/e2e/test_bounded_time.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from imagepatch.adapters.registry.gate import HostGate
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_isolation import (
    ECR,
    MemoryKube,
    MemoryRegistry,
    deployment,
    policy,
    run_pass,
)

SLOW = "slow.example"


class TarpitRegistry(MemoryRegistry):
    """Images on ``slow.example`` never answer; every call passes a real ``HostGate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = HostGate(clock=time.monotonic)
        self.calls: list[str] = []

    async def resolve_digest(self, image: Any) -> str:
        host = str(image).split("/", 1)[0]
        self.calls.append(str(image))
        async with self.gate.operation(host):
            if host == SLOW:
                await asyncio.sleep(3600)
            return await super().resolve_digest(image)


class OrderedKube(MemoryKube):
    """Remembers the order policy statuses were written in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order: list[str] = []

    async def write_policy_status(self, name: str, status: Any) -> None:
        self.order.append(name)
        await super().write_policy_status(name, status)


def test_the_budget_makes_what_is_left_unknown_naming_the_slow_host_and_others_go_on():
    kube = OrderedKube([policy("a"), policy("b")])
    registry = TarpitRegistry()
    detector = Detector(kube=kube, registry=registry, pass_budget=0.3, patience=0.05)
    run_pass(detector,
             deployment("slow-1", f"{SLOW}/app:1", "a"), deployment("slow-2", f"{SLOW}/other:1", "a"),
             deployment("fast", f"{ECR}/app:1", "b"))  # fmt: skip

    for name in ("slow-1", "slow-2"):
        state = kube.state(name)
        assert state["state"] == "Unknown"
        [container] = state["containers"]
        assert container["reason"] == "PassBudgetExceeded"
        assert "pass budget of 0.3s" in container["message"]
        assert f"registry {SLOW} was slow" in container["message"]
    # The second slow container was never asked for: the budget had run out.
    assert registry.calls == [f"{SLOW}/app:1", f"{ECR}/app:1"]
    assert kube.state("fast")["state"] == "Compliant"
    # "b" was evaluated beside "a", and finished first.
    assert kube.order == ["b", "a"]


def test_a_budget_that_runs_out_without_a_registry_call_names_no_host():
    class SlowPods(MemoryKube):
        async def list_namespace_pods(self, ns: str) -> list[dict]:
            await asyncio.sleep(3600)
            return []

    kube = SlowPods([policy("a")])
    detector = Detector(kube=kube, registry=MemoryRegistry(), pass_budget=0.05)
    run_pass(detector, deployment("one", f"{ECR}/app:1", "a"))
    [container] = kube.state("one")["containers"]
    assert container["reason"] == "PassBudgetExceeded"
    assert container["message"].endswith("(--policy-pass-budget) ran out")


def test_a_bug_outside_one_policys_evaluation_still_lets_the_others_finish_then_surfaces():
    kube = MemoryKube([policy("a"), policy("b")])
    detector = Detector(kube=kube, registry=MemoryRegistry(), patience=0.01)
    pruned: list[str] = []

    async def prune(name: str, spec: Any, patches: Any) -> None:
        pruned.append(name)
        if name == "a":
            raise RuntimeError("a bug in retention")

    detector._prune = prune  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in retention"):
        run_pass(detector, deployment("one", f"{ECR}/app:1", "a"),
                 deployment("two", f"{ECR}/app:1", "b"))
    assert pruned == ["a", "b"]
    assert kube.state("two")["state"] == "Compliant"


def test_findings_errors_are_kept_per_policy_when_policies_run_side_by_side():
    # Given: two policies read findings; only "a"'s images are ECR images, whose
    # findings this operator cannot read (no AWS region), and both passes run at once.
    kube = MemoryKube([policy("a", vulnerabilities={"source": "ecr"}),
                       policy("b", vulnerabilities={"source": "ecr"})])
    detector = Detector(kube=kube, registry=MemoryRegistry(), patience=0)

    run_pass(detector, deployment("one", f"{ECR}/app:1", "a"),
             deployment("two", "registry.example/app:1", "b"))

    # Then: each policy's status says what its own pass could read.
    assert kube.statuses["a"]["findings"]["readable"] is False
    assert kube.statuses["b"]["findings"] == {"readable": True, "reason": "FindingsRead",
                                              "message": ""}


def test_a_cancelled_pass_cancels_the_policies_it_started():
    kube = MemoryKube([policy("a"), policy("b")])
    registry = TarpitRegistry()
    detector = Detector(kube=kube, registry=registry, pass_budget=3600, patience=0.05)
    for dep in (deployment("slow", f"{SLOW}/app:1", "a"), deployment("fast", f"{ECR}/app:1", "b")):
        detector.observe("ADDED", dep)

    async def scenario() -> list[asyncio.Task[Any]]:
        evaluation = asyncio.create_task(detector.evaluate_all())
        await asyncio.sleep(0.02)  # "a" is running, the pass waits on it
        evaluation.cancel()
        with pytest.raises(asyncio.CancelledError):
            await evaluation
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("detection-")
                and not t.done()]

    assert asyncio.run(scenario()) == []
    assert registry.gate.in_flight(SLOW) == 0
