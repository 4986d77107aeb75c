"""One loop per unfinished ImagePatch: it sleeps until due or woken (reconcile/loops.py).

The reconcile is a recording stub that returns a scripted requeue time, so
these tests check the scheduling alone: a waiting patch is not reconciled
again until a person changes it, its own status writes do not wake it, a
requeue time is honoured, the resync caps a long wait, and a finished or
deleted patch's loop ends. Real time, in milliseconds.
"""

from __future__ import annotations

import asyncio

from imagepatch.reconcile.loops import PatchLoops, wake_key


def body(name: str = "p1", *, generation: int = 1, phase: str | None = None,
         annotations: dict | None = None, rv: str = "1", policy: str = "pol") -> dict:
    return {"metadata": {"name": name, "generation": generation, "resourceVersion": rv,
                         "annotations": annotations or {}},
            "spec": {"policy": policy},
            "status": {"phase": phase} if phase else {}}


def policy(name: str = "pol", generation: int = 1) -> dict:
    return {"metadata": {"name": name, "generation": generation}}


class Script:
    """A reconcile that records its calls and returns the next scripted requeue."""

    def __init__(self, *requeues: float | None, default: float | None = None) -> None:
        self.requeues = list(requeues)
        self.default = default
        self.calls: list[str] = []

    async def __call__(self, name: str) -> float | None:
        self.calls.append(name)
        return self.requeues.pop(0) if self.requeues else self.default


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def test_a_waiting_patch_is_reconciled_once_and_not_again_by_its_own_writes() -> None:
    async def scenario() -> list[str]:
        script = Script(default=None)
        loops = PatchLoops(script, resync=60)
        loops.observe(None, body())  # the initial listing
        await settle()
        # Its own status writes: a new resourceVersion, same generation and annotations.
        for rv in ("2", "3", "4"):
            loops.observe("MODIFIED", body(rv=rv, phase="AwaitingApproval"))
        await settle()
        await loops.aclose()
        return script.calls

    assert asyncio.run(scenario()) == ["p1"]


def test_a_spec_change_wakes_the_loop_at_once() -> None:
    async def scenario() -> tuple[int, int]:
        script = Script(default=None)
        loops = PatchLoops(script, resync=60)
        loops.observe(None, body())
        await settle()
        before = len(script.calls)
        loops.observe("MODIFIED", body(generation=2))  # kubectl patch ... approval
        await settle()
        after = len(script.calls)
        await loops.aclose()
        return before, after

    assert asyncio.run(scenario()) == (1, 2)


def test_an_annotation_from_a_person_wakes_it_and_machinery_annotations_do_not() -> None:
    assert wake_key(body(annotations={"kopf.zalando.org/x": "1"})) == wake_key(body())
    assert wake_key(body(annotations={"imagepatch.dev/requestedAt": "now"})) != wake_key(body())


def test_the_requeue_time_is_honoured() -> None:
    async def scenario() -> int:
        script = Script(0.02, 0.02, None)
        loops = PatchLoops(script, resync=60)
        loops.observe(None, body())
        await settle(0.2)
        await loops.aclose()
        return len(script.calls)

    assert asyncio.run(scenario()) == 3  # two short requeues, then a wait for a wake-up


def test_the_resync_caps_every_wait() -> None:
    async def scenario() -> int:
        script = Script(default=3600.0)  # "look again in an hour"
        loops = PatchLoops(script, resync=0.02)
        loops.observe(None, body())
        await settle(0.15)
        await loops.aclose()
        return len(script.calls)

    assert asyncio.run(scenario()) >= 3


def test_a_finished_patch_ends_its_loop_and_never_starts_one() -> None:
    async def scenario() -> tuple[set, list]:
        script = Script(default=None)
        loops = PatchLoops(script, resync=60)
        loops.observe(None, body("done", phase="Succeeded"))
        loops.observe(None, body("p1"))
        await settle()
        loops.observe("MODIFIED", body("p1", phase="Succeeded", rv="9"))
        await settle()
        running = loops.running()
        await loops.aclose()
        return running, script.calls

    running, calls = asyncio.run(scenario())
    assert running == set()
    assert calls == ["p1"]  # "done" was never reconciled


def test_a_deleted_patch_ends_its_loop() -> None:
    async def scenario() -> set:
        loops = PatchLoops(Script(default=None), resync=60)
        loops.observe(None, body())
        await settle()
        loops.observe("DELETED", body())
        await settle()
        return loops.running()

    assert asyncio.run(scenario()) == set()


