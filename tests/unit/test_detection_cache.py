"""The detector's cache of opted-in workloads holds only what detection reads."""

from __future__ import annotations

import json

from imagepatch.reconcile.detection import Detector

FULL = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {
        "name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7", "generation": 3,
        "labels": {"app": "web"},
        "annotations": {"imagepatch.dev/policy": "pol", "imagepatch.dev/rebuild": "external",
                        "kubectl.kubernetes.io/last-applied-configuration": "x" * 5000},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"x": "y" * 5000}}}],
    },
    "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "app", "image": "r/app:1",
                                              "env": [{"name": "A", "value": "b" * 1000}]}]}},
    },
    "status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True"}]},
}


def test_the_cache_keeps_identity_our_annotations_the_selector_and_the_images() -> None:
    detector = Detector(kube=None, registry=None)
    detector.observe("ADDED", FULL)
    cached = detector.workloads["u1"]
    assert cached == {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                     "generation": 3,
                     "annotations": {"imagepatch.dev/policy": "pol",
                                     "imagepatch.dev/rebuild": "external"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "app", "image": "r/app:1"}]}}},
    }
    assert len(json.dumps(cached)) < len(json.dumps(FULL)) / 20


def test_every_kind_is_cached_with_its_init_containers_and_sidecars_never_ephemerals() -> None:
    detector = Detector(kube=None, registry=None)
    pod = {"containers": [{"name": "app", "image": "r/app:1"}],
           "initContainers": [{"name": "migrate", "image": "r/migrate:1"},
                              {"name": "proxy", "image": "r/proxy:1", "restartPolicy": "Always"}],
           "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}
    meta = {"namespace": "shop", "annotations": {"imagepatch.dev/policy": "pol"}}
    # kopf names the kind: list items come without one.
    detector.observe("ADDED", {"metadata": {**meta, "name": "db", "uid": "s"},
                               "spec": {"template": {"spec": pod}}}, kind="StatefulSet")
    detector.observe("ADDED", {"kind": "CronJob", "metadata": {**meta, "name": "nightly",
                                                                "uid": "c"},
                               "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}},
                     kind="CronJob")
    expected = {"containers": [{"name": "app", "image": "r/app:1"}],
                "initContainers": [{"name": "migrate", "image": "r/migrate:1"},
                                   {"name": "proxy", "image": "r/proxy:1"}]}
    for uid, kind in (("s", "StatefulSet"), ("c", "CronJob")):
        cached = detector.workloads[uid]
        assert cached["kind"] == kind
        assert cached["spec"]["template"]["spec"] == expected
