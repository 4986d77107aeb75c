"""kopf wiring only: which events reach which reconcile function.

Handler ids are short and stable because kopf keys its progress annotations
by them. No decision is made here; everything goes through ``reconcile``.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from imagepatch import reconcile

GROUP = "imagepatch.dev"
POLICIES = (GROUP, "v1alpha1", "imagepatchpolicies")
# Level-based resync: a timer re-runs the reconcile even if a watch event was
# lost (a dead watch stream leaves kopf silent otherwise: nolar/kopf#787).
RESYNC_SECONDS = 300.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress lives in annotations under our own prefix, not in status.kopf:
    # our CRDs declare a structural status schema, which would prune it (kopf#527).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Only warnings become Kubernetes Events; "handler succeeded" is noise.
    settings.posting.level = logging.WARNING
    # Re-establish watches periodically, so a silently dead stream heals.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


@kopf.on.probe(id="ok")
def liveness(**_: Any) -> bool:
    return True


@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES)
@kopf.timer(*POLICIES, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def policy(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile.reconcile_policy(body=body, patch=patch)
