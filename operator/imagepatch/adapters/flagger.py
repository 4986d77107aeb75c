"""Reads the Flagger Canary that targets a Deployment (``--flagger``; issue 23).

The gate of a Deployment that a Flagger ``Canary`` targets follows the
Canary's status (``core.flagger``). This adapter lists the Canaries of the
Deployment's namespace (namespaced: the chart's ``flagger.enabled`` grants
get/list/watch on ``canaries.flagger.app``) and attaches the one whose
``spec.targetRef`` names the Deployment to the observed body. Without the
Canary CRD (a 404 on the listing) no Deployment has a Canary. The listing is
made once per gate look (every few seconds per target in its gate), not per
detection pass: only patched Deployments are gated.

It goes through ``Kube``'s one call path (timeouts, error classes, the
liveness clock), so it is written against ``Kube._call``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagepatch.adapters.kube import Kube
from imagepatch.core import flagger


async def list_canaries(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """The Canaries of ``namespace``; none when the Canary CRD is not installed."""
    data = await kube._call(
        f"list Flagger Canaries in {namespace}", kube.custom.list_namespaced_custom_object,
        flagger.GROUP, flagger.VERSION, namespace, flagger.PLURAL, missing_ok=True,
    )  # fmt: skip
    return list((data or {}).get("items") or [])


async def with_canary(kube: Kube, deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The Deployment with the Canary that targets it attached (``core.flagger.attach``),
    or as it is when none does."""
    namespace = str((deployment.get("metadata") or {}).get("namespace") or "")
    canaries = await list_canaries(kube, namespace)
    return flagger.attach(deployment, flagger.canary_for(canaries, deployment))
