"""Credentials and reach stay per policy: the registry client against real registries.

Given the session registry (docker-registry on 127.0.0.1), a second one that
wants HTTP Basic auth, and the hostile registry for realms and redirects:

* a name that **resolves** to loopback or to the metadata address is refused,
  for the registry itself, a Bearer realm or a blob redirect, with an error
  naming the host and the address; allowed networks and admin-named mirrors
  are reached, and the connection goes to the address that was checked;
* ``for_policy(P)`` reads with P's Secret only: another policy's view gets the
  registry's 401, even for a digest P's view has already read (the digest
  cache is keyed by credentials).

Names that do not exist (``loop.test``) are mapped by the client's resolver
seam (``RegistryClient(resolve=…)``, ``adapters/registry/reach.py``); every
server is real.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import pytest

from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.registry import (
    LOOPBACK_NETWORKS,
    PolicySecrets,
    RegistryClient,
    RetryPolicy,
)
from tests.support.hostile_registry import HostileRegistry
from tests.support.images import make_base_image, unique_repo
from tests.support.registry import LocalRegistry, start_htpasswd_registry

ONE_TRY = RetryPolicy(attempts=1, timeout=10.0)
USER, PASSWORD = "team-p", "pw-Reach-5e1f0c"


def outcome(call, **kwargs):
    """``await call(client)``: a value, or the classified error."""

    async def main():
        kwargs.setdefault("retry", ONE_TRY)
        async with RegistryClient(**kwargs) as client:
            try:
                return await call(client)
            except AdapterError as exc:
                return exc

    return asyncio.run(main())


class Resolver:
    """The resolver seam: a table of names, and what was looked up."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.table[host]


# -- the registry's own host ---------------------------------------------------------------


def test_a_registry_named_localhost_is_refused_unless_loopback_is_allowed(registry: LocalRegistry):
    repo = unique_repo("reach")
    base = make_base_image(registry, repo, "1", marker="reach")
    port = registry.host.rsplit(":", 1)[1]
    image = f"localhost:{port}/{repo}:1"

    refused = outcome(lambda c: c.resolve_digest(image))
    allowed = outcome(lambda c: c.resolve_digest(image), allow_networks=LOOPBACK_NETWORKS)
    literal = outcome(lambda c: c.resolve_digest(f"{registry.host}/{repo}:1"))

    print(f"refused: {refused}")
    assert isinstance(refused, AdapterError), refused
    assert refused.reason == "RegistryAddressRefused"
    assert "localhost resolves to 127.0.0.1, a loopback address" in str(refused) or (
        "localhost resolves to ::1, a loopback address" in str(refused)
    )
    assert allowed == base.digest
    assert isinstance(literal, AdapterError) and literal.reason == "RegistryAddressRefused"
    assert f"{registry.host.split(':')[0]} is a loopback address" in str(literal)


def test_a_name_that_resolves_to_the_metadata_address_is_never_connected_to():
    resolve = Resolver({"imds.test": ["169.254.169.254"]})
    refused = outcome(lambda c: c.resolve_digest("imds.test/latest/meta-data:1"), resolve=resolve)
    assert isinstance(refused, AdapterError) and refused.reason == "RegistryAddressRefused"
    assert "imds.test resolves to 169.254.169.254, a cloud metadata address" in str(refused)
    assert resolve.lookups == ["imds.test"]


# -- realms and redirects --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry.start()
    yield server
    server.stop()


def test_a_realm_whose_name_resolves_to_loopback_is_refused_unless_allowed(hostile):
    """The registry is an admin-named mirror; its realm is a name that resolves to loopback."""
    port = hostile.url.rsplit(":", 1)[1]
    hostile.realm_target = f"http://loop.test:{port}"
    mirror = {"hostile.test": hostile.url}
    image = "hostile.test/realm-at/x:1"

    resolve = Resolver({"loop.test": ["127.0.0.1"]})
    before = len(hostile.requests)
    refused = outcome(lambda c: c.head_manifest(image), endpoints=mirror, resolve=resolve)
    print(f"refused: {refused}")
    assert isinstance(refused, AdapterError), refused
    assert refused.reason == "InvalidRegistryResponse"
    assert "token realm http://loop.test" in str(refused)
    assert "loop.test resolves to 127.0.0.1, a loopback address" in str(refused)
    assert not any(p.startswith("/token/") for _, p in hostile.requests[before:])

    # Allowed: the token comes from the realm, over a connection to the address that
    # was checked (loop.test exists nowhere but in the seam: no second lookup happened).
    resolve = Resolver({"loop.test": ["127.0.0.1"]})
    info = outcome(lambda c: c.head_manifest(image), endpoints=mirror, resolve=resolve,
                   allow_networks=LOOPBACK_NETWORKS)  # fmt: skip
    assert not isinstance(info, AdapterError), info
    assert resolve.lookups == ["loop.test"]
    assert any(p.startswith("/token/good") for _, p in hostile.requests[before:])


