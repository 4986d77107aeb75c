"""Which base a container follows, and which queue events reach a workload.

Pure. The image's own record of its base wins over the workload's
``imagepatch.dev/base-image`` annotation (a request of the workload's owner);
the base digest remembered for an image is the operator's memory, never the
workload's annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from imagepatch.core.compliance import Assessment, ContainerFacts
from imagepatch.core.detection.workload import clip
from imagepatch.core.images import ImageRef, is_digest, parse_image
from imagepatch.model.memory import WorkloadMemory
from imagepatch.model.names import BASE_ANNOTATION


def override_use(
    base_name: str,
    override: str,
    *,
    same_registry: Callable[[ImageRef, ImageRef], bool] = lambda a, b: a.host == b.host,
) -> tuple[str, str]:
    """When the image records its base: what of the annotation is used, and a note if nothing.

    The image's own record wins: an annotation could otherwise pin a base tag
    that never moves and keep the workload from ever being outdated. The uses
    left: naming the tag to follow of a base the image records only by digest
    (``FROM base@sha256:…``), in the same repository; and naming the recorded
    base under another host that the operator's own configuration serves from
    the same registry (``same_registry``: the ``--registry-endpoint`` mapping,
    an admin's, never a tenant's), so events naming that host match.
    """
    if not (base_name and override):
        return "", ""
    try:
        recorded, asked = parse_image(base_name), parse_image(override)
    except ValueError:
        return "", ""
    same_base = recorded.repository == asked.repository and (
        recorded.host == asked.host or same_registry(recorded, asked)
    )
    if same_base and (not recorded.tag or recorded.tag == asked.tag):
        return (override if not recorded.tag or recorded.host != asked.host else ""), ""
    return "", (
        f"the {BASE_ANNOTATION} annotation names {clip(override)}, but the image records its "
        f"base as {clip(base_name)}: the image's base is followed"
    )


def base_to_follow(base_name: str, override: str) -> ImageRef | None:
    """The base tag to watch: the annotation's if given, else the recorded name if it has a tag.

    A base recorded only by digest (``FROM base@sha256:…``) names no tag that
    could move, so there is nothing to follow without the annotation.
    """
    for candidate in (override, base_name):
        if not candidate:
            continue
        try:
            ref = parse_image(candidate)
        except ValueError:
            continue
        if ref.tag:
            return ImageRef(host=ref.host, repository=ref.repository, tag=ref.tag)
        if not ref.digest:
            return ImageRef(host=ref.host, repository=ref.repository, tag="latest")
    return None


def remembered_base_digest(
    record: WorkloadMemory, container: str, digest: str, base_name: str
) -> str:
    """The base digest the operator remembered for this container at this digest.

    Only lineage taken from the workload annotation is remembered, for the same
    image digest and base name; anything else (or a value that is not a digest)
    is "". The memory is the operator's (``adapters.memory``), never the
    workload's ``imagepatch.dev/state`` annotation, which its owner can edit.
    """
    remembered = record.bases.get(container)
    if remembered is not None and remembered.digest == digest and remembered.base == base_name:
        return remembered.base_digest if is_digest(remembered.base_digest) else ""
    return ""


def follows(
    assessed: Sequence[tuple[ContainerFacts, Assessment]], override: object
) -> frozenset[tuple[str, str]]:
    """(name, tag) of every image a workload runs or follows as a base ("": any tag).

    An event about the running image's repository reaches the workload whatever
    tag it names (a scan, a push that moved the digest); one about a base only
    when it names the tag followed, or none.
    """
    out = {(f.repository, "") for f, _ in assessed}
    bases = [f.base_name for f, _ in assessed if f.base_name]
    if isinstance(override, str) and override.strip():
        bases.append(override.strip())
    for base in bases:
        try:
            ref = parse_image(base)
        except ValueError:
            continue
        out.add((ref.name, ref.tag or ("" if ref.digest else "latest")))
    return frozenset(out)


def named(
    followed: Iterable[tuple[str, str]], names: set[str], tags: Mapping[str, set[str]]
) -> bool:
    """Whether an event named an image the workload runs or follows (see ``follows``).

    A workload never evaluated has nothing recorded; it is new, and its pass
    is a full one anyway.
    """
    for name, tag in followed:
        if name not in names:
            continue
        asked = tags.get(name, {""})
        if not tag or "" in asked or tag in asked:
            return True
    return False
