"""Where registry credentials come from: a Secret, ECR, or nobody.

``Credentials`` is a username and password that never prints. A
``CredentialProvider`` answers "what do I send to this host?":
``StaticCredentials`` from a ``kubernetes.io/dockerconfigjson`` Secret,
``PolicySecrets`` (the Secrets the policies name, in the operator's own
namespace, reloaded each detection pass, and kept **per policy**: a workload
under policy P is read with P's Secret only, never with another policy's for
the same host) and ``EcrCredentials``
(``GetAuthorizationToken`` per region, refreshed before it lapses). The
auth module (``auth.py``) asks them when a registry challenges; nothing here
speaks HTTP to a registry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from imagepatch.adapters.errors import (
    REGISTRY_CREDENTIALS_UNAVAILABLE,
    REGISTRY_UNAVAILABLE,
    ConfigurationError,
    TransientError,
)
from imagepatch.core.images import DOCKER_HUB, is_ecr_host

__all__ = [
    "CredentialProvider",
    "Credentials",
    "DockerConfigError",
    "EcrCredentials",
    "PolicySecrets",
    "StaticCredentials",
    "normalize_registry_key",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token) for one registry. Never printed."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def fingerprint(self) -> str:
        """A short digest naming these credentials in cache keys (never the secret itself).

        Two policies whose Secrets hold the same credentials for a host share
        what was read with them; different credentials never do.
        """
        raw = f"{self.username}\0{self.password}".encode()
        return hashlib.sha256(raw).hexdigest()[:24]


@runtime_checkable
class CredentialProvider(Protocol):
    """Where credentials for a registry host come from.

    ``host`` is the registry as images name it (``docker.io``, not
    ``registry-1.docker.io``). None means "no credentials: go anonymous".
    A provider may also have ``invalidate(host)``, called when the registry
    rejects what it returned, so a stale token is not offered again.
    """

    async def get(self, host: str) -> Credentials | None: ...


def normalize_registry_key(key: str) -> str:
    """The host a dockerconfigjson ``auths`` key names.

    Keys come as ``ghcr.io``, ``https://ghcr.io``, ``https://index.docker.io/v1/``
    or ``127.0.0.1:5000``: drop scheme and path, and fold Docker Hub's aliases
    into ``docker.io`` as image references do.
    """
    host = key.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    if host in {"index.docker.io", "registry-1.docker.io", "docker.io", "registry.hub.docker.com"}:
        return DOCKER_HUB
    return host


class DockerConfigError(ValueError):
    """A ``.dockerconfigjson`` that cannot be used. The message never quotes it."""


class StaticCredentials:
    """Credentials from a fixed mapping of host → ``Credentials``.

    Usually built with ``from_dockerconfigjson`` from the Secret the policy
    names (``kubernetes.io/dockerconfigjson``).
    """

    def __init__(self, by_host: Mapping[str, Credentials]) -> None:
        self._by_host = {normalize_registry_key(h): c for h, c in by_host.items()}

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._by_host)

    @classmethod
    def from_dockerconfigjson(cls, data: bytes | str) -> StaticCredentials:
        """Parse ``{"auths": {host: {"auth": b64(user:pass)} | {"username", "password"}}}``.

        The legacy ``.dockercfg`` form (the ``auths`` map at top level) is
        accepted too. Entries with only an ``identitytoken`` (an OAuth refresh
        token from ``docker login`` to some clouds) are skipped: this client
        does not speak the OAuth2 token exchange.
        """
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            # exc's text can quote the document; say only where it broke.
            where = (
                f" at line {exc.lineno} column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            raise DockerConfigError(f"dockerconfigjson is not valid JSON{where}") from None
        if not isinstance(doc, dict):
            raise DockerConfigError("dockerconfigjson must be a JSON object")
        auths = doc["auths"] if "auths" in doc else doc
        if not isinstance(auths, dict):
            raise DockerConfigError("dockerconfigjson: 'auths' must be an object")
        by_host: dict[str, Credentials] = {}
        for key, entry in auths.items():
            if not isinstance(entry, dict):
                raise DockerConfigError(f"dockerconfigjson: auths[{key!r}] must be an object")
            username, password = entry.get("username"), entry.get("password")
            if entry.get("auth"):
                try:
                    decoded = base64.b64decode(entry["auth"], validate=True).decode()
                except (binascii.Error, ValueError, UnicodeDecodeError):
                    raise DockerConfigError(
                        f"dockerconfigjson: auths[{key!r}].auth is not base64 of 'user:password'"
                    ) from None
                username, sep, password = decoded.partition(":")
                if not sep:
                    raise DockerConfigError(
                        f"dockerconfigjson: auths[{key!r}].auth is not base64 of 'user:password'"
                    )
            if not username or password is None:
                if entry.get("identitytoken"):
                    log.warning("dockerconfigjson: %s has only an identitytoken; skipped", key)
                    continue
                raise DockerConfigError(
                    f"dockerconfigjson: auths[{key!r}] has neither 'auth' nor username/password"
                )
            by_host[normalize_registry_key(key)] = Credentials(str(username), str(password))
        return cls(by_host)

    async def get(self, host: str) -> Credentials | None:
        return self._by_host.get(normalize_registry_key(host))

    def __repr__(self) -> str:
        return f"StaticCredentials(hosts={sorted(self._by_host)!r})"


@dataclass
class _EcrToken:
    credentials: Credentials
    fetched_at: float
    expires_at: float
    refresh_at: float


class EcrCredentials:
    """ECR registry credentials from ``GetAuthorizationToken``, refreshed early.

    ECR's token is ``base64("AWS:<password>")`` and lasts 12 hours. One token
    is valid for every registry the IAM principal may pull from in a region
    (ECR documents ``registryIds`` as kept only for compatibility), so there is
    one per region, asked of that region's ECR for the registry of the first
    host that needed it (another account's, for a cross-account image),
    fetched once and reused until less than
    ``max(refresh_margin, refresh_fraction × lifetime)`` remains (5 minutes or
    10 %: 72 minutes for a 12-hour token), then fetched again before it
    lapses. boto3 runs in a thread (``asyncio.to_thread``), with its standard
    retry mode for throttling, and its default credential chain (IRSA, EKS Pod
    Identity). ``endpoint_url`` points boto3 at moto in tests; ``clock``
    (epoch seconds) makes expiry testable.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        refresh_fraction: float = 0.1,
        min_reuse: float = 60.0,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self._endpoint_url = endpoint_url
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._refresh_fraction = refresh_fraction
        # A token that looks expired on arrival means a skewed clock (or
        # moto's fixed 2015 expiry): reuse it this long rather than calling
        # ECR for every request.
        self._min_reuse = min_reuse
        self._client_factory = client_factory or self._default_client
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._tokens: dict[str, _EcrToken] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.calls = 0  # GetAuthorizationToken calls made, for tests and metrics

    def _default_client(self, region: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "ecr",
            region_name=region,
            endpoint_url=self._endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )

    async def get(self, host: str) -> Credentials | None:
        ecr = is_ecr_host(host)
        if ecr is None:
            return None
        region = ecr.region
        token = self._tokens.get(region)
        if token is not None and self._clock() < token.refresh_at:
            return token.credentials
        lock = self._locks.setdefault(region, asyncio.Lock())
        async with lock:
            # Another task may have refreshed it while we waited.
            token = self._tokens.get(region)
            if token is not None and self._clock() < token.refresh_at:
                return token.credentials
            token = await asyncio.to_thread(self._fetch, region, host, ecr.account)
            self._tokens[region] = token
            return token.credentials

    def invalidate(self, host: str) -> None:
        ecr = is_ecr_host(host)
        if ecr is not None:
            self._tokens.pop(ecr.region, None)

    def _fetch(self, region: str, host: str, registry_id: str) -> _EcrToken:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        with self._clients_lock:
            # boto3's default session is not safe for concurrent client creation.
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._client_factory(region)
        self.calls += 1
        fetched_at = self._clock()
        try:
            response = client.get_authorization_token(registryIds=[registry_id])
        except NoCredentialsError:
            raise ConfigurationError(
                f"ECR credentials for {host}: no AWS credentials found "
                "(configure IRSA or EKS Pod Identity for the operator)",
                reason=REGISTRY_CREDENTIALS_UNAVAILABLE,
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = f"ECR GetAuthorizationToken in {region} for {host} failed: {code}"
            if code in {"ThrottlingException", "ServiceUnavailableException"} or status >= 500:
                raise TransientError(message, reason=REGISTRY_UNAVAILABLE) from None
            raise ConfigurationError(message, reason=REGISTRY_CREDENTIALS_UNAVAILABLE) from None
        except BotoCoreError as exc:
            raise TransientError(
                f"ECR GetAuthorizationToken in {region} for {host} failed: {type(exc).__name__}",
                reason=REGISTRY_UNAVAILABLE,
            ) from None
        data = (response.get("authorizationData") or [{}])[0]
        try:
            decoded = base64.b64decode(data["authorizationToken"]).decode()
            username, sep, password = decoded.partition(":")
            if not sep:
                raise ValueError
        except (KeyError, ValueError, binascii.Error, UnicodeDecodeError):
            raise TransientError(
                f"ECR GetAuthorizationToken in {region} returned no usable token",
                reason=REGISTRY_UNAVAILABLE,
            ) from None
        expires = data.get("expiresAt")
        if isinstance(expires, dt.datetime):
            expires_at = expires.timestamp()
        else:
            expires_at = fetched_at + 12 * 3600
        lifetime = max(expires_at - fetched_at, 0.0)
        margin = max(self._refresh_margin, self._refresh_fraction * lifetime)
        refresh_at = max(expires_at - margin, fetched_at + self._min_reuse)
        log.info(
            "ECR token for %s fetched; valid %.0fs, refresh in %.0fs",
            region, lifetime, refresh_at - fetched_at,
        )  # fmt: skip
        return _EcrToken(Credentials(username, password), fetched_at, expires_at, refresh_at)

    def __repr__(self) -> str:
        return f"EcrCredentials(regions={sorted(self._tokens)!r})"


class SecretReader(Protocol):
    """What ``PolicySecrets`` needs of the Kubernetes adapter (``adapters/kube.Kube``)."""

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class PolicySecrets:
    """Registry credentials from the dockerconfigjson Secrets that policies name, per policy.

    Read only from the operator's own namespace (the only Secrets its RBAC can
    get), reloaded every pass so a rotated Secret is picked up; a missing or
    malformed Secret is logged, and the registry's 401 then makes the affected
    workloads ``Unknown`` with reason ``RegistryAuthFailed``.

    Credentials are never merged across policies: ``for_policy(P)`` answers
    with P's Secret only (or nothing), so a team cannot borrow another team's
    registry login by naming its image under its own policy.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._by_policy: dict[str, StaticCredentials] = {}
        self._problems: set[str] = set()

    def for_policy(self, policy: str) -> CredentialProvider:
        """The credentials workloads under ``policy`` are read with (live: see ``load``)."""
        return _PolicyCredentials(self, policy)

    def credentials_of(self, policy: str) -> StaticCredentials | None:
        return self._by_policy.get(policy)

    @property
    def policies(self) -> frozenset[str]:
        """The policies whose Secret was loaded and usable."""
        return frozenset(self._by_policy)

    async def load(self, kube: SecretReader, secret_of: Mapping[str, str]) -> None:
        """Read each policy's Secret (``{policy: secretName}``); each Secret is read once."""
        parsed_by_name: dict[str, StaticCredentials | None] = {}
        for name in sorted(set(secret_of.values())):
            secret = await kube.get_secret(self.namespace, name)
            data = (secret or {}).get("data") or {}
            raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
            try:
                if raw is None:
                    raise ValueError("no .dockerconfigjson key" if secret else "not found")
                parsed_by_name[name] = StaticCredentials.from_dockerconfigjson(
                    base64.b64decode(raw)
                )
            except ValueError as exc:
                if name not in self._problems:
                    log.warning(
                        "registry credentials Secret %s/%s unusable: %s", self.namespace, name, exc
                    )
                self._problems.add(name)
                parsed_by_name[name] = None
                continue
            self._problems.discard(name)
        self._by_policy = {
            policy: creds
            for policy, name in secret_of.items()
            if (creds := parsed_by_name.get(name)) is not None
        }

    def __repr__(self) -> str:
        return f"PolicySecrets(policies={sorted(self._by_policy)!r})"


class _PolicyCredentials:
    """One policy's view of ``PolicySecrets``: looked up at each call, so a reload applies."""

    def __init__(self, secrets: PolicySecrets, policy: str) -> None:
        self._secrets = secrets
        self.policy = policy

    async def get(self, host: str) -> Credentials | None:
        creds = self._secrets.credentials_of(self.policy)
        return await creds.get(host) if creds is not None else None

    def __repr__(self) -> str:
        return f"PolicyCredentials(policy={self.policy!r})"
