"""The detector's cache of opted-in Deployments holds only what detection reads."""

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
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                     "generation": 3,
                     "annotations": {"imagepatch.dev/policy": "pol",
                                     "imagepatch.dev/rebuild": "external"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "app", "image": "r/app:1"}]}}},
    }
    assert len(json.dumps(cached)) < len(json.dumps(FULL)) / 20
