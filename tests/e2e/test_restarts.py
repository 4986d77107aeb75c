"""Restarts at every kill point leave the workload on a healthy image, patched once.

The operator records intent in ``ImagePatch.status`` before each side
effect. These scenarios kill it (SIGKILL, no clean shutdown) or start it on
the state a killed operator leaves behind, and check that it resumes: no
second roll-forward patch (counted from the operator's own "setting …"
log lines, one per image patch), and never a roll-forward after a rollback
began.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
GATE = {"progressDeadlineSeconds": 90, "healthyFor": "6s", "maxRestarts": 0}


def seed_status(given: Scenario, patch: str, status: dict) -> None:
    """Write status as an operator killed at that point would have left it."""
    given.kube.kubectl("patch", "imagepatch", patch, "--subresource=status", "--type=merge",
                       "-p", json.dumps({"status": status}))


def just_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def rollout_entry(ns: str, phase: str, target_image: str, **extra) -> dict:
    return {"namespace": ns, "name": "web", "container": "app", "kind": "Deployment", "wave": 0,
            "phase": phase, "previousImage": OLD, "targetImage": target_image,
            "startedAt": just_now(), **extra}


def test_sigkill_during_the_gate_resumes_and_patches_once(kube, operator_factory) -> None:
    given = Scenario(kube)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("restart-gate")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    first = operator_factory()
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    log = first

    def gating():
        rollouts = given.get("imagepatch", patch).get("status", {}).get("rollouts", [])
        return rollouts and rollouts[0]["phase"] == "Gating" and rollouts[0]
    recorded = wait_for(gating, timeout=60, what="the gate")
    first.kill()

    operator_factory()
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # The gate resumed from the recorded start, not from the restart.
    assert done["status"]["rollouts"][0]["startedAt"] == recorded["startedAt"]
    assert len(log.image_patches(ns, "web")) == 1  # exactly one roll-forward patch
    assert given.image_of(ns, "web") == f"{OLD}@{digest}"


def test_intent_recorded_but_not_acted_on_is_patched_exactly_once(kube, operator_factory) -> None:
    given = Scenario(kube)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("restart-intent")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    # Killed right after recording "Patching", before the Deployment was touched.
    seed_status(given, patch, {"phase": "RollingOut",
                               "rollouts": [rollout_entry(ns, "Patching", f"{OLD}@{digest}")]})

    operator = operator_factory()
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert len(operator.image_patches(ns, "web")) == 1


def test_patched_but_not_recorded_is_not_patched_again(kube, operator_factory) -> None:
    given = Scenario(kube)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("restart-patched")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    seed_status(given, patch, {"phase": "RollingOut",
                               "rollouts": [rollout_entry(ns, "Patching", f"{OLD}@{digest}")]})
    # Killed right after the patch landed, before "Gating" was recorded.
    kube.kubectl("set", "image", "-n", ns, "deployment/web", f"app={OLD}@{digest}")

    operator = operator_factory()
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert operator.image_patches(ns, "web") == []  # it was already live: no second patch


def test_killed_mid_rollback_finishes_it_and_never_rolls_forward(kube, operator_factory) -> None:
    given = Scenario(kube)
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("restart-rollback")
    given.policy(policy, rollout=GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, crashloop_on=digest)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    # Killed after recording "RollingBack" while the bad digest is still live.
    kube.kubectl("set", "image", "-n", ns, "deployment/web", f"app={OLD}@{digest}")
    seed_status(given, patch, {"phase": "RollingOut", "failedDigests": [digest], "rollouts": [
        rollout_entry(ns, "RollingBack", f"{OLD}@{digest}", reason="CrashLoopBackOff",
                      rollbackStartedAt=just_now(),
                      message="web-x/app: CrashLoopBackOff, 2 restarts")]})

    operator = operator_factory()
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "RolledBack", done["status"]
    assert given.image_of(ns, "web") == OLD
    given.wait_available(ns, "web", 3)
    # Exactly one patch, the rollback; never the bad digest again.
    [restore] = operator.image_patches(ns, "web")
    assert restore.endswith(f" to {OLD}")
