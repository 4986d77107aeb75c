"""Supervised background tasks (reconcile/supervisor.py), and the probe that reads them.

A task that raises is logged with its traceback, counted in
``imagepatch_task_restarts_total`` and started again after a back-off; one
that keeps dying makes the liveness decision fail (core/liveness.py); a task
that returns is finished; cancellation (shutdown) goes through. Back-off
delays are scaled down (base 1 ms) so the tests run in real time.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from imagepatch.adapters import metrics
from imagepatch.core.liveness import tasks_liveness
from imagepatch.reconcile.loops import PatchLoops
from imagepatch.reconcile.outcomes import Backoff
from imagepatch.reconcile.supervisor import Supervisor


def fast(**kw) -> Supervisor:
    return Supervisor(backoff=Backoff(base=0.001, cap=0.01, jitter=0.5), **kw)


def restarts(task: str) -> float:
    return metrics.REGISTRY.get_sample_value("imagepatch_task_restarts_total", {"task": task}) or 0.0


class Flaky:
    """A task body that raises ``failures`` times, then runs until stopped (or returns)."""

    def __init__(self, failures: int, *, then_return: bool = False) -> None:
        self.failures = failures
        self.then_return = then_return
        self.runs = 0
        self.healthy = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        if self.then_return:
            return
        self.healthy.set()
        await asyncio.Event().wait()  # a healthy loop runs until cancelled


def test_a_task_that_raises_is_restarted_logged_with_its_traceback_and_counted(caplog) -> None:
    before = restarts("unit-flaky")

    async def scenario() -> tuple[int, bool]:
        supervisor, body = fast(), Flaky(3)
        task = supervisor.spawn("unit-flaky", body)
        await asyncio.wait_for(body.healthy.wait(), timeout=5)
        alive = supervisor.liveness().alive
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return body.runs, alive

    with caplog.at_level(logging.ERROR, logger="imagepatch.supervisor"):
        runs, alive = asyncio.run(scenario())
    assert runs == 4  # three deaths, then a run that stays up
    assert restarts("unit-flaky") - before == 3
    died = [r for r in caplog.records if "background task unit-flaky died" in r.getMessage()]
    assert len(died) == 3 and all(r.exc_info and "boom" in str(r.exc_info[1]) for r in died)
    assert alive  # three deaths do not exceed the default limit of five


def test_liveness_fails_once_a_task_dies_more_than_the_limit_in_the_window() -> None:
    async def scenario() -> tuple[bool, bool, str]:
        supervisor = fast(max_restarts=2, window=600)
        body = Flaky(3)
        task = supervisor.spawn("unit-dying", body)
        await asyncio.wait_for(body.healthy.wait(), timeout=5)
        failing = supervisor.liveness()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return failing.alive, supervisor.liveness().alive, failing.message

    alive, _, message = asyncio.run(scenario())
    assert not alive
    assert "unit-dying (3 times)" in message


def test_old_deaths_fall_out_of_the_window() -> None:
    assert not tasks_liveness(now=100.0, deaths={"t": [98.0, 99.0, 100.0]}, window=10,
                              max_restarts=2).alive
    later = tasks_liveness(now=200.0, deaths={"t": [98.0, 99.0, 100.0]}, window=10, max_restarts=2)
    assert later.alive and later.message == "background tasks running"


def test_a_task_that_returns_is_finished_and_not_restarted() -> None:
    async def scenario() -> tuple[int, dict]:
        supervisor, body = fast(), Flaky(1, then_return=True)
        await asyncio.wait_for(supervisor.spawn("unit-returns", body), timeout=5)
        return body.runs, dict(supervisor.backoff.failures)

    runs, failures = asyncio.run(scenario())
    assert runs == 2
    assert failures == {}  # its back-off state went with it


def test_the_back_off_grows_between_deaths_and_starts_over_after_a_long_healthy_run() -> None:
    clock = [0.0]
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) >= 5:
            raise asyncio.CancelledError  # enough: stop the supervisor
        await asyncio.sleep(0)

    async def dies() -> None:
        clock[0] += 0.5 if len(delays) < 3 else 120.0  # the fourth run was healthy for 2 min
        raise ValueError("bug")

    supervisor = Supervisor(backoff=Backoff(base=1.0, cap=60.0, jitter=0.0),
                            monotonic=lambda: clock[0], sleep=sleep)

    async def scenario() -> None:
        await asyncio.gather(supervisor.spawn("unit-backoff", dies), return_exceptions=True)

    asyncio.run(scenario())
    assert delays[:3] == [1.0, 2.0, 4.0]
    assert delays[3] == 1.0  # it had run longer than the cap: the back-off starts over


def test_a_patch_loop_that_crashes_outside_its_reconcile_is_restarted(monkeypatch) -> None:
    before = restarts("patch-loop")
    crashes = [RuntimeError("metrics backend broke")]
    original = metrics.record_patch_reconcile

    def crash_once() -> None:  # the loop's own machinery fails once, then works
        if crashes:
            raise crashes.pop()
        original()

    monkeypatch.setattr(metrics, "record_patch_reconcile", crash_once)

    async def scenario() -> tuple[list[str], list[str]]:
        calls: list[str] = []

        async def reconcile(name: str) -> float | None:
            calls.append(name)
            return None

        loops = PatchLoops(reconcile, resync=60, supervisor=fast())
        loops.observe(None, {"metadata": {"name": "p1", "generation": 1}, "spec": {}})
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(calls) >= 2:
                break
        running = sorted(loops.running())
        await loops.aclose()
        return calls, running

    calls, running = asyncio.run(scenario())
    assert calls == ["p1", "p1"]  # reconciled again by the restarted loop
    assert running == ["p1"]
    assert restarts("patch-loop") - before == 1
