"""Benchmark: time from a broken pod state to the start of the automatic rollback.

Not part of ``make test`` (timings are measured and printed, never asserted).
Run with ``make bench``. For each run, a 3-replica Deployment is rolled to a
digest whose pods crash-loop (kwok). Two watch streams timestamp, as the API
server announces them, the first pod on the new digest reporting
``CrashLoopBackOff`` and the ImagePatch recording ``RollingBack``; the
Deployment's image being restored is timestamped the same way.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from kubernetes import client, watch

from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok

APP = "registry.local/bench/app"
RUNS = 5


def _watch(list_fn, seen: dict, key: str, test, stop: threading.Event, **kwargs) -> None:
    w = watch.Watch()
    for event in w.stream(list_fn, timeout_seconds=60, **kwargs):
        if key not in seen and test(event["object"]):
            seen[key] = time.monotonic()
        if stop.is_set():
            w.stop()


def test_broken_pod_to_rollback_start(kube, operator) -> None:
    given = Scenario(kube)
    api = kube.api_client
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    to_rollback, to_restored = [], []
    policy = unique("pol")
    given.policy(policy, rollout={"progressDeadlineSeconds": 120, "healthyFor": "5s", "maxRestarts": 0})
    for run in range(RUNS):
        digest = fake_digest(f"bench-{run}-{time.time()}")
        ns = given.namespace()
        given.deployment(ns, "web", image=f"{APP}:1", policy=policy, crashloop_on=digest)
        patch = unique("patch")
        seen: dict[str, float] = {}
        stop = threading.Event()

        def crashing(pod, digest=digest) -> bool:
            return any(digest in (cs.image or "") and cs.state and cs.state.waiting
                       and cs.state.waiting.reason == "CrashLoopBackOff"
                       for cs in (pod.status.container_statuses or []))

        def rolling_back(obj) -> bool:
            return any(r.get("phase") in ("RollingBack", "RolledBack")
                       for r in (obj.get("status") or {}).get("rollouts", []))

        def restored(dep, seen=seen) -> bool:
            return "rollback" in seen and dep.spec.template.spec.containers[0].image == f"{APP}:1"

        threads = [
            threading.Thread(target=_watch, daemon=True, args=(
                core.list_namespaced_pod, seen, "broken", crashing, stop), kwargs={"namespace": ns}),
            threading.Thread(target=_watch, daemon=True, args=(
                custom.list_cluster_custom_object, seen, "rollback", rolling_back, stop),
                kwargs={"group": "imagepatch.dev", "version": "v1alpha1", "plural": "imagepatches",
                        "field_selector": f"metadata.name={patch}"}),
            threading.Thread(target=_watch, daemon=True, args=(
                apps.list_namespaced_deployment, seen, "restored", restored, stop),
                kwargs={"namespace": ns}),
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)
        given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
        given.wait_phase(patch, "RolledBack", "Failed", "Succeeded")
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        assert {"broken", "rollback", "restored"} <= set(seen), seen
        to_rollback.append(seen["rollback"] - seen["broken"])
        to_restored.append(seen["restored"] - seen["broken"])
    print(f"\n[bench] broken pod -> rollback recorded: median {statistics.median(to_rollback):.2f}s, "
          f"max {max(to_rollback):.2f}s over {RUNS} runs")
    print(f"[bench] broken pod -> previous image restored: median {statistics.median(to_restored):.2f}s, "
          f"max {max(to_restored):.2f}s")