def test_a_realm_at_a_loopback_address_is_refused_even_on_the_mirrors_own_address(hostile):
    """Before, a realm on the registry's own host was followed to any port of it."""
    hostile.realm_target = "http://127.0.0.1:9"
    refused = outcome(lambda c: c.head_manifest("hostile.test/realm-at/x:1"),
                      endpoints={"hostile.test": hostile.url})  # fmt: skip
    assert isinstance(refused, AdapterError) and refused.reason == "InvalidRegistryResponse"
    assert "127.0.0.1 is a loopback address" in str(refused)


def test_a_blob_redirect_to_a_name_that_resolves_to_metadata_is_refused(hostile):
    hostile.cross_target = "https://imds.test"
    resolve = Resolver({"imds.test": ["169.254.169.254"]})
    refused = outcome(
        lambda c: c.get_blob("hostile.test/redirect-cross/x:1", "sha256:" + "c" * 64),
        endpoints={"hostile.test": hostile.url}, resolve=resolve,
    )  # fmt: skip
    print(f"refused: {refused}")
    assert isinstance(refused, AdapterError) and refused.reason == "InvalidRegistryResponse"
    assert "redirect to https://imds.test/v2/ok/x/blobs/" in str(refused)
    assert "imds.test resolves to 169.254.169.254, a cloud metadata address" in str(refused)


# -- credentials per policy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def private(tmp_path_factory) -> Iterator[LocalRegistry]:
    reg = start_htpasswd_registry(tmp_path_factory.mktemp("reach-private"), USER, PASSWORD)
    yield reg
    reg.stop()


class SecretStore:
    def __init__(self, docs: dict[str, bytes]) -> None:
        self.docs = docs

    async def get_secret(self, namespace: str, name: str):
        raw = self.docs.get(name)
        return None if raw is None else {"data": {".dockerconfigjson": base64.b64encode(raw).decode()}}


def test_a_policy_reads_with_its_own_secret_and_never_another_policys(private):
    repo = unique_repo("team-p-private")
    image = make_base_image(private, repo, "1", marker="private")
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    store = SecretStore({"team-p-creds": json.dumps({"auths": {private.host: {"auth": auth}}}).encode()})
    secrets = PolicySecrets("imagepatch-system")

    async def main():
        await secrets.load(store, {"team-p": "team-p-creds"})
        async with RegistryClient(policy_credentials=secrets, retry=ONE_TRY,
                                  allow_networks=LOOPBACK_NETWORKS) as client:
            p, q = client.for_policy("team-p"), client.for_policy("team-q")
            results = []
            for view, call in [
                (p, lambda v: v.resolve_digest(f"{private.host}/{repo}:1")),
                (p, lambda v: v.get_manifest(f"{private.host}/{repo}@{image.digest}")),
                # Q names the tag, then the digest P just read (and the client cached).
                (q, lambda v: v.resolve_digest(f"{private.host}/{repo}:1")),
                (q, lambda v: v.get_manifest(f"{private.host}/{repo}@{image.digest}")),
                (q, lambda v: v.image_lineage(f"{private.host}/{repo}@{image.digest}")),
                # The client itself has no credentials either.
                (client, lambda v: v.head_manifest(f"{private.host}/{repo}@{image.digest}")),
            ]:
                try:
                    results.append(await call(view))
                except AdapterError as exc:
                    results.append(exc)
            return results, client.stats.cache_hits

    results, hits = asyncio.run(main())
    digest, manifest, *others = results
    assert digest == image.digest and manifest.digest == image.digest
    for refused in others:
        assert isinstance(refused, AdapterError), refused
        assert refused.reason == "RegistryAuthFailed", str(refused)
        assert "none are configured" in str(refused) or "no credentials" in str(refused)
    assert image.digest not in str(others[0])  # Q's tag resolution learns nothing
    print(f"cache hits: {dict(hits)}")
    assert sum(hits.values()) == 0  # nothing P read was served to Q or to the client


# -- how the checked addresses are connected to ------------------------------------------------


def test_each_checked_address_is_tried_in_turn_and_lookups_are_bounded(hostile):
    """A name's first address refuses the connection: the next checked one is used.
    A lookup that hangs ends with the connect timeout; a name that does not resolve is
    a transient connection error."""
    port = hostile.url.rsplit(":", 1)[1]

    class Slow(Resolver):
        async def __call__(self, host: str, port: int) -> list[str]:
            await asyncio.sleep(30)
            return []

    # 127.0.0.2 is loopback too, but nothing listens there on this port.
    two = Resolver({"two.test": ["127.0.0.2", "127.0.0.1"]})
    info = outcome(lambda c: c.head_manifest(f"two.test:{port}/ok/x:1"), resolve=two,
                   insecure_hosts=[f"two.test:{port}"])  # fmt: skip
    assert not isinstance(info, AdapterError), info

    import httpx

    slow = outcome(lambda c: c.head_manifest(f"slow.test:{port}/ok/x:1"), resolve=Slow({}),
                   insecure_hosts=[f"slow.test:{port}"], timeout=httpx.Timeout(5.0, connect=0.5))
    assert isinstance(slow, AdapterError) and slow.reason == "RegistryUnavailable", slow
    assert "timed out" in str(slow)
    missing = outcome(lambda c: c.head_manifest("nowhere.invalid/ok/x:1"),
                      retry=RetryPolicy(attempts=1, timeout=5.0))
    assert isinstance(missing, AdapterError) and missing.reason == "RegistryUnavailable", missing
