"""The read store's own logic (adapters.store), from in-memory event sequences.

Its proof against the real API server is tests/integration/test_watch_store.py
(fallback, priming, read-your-writes) and tests/e2e/test_api_load.py (an idle
operator lists nothing).
"""

from __future__ import annotations

from typing import Any

from imagepatch.adapters.store import MAX_TOMBSTONES, Shelf, WatchStore, slim_workload


def obj(name: str, rv: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv, **extra}}


def workload(name: str, rv: str, *, policy: str | None = "p", kind: str = "Deployment",
             ns: str = "team") -> dict[str, Any]:
    annotations = {"imagepatch.dev/policy": policy} if policy else {}
    annotations["other.io/x"] = "y"
    pod = {"spec": {"containers": [{"name": "app", "image": "r/app:1", "env": [{"name": "A"}]}],
                    "initContainers": [{"name": "init", "image": "r/init:1"}]}}
    spec: dict[str, Any] = (
        {"jobTemplate": {"spec": {"template": pod}}, "schedule": "* * * * *"}
        if kind == "CronJob" else {"selector": {"matchLabels": {"a": "b"}}, "template": pod}
    )
    return {"kind": kind, "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}",
                                       "resourceVersion": rv, "annotations": annotations,
                                       "managedFields": [{"big": "x" * 100}]},
            "spec": spec, "status": {"replicas": 1}}


def test_an_older_event_after_our_write_is_ignored() -> None:
    shelf = Shelf()
    shelf.put("a", obj("a", "10", labels={"v": "written"}))
    shelf.put("a", obj("a", "9", labels={"v": "stale event"}))
    assert shelf.get("a") == obj("a", "10", labels={"v": "written"})
    shelf.put("a", obj("a", "11", labels={"v": "newer event"}))
    assert (shelf.get("a") or {})["metadata"]["labels"] == {"v": "newer event"}


def test_incomparable_versions_let_the_later_arrival_win() -> None:
    shelf = Shelf()
    shelf.put("a", obj("a", "x1"))
    shelf.put("a", obj("a", "10"))
    assert (shelf.get("a") or {})["metadata"]["resourceVersion"] == "10"


def test_a_listing_does_not_bring_back_what_a_watch_deleted_while_it_ran() -> None:
    shelf = Shelf()
    since = shelf.begin_listing()
    shelf.deleted("gone", 12)
    shelf.put("newer", obj("newer", "20"))
    shelf.prime([("gone", obj("gone", "11")), ("newer", obj("newer", "15")),
                 ("plain", obj("plain", "5"))], since=since, now=1.0)
    assert shelf.primed and shelf.listed_at == 1.0
    assert shelf.get("gone") is None
    assert (shelf.get("newer") or {})["metadata"]["resourceVersion"] == "20"
    assert shelf.get("plain") == obj("plain", "5")


def test_a_re_created_object_replaces_its_tombstone() -> None:
    shelf = Shelf()
    shelf.put("a", obj("a", "3"))
    shelf.deleted("a", 3)  # our own delete: its precondition's version
    shelf.put("a", obj("a", "2"))  # a late event from before the delete
    assert shelf.get("a") is None
    shelf.put("a", obj("a", "30"))  # created again since
    assert shelf.get("a") == obj("a", "30")


def test_a_stale_deleted_event_keeps_a_newer_object() -> None:
    shelf = Shelf()
    shelf.prime([], since=shelf.begin_listing(), now=0.0)
    shelf.put("a", obj("a", "40"))
    shelf.deleted("a", 35)
    assert shelf.get("a") == obj("a", "40")


def test_a_later_listing_clears_the_tombstones_it_reflects() -> None:
    shelf = Shelf()
    shelf.prime([("a", obj("a", "3")), ("b", obj("b", "3"))], since=shelf.begin_listing(),
                 now=0.0)
    shelf.deleted("a", 3)
    since = shelf.begin_listing()
    shelf.deleted("b", 4)  # while the listing runs: still needed after it
    shelf.prime([("b", obj("b", "3"))], since=since, now=1.0)
    assert shelf.get("b") is None
    assert set(shelf._gone) == {"b"}  # noqa: SLF001 - per-object memory goes with the object