def test_exactly_one_actor_per_patch_even_when_events_pile_up() -> None:
    async def scenario() -> int:
        active = 0
        most = 0

        async def slow(name: str) -> float | None:
            nonlocal active, most
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.02)
            active -= 1
            return 0.0

        loops = PatchLoops(slow, resync=60)
        for generation in range(1, 20):
            loops.observe("MODIFIED", body(generation=generation))
            await asyncio.sleep(0.003)
        await loops.aclose()
        return most

    assert asyncio.run(scenario()) == 1


def test_a_reconcile_that_raises_does_not_kill_the_loop() -> None:
    async def scenario() -> int:
        calls = 0

        async def flaky(name: str) -> float | None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("boom")
            return None

        loops = PatchLoops(flaky, resync=0.02)
        loops.observe(None, body())
        await settle(0.1)
        await loops.aclose()
        return calls

    assert asyncio.run(scenario()) >= 2  # it lived on after the error


def test_a_stale_finished_event_does_not_stop_an_unfinished_patch() -> None:
    async def scenario() -> set:
        loops = PatchLoops(Script(default=None), resync=60)
        loops.observe(None, body())
        await settle()
        loops.observe("MODIFIED", body(phase="Closed"))
        loops.observe("MODIFIED", body(generation=2))  # unfinished again before it stopped
        await settle()
        running = loops.running()
        await loops.aclose()
        return running

    assert asyncio.run(scenario()) == {"p1"}


def test_an_event_without_a_name_is_ignored() -> None:
    async def scenario() -> set:
        loops = PatchLoops(Script(), resync=60)
        loops.observe(None, {"metadata": {}})
        return loops.running()

    assert asyncio.run(scenario()) == set()


def test_a_policy_spec_change_wakes_its_patches_and_its_status_writes_do_not() -> None:
    async def scenario() -> list[str]:
        script = Script(default=None)
        loops = PatchLoops(script, resync=60)
        loops.observe_policy(None, policy("pol", 1))  # the initial listing
        loops.observe_policy(None, policy("other", 1))
        loops.observe(None, body("p1", policy="pol"))
        loops.observe(None, body("p2", policy="other"))
        await settle()
        loops.observe_policy("MODIFIED", policy("pol", 1))  # detection wrote its status
        await settle()
        loops.observe_policy("MODIFIED", policy("pol", 2))  # spec.suspend: false
        await settle()
        loops.observe_policy("DELETED", policy("other", 1))  # PolicyNotFound, at once
        await settle()
        loops.observe_policy("ADDED", {"metadata": {}})
        await loops.aclose()
        return sorted(script.calls)

    assert asyncio.run(scenario()) == ["p1", "p1", "p2", "p2"]


def reconciles_counted() -> float:
    from imagepatch.adapters.metrics import REGISTRY

    return REGISTRY.get_sample_value("imagepatch_patch_reconciles_total") or 0.0


def test_every_reconcile_is_counted_in_metrics_including_one_that_raised() -> None:
    async def scenario() -> tuple[int, float]:
        calls = 0

        async def flaky(name: str) -> float | None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("boom")
            return None  # then it waits for a person: no more reconciles

        loops = PatchLoops(flaky, resync=0.02)
        before = reconciles_counted()
        loops.observe(None, body())
        await settle(0.1)
        await loops.aclose()
        return calls, reconciles_counted() - before

    calls, counted = asyncio.run(scenario())
    assert calls >= 2
    assert counted == calls


def test_an_operator_with_namespaces_runs_no_loop_for_a_patch_targeting_others() -> None:
    """--namespace team-*: a patch listing a target elsewhere is another operator's (or
    nobody's) to move; one listing only team targets, or none, is this one's."""
    def targets(*namespaces: str) -> list[dict]:
        return [{"kind": "Deployment", "namespace": ns, "name": "web", "container": "app"}
                for ns in namespaces]

    def with_targets(name: str, *namespaces: str) -> dict:
        b = body(name)
        b["spec"]["targets"] = targets(*namespaces)
        return b

    async def scenario() -> tuple[list[str], set[str]]:
        script = Script(default=None)
        loops = PatchLoops(script, resync=60, watches=lambda ns: ns.startswith("team-"))
        loops.observe(None, with_targets("ours", "team-a", "team-b"))
        loops.observe(None, with_targets("theirs", "other"))
        loops.observe(None, with_targets("mixed", "team-a", "other"))
        loops.observe(None, body("untargeted"))
        await settle()
        # A person moves a running patch's only target out of scope: its loop stops.
        loops.observe("MODIFIED", with_targets("ours", "other"))
        await settle()
        running = loops.running()
        await loops.aclose()
        return sorted(script.calls), running

    calls, running = asyncio.run(scenario())
    assert calls == ["ours", "untargeted"]
    assert running == {"untargeted"}
