"""The OCI and Docker names every image document uses, defined once, no I/O.

Manifest, index, config and layer media types (the OCI image spec's
``media-types.md`` and Docker's image manifest v2 schema 2), the ``Accept``
list a registry client must send, and the annotations an image records its
base in (``org.opencontainers.image.base.name`` / ``.digest``, the OCI
``annotations.md`` pre-defined keys). The registry client
(``adapters/registry/``) and the rebase (``core/rebase.py``) read and write
these; neither spells one itself. The workload's own declaration of its base,
``imagepatch.dev/base-image``, is an operator key and lives with the other
keys in ``model/names.py`` (``BASE_ANNOTATION``).
"""

from __future__ import annotations

__all__ = [
    "ANNOTATION_BASE_DIGEST",
    "ANNOTATION_BASE_NAME",
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LIST",
    "DOCKER_V2",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_V2})
# Every manifest request sends all four: without the index types a registry
# answers 404 (or one platform) for a multi-arch tag; with no Accept at all
# docker-registry down-converts to schema1, whose digest differs.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_V2])

ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
ANNOTATION_CREATED = "org.opencontainers.image.created"  # when the image was built
