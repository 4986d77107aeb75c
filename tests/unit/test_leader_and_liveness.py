"""Leader election on a Lease, and the liveness decision, with injected clocks.

The elector runs against the in-memory ``Kube`` (tests/support/memkube.py);
the takeover against the real API server is an e2e test
(tests/e2e/test_leader.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from imagepatch.adapters.leader import LeaderElector, LeadershipLost, run_as_leader
from imagepatch.core.liveness import watch_liveness
from tests.support.memkube import MemoryKube, unavailable

NS, NAME = "imagepatch-system", "imagepatch-leader"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(kube: MemoryKube, identity: str, clock: Clock, **kw) -> LeaderElector:
    return LeaderElector(kube, namespace=NS, name=NAME, identity=identity, monotonic=clock,
                         wall=lambda: dt.datetime(2026, 11, 27, tzinfo=dt.UTC), **kw)


def run(coro):
    return asyncio.run(coro)


def holder(kube: MemoryKube) -> str:
    return kube.leases[(NS, NAME)]["spec"]["holderIdentity"]


def test_first_candidate_creates_the_lease_and_a_second_stands_by() -> None:
    kube, clock = MemoryKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert run(a.try_acquire_or_renew()) is True
    assert run(b.try_acquire_or_renew()) is False
    assert holder(kube) == "a"
    assert b.holder == "a"


def test_the_standby_takes_over_only_after_a_lease_duration_without_renewal() -> None:
    kube, clock = MemoryKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    run(a.try_acquire_or_renew())
    assert run(b.try_acquire_or_renew()) is False  # b first sees the record now
    clock.now += 10
    assert run(a.try_acquire_or_renew()) is True  # a renews: the record changes
    assert run(b.try_acquire_or_renew()) is False
    clock.now += 14
    assert run(b.try_acquire_or_renew()) is False  # 14 s since b saw a change
    clock.now += 2
    assert run(b.try_acquire_or_renew()) is True  # a is silent for > 15 s: take over
    spec = kube.leases[(NS, NAME)]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)


def test_a_released_lease_is_taken_at_once() -> None:
    kube, clock = MemoryKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    run(a.try_acquire_or_renew())
    run(a.release())
    assert holder(kube) == ""
    assert run(b.try_acquire_or_renew()) is True


def test_release_leaves_someone_elses_lease_alone() -> None:
    kube, clock = MemoryKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    run(a.try_acquire_or_renew())
    run(b.release())
    assert holder(kube) == "a"


def test_two_candidates_racing_to_create_do_not_both_win() -> None:
    kube, clock = MemoryKube(), Clock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    kube.leases[(NS, NAME)] = {"metadata": {"name": NAME, "resourceVersion": "1"},
                              "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    # b read "no lease" but a created it in between: create conflicts.
    original = kube.get_lease

    async def stale_read(namespace, name):
        return None

    kube.get_lease = stale_read  # type: ignore[method-assign]
    assert run(b.try_acquire_or_renew()) is False
    kube.get_lease = original  # type: ignore[method-assign]
    assert run(a.try_acquire_or_renew()) is True


def test_the_leader_gives_up_when_it_cannot_renew_within_the_deadline() -> None:
    async def scenario() -> str:
        kube, clock = MemoryKube(), Clock()
        a = elector(kube, "a", clock, lease_duration=0.3, renew_deadline=0.1,
                    renew_period=0.02, retry_period=0.02)
        await a.acquire()
        kube.fail["get_lease"] = unavailable("get Lease")
        with pytest.raises(LeadershipLost) as lost:
            while True:  # real sleeps, a fake clock moving with them
                task = asyncio.create_task(a.hold())
                for _ in range(50):
                    await asyncio.sleep(0.01)
                    clock.now += 0.01
                    if task.done():
                        break
                task.result()
        return str(lost.value)

    assert "could not renew" in run(scenario())


def test_the_leader_gives_up_when_another_holds_the_lease() -> None:
    async def scenario() -> str:
        kube, clock = MemoryKube(), Clock()
        a = elector(kube, "a", clock, lease_duration=0.3, renew_deadline=0.1,
                    renew_period=0.01, retry_period=0.01)
        await a.acquire()
        lease = kube.leases[(NS, NAME)]
        lease["spec"] = {**lease["spec"], "holderIdentity": "b"}
        lease["metadata"]["resourceVersion"] = "999"
        with pytest.raises(LeadershipLost) as lost:
            await asyncio.wait_for(a.hold(), timeout=2)
        return str(lost.value)

    assert "held by b" in run(scenario())


def test_a_standby_waits_in_acquire_until_the_lease_is_free() -> None:
    async def scenario() -> list[str]:
        kube, clock = MemoryKube(), Clock()
        a = elector(kube, "a", clock)
        b = elector(kube, "b", clock, retry_period=0.01)
        await a.try_acquire_or_renew()
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await a.release()
        await asyncio.wait_for(waiting, timeout=2)
        return [holder(kube)]

    assert run(scenario()) == ["b"]


def test_the_renew_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError):
        LeaderElector(MemoryKube(), namespace=NS, name=NAME, identity="a",
                      lease_duration=10, renew_deadline=10)


# -- liveness ------------------------------------------------------------------------

@pytest.mark.parametrize(("now", "last_event", "last_answer", "alive"), [
    (100, None, None, True),  # a fresh process gets its grace
    (400, None, None, False),  # nothing at all since start
    (400, 350, None, True),  # a watch event recently
    (400, None, 390, True),  # an API answer recently
    (1000, 350, 390, False),  # both too long ago: a zombie
    (1000, 900, 100, True),
])
def test_liveness_needs_a_watch_event_or_an_api_answer(now, last_event, last_answer, alive) -> None:
    state = watch_liveness(now=now, started=0, last_event=last_event, last_answer=last_answer,
                           stale_after=300)
    assert state.alive is alive
    if not alive:
        assert "no watch event and no API answer" in state.message


# -- the gate in front of kopf (run_as_leader) ----------------------------------------

def test_the_operator_runs_only_while_leading_and_hands_over_on_a_clean_stop() -> None:
    async def scenario() -> tuple[list[str], str]:
        kube, clock = MemoryKube(), Clock()
        events: list[str] = []

        async def operator() -> None:
            events.append(f"acting as {holder(kube)}")
            await asyncio.sleep(0.05)

        other = elector(kube, "other", clock)
        await other.try_acquire_or_renew()
        me = elector(kube, "me", clock, retry_period=0.01)
        gate = asyncio.create_task(run_as_leader(me, operator))
        await asyncio.sleep(0.05)
        events.append("standing by" if not gate.done() else "ran early")
        await other.release()
        await asyncio.wait_for(gate, timeout=5)
        return events, holder(kube)

    events, left = run(scenario())
    assert events == ["standing by", "acting as me"]
    assert left == ""  # released on the way out


def test_losing_the_lease_stops_at_once() -> None:
    async def scenario() -> list[int]:
        kube, clock = MemoryKube(), Clock()
        exits: list[int] = []

        async def operator() -> None:
            await asyncio.sleep(10)

        me = elector(kube, "me", clock, lease_duration=0.3, renew_deadline=0.1,
                     renew_period=0.01, retry_period=0.01)
        gate = asyncio.create_task(run_as_leader(me, operator, lost=exits.append))
        await asyncio.sleep(0.05)
        lease = kube.leases[(NS, NAME)]
        lease["spec"] = {**lease["spec"], "holderIdentity": "thief"}
        lease["metadata"]["resourceVersion"] = "999"
        await asyncio.wait_for(gate, timeout=5)
        return exits

    assert run(scenario()) == [1]


def test_a_standby_answers_its_liveness_probe() -> None:
    import urllib.request

    from tests.support.ports import free_port

    async def scenario() -> int:
        kube, clock = MemoryKube(), Clock()
        other = elector(kube, "other", clock)
        await other.try_acquire_or_renew()
        port = free_port()
        me = elector(kube, "me", clock, retry_period=0.01)
        gate = asyncio.create_task(run_as_leader(
            me, lambda: asyncio.sleep(0), standby_probe=f"http://127.0.0.1:{port}/healthz"))

        def get() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status

        for _ in range(100):  # until the server is up (a busy machine may take a moment)
            try:
                status = await asyncio.to_thread(get)
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert not gate.done()  # still standing by while it answered
        await other.release()
        await asyncio.wait_for(gate, timeout=5)
        return status

    assert run(scenario()) == 200
