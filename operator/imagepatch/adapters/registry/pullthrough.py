"""Which upstream an ECR pull-through cache repository mirrors, asking ECR when needed.

Detection follows a base pulled through a cache
(``<acct>.dkr.ecr.<region>.amazonaws.com/docker-hub/library/python:3.12``)
back to its upstream tag (``docker.io/library/python:3.12``), because the
cache fetches from upstream only when someone pulls: ``core/pullthrough.py``
says why and does the mapping. This module supplies the rules. A prefix the
ECR console proposes (``docker-hub``, ``ecr-public``, ``quay``…) maps without
a call; any other prefix is looked up with ``DescribePullThroughCacheRules``
in the cache's own registry and region (``registryId``, a client per region),
and the answer is kept for ``ttl`` seconds. A registry whose rules cannot be
read (AccessDenied in another account, no credentials, ECR unavailable) is
logged once and treated as having none for ``ttl``: its images are watched
in the cache itself, as before, rather than failing detection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from imagepatch.core.images import ImageRef, is_ecr_host
from imagepatch.core.pullthrough import DEFAULT_RULES, CacheRule, cache_prefix, follow

__all__ = ["PullThroughRules"]

log = logging.getLogger(__name__)


class PullThroughRules:
    """The upstream of images in ECR pull-through caches (``upstream_of``).

    ``endpoint_url`` points boto3 at a test server; ``client_factory(region)``
    replaces the boto3 client (a Stubber in tests); ``clock`` is monotonic
    seconds. ``calls`` counts ``DescribePullThroughCacheRules`` pages.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self._endpoint_url = endpoint_url
        self._ttl = ttl
        self._clock = clock
        self._client_factory = client_factory or self._ecr_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], tuple[float, tuple[CacheRule, ...]]] = {}
        self.calls = 0

    def _ecr_client(self, region: str) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5})
        return boto3.client("ecr", region_name=region, endpoint_url=self._endpoint_url,
                            config=config)  # fmt: skip

    async def upstream_of(self, image: ImageRef) -> ImageRef | None:
        """The upstream image ``image`` mirrors, or None when it is not a cache."""
        prefix = cache_prefix(image)
        if prefix is None:
            return None
        if prefix in DEFAULT_RULES:
            return follow(image, [DEFAULT_RULES[prefix]])
        ecr = is_ecr_host(image.host)
        assert ecr is not None  # cache_prefix answers only for ECR hosts
        key = (ecr.account, ecr.region)
        cached = self._rules.get(key)
        if cached is None or self._clock() >= cached[0]:
            rules = await asyncio.to_thread(self._describe, ecr.account, ecr.region)
            cached = (self._clock() + self._ttl, rules)
            self._rules[key] = cached
        return follow(image, cached[1])

    def _describe(self, registry_id: str, region: str) -> tuple[CacheRule, ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            # boto3's default session is not safe for concurrent client creation.
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._client_factory(region)
        rules: list[CacheRule] = []
        try:
            paginator = client.get_paginator("describe_pull_through_cache_rules")
            for page in paginator.paginate(registryId=registry_id):
                self.calls += 1
                for raw in page.get("pullThroughCacheRules") or []:
                    prefix, url = raw.get("ecrRepositoryPrefix"), raw.get("upstreamRegistryUrl")
                    if isinstance(prefix, str) and isinstance(url, str):
                        upstream_prefix = raw.get("upstreamRepositoryPrefix")
                        rules.append(CacheRule(prefix, url, upstream_prefix or None))
        except (ClientError, BotoCoreError) as exc:
            code = (
                exc.response.get("Error", {}).get("Code", "Unknown")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            log.warning(
                "ECR DescribePullThroughCacheRules for registry %s in %s failed (%s): its "
                "repositories are watched as they are, not followed upstream, for %.0fs",
                registry_id, region, code, self._ttl,
            )  # fmt: skip
            return ()
        return tuple(rules)
