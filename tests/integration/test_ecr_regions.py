"""ECR across regions and accounts, against moto in server mode (and a Stubber
where moto has no API: DescribePullThroughCacheRules).

An image's registry host names its account and region
(``<acct>.dkr.ecr.<region>.amazonaws.com``): its findings are read in that
region with that ``registryId``, its login token is asked of that region's
ECR for that registry, and a pull-through cache under a prefix of the user's
own is followed with the rule ECR reports for that registry. moto keeps one
backend per region, and checks ``registryId`` against the repository's, so a
read sent to the wrong region or registry finds nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from imagepatch.adapters.errors import NotFoundError
from imagepatch.adapters.findings import FindingsReader
from imagepatch.adapters.registry import Credentials, EcrCredentials, PullThroughRules
from imagepatch.core.images import parse_image
from imagepatch.core.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from imagepatch.model.policy import VulnerabilitySource
from tests.support.images import unique_repo
from tests.support.moto import DUMMY_CREDENTIALS

EAST, WEST = "us-east-1", "eu-west-1"
ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"


def run(coro):
    return asyncio.run(coro)


def push_scanned_image(aws, region: str, registry_id: str, repo: str, cve: str) -> str:
    """An image in ``registry_id``'s registry in ``region``, scanned, with one finding ``cve``."""
    ecr = aws.client("ecr", region_name=region)
    ecr.create_repository(repositoryName=repo, registryId=registry_id)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "size": 1,
                    "digest": "sha256:" + hashlib.sha256(f"{region}{repo}".encode()).hexdigest()}],
    })
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    ecr.put_image(repositoryName=repo, imageManifest=manifest, imageTag="1",
                  imageManifestMediaType=OCI_MANIFEST, imageDigest=digest)
    ecr.start_image_scan(repositoryName=repo, registryId=registry_id, imageId={"imageDigest": digest})
    result = {
        "registryId": registry_id, "repositoryName": repo, "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {
            "imageScanCompletedAt": (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).timestamp(),
            "findings": [{"name": cve, "severity": "HIGH", "attributes": [
                {"key": "package_name", "value": "openssl"},
                {"key": "package_version", "value": "3.0.11"}]}],
        },
    }
    resp = aws.http.post("/moto-api/static/ecr/scan-finding-results",
                         json={"results": [result], "region": region})
    assert resp.status_code < 300, resp.text
    return digest


def test_findings_are_read_in_the_image_registry_and_its_region(aws):
    repo = unique_repo("xregion")
    digest_a = push_scanned_image(aws, EAST, ACCOUNT_A, repo, "CVE-2024-0001")
    digest_b = push_scanned_image(aws, WEST, ACCOUNT_B, repo, "CVE-2024-0002")
    session = boto3.Session(**DUMMY_CREDENTIALS, region_name=EAST)
    # The operator runs in us-east-1; the second image lives in eu-west-1.
    reader = FindingsReader(session=session, region=EAST, endpoint_url=aws.endpoint_url,
                            max_attempts=2)

    def ids(digest: str, registry_id: str | None, region: str | None) -> list[str]:
        report = run(reader.read_async(repository=repo, digest=digest, source=VulnerabilitySource.ECR,
                                       registry_id=registry_id, region=region))
        return [f.id for f in report.findings]

    assert ids(digest_a, ACCOUNT_A, EAST) == ["CVE-2024-0001"]
    assert ids(digest_a, ACCOUNT_A, None) == ["CVE-2024-0001"]  # the reader's own region
    assert ids(digest_b, ACCOUNT_B, WEST) == ["CVE-2024-0002"]
    # The same read in the operator's region, or without the registry id, finds nothing:
    # the region and the registryId are what route it.
    with pytest.raises(NotFoundError):
        ids(digest_b, ACCOUNT_B, None)
    with pytest.raises(NotFoundError):
        ids(digest_b, None, WEST)
    # One reader per region, made once.
    assert reader.for_region(WEST) is reader.for_region(WEST)
    assert reader.for_region(EAST) is reader and reader.for_region(None) is reader