def test_a_relisting_drops_what_a_dead_watch_never_reported_gone() -> None:
    shelf = Shelf()
    shelf.prime([("old", obj("old", "1")), ("kept", obj("kept", "1"))],
                since=shelf.begin_listing(), now=0.0)
    since = shelf.begin_listing()
    shelf.put("new", obj("new", "9"))  # an event or our write while the listing runs
    shelf.prime([("kept", obj("kept", "2"))], since=since, now=300.0)
    assert sorted(shelf.objects) == ["kept", "new"]
    assert (shelf.get("kept") or {})["metadata"]["resourceVersion"] == "2"


def test_tombstones_are_bounded() -> None:
    shelf = Shelf()
    for i in range(MAX_TOMBSTONES + 10):
        shelf.deleted(f"n{i}", i)
    assert len(shelf._gone) == MAX_TOMBSTONES  # noqa: SLF001
    assert "n0" not in shelf._gone  # noqa: SLF001 - the oldest went first


def test_readers_get_copies() -> None:
    shelf = Shelf()
    shelf.put("a", obj("a", "1", labels={"k": "v"}))
    got = shelf.get("a") or {}
    got["metadata"]["labels"]["k"] = "changed"
    shelf.values()[0]["metadata"]["labels"]["k"] = "changed"
    assert (shelf.get("a") or {})["metadata"]["labels"] == {"k": "v"}
    assert shelf.get("missing") is None


def test_policy_and_imagepatch_events_keep_bodies_without_managed_fields() -> None:
    store = WatchStore()
    store.observe_policy(None, obj("pol", "1", managedFields=[{"x": 1}]))  # kopf's listing
    store.observe_imagepatch("ADDED", obj("ip", "2", managedFields=[{"x": 1}]))
    store.observe_imagepatch("MODIFIED", {"metadata": {}})  # nameless: nothing to key it by
    assert store.policies.get("pol") == obj("pol", "1")
    assert store.imagepatches.get("ip") == obj("ip", "2")
    assert not store.policies.primed  # events alone never prime: kopf says no "listed"
    store.observe_imagepatch("DELETED", obj("ip", "3"))
    assert store.imagepatches.get("ip") is None


def test_workloads_are_kept_slim_and_only_while_opted_in() -> None:
    store = WatchStore()
    store.observe_workload("Deployment", "ADDED", workload("web", "1"))
    kept = store.workloads["Deployment"].get(("Deployment", "team", "web"))
    assert kept == {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team", "uid": "u-web", "resourceVersion": "1",
                     "annotations": {"imagepatch.dev/policy": "p"}},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"spec": {"containers": [{"name": "app", "image": "r/app:1"}],
                                       "initContainers": [{"name": "init",
                                                           "image": "r/init:1"}]}}},
    }
    store.observe_workload("Deployment", "MODIFIED", workload("web", "2", policy=None))
    assert store.workloads["Deployment"].get(("Deployment", "team", "web")) is None
    store.observe_workload("Deployment", "MODIFIED", workload("web", "3"))
    store.observe_workload("Deployment", "DELETED", workload("web", "4"))
    assert store.workloads["Deployment"].get(("Deployment", "team", "web")) is None
    store.observe_workload("Pod", "ADDED", workload("pod", "1"))  # not a kind we patch
    store.observe_workload("Deployment", "ADDED", {"metadata": {}})
    assert all(not shelf.objects for shelf in store.workloads.values())


def test_a_cronjob_keeps_its_job_template_path() -> None:
    from imagepatch.core import kinds

    slim = slim_workload("CronJob", workload("nightly", "1", kind="CronJob"))
    assert [(k, c["name"], c["image"]) for k, c in kinds.containers(slim)] == [
        ("containers", "app", "r/app:1"), ("initContainers", "init", "r/init:1")]
    assert "selector" not in slim["spec"]


def test_a_stored_workload_keeps_its_gitops_claims_and_generation_and_nothing_else_foreign() -> None:
    body = workload("web", "1")
    body["metadata"]["generation"] = 4
    body["metadata"]["labels"] = {"kustomize.toolkit.fluxcd.io/name": "apps",
                                  "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                                  "team": "payments"}
    meta = slim_workload("Deployment", body)["metadata"]
    assert meta["generation"] == 4
    assert meta["labels"] == {"kustomize.toolkit.fluxcd.io/name": "apps",
                              "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
    assert "other.io/x" not in meta["annotations"]
