"""Benchmark: time from a broken pod state to the start of the automatic rollback.

Not part of ``make test`` (timings are measured and printed, never asserted).
Run with ``make bench``. For each run, a 3-replica Deployment is rolled to a
digest whose pods crash-loop (kwok); the benchmark polls every 50 ms and
reports the time from the first pod on the new digest showing
``CrashLoopBackOff`` to the ImagePatch recording ``RollingBack``, and to the
Deployment's image being restored.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok

APP = "registry.local/bench/app"
RUNS = 5


def test_broken_pod_to_rollback_start(kube, operator) -> None:
    given = Scenario(kube)
    to_rollback, to_restored = [], []
    policy = unique("pol")
    given.policy(policy, rollout={"progressDeadlineSeconds": 120, "healthyFor": "5s", "maxRestarts": 0})
    for run in range(RUNS):
        digest = fake_digest(f"bench-{run}-{time.time()}")
        ns = given.namespace()
        given.deployment(ns, "web", image=f"{APP}:1", policy=policy, crashloop_on=digest)
        patch = unique("patch")
        given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
        broken = rolling_back = restored = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and restored is None:
            now = time.monotonic()
            if broken is None:
                pods = json.loads(kube.kubectl("get", "pods", "-n", ns, "-o", "json"))["items"]
                for pod in pods:
                    for cs in pod["status"].get("containerStatuses", []):
                        if digest in cs.get("image", "") and \
                                cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                            broken = now
            if rolling_back is None:
                status = given.get("imagepatch", patch).get("status", {})
                if any(r.get("phase") in ("RollingBack", "RolledBack") for r in status.get("rollouts", [])):
                    rolling_back = now
            if rolling_back is not None and given.image_of(ns, "web") == f"{APP}:1":
                restored = now
            time.sleep(0.05)
        assert broken and rolling_back and restored, "the rollback did not happen"
        to_rollback.append(rolling_back - broken)
        to_restored.append(restored - broken)
    print(f"\n[bench] broken pod -> rollback recorded: median {statistics.median(to_rollback):.2f}s, "
          f"max {max(to_rollback):.2f}s over {RUNS} runs")
    print(f"[bench] broken pod -> previous image restored: median {statistics.median(to_restored):.2f}s, "
          f"max {max(to_restored):.2f}s")
