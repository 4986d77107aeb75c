"""Which addresses the registry client may reach, and with whose credentials.

The address rule (``adapters/registry/reach.py``) is table-tested here with a
resolver seam; the connections themselves are tested against real registries
in ``tests/integration/test_registry_reach.py``. ``PolicySecrets`` keeps each
policy's Secret apart (``adapters/registry/credentials.py``).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json

import pytest

from imagepatch.adapters.registry import Credentials, PolicySecrets, Reach, address_problem
from imagepatch.adapters.registry.reach import AddressRefused


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("100.64.0.1", "a reserved, non-public address"),
        ("240.0.0.1", "a private address"),
        ("8.8.8.8", ""),
        ("52.94.1.1", ""),
        ("2600:1f18::1", ""),
    ],
)
def test_addresses_are_classified_public_or_by_what_they_are(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


def resolver(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


def check(reach: Reach, host: str, port: int = 443):
    try:
        return asyncio.run(reach.check(host, port))
    except AddressRefused as exc:
        return exc


def test_a_name_is_refused_when_any_address_it_resolves_to_is_not_public() -> None:
    reach = Reach.configured(resolve=resolver({
        "meta.example": ["169.254.169.254"],
        "mixed.example": ["52.94.1.1", "10.1.2.3"],
        "local.example": ["::1"],
        "public.example": ["52.94.1.1", "2600:1f18::1"],
    }))  # fmt: skip

    meta = check(reach, "meta.example")
    assert isinstance(meta, AddressRefused)
    assert str(meta).startswith("meta.example resolves to 169.254.169.254, a cloud metadata")
    mixed = check(reach, "mixed.example")
    assert isinstance(mixed, AddressRefused) and mixed.address == "10.1.2.3"
    assert isinstance(check(reach, "local.example"), AddressRefused)
    assert check(reach, "public.example") == ["52.94.1.1", "2600:1f18::1"]


def test_an_address_literal_is_judged_without_resolving() -> None:
    reach = Reach.configured(resolve=resolver({}))  # any lookup would be a KeyError
    refused = check(reach, "127.0.0.1", 5000)
    assert isinstance(refused, AddressRefused)
    assert str(refused).startswith("127.0.0.1 is a loopback address")
    assert check(reach, "[2600:1f18::1]") == ["2600:1f18::1"]
    assert reach.literal_refusal("169.254.169.254", 80).startswith("a cloud metadata address")
    assert reach.literal_refusal("[::ffff:169.254.169.254]", 443)
    assert reach.literal_refusal("registry.example", 443) == ""  # a name: checked on connect


def test_allowed_networks_and_admin_named_hosts_are_reached_but_never_metadata() -> None:
    table = {"localhost": ["127.0.0.1", "::1"], "mirror.internal": ["10.0.0.7"],
             "imds.internal": ["169.254.169.254"], "other.internal": ["10.0.0.8"]}
    reach = Reach.configured(
        allow_networks=["127.0.0.0/8", "::1/128"],
        mirrors=["http://mirror.internal:5000", "https://imds.internal"],
        insecure_hosts=["other.internal:8080"],
        resolve=resolver(table),
    )
    assert check(reach, "localhost", 5000) == ["127.0.0.1", "::1"]
    assert check(reach, "mirror.internal", 5000) == ["10.0.0.7"]
    # The same host on another port is not what the admin named.
    assert isinstance(check(reach, "mirror.internal", 5001), AddressRefused)
    assert check(reach, "other.internal", 8080) == ["10.0.0.8"]
    assert isinstance(check(reach, "imds.internal", 443), AddressRefused)
    # An allowed network names the metadata address explicitly: then it is allowed.
    assert Reach.configured(allow_networks=["169.254.169.254/32"]).refusal(
        "x", 80, "169.254.169.254"
    ) == ""


def test_a_name_that_resolves_to_nothing_is_an_os_error() -> None:
    reach = Reach.configured(resolve=resolver({"empty.example": []}))
    with pytest.raises(OSError, match="resolves to no address"):
        asyncio.run(reach.check("empty.example", 443))
    assert reach.refusal("x", 80, "not-an-address").startswith("which is not")


class Secrets:
    def __init__(self, docs: dict[str, dict | None]) -> None:
        self.docs = docs
        self.reads: list[str] = []

    async def get_secret(self, namespace: str, name: str):
        self.reads.append(name)
        doc = self.docs.get(name)
        if doc is None:
            return None
        return {"data": {".dockerconfigjson": base64.b64encode(json.dumps(doc).encode()).decode()}}


def dockerconfig(host: str, user: str, password: str) -> dict:
    return {"auths": {host: {"username": user, "password": password}}}


def test_each_policy_gets_only_its_own_secret_never_another_policys() -> None:
    secrets = PolicySecrets("imagepatch-system")
    kube = Secrets({
        "team-a-creds": dockerconfig("registry.example", "a", "pw-a"),
        "team-b-creds": dockerconfig("other.example", "b", "pw-b"),
        "broken": None,
    })  # fmt: skip

    async def main():
        await secrets.load(kube, {"team-a": "team-a-creds", "team-a2": "team-a-creds",
                                  "team-b": "team-b-creds", "team-c": "broken"})
        a, b, c, none = (secrets.for_policy(p) for p in ("team-a", "team-b", "team-c", "nobody"))
        return (
            await a.get("registry.example"), await b.get("registry.example"),
            await b.get("other.example"), await c.get("registry.example"),
            await none.get("registry.example"),
        )  # fmt: skip

    a, b_on_a_host, b, c, none = asyncio.run(main())
    assert a == Credentials("a", "pw-a")
    assert b_on_a_host is None  # team-b names no credentials for team-a's registry
    assert b == Credentials("b", "pw-b")
    assert c is None and none is None
    assert sorted(kube.reads) == ["broken", "team-a-creds", "team-b-creds"]  # each Secret once
    assert secrets.policies == {"team-a", "team-a2", "team-b"}
    assert "pw-" not in repr(secrets)


def test_a_policys_credentials_follow_its_secret_across_reloads() -> None:
    secrets = PolicySecrets("imagepatch-system")
    provider = secrets.for_policy("team-a")

    async def main():
        await secrets.load(Secrets({"s": dockerconfig("r.example", "a", "old")}), {"team-a": "s"})
        first = await provider.get("r.example")
        await secrets.load(Secrets({"s": dockerconfig("r.example", "a", "new")}), {"team-a": "s"})
        second = await provider.get("r.example")
        await secrets.load(Secrets({}), {})  # the policy no longer names a Secret
        return first, second, await provider.get("r.example")

    first, second, gone = asyncio.run(main())
    assert first is not None and first.password == "old"
    assert second is not None and second.password == "new"
    assert gone is None
    assert first.fingerprint() != second.fingerprint()
    assert first.fingerprint() == Credentials("a", "old").fingerprint()
    assert "old" not in first.fingerprint()


def test_a_policys_view_has_its_own_tokens_and_shares_connections_and_cache() -> None:
    from imagepatch.adapters.registry import RegistryClient

    secrets = PolicySecrets("imagepatch-system")

    async def main():
        client = RegistryClient(policy_credentials=secrets)
        p, q = client.for_policy("p"), client.for_policy("q")
        facts = (
            p is client.for_policy("p"), p is not q, p.policy, q.policy, client.policy,
            p._tokens is not q._tokens and p._tokens is not client._tokens,  # noqa: SLF001
            p._cache is client._cache and p._http is client._http,  # noqa: SLF001
            p.for_policy("x") is p,  # a view has no views of its own
        )  # fmt: skip
        await p.aclose()  # a view never closes the shared connections
        still_open = not client._http.is_closed  # noqa: SLF001
        client.retain_policies(["q"])
        kept = client.for_policy("q") is q and client.for_policy("p") is not p
        await client.aclose()
        single = RegistryClient()
        alone = single.for_policy("anything") is single
        await single.aclose()
        return facts, still_open, kept, alone, client._http.is_closed  # noqa: SLF001

    facts, still_open, kept, alone, closed = asyncio.run(main())
    assert facts == (True, True, "p", "q", None, True, True, True)
    assert still_open and kept and alone and closed


def test_credential_scopes_name_who_reads_a_host() -> None:
    from imagepatch.adapters.registry import RegistryClient, StaticCredentials

    secrets = PolicySecrets("imagepatch-system")
    kube = Secrets({"s": dockerconfig("r.example", "a", "pw")})
    ecr_host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

    async def main():
        await secrets.load(kube, {"p": "s"})
        client = RegistryClient(policy_credentials=secrets, ecr=StaticCredentials({}))
        p, q = client.for_policy("p"), client.for_policy("q")
        scopes = (
            await p.credential_scope("r.example"), await q.credential_scope("r.example"),
            await p.credential_scope("other.example"), await p.credential_scope(ecr_host),
            await q.credential_scope(ecr_host),
        )  # fmt: skip
        await client.aclose()
        return scopes

    p_host, q_host, p_other, p_ecr, q_ecr = asyncio.run(main())
    assert p_host == Credentials("a", "pw").fingerprint()
    assert q_host == "" and p_other == ""
    assert p_ecr == q_ecr == "ecr"  # ECR is the operator's own identity, for every policy


def test_the_allowed_networks_come_from_the_command_line() -> None:
    from imagepatch.cli import build_parser, options_from_args

    args = build_parser().parse_args(
        ["run", "--registry-allow-network", "10.0.0.0/16", "--registry-allow-network", "::1"]
    )
    assert options_from_args(args).registry_allow_networks == ("10.0.0.0/16", "::1/128")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--registry-allow-network", "10.0.0.0/33"])
