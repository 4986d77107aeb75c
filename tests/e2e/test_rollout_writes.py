"""Rollouts write only what they should, on the real API server.

Given the operator under its shipped RBAC and Deployments simulated by kwok:

* a Deployment deleted while its gate is held ends as ``Skipped`` /
  ``WorkloadDeleted`` and the patch goes on to its next target;
* a patch for ``app:1.4`` never touches a Deployment running ``app:1.5``;
* rollback restores ``repo:tag@<the digest that ran>``, never the bare tag a
  rebuild may have moved, and remembers the failed digest on the workload, so
  a later patch with that digest skips it (``DigestFailedBefore``);
* a second patch for a container that a first one is changing waits with
  ``Conflict`` naming the holder, then proceeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}
FAILED = "imagepatch.dev/failed-digests"


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def wait_target_phase(given: Scenario, patch: str, index: int, phase: str) -> dict:
    def probe():
        rollouts = given.get("imagepatch", patch).get("status", {}).get("rollouts", [])
        return rollouts[index] if len(rollouts) > index and rollouts[index]["phase"] == phase else None

    return wait_for(probe, timeout=90, what=f"{patch} target {index} to be {phase}")


def test_a_deployment_deleted_mid_gate_is_skipped_and_the_patch_goes_on(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("deleted-mid-gate")
    given.policy(policy, rollout={**FAST_GATE, "healthyFor": "600s"})
    first, second = given.namespace("a"), given.namespace("b")
    given.deployment(first, "web", image=OLD, policy=policy, replicas=1)
    given.deployment(second, "web", image=OLD, policy=policy, replicas=1)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest, tag="1.4")

    gating = wait_target_phase(given, patch, 0, "Gating")
    given.kube.kubectl("delete", "deployment", "web", "-n", gating["namespace"])

    # The deleted target is skipped and the second one is patched (its long soak is then cut
    # short by deleting it too, so the test does not wait ten minutes).
    later = wait_target_phase(given, patch, 1, "Gating")
    given.kube.kubectl("delete", "deployment", "web", "-n", later["namespace"])
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert [(r["phase"], r["reason"]) for r in done["status"]["rollouts"]] == [
        ("Skipped", "WorkloadDeleted"), ("Skipped", "WorkloadDeleted")]
    assert "mid-rollout" in done["status"]["rollouts"][0]["message"]


def test_a_patch_for_one_tag_never_rewrites_another_tag(given: Scenario) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("rebuilt-1.4")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=1)
    given.deployment(ns, "next", image=f"{APP}:1.5", policy=policy, replicas=1)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest, tag="1.4")
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert [r["name"] for r in done["status"]["rollouts"]] == ["web"]
    assert given.image_of(ns, "web") == f"{OLD}@{digest}"
    assert given.image_of(ns, "next") == f"{APP}:1.5"  # untouched: no downgrade under 1.5


def test_rollback_restores_the_digest_that_ran_and_remembers_the_failed_one(given: Scenario) -> None:
    policy, running, bad = unique("pol"), fake_digest("ran-before"), fake_digest("crashes")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=2, crashloop_on=bad)

    first = unique("patch")
    given.imagepatch(first, image=APP, policy=policy, target_digest=bad, tag="1.4",
                     currentDigest=running)
    done = given.wait_phase(first, "Succeeded", "RolledBack", "Failed")

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    [entry] = done["status"]["rollouts"]
    assert entry["rollbackImage"] == f"{OLD}@{running}"
    # The tag may have been moved to the bad build: rollback pins what ran.
    assert given.image_of(ns, "web") == f"{OLD}@{running}"
    given.wait_available(ns, "web", 2)
    dep = given.get("deployment", "web", ns)
    memory = json.loads(dep["metadata"]["annotations"][FAILED])
    assert [m["digest"] for m in memory] == [bad] and memory[0]["patch"] == first

    # The patch is deleted (as history retention would), and the same digest is proposed again.
    given.kube.kubectl("delete", "imagepatch", first)
    again = unique("patch")
    given.imagepatch(again, image=APP, policy=policy, target_digest=bad)
    redo = given.wait_phase(again, "Succeeded", "RolledBack", "Failed")
    [entry] = redo["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "DigestFailedBefore")
    assert given.image_of(ns, "web") == f"{OLD}@{running}"


def test_a_second_patch_waits_with_conflict_while_the_first_holds_the_container(given: Scenario) -> None:
    policy, holder, waiter = unique("pol"), unique("holder"), unique("waiter")
    given.policy(policy, rollout={**FAST_GATE, "healthyFor": "15s"})
    ns = given.namespace()
    given.deployment(ns, "web", image=OLD, policy=policy, replicas=1)
    given.imagepatch(holder, image=APP, policy=policy, target_digest=fake_digest("first"))
    wait_target_phase(given, holder, 0, "Gating")

    given.imagepatch(waiter, image=APP, policy=policy, target_digest=fake_digest("second"))

    def conflict():
        status = given.get("imagepatch", waiter).get("status", {})
        ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready", {})
        return ready if ready.get("reason") == "Conflict" else None

    ready = wait_for(conflict, timeout=60, what="the second patch to report Conflict")
    assert holder in ready["message"]
    assert given.image_of(ns, "web") == f"{OLD}@{fake_digest('first')}"

    first = given.wait_phase(holder, "Succeeded", "RolledBack", "Failed")
    assert first["status"]["phase"] == "Succeeded"
    second = given.wait_phase(waiter, "Succeeded", "RolledBack", "Failed")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert given.image_of(ns, "web") == f"{OLD}@{fake_digest('second')}"


def test_a_policy_deleted_mid_rollout_is_gone_at_once_and_nothing_new_starts(given: Scenario) -> None:
    """Given a two-wave rollout soaking between waves, when the policy is deleted, then the
    deletion is not held by a finalizer, the first wave stays patched, and the second wave's
    target is Skipped / PolicyDeleted."""
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("policy-deleted")
    given.policy(policy, rollout={**FAST_GATE, "waves": [
        {"name": "staging", "namespaceSelector": {"matchLabels": {"stage": "staging"}},
         "soak": "600s"},
        {"name": "prod", "namespaceSelector": {"matchLabels": {"stage": "prod"}}}]})
    staging, prod = given.namespace("stg", stage="staging"), given.namespace("prd", stage="prod")
    given.deployment(staging, "web", image=OLD, policy=policy, replicas=1)
    given.deployment(prod, "web", image=OLD, policy=policy, replicas=1)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest, tag="1.4")
    wait_target_phase(given, patch, 0, "Healthy")  # staging done; prod waits for the soak

    assert not given.get("imagepatchpolicy", policy)["metadata"].get("finalizers")
    given.kube.kubectl("delete", "imagepatchpolicy", policy, "--timeout=20s")
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=60)

    first, second = done["status"]["rollouts"]
    assert (first["namespace"], first["phase"]) == (staging, "Healthy")
    assert (second["namespace"], second["phase"], second["reason"]) == (prod, "Skipped", "PolicyDeleted")
    assert given.image_of(staging, "web") == f"{OLD}@{digest}"
    assert given.image_of(prod, "web") == OLD
