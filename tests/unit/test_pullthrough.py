"""ECR pull-through caches are followed back to their upstream (core/pullthrough.py).

The examples are AWS's own ("Pulling an image with a pull through cache rule
in Amazon ECR", and the ``upstreamRegistryUrl`` list of
CreatePullThroughCacheRule).
"""

from __future__ import annotations

import pytest

from imagepatch.core.images import parse_image
from imagepatch.core.pullthrough import (
    DEFAULT_RULES,
    CacheRule,
    cache_prefix,
    follow,
    upstream_host,
)

ECR = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "d" * 64


@pytest.mark.parametrize(
    ("cached", "upstream"),
    [
        # Docker Hub official images keep library/; others omit it.
        (f"{ECR}/docker-hub/library/python:3.12", "docker.io/library/python:3.12"),
        (f"{ECR}/docker-hub/bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
        (f"{ECR}/ecr-public/docker/library/alpine:3.20", "public.ecr.aws/docker/library/alpine:3.20"),
        (f"{ECR}/quay/prometheus/node-exporter:v1.8.0", "quay.io/prometheus/node-exporter:v1.8.0"),
        (f"{ECR}/kubernetes/pause:3.9", "registry.k8s.io/pause:3.9"),
        (f"{ECR}/k8s/pause:3.9", "registry.k8s.io/pause:3.9"),
        (f"{ECR}/github/org/app:1", "ghcr.io/org/app:1"),
        (f"{ECR}/ghcr/org/app:1", "ghcr.io/org/app:1"),
        (f"{ECR}/gitlab/group/project/app:1", "registry.gitlab.com/group/project/app:1"),
        # the digest rides along
        (f"{ECR}/docker-hub/library/python:3.12@{DIGEST}", f"docker.io/library/python:3.12@{DIGEST}"),
    ],
)
def test_a_default_prefix_is_followed_to_its_upstream(cached: str, upstream: str) -> None:
    assert follow(parse_image(cached), DEFAULT_RULES.values()) == parse_image(upstream)


@pytest.mark.parametrize(
    "image",
    [
        f"{ECR}/team/app:1",  # no rule for this prefix
        f"{ECR}/python:3.12",  # one path component: no prefix to strip
        "docker.io/library/python:3.12",  # not ECR
        "public.ecr.aws/docker/library/python:3.12",  # ECR Public is not a private cache
    ],
)
def test_an_image_no_rule_covers_is_not_followed(image: str) -> None:
    assert follow(parse_image(image), DEFAULT_RULES.values()) is None


def test_a_custom_prefix_maps_as_describe_pull_through_cache_rules_says() -> None:
    rules = [
        CacheRule("hub", "registry-1.docker.io"),
        CacheRule("mirrors/azure", "myregistry.azurecr.io"),
        CacheRule("mirrors", "quay.io"),
    ]
    assert follow(parse_image(f"{ECR}/hub/library/nginx:1.27"), rules) == parse_image("nginx:1.27")
    # The longest matching prefix wins.
    assert follow(parse_image(f"{ECR}/mirrors/azure/app:2"), rules) == parse_image("myregistry.azurecr.io/app:2")
    assert follow(parse_image(f"{ECR}/mirrors/org/app:2"), rules) == parse_image("quay.io/org/app:2")


def test_an_ecr_to_ecr_rule_adds_its_upstream_repository_prefix() -> None:
    upstream = "444455556666.dkr.ecr.us-east-2.amazonaws.com"
    rules = [CacheRule("central", upstream, upstream_prefix="golden"),
             CacheRule("ROOT", upstream, upstream_prefix="ROOT")]
    assert follow(parse_image(f"{ECR}/central/base/python:3.12"), rules) == parse_image(
        f"{upstream}/golden/base/python:3.12"
    )
    # ROOT matches what no other prefix does, and adds nothing.
    assert follow(parse_image(f"{ECR}/base/python:3.12"), rules) == parse_image(f"{upstream}/base/python:3.12")


def test_an_upstream_url_is_named_as_images_name_it() -> None:
    assert upstream_host("registry-1.docker.io") == "docker.io"
    assert upstream_host("https://Quay.io/") == "quay.io"
    assert upstream_host("myregistry.azurecr.io") == "myregistry.azurecr.io"


def test_an_upstream_that_is_not_a_valid_reference_is_not_followed() -> None:
    assert follow(parse_image(f"{ECR}/bad/app:1"), [CacheRule("bad", "not a host")]) is None


def test_cache_prefix_is_the_first_component_of_a_private_ecr_repository() -> None:
    assert cache_prefix(parse_image(f"{ECR}/docker-hub/library/python:3")) == "docker-hub"
    assert cache_prefix(parse_image(f"{ECR}/python:3")) is None
    assert cache_prefix(parse_image("quay.io/org/app:1")) is None
