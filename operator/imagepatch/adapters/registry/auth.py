"""How the registry client authenticates: challenges, tokens, credentials.

``_Auth`` is the part of ``RegistryClient`` that answers a registry's
``WWW-Authenticate``. ``Bearer`` (anonymous, or with credentials sent as
Basic to the realm) gets a token, cached per (host, scope) until
``expires_in``; ``Basic`` gets the credentials directly. A host's challenge is
remembered, so later requests authenticate up front instead of paying a 401
each time. Credentials come from a ``CredentialProvider``
(``credentials.py``); ECR hosts ask the ECR provider first.

A realm must be https unless the registry itself is spoken to over plain
HTTP (a configured mirror or insecure host), and never a loopback, link-local,
metadata or other non-public address, by its literal host
(``_outbound_problem`` in ``transport.py``) or by what its name resolves to
(``reach.py``, when the connection is made); a password is never sent in clear
text to a non-local realm. The auth server's body is never quoted, since it
could echo what was sent.

Credentials are those of one scope: a ``RegistryClient`` made ``for_policy``
asks only that policy's provider, and keeps its own tokens and challenges,
so a token obtained with one team's login is never sent for another's
workload. ``credential_scope(host)`` names the credentials a host gets
("" anonymous, "ecr" the operator's own AWS identity, else a fingerprint);
caches of what was read are keyed by it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from imagepatch.adapters.errors import (
    INVALID_REGISTRY_RESPONSE,
    REGISTRY_AUTH_FAILED,
    REGISTRY_RATE_LIMITED,
    REGISTRY_REJECTED,
    REGISTRY_TIMEOUT,
    REGISTRY_UNAVAILABLE,
    ConfigurationError,
    TransientError,
)
from imagepatch.adapters.registry.credentials import CredentialProvider, Credentials
from imagepatch.adapters.registry.reach import AddressRefused
from imagepatch.adapters.registry.transport import (
    MAX_TOKEN_BYTES,
    _Budget,
    _is_loopback,
    _parse_retry_after,
    _read_limited,
    _safe_url,
    _Transport,
)
from imagepatch.core.images import ImageRef, is_ecr_host

DEFAULT_TOKEN_LIFETIME = 60.0  # the token spec's default for a missing expires_in
_AUTH_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "bearer" or "basic"
    params: Mapping[str, str]


def _parse_challenge(header: str | None) -> _Challenge | None:
    """The first Bearer or Basic challenge in a WWW-Authenticate header."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in {"bearer", "basic"}:
        return None
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _AUTH_PARAM_RE.finditer(rest)
    }
    return _Challenge(scheme, params)


@dataclass
class _Token:
    value: str
    expires_at: float  # on the client's monotonic clock


