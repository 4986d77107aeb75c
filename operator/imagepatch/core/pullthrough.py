"""ECR pull-through caches: which upstream image a cache repository mirrors, no I/O.

A pull-through cache rule maps an ECR repository prefix to an upstream
registry: with the rule ``docker-hub`` → ``registry-1.docker.io``, the image
``<acct>.dkr.ecr.<region>.amazonaws.com/docker-hub/library/python:3.12`` is
a cached copy of ``docker.io/library/python:3.12`` (the ECR user guide,
"Pulling an image with a pull through cache rule"; Docker Hub official images
keep their ``library/``). The cache fetches a tag from upstream only when
someone pulls it, so a base followed through the cache would look current
long after upstream moved. Detection therefore watches the **upstream** tag
(``follow``); the digests are the same on both sides, as the cache stores
the upstream manifests unchanged.

``DEFAULT_RULES`` are the prefixes the ECR console proposes for each
upstream (``ecr-public``, ``kubernetes``, ``quay``, ``docker-hub``,
``github``, ``gitlab``) and the upstream names of the CreatePullThroughCacheRule
API (``k8s``, ``github-container-registry``, ``gitlab-container-registry``),
plus ``ghcr``. For any other prefix the adapter asks ECR
(``DescribePullThroughCacheRules``) and passes the rules here as ``CacheRule``
values. Azure Container Registry has no default: its URL is the user's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from imagepatch.core.images import (
    DOCKER_HUB,
    ImageRef,
    InvalidImageReference,
    is_ecr_host,
    parse_image,
)

__all__ = ["DEFAULT_RULES", "CacheRule", "cache_prefix", "follow", "upstream_host"]

# The upstream repository prefix that means "no prefix" (ECR-to-ECR rules).
_ROOT = "ROOT"
_DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io"})


@dataclass(frozen=True)
class CacheRule:
    """One pull-through cache rule, as ``DescribePullThroughCacheRules`` returns it.

    ``prefix`` is ``ecrRepositoryPrefix`` (``ROOT`` matches every repository),
    ``upstream_url`` is ``upstreamRegistryUrl``, ``upstream_prefix`` is
    ``upstreamRepositoryPrefix`` (ECR-to-ECR rules; ``ROOT`` or None: none).
    """

    prefix: str
    upstream_url: str
    upstream_prefix: str | None = None


DEFAULT_RULES: Mapping[str, CacheRule] = {
    prefix: CacheRule(prefix, url)
    for prefix, url in (
        ("docker-hub", "registry-1.docker.io"),
        ("ecr-public", "public.ecr.aws"),
        ("quay", "quay.io"),
        ("kubernetes", "registry.k8s.io"),
        ("k8s", "registry.k8s.io"),
        ("github", "ghcr.io"),
        ("ghcr", "ghcr.io"),
        ("github-container-registry", "ghcr.io"),
        ("gitlab", "registry.gitlab.com"),
        ("gitlab-container-registry", "registry.gitlab.com"),
    )
}


def upstream_host(url: str) -> str:
    """The registry host images name for an ``upstreamRegistryUrl``.

    ``registry-1.docker.io`` (where Docker Hub's API lives) is ``docker.io``,
    as image references spell it; a scheme or path is dropped.
    """
    host = url.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_HOSTS else host


def cache_prefix(image: ImageRef) -> str | None:
    """The first path component of an image in a private ECR registry, else None.

    Only such an image can be a pull-through cache; one with a single path
    component has nothing after a prefix to be the upstream repository.
    """
    if is_ecr_host(image.host) is None or "/" not in image.repository:
        return None
    return image.repository.split("/", 1)[0]


def _matching(repository: str, rules: Iterable[CacheRule]) -> CacheRule | None:
    """The rule whose prefix is the longest one ``repository`` starts with (ROOT last)."""
    best: CacheRule | None = None
    for rule in rules:
        prefix = rule.prefix.strip("/")
        if prefix == _ROOT:
            if best is None:
                best = rule
            continue
        if repository.startswith(prefix + "/") and (
            best is None or best.prefix == _ROOT or len(prefix) > len(best.prefix.strip("/"))
        ):
            best = rule
    return best


def follow(image: ImageRef, rules: Iterable[CacheRule]) -> ImageRef | None:
    """The upstream image that ``image`` (in a pull-through cache) mirrors, or None.

    Keeps the tag and digest. None when ``image`` is not in a private ECR
    registry, no rule matches, or the upstream name would not be a valid
    reference.
    """
    if is_ecr_host(image.host) is None:
        return None
    rule = _matching(image.repository, rules)
    if rule is None:
        return None
    prefix = rule.prefix.strip("/")
    rest = image.repository if prefix == _ROOT else image.repository[len(prefix) + 1 :]
    upstream_prefix = (rule.upstream_prefix or "").strip("/")
    if upstream_prefix and upstream_prefix != _ROOT:
        rest = f"{upstream_prefix}/{rest}"
    reference = f"{upstream_host(rule.upstream_url)}/{rest}"
    if image.tag:
        reference += f":{image.tag}"
    if image.digest:
        reference += f"@{image.digest}"
    try:
        return parse_image(reference)
    except InvalidImageReference:
        return None
