"""Where the registry client may connect: every address resolved, checked, and pinned.

Image references, Bearer realms and redirect targets are written by people the
operator does not trust (a tenant's workload, a registry someone else runs).
A name such as ``evil.example`` can resolve to 169.254.169.254 (the cloud
metadata service), to loopback (the operator's own pod: its metrics and probe
ports) or to any address in the cluster's private network, so checking the
literal host is not enough.

``Reach`` is the rule: an address is refused when it is not publicly
routable (loopback, link-local with the metadata addresses, private, shared,
unspecified, multicast, reserved: ``ipaddress``'s ``is_global``), unless it is
in a network the admin allowed (``--registry-allow-network``), or the name and
port are ones the admin named (a ``--registry-endpoint`` mirror or an
``--insecure-registry`` host). The metadata addresses are refused even then,
unless an allowed network names them.

``guarded_transport`` enforces it where the connection is made, so there is
no gap between check and use (DNS rebinding): httpcore's network backend is
wrapped, and ``connect_tcp`` resolves the name once (``getaddrinfo``),
refuses the connection if **any** address is refused, and then connects to
one of the addresses it checked, never to the name. TLS still runs with the
name (httpcore passes the origin's host as SNI and for certificate checks),
and the ``Host`` header is the URL's, so pinning changes nothing a registry
sees. Every new connection is checked; a pooled one is reused only for the
origin it was opened for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

__all__ = ["AddressRefused", "Reach", "address_problem", "guarded_transport", "system_resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Cloud instance metadata services (AWS IMDS over IPv4 and IPv6, and the same
# address on GCP and Azure): refused even for admin-named hosts.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


class AddressRefused(Exception):  # noqa: N818 - a refusal, not a failure of ours
    """A connection the reach rule refuses; the message names the host and the address."""

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host = host
        self.address = address
        self.why = why
        shown = f"{host} is" if host == address else f"{host} resolves to {address},"
        super().__init__(f"{shown} {why}")


def _normalise(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_problem(address: IPAddress) -> str:
    """What kind of non-public address this is ("" for a public one).

    An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is judged as the
    IPv4 address it maps.
    """
    address = _normalise(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved, non-public address"
    return ""


async def system_resolve(host: str, port: int) -> Sequence[str]:
    """The addresses ``host`` resolves to now (the event loop's ``getaddrinfo``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _split(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


@dataclass(frozen=True)
class Reach:
    """Which addresses the registry client may connect to.

    * ``allowed_networks``: networks allowed although not public (an admin's
      ``--registry-allow-network``; tests allow loopback);
    * ``trusted``: ``(host, port)`` pairs an admin named (mirrors and
      insecure registries): any address but metadata;
    * ``resolve``: the resolver (``system_resolve``); a seam for tests of the
      rule with names that do not exist.
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    trusted: frozenset[tuple[str, int]] = frozenset()
    resolve: Resolver = field(default=system_resolve, compare=False)

    @classmethod
    def configured(
        cls,
        *,
        allow_networks: Iterable[str] = (),
        mirrors: Iterable[str] = (),
        insecure_hosts: Iterable[str] = (),
        resolve: Resolver | None = None,
    ) -> Reach:
        """From the operator's options: CIDRs, mirror URLs and insecure ``host[:port]``."""
        networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allow_networks)
        trusted: set[tuple[str, int]] = set()
        for url in mirrors:
            parsed = httpx.URL(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            trusted.add((_split(parsed.host), port))
        for host in insecure_hosts:
            parsed = httpx.URL(f"http://{host.strip()}")
            trusted.add((_split(parsed.host), parsed.port or 80))
        return cls(networks, frozenset(trusted), resolve or system_resolve)

    def refusal(self, host: str, port: int, address: str) -> str:
        """Why connecting to ``address`` (which ``host:port`` resolved to) is refused, or ""."""
        try:
            ip = _normalise(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return "which is not an IP address"
        if any(ip in network for network in self.allowed_networks):
            return ""
        problem = address_problem(ip)
        if not problem:
            return ""
        if ip not in METADATA_ADDRESSES and (_split(host), port) in self.trusted:
            return ""
        return (
            f"{problem}, which the operator does not reach (only public addresses, unless "
            "--registry-allow-network allows it)"
        )

    def literal_refusal(self, host: str, port: int) -> str:
        """The rule for a host that is an IP literal, before connecting ("" for a name)."""
        name = _split(host)
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return ""
        return self.refusal(name, port, name)

    async def check(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host:port``, all allowed; else ``AddressRefused``."""
        name = _split(host)
        try:
            ipaddress.ip_address(name)
            addresses: Sequence[str] = [name]
        except ValueError:
            addresses = await self.resolve(name, port)
        if not addresses:
            raise OSError(f"{name} resolves to no address")
        for address in addresses:
            why = self.refusal(name, port, address)
            if why:
                raise AddressRefused(host, address, why)
        return list(addresses)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses ``Reach`` checked."""

    def __init__(self, reach: Reach, inner: httpcore.AsyncNetworkBackend) -> None:
        self._reach = reach
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._reach.check(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:  # socket.gaierror included: the name does not resolve
            raise httpcore.ConnectError(f"{host}: {exc}") from None
        last: Exception | None = None
        for address in addresses:
            # The checked address, never the name: a second lookup could answer otherwise.
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # addresses is never empty
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the registry client never connects to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose backend is ``_GuardedBackend``."""

    def __init__(self, reach: Reach, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx builds its pool without a way to pass a network backend: the
        # same pool, built again with one (httpx.AsyncHTTPTransport.__init__).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(reach, httpcore.AnyIOBackend()),
        )


def guarded_transport(
    reach: Reach, limits: httpx.Limits | None = None
) -> httpx.AsyncBaseTransport:
    """An httpx transport that connects only where ``reach`` allows (see the module doc)."""
    return _GuardedTransport(reach, limits or httpx.Limits(max_connections=100,
                                                           max_keepalive_connections=20))
