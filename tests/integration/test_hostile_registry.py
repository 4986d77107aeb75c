"""The registry client against a hostile registry (tests/support/hostile_registry.py).

Given a registry that answers what no registry should (the malformed files of
``tests/data/`` and generated behaviours: huge and endless bodies, a gzip
bomb, a slow drip, redirect loops, realms and redirects at the metadata
address), when the client reads from it, then every outcome is either a value
or a classified ``AdapterError`` with the reason the table gives, within the
caps, and nothing is fetched from where it must not be.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.registry import (
    MAX_MANIFEST_BYTES,
    Lineage,
    RegistryClient,
    RetryPolicy,
)
from tests.support.hostile_registry import (
    BASE_DIGEST,
    BASE_NAME,
    DATA,
    HostileRegistry,
    table,
)

HOST = "hostile.test"
ONE_TRY = RetryPolicy(attempts=1, timeout=10.0)


@pytest.fixture(scope="module")
def hostile():
    registry = HostileRegistry.start()
    yield registry
    registry.stop()


def outcome(hostile: HostileRegistry, call, *, retry: RetryPolicy = ONE_TRY):
    """``await call(client)`` against the hostile registry: a value, or the error's reason."""

    async def main():
        async with RegistryClient(endpoints={HOST: hostile.url}, retry=retry) as client:
            try:
                return await call(client)
            except AdapterError as exc:
                return exc

    return asyncio.run(main())


def _cases(folder: str):
    return [pytest.param(name, expected, id=name) for name, expected in table(folder).items()]


def _expected(expected: dict):
    if "lineage" in expected:
        return Lineage(*expected["lineage"])
    return expected["error"]


def _check(result, expected):
    if isinstance(expected, str):
        assert isinstance(result, AdapterError), f"expected {expected}, got {result!r}"
        assert result.reason == expected, str(result)
    else:
        assert result == expected


@pytest.mark.parametrize(("name", "expected"), _cases("manifests"))
def test_malformed_manifests_give_the_table_outcome(hostile, name, expected):
    stem = name.split(".")[0]
    result = outcome(hostile, lambda c: c.image_lineage(f"{HOST}/manifests/{stem}:latest"))
    _check(result, _expected(expected))


@pytest.mark.parametrize(("name", "expected"), _cases("indexes"))
def test_malformed_indexes_give_the_table_outcome(hostile, name, expected):
    stem = name.split(".")[0]
    result = outcome(hostile, lambda c: c.image_lineage(f"{HOST}/indexes/{stem}:latest"))
    _check(result, _expected(expected))


def test_base_annotations_on_an_index_entry_are_read_without_fetching_the_platform_manifest(hostile):
    before = len(hostile.requests)
    result = outcome(hostile, lambda c: c.image_lineage(f"{HOST}/indexes/entry-annotations:latest"))
    assert result.source == "index-annotations"
    fetched = [p for _, p in hostile.requests[before:] if "sha256:2222" in p]
    assert fetched == []


@pytest.mark.parametrize(("name", "expected"), _cases("configs"))
def test_malformed_configs_give_the_table_outcome(hostile, name, expected):
    stem = name.split(".")[0]
    result = outcome(hostile, lambda c: c.image_lineage(f"{HOST}/configs/{stem}:latest"))
    _check(result, _expected(expected))


@pytest.mark.parametrize(("name", "expected"), [pytest.param(k, v, id=k) for k, v in table("tokens").items()])
def test_token_answers_give_the_table_outcome(hostile, name, expected):
    stem = name.split(".")[0]
    result = outcome(hostile, lambda c: c.head_manifest(f"{HOST}/tokens/{stem}:latest"))
    if expected == "ok":
        assert not isinstance(result, AdapterError), str(result)
        assert result.digest.startswith("sha256:")
    else:
        _check(result, expected)


def test_every_data_file_has_an_expected_outcome():
    for folder in ("manifests", "indexes", "configs", "tokens"):
        files = {p.name for p in (DATA / folder).iterdir() if p.name != "expected.yaml"}
        assert files == set(table(folder)), folder


def test_a_healthy_image_on_the_same_server_reads_fine(hostile):
    result = outcome(hostile, lambda c: c.image_lineage(f"{HOST}/ok/x:latest"))
    assert result == Lineage(BASE_NAME, BASE_DIGEST, "manifest-annotations")