class _Auth(_Transport):
    """Authentication for ``RegistryClient``: remembered challenges, cached tokens."""

    def _init_auth(
        self, credentials: CredentialProvider | None, ecr: CredentialProvider | None
    ) -> None:
        self._credentials = credentials
        self._ecr = ecr
        self._challenges: dict[str, _Challenge] = {}  # api host -> last challenge seen
        self._tokens: dict[tuple[str, str], _Token] = {}  # (api host, scope) -> bearer token
        self._token_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Hosts a provider had credentials for: a 401 then means "refused",
        # not "anonymous access is not enough".
        self._hosts_with_credentials: set[str] = set()

    async def _answer_challenge(
        self,
        method: str,
        image: ImageRef,
        resp: httpx.Response,
        scope: str,
        sent: str | None,
        budget: _Budget,
    ) -> tuple[bool, str | None]:
        """After a 401: whether to send again, and with what ``Authorization``.

        A response without a usable challenge is final. When ``sent`` was
        refused (an expired token, a revoked ECR password), the cached token
        and the provider's credentials are dropped before answering.
        """
        challenge = _parse_challenge(resp.headers.get("WWW-Authenticate"))
        if challenge is None:
            return False, sent
        if sent:
            # What we sent was refused: maybe an expired token or a
            # revoked ECR password. Drop both and answer the challenge.
            self._tokens.pop((image.api_host, scope), None)
            await self._invalidate(image.host)
        self._challenges[image.api_host] = challenge
        authorization = await self._authorization_for(image, challenge, scope, budget)
        if authorization is None and challenge.scheme == "basic":
            raise ConfigurationError(
                f"{method} {image.name}: {image.host} requires credentials and none are "
                f"configured for it",
                reason=REGISTRY_AUTH_FAILED,
            )
        return True, authorization

    async def _credentials_for(self, host: str) -> Credentials | None:
        provider = self._ecr if (self._ecr is not None and is_ecr_host(host)) else None
        creds = await provider.get(host) if provider is not None else None
        if creds is None and self._credentials is not None:
            creds = await self._credentials.get(host)
        if creds is not None:
            self._hosts_with_credentials.add(host)
        return creds

    async def credential_scope(self, host: str) -> str:
        """Which credentials ``host`` is read with in this scope, as a cache-key part.

        "" for anonymous, "ecr" for ECR hosts (the operator's own AWS
        identity, the same for every policy), else a fingerprint of the
        credentials. What one scope read is served only to the same scope.
        """
        if self._ecr is not None and is_ecr_host(host):
            return "ecr"
        if self._credentials is None:
            return ""
        creds = await self._credentials.get(host)
        return "" if creds is None else creds.fingerprint()

    async def _invalidate(self, host: str) -> None:
        for provider in (self._ecr, self._credentials):
            invalidate = getattr(provider, "invalidate", None)
            if invalidate is not None:
                invalidate(host)

    async def _known_authorization(
        self, image: ImageRef, scope: str, budget: _Budget
    ) -> str | None:
        """Authorization to send up front, from the host's remembered challenge."""
        challenge = self._challenges.get(image.api_host)
        if challenge is None:
            return None
        return await self._authorization_for(image, challenge, scope, budget)

    async def _authorization_for(
        self, image: ImageRef, challenge: _Challenge, scope: str, budget: _Budget
    ) -> str | None:
        if challenge.scheme == "basic":
            creds = await self._credentials_for(image.host)
            return creds.basic_header() if creds else None
        key = (image.api_host, scope)
        token = self._tokens.get(key)
        if token is not None and self._clock() < token.expires_at:
            return f"Bearer {token.value}"
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key)
            if token is not None and self._clock() < token.expires_at:
                return f"Bearer {token.value}"
            token = await self._fetch_token(image, challenge, scope, budget)
            self._tokens[key] = token
            return f"Bearer {token.value}"

    async def _fetch_token(
        self, image: ImageRef, challenge: _Challenge, scope: str, budget: _Budget
    ) -> _Token:
        realm = challenge.params.get("realm")
        if not realm or not realm.lower().startswith(("https://", "http://")):
            raise ConfigurationError(
                f"{image.host}: Bearer challenge without a usable realm", reason=REGISTRY_REJECTED
            )
        try:
            realm_url = httpx.URL(realm)
        except (httpx.InvalidURL, ValueError):
            raise ConfigurationError(
                f"{image.host}: Bearer challenge realm is not a URL", reason=REGISTRY_REJECTED
            ) from None
        # A plain-http realm only when the registry itself is spoken to over
        # plain HTTP (a configured mirror or insecure host).
        problem = self._outbound_problem(
            image, realm_url, plain_http=self._base_url(image).startswith("http://")
        )
        if problem:
            raise ConfigurationError(
                f"{image.host}: token realm {_safe_url(str(realm_url))[:200]} refused: {problem}",
                reason=INVALID_REGISTRY_RESPONSE,
            )
        creds = await self._credentials_for(image.host)
        if (
            creds is not None
            and realm_url.scheme == "http"
            and not (_is_loopback(realm_url.netloc.decode()) or realm_url.host in self._insecure)
        ):
            # Never send a password in clear text to a non-local realm.
            raise ConfigurationError(
                f"{image.host}: token realm {realm_url.host} is plain HTTP; refusing to send "
                "credentials (list it in insecure hosts if that is intended)",
                reason=REGISTRY_AUTH_FAILED,
            )
        # httpx's query-parameter type: a list is invariant, so say it once here.
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        # The challenge names the scope it wants; several are space-separated.
        for one in (challenge.params.get("scope") or scope).split():
            params.append(("scope", one))
        headers = {}
        if creds is not None:
            params.append(("account", creds.username))
            headers["Authorization"] = creds.basic_header()
        self.stats.requests[(image.host, "token")] += 1
        started = self._clock()
        try:
            request = self._http.build_request(
                "GET", realm_url, params=params, headers=headers,
                timeout=budget.clip(self._timeout),
            )  # fmt: skip
            try:
                resp = await self._http.send(request, stream=True)
            except AddressRefused as exc:
                raise ConfigurationError(
                    f"{image.host}: token realm {_safe_url(str(realm_url))[:200]} refused: {exc}",
                    reason=INVALID_REGISTRY_RESPONSE,
                ) from None
            try:
                await _read_limited(
                    resp, MAX_TOKEN_BYTES, what=f"token request to {realm_url.host}",
                    timeout=max(budget.remaining(), 0.05),
                )  # fmt: skip
            finally:
                await resp.aclose()
        except httpx.TimeoutException:
            raise TransientError(
                f"token request to {realm_url.host} for {image.host}: timed out",
                reason=REGISTRY_TIMEOUT,
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"token request to {realm_url.host} for {image.host}: {type(exc).__name__}",
                reason=REGISTRY_UNAVAILABLE,
            ) from None
        # The auth server's body is never quoted: it could echo what we sent.
        status = resp.status_code
        what = f"token request to {realm_url.host} for {image.name}: HTTP {status}"
        if status in (401, 403):
            who = f"user {creds.username!r}" if creds else "anonymous access"
            raise ConfigurationError(f"{what}: {who} was refused", reason=REGISTRY_AUTH_FAILED)
        if status == 429 or status >= 500:
            raise TransientError(
                what,
                reason=REGISTRY_RATE_LIMITED if status == 429 else REGISTRY_UNAVAILABLE,
                retry_after=_parse_retry_after(resp.headers.get("Retry-After"), time.time()),
            )
        if status != 200:
            raise ConfigurationError(what, reason=REGISTRY_REJECTED)
        try:
            doc = json.loads(resp.content)
            value = doc.get("token") or doc.get("access_token")
            expires_in = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError, RecursionError):
            value = None
            expires_in = 0.0
        if not value or not isinstance(value, str) or not value.isprintable():
            raise ConfigurationError(
                f"{what}: no usable token in the answer", reason=INVALID_REGISTRY_RESPONSE
            )
        if not 0.0 <= expires_in <= 86_400.0:  # NaN, negative or absurd: the spec's default
            expires_in = DEFAULT_TOKEN_LIFETIME
        # Count from when we asked, minus a little, so a token is never sent
        # in its last seconds.
        lifetime = max(expires_in - min(10.0, expires_in * 0.1), 0.0)
        return _Token(value, started + lifetime)
