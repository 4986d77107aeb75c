"""kopf wiring (handlers.py): what each handler does with its event, without kopf running.

The handlers are called as kopf calls them (keyword arguments, a memo), with
the in-memory ``Kube`` from tests/support/memkube.py behind the detector.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time

import kopf
import pytest

from imagepatch import handlers
from imagepatch.adapters.notify import Notifier, Senders
from imagepatch.adapters.store import WatchStore
from imagepatch.reconcile.detection import Detector
from imagepatch.reconcile.loops import PatchLoops
from imagepatch.reconcile.outcomes import Backoff
from imagepatch.reconcile.supervisor import Supervisor
from tests.support.memkube import MemoryKube, unavailable


def deployment(i: int, policy: str = "pol") -> dict:
    return {"metadata": {"uid": f"u{i}", "name": f"web{i}", "namespace": "shop",
                         "annotations": {"imagepatch.dev/policy": policy}},
            "spec": {"template": {"spec": {"containers": []}}}}


class YieldingKube(MemoryKube):
    """Its list calls yield to the event loop, as a real API call does."""

    async def list_policies(self):
        await asyncio.sleep(0)
        return await super().list_policies()

    async def write_policy_status(self, name, status):
        await asyncio.sleep(0)
        return await super().write_policy_status(name, status)


def memo_with(kube: MemoryKube) -> kopf.Memo:
    memo = kopf.Memo()
    memo.kube = kube
    memo.store = WatchStore()
    memo.heartbeat = handlers.Heartbeat()
    memo.stale_after = 300.0
    memo.supervisor = Supervisor()
    memo.backoff = Backoff()
    memo.notifier = Notifier(kube=kube, senders=Senders(kube, "imagepatch-system"))
    memo.detector = Detector(kube=kube, registry=None, findings=None, secrets=None,
                             securityhub=None, tick=5.0, notifier=memo.notifier)
    return memo


def test_deployment_events_run_on_the_event_loop_not_in_a_thread() -> None:
    # kopf runs plain functions in a worker thread: they would mutate the
    # detector's cache while a pass iterates it on the loop.
    assert inspect.iscoroutinefunction(handlers.deployment_event)
    assert inspect.iscoroutinefunction(handlers.imagepatch_event)


def test_deployment_events_interleave_safely_with_a_detection_pass() -> None:
    async def scenario() -> tuple[int, int]:
        kube = YieldingKube()
        kube.add_policy("pol", {"namespaceSelector": {}})
        memo = memo_with(kube)
        for i in range(50):
            await handlers.deployment_event(event={"type": None, "object": deployment(i)},
                                            memo=memo)
        detection = asyncio.create_task(memo.detector.evaluate_all())
        for i in range(50, 300):  # a burst of watch events while the pass runs
            await handlers.deployment_event(event={"type": "ADDED", "object": deployment(i)},
                                            memo=memo)
            await asyncio.sleep(0)
        await detection  # raises if the cache changed size under the pass
        return len(memo.detector.workloads), memo.detector.passes

    assert asyncio.run(scenario()) == (300, 1)


def test_a_deployment_event_is_a_heartbeat_and_feeds_the_detector() -> None:
    async def scenario() -> tuple[float | None, set]:
        memo = memo_with(MemoryKube())
        await handlers.deployment_event(event={"type": "ADDED", "object": deployment(1)},
                                        memo=memo)
        await handlers.deployment_event(
            event={"type": "DELETED", "object": deployment(1)}, memo=memo)
        await handlers.deployment_event(event={"type": "ADDED", "object": deployment(2)},
                                        memo=memo)
        return memo.heartbeat.last_event, set(memo.detector.workloads)

    last_event, uids = asyncio.run(scenario())
    assert last_event is not None
    assert uids == {"u2"}


@pytest.mark.parametrize(("handler", "kind"), [
    ("deployment_event", "Deployment"),
    ("statefulset_event", "StatefulSet"),
    ("daemonset_event", "DaemonSet"),
    ("cronjob_event", "CronJob"),
    ("rollout_event", "Rollout"),
])
def test_each_kinds_events_feed_the_detector_with_their_kind(handler: str, kind: str) -> None:
    async def scenario() -> tuple[float | None, dict, dict | None]:
        memo = memo_with(MemoryKube())
        await getattr(handlers, handler)(event={"type": "ADDED", "object": deployment(1)},
                                         memo=memo)
        stored = memo.store.workloads[kind].get((kind, "shop", "web1"))
        return memo.heartbeat.last_event, memo.detector.workloads["u1"], stored

    assert inspect.iscoroutinefunction(getattr(handlers, handler))
    last_event, cached, stored = asyncio.run(scenario())
    assert last_event is not None
    assert cached["kind"] == kind  # list items carry no kind; the handler names it
    assert stored is not None and stored["kind"] == kind  # the read store heard it too


def test_imagepatch_events_drive_the_loops() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        calls: list[str] = []

        async def reconcile(name: str) -> float | None:
            calls.append(name)
            return None

        memo = memo_with(MemoryKube())
        memo.loops = PatchLoops(reconcile, resync=60)
        obj = {"metadata": {"name": "p1", "generation": 1}}
        await handlers.imagepatch_event(event={"type": None, "object": obj}, memo=memo)
        await asyncio.sleep(0.02)
        await handlers.imagepatch_event(
            event={"type": "MODIFIED", "object": {**obj, "status": {"phase": "AwaitingApproval"}}},
            memo=memo)
        await asyncio.sleep(0.02)
        await handlers.policy_event(event={"type": None, "object": {"metadata": {
            "name": "pol", "generation": 1}}}, memo=memo)
        # The notifier learns the policy's sinks from the same event (here: none, bad spec).
        assert memo.notifier._wants == {"pol": frozenset()}
        running = sorted(memo.loops.running())
        await memo.loops.aclose()
        # The read store heard both kinds of event (its status change included).
        assert (memo.store.imagepatches.get("p1") or {})["status"] == {
            "phase": "AwaitingApproval"}
        assert memo.store.policies.get("pol") is not None
        return calls, running

    calls, running = asyncio.run(scenario())
    assert calls == ["p1"]  # its own status write did not wake it
    assert running == ["p1"]


def test_liveness_answers_while_the_api_answers_and_fails_when_it_goes_quiet() -> None:
    kube = MemoryKube()
    memo = memo_with(kube)
    kube.last_answer = time.monotonic()
    assert "ago" in handlers.liveness(memo=memo)

    memo.heartbeat.started = time.monotonic() - 1000
    kube.last_answer = time.monotonic() - 900
    memo.heartbeat.last_event = time.monotonic() - 800
    with pytest.raises(kopf.PermanentError, match="no watch event and no API answer"):
        handlers.liveness(memo=memo)


def test_policy_handler_records_conditions_in_the_patch() -> None:
    body = kopf.Body({"metadata": {"name": "pol", "generation": 2},
                      "spec": {"namespaceSelector": {}}})
    patch = kopf.Patch()
    handlers.policy(body=body, patch=patch)
    assert patch["status"]["conditions"][0]["type"] == "Ready"
    assert patch["status"]["observedGeneration"] == 2


def test_the_v0_1_finalizer_is_removed_so_pruned_patches_can_go() -> None:
    async def scenario() -> tuple[list, int]:
        kube = MemoryKube()
        body = kube.add_patch("old", {"image": "x", "policy": "pol"})
        body["metadata"]["finalizers"] = ["imagepatch.dev/finalizer", "other/keep"]
        memo = memo_with(kube)
        memo.loops = PatchLoops(lambda name: asyncio.sleep(0), resync=60)
        finished = {**body, "status": {"phase": "Succeeded"}}
        await handlers.imagepatch_event(event={"type": None, "object": finished}, memo=memo)
        # A conflicting edit meanwhile: logged, and the next event tries again.
        kube.fail["remove_imagepatch_finalizer"] = unavailable()
        await handlers.imagepatch_event(
            event={"type": "MODIFIED", "object": {**finished, "metadata": {
                **body["metadata"], "finalizers": ["imagepatch.dev/finalizer"]}}}, memo=memo)
        return kube.patches["old"]["metadata"]["finalizers"], kube.calls[
            "remove_imagepatch_finalizer"]

    finalizers, calls = asyncio.run(scenario())
    assert finalizers == ["other/keep"]
    assert calls == 2


def test_policies_carry_no_kopf_timer_so_no_finalizer_blocks_their_deletion() -> None:
    # kopf makes its finalizer mandatory for any resource with a timer or daemon
    # (nolar/kopf#1074); then a policy could not be deleted while the operator is down.
    registry = kopf.get_default_registry()
    policy_handlers = [h for h in registry._spawning.get_all_handlers()
                       if h.selector and "imagepatchpolicies" in str(h.selector)]
    assert policy_handlers == []


def test_the_policy_resync_writes_only_changed_status_and_stops_when_asked() -> None:
    from imagepatch.reconcile import outcomes

    async def scenario() -> tuple[int, int, dict]:
        kube = MemoryKube()
        kube.add_policy("pol", {"namespaceSelector": {}})
        first = await outcomes.resync_policies_once(kube)
        again = await outcomes.resync_policies_once(kube)  # nothing changed since
        stop = asyncio.Event()
        task = asyncio.create_task(outcomes.resync_policies(kube, stop, every=0.01))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=1)
        return first, again, kube.policies["pol"]["status"]

    first, again, status = asyncio.run(scenario())
    assert (first, again) == (1, 0)
    assert status["conditions"][0]["type"] == "Ready"


def test_a_failing_resync_is_logged_and_the_loop_goes_on(caplog) -> None:
    from imagepatch.reconcile import outcomes

    second_call = asyncio.Event()

    class Down(MemoryKube):
        calls = 0

        async def list_policies(self):
            Down.calls += 1
            if Down.calls >= 2:
                second_call.set()  # the loop survived the first failure
            raise unavailable()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(outcomes.resync_policies(Down(), stop, every=0.01))
        # Wait on the signal, not a fixed sleep: a loaded machine may not fit
        # two 10 ms periods into 50 ms.
        await asyncio.wait_for(second_call.wait(), timeout=30)
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(scenario())
    assert Down.calls >= 2 and "policy resync failed" in caplog.text


def test_liveness_fails_while_a_background_task_keeps_dying() -> None:
    kube = MemoryKube()
    memo = memo_with(kube)
    kube.last_answer = time.monotonic()
    memo.supervisor = Supervisor(max_restarts=2, window=600)
    assert "background tasks running" in handlers.liveness(memo=memo)
    now = time.monotonic()
    memo.supervisor.deaths["detection"] = collections.deque([now - 2, now - 1, now])
    with pytest.raises(kopf.PermanentError, match=r"detection \(3 times\)"):
        handlers.liveness(memo=memo)


def test_a_deleted_imagepatch_leaves_no_back_off_or_pass_count_behind() -> None:
    async def scenario() -> tuple[dict, dict]:
        memo = memo_with(MemoryKube())
        memo.loops = PatchLoops(lambda name: asyncio.sleep(0, result=None), resync=60)
        obj = {"metadata": {"name": "p1", "generation": 1}}
        memo.backoff.next_delay("p1")  # its reconcile failed once
        await handlers.imagepatch_event(event={"type": None, "object": obj}, memo=memo)
        await asyncio.sleep(0.02)
        await handlers.imagepatch_event(event={"type": "DELETED", "object": obj}, memo=memo)
        await asyncio.sleep(0.02)
        await memo.loops.aclose()
        return memo.backoff.failures, memo.loops.passes

    failures, passes = asyncio.run(scenario())
    assert failures == {} and passes == {}