@pytest.mark.parametrize(
    ("repository", "call", "reason", "problem"),
    [
        pytest.param("huge", "manifest", "InvalidRegistryResponse", "exceeds the 4194304-byte limit", id="endless-manifest"),
        pytest.param("gzip-bomb", "manifest", "InvalidRegistryResponse", "exceeds the 4194304-byte limit", id="gzip-bomb"),
        pytest.param("bad-digest-header", "manifest", "InvalidRegistryResponse", "is not an algorithm:hex digest", id="digest-header-not-a-digest"),
        pytest.param("bad-digest-header", "head", "InvalidRegistryResponse", "is not an algorithm:hex digest", id="head-digest-header-not-a-digest"),
        pytest.param("wrong-digest-header", "manifest", "RegistryUnavailable", "content hashes to", id="digest-header-of-other-bytes"),
        pytest.param("redirect-manifest", "manifest", "InvalidRegistryResponse", "redirects are followed only for blob downloads", id="manifest-redirect"),
        pytest.param("redirect-loop", "blob", "InvalidRegistryResponse", "more than 5 redirects", id="blob-redirect-loop"),
        pytest.param("redirect-metadata", "blob", "InvalidRegistryResponse", "scheme 'http' is not https", id="blob-redirect-to-metadata"),
        pytest.param("redirect-http", "blob", "InvalidRegistryResponse", "scheme 'http' is not https", id="blob-redirect-to-plain-http"),
        pytest.param("realm-metadata", "head", "InvalidRegistryResponse", "is a cloud metadata address", id="realm-at-metadata-v4"),
        pytest.param("realm-metadata6", "head", "InvalidRegistryResponse", "is a cloud metadata address", id="realm-at-metadata-v6"),
        pytest.param("huge-token", "head", "InvalidRegistryResponse", "exceeds the 65536-byte limit", id="huge-token-answer"),
        pytest.param("huge-error", "manifest", "RegistryRejected", "HTTP 400", id="huge-error-body-is-cut"),
        pytest.param("bad-gzip", "manifest", "InvalidRegistryResponse", "not valid gzip", id="gzip-that-is-not"),
        pytest.param("brotli", "manifest", "InvalidRegistryResponse", "unsupported Content-Encoding 'br'", id="unknown-encoding"),
        pytest.param("realm-not-a-url", "head", "RegistryRejected", "realm is not a URL", id="realm-not-a-url"),
        # httpx refuses a Location that does not parse before we see it: a transport error.
        pytest.param("redirect-invalid", "blob", "RegistryUnavailable", "Invalid URL in location header", id="redirect-not-a-url"),
    ],
)
def test_hostile_behaviours_end_in_a_classified_error(hostile, repository, call, reason, problem):
    image = f"{HOST}/{repository}/x:latest"
    calls = {
        "manifest": lambda c: c.get_manifest(image),
        "head": lambda c: c.head_manifest(image),
        "blob": lambda c: c.get_blob(image, "sha256:" + "b" * 64),
    }
    before = len(hostile.requests)
    started = time.monotonic()
    result = outcome(hostile, calls[call])
    print(f"{repository}/{call}: {type(result).__name__} in {time.monotonic() - started:.2f}s")
    assert isinstance(result, AdapterError), repr(result)
    assert result.reason == reason, str(result)
    assert problem in str(result)
    # Nothing was asked of the metadata service (it is not this server, so only
    # this server's log can show what the client did: it went nowhere else).
    assert all("169.254" not in p for _, p in hostile.requests[before:])


