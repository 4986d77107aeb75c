"""adapters.flagger against the real API server: the Canary that targets a Deployment is
found in the Deployment's namespace and attached for the gate; without the Canary CRD
there is none (issue 23)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from imagepatch.adapters import flagger as flagger_adapter
from imagepatch.adapters.kube import Kube
from imagepatch.core import flagger
from tests.support.flagger import install_crds


def canary(ns: str, name: str, target: str) -> dict:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": "kubernetes", "service": {"port": 80}, "analysis": {"interval": "1m", "threshold": 1, "iterations": 1},
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": target}}}


def deployment(ns: str, name: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"replicas": 1}}


@pytest.fixture
def namespace(kube):
    ns = f"flagger-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    yield ns
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_the_canary_targeting_a_deployment_is_attached(kube, namespace) -> None:
    if not kube.kwok:
        pytest.skip("installs Flagger's CRDs: local test cluster only")
    install_crds(kube)
    items = [canary(namespace, "web", "web"), canary(namespace, "api", "api")]
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": items}))
    adapter = Kube(kube.api_client)
    web = asyncio.run(flagger_adapter.with_canary(adapter, deployment(namespace, "web")))
    assert (flagger.attached(web) or {}).get("name") == f"{namespace}/web"
    other = asyncio.run(flagger_adapter.with_canary(adapter, deployment(namespace, "shop")))
    assert flagger.attached(other) is None


def test_without_the_canary_crd_no_deployment_has_a_canary(
    kube, namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API server answers 404 for a resource it does not serve, as without Flagger's CRDs.
    monkeypatch.setattr(flagger, "PLURAL", "nosuchcanaries")
    adapter = Kube(kube.api_client)
    assert asyncio.run(flagger_adapter.list_canaries(adapter, namespace)) == []
    web = asyncio.run(flagger_adapter.with_canary(adapter, deployment(namespace, "web")))
    assert flagger.attached(web) is None