def test_ecr_tokens_are_asked_of_each_registry_region_for_that_registry(aws):
    calls: list[tuple[str, Any]] = []

    def factory(region: str):
        client = aws.client("ecr", region_name=region)
        client.meta.events.register(
            "provide-client-params.ecr.GetAuthorizationToken",
            lambda params, **_: calls.append((region, params.get("registryIds"))),
        )
        return client

    ecr = EcrCredentials(endpoint_url=aws.endpoint_url, client_factory=factory)
    host_a = f"{ACCOUNT_A}.dkr.ecr.{EAST}.amazonaws.com"
    host_b = f"{ACCOUNT_B}.dkr.ecr-fips.{WEST}.amazonaws.com"

    async def main():
        return [await ecr.get(host_a), await ecr.get(host_b), await ecr.get(host_a),
                await ecr.get(host_b)]

    a, b, a_again, b_again = run(main())

    # moto's token names the registry it was asked for.
    assert a == Credentials("AWS", f"{ACCOUNT_A}-auth-token") == a_again
    assert b == Credentials("AWS", f"{ACCOUNT_B}-auth-token") == b_again
    assert calls == [(EAST, [ACCOUNT_A]), (WEST, [ACCOUNT_B])]


CACHE_HOST = f"{ACCOUNT_B}.dkr.ecr.{WEST}.amazonaws.com"


def _stubbed_rules(aws, answers: list[dict[str, Any] | str]):
    """PullThroughRules whose per-region ECR client answers from ``answers`` (moto lacks the API)."""
    regions: list[str] = []
    clients: dict[str, Any] = {}

    def factory(region: str):
        regions.append(region)
        client = aws.client("ecr", region_name=region)
        stubber = Stubber(client)
        for answer in answers:
            if isinstance(answer, str):
                stubber.add_client_error("describe_pull_through_cache_rules", answer, http_status_code=400)
            else:
                stubber.add_response("describe_pull_through_cache_rules", answer,
                                     {"registryId": ACCOUNT_B})
        stubber.activate()
        clients[region] = stubber
        return client

    now = [0.0]
    return PullThroughRules(client_factory=factory, ttl=600, clock=lambda: now[0]), regions, now


def test_a_custom_cache_prefix_is_followed_with_the_registry_rule(aws):
    rules, regions, now = _stubbed_rules(aws, [
        {"pullThroughCacheRules": [
            {"ecrRepositoryPrefix": "hub", "upstreamRegistryUrl": "registry-1.docker.io",
             "registryId": ACCOUNT_B, "upstreamRegistry": "docker-hub"},
            {"ecrRepositoryPrefix": "central", "upstreamRegistryUrl": f"{ACCOUNT_A}.dkr.ecr.{EAST}.amazonaws.com",
             "registryId": ACCOUNT_B, "upstreamRegistry": "ecr", "upstreamRepositoryPrefix": "golden"},
        ]},
        {"pullThroughCacheRules": []},
    ])

    async def main():
        return [
            await rules.upstream_of(parse_image(f"{CACHE_HOST}/hub/library/python:3.12")),
            await rules.upstream_of(parse_image(f"{CACHE_HOST}/central/base/python:3.12")),
            await rules.upstream_of(parse_image(f"{CACHE_HOST}/team/app:1")),
            # a default prefix needs no call
            await rules.upstream_of(parse_image(f"{CACHE_HOST}/docker-hub/library/python:3.12")),
            await rules.upstream_of(parse_image("quay.io/org/app:1")),
        ]

    hub, central, team, default, not_ecr = run(main())
    assert hub == parse_image("docker.io/library/python:3.12")
    assert central == parse_image(f"{ACCOUNT_A}.dkr.ecr.{EAST}.amazonaws.com/golden/base/python:3.12")
    assert team is None and not_ecr is None
    assert default == parse_image("python:3.12")
    assert (rules.calls, regions) == (1, [WEST])  # asked once, in the cache's region
    now[0] = 601  # past the ttl: asked again; the rule was deleted meanwhile
    assert run(rules.upstream_of(parse_image(f"{CACHE_HOST}/hub/library/python:3.12"))) is None
    assert rules.calls == 2


def test_rules_that_cannot_be_read_leave_the_cache_watched_as_it_is(aws, caplog):
    rules, _, _ = _stubbed_rules(aws, ["AccessDeniedException"])

    async def main():
        return [await rules.upstream_of(parse_image(f"{CACHE_HOST}/hub/library/python:3.12"))
                for _ in range(3)]

    assert run(main()) == [None, None, None]
    assert "AccessDeniedException" in caplog.text
    # Not asked again within the ttl (the Stubber would refuse a second call).
    assert sum("DescribePullThroughCacheRules" in r.message for r in caplog.records) == 1