def test_redirect_to_metadata_is_refused_even_over_https(hostile):
    """A configured mirror's redirect to https://169.254.169.254 is refused by address."""

    async def main():
        async with RegistryClient(endpoints={HOST: hostile.url}, retry=ONE_TRY) as client:
            import httpx

            return client._outbound_problem(  # noqa: SLF001 - the rule itself, table-tested
                client._image(f"{HOST}/ok/x:1"), httpx.URL("https://169.254.169.254/x"), plain_http=False
            ), client._outbound_problem(  # noqa: SLF001
                client._image("ghcr.io/o/x:1"), httpx.URL("https://[::ffff:169.254.169.254]/x"), plain_http=False
            ), client._outbound_problem(  # noqa: SLF001
                client._image("ghcr.io/o/x:1"), httpx.URL("https://s3.amazonaws.com/x"), plain_http=False
            ), client._outbound_problem(  # noqa: SLF001
                client._image(f"{HOST}/ok/x:1"), httpx.URL(hostile.url + "/v2/"), plain_http=False
            )

    metadata, mapped, s3, mirror = asyncio.run(main())
    assert "metadata" in metadata and "metadata" in mapped
    assert s3 == "" and mirror == ""


def test_a_slow_drip_ends_with_the_operation_budget(hostile):
    budget = RetryPolicy(attempts=1, timeout=1.5)
    started = time.monotonic()
    result = outcome(hostile, lambda c: c.get_manifest(f"{HOST}/drip/x:latest"), retry=budget)
    took = time.monotonic() - started
    print(f"slow drip gave {type(result).__name__} after {took:.2f}s (budget 1.5s)")
    assert isinstance(result, AdapterError)
    assert result.reason in {"RegistryTimeout", "RegistryUnavailable"}
    # A behaviour guard, not a timing assertion: the body would take ~60 s to drip.
    assert took < 30


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from imagepatch.adapters.registry import RegistryClient, RetryPolicy
    from imagepatch.adapters.errors import AdapterError

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    async def main():
        async with RegistryClient(endpoints={"hostile.test": sys.argv[1]},
                                  retry=RetryPolicy(attempts=1, timeout=120)) as client:
            # Warm up: imports, the connection pool, and the HTTP stack's buffers
            # on a large chunked stream (an error body, of which 64 KiB is kept).
            await client.get_manifest("hostile.test/ok/x:latest")
            try:
                await client.get_manifest("hostile.test/huge-error/x:latest")
            except AdapterError:
                pass
            before = hwm()
            try:
                await client.get_manifest("hostile.test/" + sys.argv[2] + "/x:latest")
            except AdapterError as exc:
                print(exc.reason, file=sys.stderr)
            print(before, hwm())

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("repository", ["huge", "gzip-bomb"])
def test_a_1gib_streaming_body_or_a_gzip_bomb_raises_rss_by_the_cap_only(hostile, repository):
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, hostile.url, repository],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("InvalidRegistryResponse"), proc.stderr
    before, after = map(int, proc.stdout.split())
    grew = after - before
    print(f"{repository}: peak RSS grew by {grew / 2**20:.2f} MiB reading a 1 GiB-class body "
          f"(cap {MAX_MANIFEST_BYTES / 2**20:.0f} MiB)")
    # The cap, plus the network read that crosses it (it must arrive before it
    # can be refused) and the HTTP stack's buffers for it: an eighth of the cap
    # of slack (measured: 0.2-0.3 MiB) against a body 256 times the cap.
    assert grew <= MAX_MANIFEST_BYTES + MAX_MANIFEST_BYTES // 8



def test_a_deflate_body_is_decoded_within_the_cap(hostile):
    result = outcome(hostile, lambda c: c.get_manifest(f"{HOST}/deflate/x:latest"))
    assert not isinstance(result, AdapterError), str(result)
    assert b"org.opencontainers.image.base.name" in result.body


def test_a_blob_redirect_to_another_mirror_is_followed_without_the_token(hostile):
    """Given a registry that wants a token and redirects blobs to another configured
    mirror, the blob is read there, and the token never leaves its origin."""
    other = HostileRegistry.start()
    try:
        hostile.cross_target = other.url

        async def main():
            endpoints = {HOST: hostile.url, "other.test": other.url}
            async with RegistryClient(endpoints=endpoints, retry=ONE_TRY) as client:
                return await client.get_blob(f"{HOST}/redirect-cross/x:1", "sha256:" + hashlib.sha256(b"{}").hexdigest())

        assert asyncio.run(main()) == b"{}"
        sent_here = [auth for path, auth in hostile.authorizations if "redirect-cross" in path and "/blobs/" in path]
        assert "Bearer hostile-ok-token" in sent_here
        assert [auth for _, auth in other.authorizations] == [None]
    finally:
        other.stop()
