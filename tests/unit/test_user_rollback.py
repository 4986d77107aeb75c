"""core.user_rollback: which hand-made rollbacks count, and how they are remembered."""

from __future__ import annotations

import datetime as dt
from typing import Any

from imagepatch.core.user_rollback import (
    REJECTED_BY_USER,
    UserRollback,
    rejection_message,
    remembered,
    rollbacks,
)
from imagepatch.model.imagepatch import parse_imagepatch
from imagepatch.model.memory import WorkloadMemory, with_failed

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
REPO = "registry.example.com/team/web"


def patch(phase: str = "Succeeded", entry_phase: str = "Healthy", key: str = "k1",
          **entry: Any) -> Any:
    rollout = {"namespace": "shop", "kind": "Deployment", "name": "web", "container": "app",
               "phase": entry_phase, "previousImage": f"{REPO}:1.0",
               "targetImage": f"{REPO}:1.0@{NEW}", "patchedGeneration": 2, **entry}
    return parse_imagepatch({
        "metadata": {"name": "web-1", "annotations": {"imagepatch.dev/key": key} if key else {}},
        "spec": {"image": REPO, "policy": "p", "currentDigest": OLD, "tag": "1.0"},
        "status": {"phase": phase, "targetDigest": NEW, "rollouts": [rollout]},
    })


def workload(image: str, generation: int = 3, kind: str = "Deployment") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": "shop", "name": "web", "generation": generation},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}


def test_setting_the_replaced_image_back_is_a_rollback() -> None:
    assert rollbacks(workload(f"{REPO}:1.0"), [patch()]) == [
        UserRollback(container="app", digest=NEW, key="k1", patch="web-1", image=f"{REPO}:1.0")]


def test_any_image_of_the_digest_it_ran_before_is_a_rollback() -> None:
    [found] = rollbacks(workload(f"{REPO}:other@{OLD}"), [patch()])
    assert found.digest == NEW and found.image == f"{REPO}:other@{OLD}"


def test_what_is_not_a_rollback() -> None:
    cases = [
        (workload(f"{REPO}:1.0@{NEW}"), patch()),  # still imagepatch's image
        (workload(f"{REPO}:2.0@{NEW}"), patch()),  # another tag of the patched digest
        (workload(f"{REPO}:1.0", generation=2), patch()),  # not written since our patch
        (workload(f"{REPO}:1.0", kind="StatefulSet"), patch()),  # another workload
        (workload(f"{REPO}:1.1"), patch()),  # a move elsewhere is no rollback
        (workload("not a ref!"), patch()),
        (workload(f"{REPO}:1.0"), patch(phase="RolledBack")),
        (workload(f"{REPO}:1.0"), patch(entry_phase="RolledBack")),
        (workload(f"{REPO}:1.0"), patch(key="")),  # made by hand: never re-opened anyway
        (workload(f"{REPO}:1.0"), patch(patchedGeneration=0)),
        (workload(f"{REPO}:1.0"), patch(container="sidecar")),
    ]
    for wl, p in cases:
        assert rollbacks(wl, [p]) == [], (wl, p)


def test_a_rollback_is_remembered_once_with_its_reason() -> None:
    record = WorkloadMemory(kind="Deployment", namespace="shop", name="web", uid="u")
    found = rollbacks(workload(f"{REPO}:1.0"), [patch()])
    once = remembered(record, found, NOW)
    assert once.failed == ({"digest": NEW, "key": "k1", "patch": "web-1",
                            "at": "2026-12-05T12:00:00Z", "reason": REJECTED_BY_USER},)
    assert remembered(once, found, NOW + dt.timedelta(hours=1)) is once
    # A digest that failed its gate here is already refused: left as it is.
    failed = with_failed(record, digest=NEW, key="k1", patch="web-1", now=NOW)
    assert remembered(failed, found, NOW) is failed


def test_the_state_names_the_digest_and_the_patch() -> None:
    message = rejection_message({"digest": NEW, "patch": "web-1", "at": "2026-12-05T12:00:00Z"})
    assert NEW in message and "web-1" in message and "not rolled out here again" in message


# -- reconcile.user_rollbacks: detection's hook, with the in-memory OperatorMemory -----------


def raw_patch(phase: str = "Succeeded", **over: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "annotations": {"imagepatch.dev/key": "k1"}},
        "spec": {"image": REPO, "policy": "p", "currentDigest": OLD, "tag": "1.0", **over},
        "status": {"phase": phase, "targetDigest": NEW, "rollouts": [
            {"namespace": "shop", "kind": "Deployment", "name": "web", "container": "app",
             "phase": "Healthy", "previousImage": f"{REPO}:1.0",
             "targetImage": f"{REPO}:1.0@{NEW}", "patchedGeneration": 2}]},
    }


def test_the_hook_stages_the_rejection_once() -> None:
    from imagepatch.adapters.memory import OperatorMemory
    from imagepatch.reconcile.user_rollbacks import remember

    memory = OperatorMemory()
    wl = workload(f"{REPO}:1.0")
    wl["metadata"]["uid"] = "u1"
    remember(memory, [wl, workload(f"{REPO}:1.0@{NEW}")], [raw_patch()], NOW)
    [entry] = memory.get("Deployment", "shop", "web", "u1").failed
    assert (entry["digest"], entry["reason"]) == (NEW, REJECTED_BY_USER)
    staged = memory.records.copy()
    remember(memory, [wl], [raw_patch()], NOW + dt.timedelta(minutes=5))
    assert memory.records == staged  # remembered once, "at" unchanged


def test_the_hook_ignores_open_and_unreadable_patches() -> None:
    from imagepatch.adapters.memory import OperatorMemory
    from imagepatch.reconcile.user_rollbacks import remember

    memory = OperatorMemory()
    wl = workload(f"{REPO}:1.0")
    remember(memory, [wl], [raw_patch(phase="RollingOut"), raw_patch(image="")], NOW)
    remember(memory, [dict(wl, kind="Pod")], [raw_patch(phase="RollingOut")], NOW)
    assert memory.records == {}
