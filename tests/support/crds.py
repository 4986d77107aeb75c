"""The imagepatch CRDs installed into the test cluster (the ``crds`` fixture).

``install_crds(kube)`` (behind the session fixture ``crds`` in
``tests/conftest.py``) installs every CustomResourceDefinition in ``crds/``
into the ``kube`` cluster with server-side apply, and waits
until each is Established, so a test that creates ImagePatchPolicies or
ImagePatches can rely on them. It returns the applied CRD names.

The CRDs are left installed at the end: deleting a CRD deletes every object of
its kind, which on an external cluster (KUBECONFIG) would not be ours to delete.
Server-side apply makes a rerun on a cluster that has older CRDs an upgrade.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
FIELD_MANAGER = "imagepatch-tests"
ESTABLISH_TIMEOUT = 60.0


def load_crds(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``directory``'s YAML files.

    Other documents (the kustomization.yaml beside them) are skipped.
    """
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        with path.open() as f:
            docs += [
                d
                for d in yaml.safe_load_all(f)
                if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
            ]
    if not docs:
        raise AssertionError(f"no CustomResourceDefinition found in {directory}")
    return docs


def _established(crd: Any) -> bool:
    conditions = (crd.status and crd.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def install_crds(kube: Any) -> list[str]:
    api = client.ApiextensionsV1Api(kube.api_client)
    names = []
    for doc in load_crds():
        name = doc["metadata"]["name"]
        # JSON is YAML, so the client sends the dict as an apply patch as-is.
        api.patch_custom_resource_definition(
            name,
            body=doc,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        names.append(name)

    deadline = time.monotonic() + ESTABLISH_TIMEOUT
    pending = set(names)
    while pending:
        for name in sorted(pending):
            if _established(api.read_custom_resource_definition(name)):
                pending.discard(name)
        if pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"CRDs not Established after {ESTABLISH_TIMEOUT}s: {pending}")
            time.sleep(0.2)
    return names
