"""What an image tells about how it was built: its base by layers, its source revision.

**Base by layers.** Was an image built on a given base, when the image itself
does not say?

An image whose lineage is known only from the workload's
``imagepatch.dev/base-image`` annotation records no base digest (no OCI
``org.opencontainers.image.base.*`` annotations, no labels), and neither does
its rebuild from the same Dockerfile. What the build was told to use is known
(``status.rebuild.baseImage``, the ``BASE_IMAGE`` build argument), and what an
image was built ``FROM`` leaves a mark that no label can fake away: the
base's layers are the first layers of the image. :func:`base_by_layers`
checks exactly that, per platform, through the registry client's reads (all
by digest, so cached for good).

**Source revision.** :func:`image_revision` reads the running image's
``org.opencontainers.image.revision`` config label, so a rebuild builds the
code that is running rather than the branch head (CodeBuild's
``sourceVersion``, the Job's ``${REVISION}``). A label is whatever the pusher
wrote: a value that does not look like a revision is not used.

Neighbours: the external builder (``external.py``) uses the layers check to
accept CI's push, verification (``reconcile/rebuilds.py``) to check the
rebuilt image against the base the build was told to use; the reconciler
reads the revision when it starts a build.
"""

from __future__ import annotations

import re
from typing import Any

from imagepatch.adapters.registry import MAX_CONFIG_BYTES, RegistryClient, parse_document
from imagepatch.core.images import ImageRef
from imagepatch.core.oci import IMAGE_MANIFEST_TYPES

__all__ = ["REVISION_LABEL", "base_by_layers", "image_revision", "is_revision"]

REVISION_LABEL = "org.opencontainers.image.revision"
# A commit id, tag or branch as CodeBuild's sourceVersion and git accept them;
# nothing that could start an option or carry whitespace.
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


def is_revision(value: str) -> bool:
    return bool(_REVISION.fullmatch(value)) and ".." not in value


async def image_revision(registry: RegistryClient, image: ImageRef) -> str:
    """The revision label of ``image`` (pinned), as written; "" when it has none.

    For an index, its linux/amd64 manifest's (else the first's): every
    platform of one build records the same revision.
    """
    platforms = await registry.platform_digests(image)
    digest = platforms.get("linux/amd64") or next(iter(platforms.values()), image.digest or "")
    manifest = await registry.get_manifest(image, digest)
    if manifest.media_type not in IMAGE_MANIFEST_TYPES:
        return ""
    doc = parse_document(manifest.body, what=f"{image.name}@{digest}")
    config_digest = (doc.get("config") or {}).get("digest")
    if not config_digest:
        return ""
    config = parse_document(
        await registry.get_blob(image, config_digest, max_bytes=MAX_CONFIG_BYTES),
        what=f"{image.name}@{digest} config",
        kind="config",
    )
    labels = (config.get("config") or {}).get("Labels") or {}
    value = labels.get(REVISION_LABEL) if isinstance(labels, dict) else None
    return value.strip() if isinstance(value, str) else ""


async def base_by_layers(registry: RegistryClient, image: ImageRef, base: ImageRef) -> str:
    """The base manifest digest whose layers start ``image``'s layers, or "".

    ``image`` and ``base`` are pinned by digest. For an index, each of the
    image's platform manifests is compared with the base's manifest for the
    same platform (a single-platform base matches any). The digest returned
    is what buildah would have recorded: the base's platform manifest digest
    for a multi-arch base, else the base's own digest.
    """
    base_platforms = await registry.platform_digests(base)
    image_platforms = await registry.platform_digests(image)
    image_manifests = image_platforms or {"": image.digest or ""}
    for platform, digest in image_manifests.items():
        layers = await _layers(registry, image, digest)
        if base_platforms:
            # A single-platform image on a multi-arch base: any of its platforms.
            candidates = (
                [base_platforms[platform]]
                if platform in base_platforms
                else list(base_platforms.values())
            )
        else:
            candidates = [base.digest or ""]
        for candidate in candidates:
            base_layers = await _layers(registry, base, candidate)
            if base_layers and layers[: len(base_layers)] == base_layers:
                return candidate
    return ""


async def _layers(registry: RegistryClient, image: ImageRef, digest: str) -> tuple[str, ...]:
    manifest = await registry.get_manifest(image, digest)
    if manifest.media_type not in IMAGE_MANIFEST_TYPES:
        return ()
    doc: dict[str, Any] = parse_document(manifest.body, what=f"{image.name}@{digest}")
    return tuple(
        str(layer.get("digest"))
        for layer in doc.get("layers") or ()
        if isinstance(layer, dict)
    )
