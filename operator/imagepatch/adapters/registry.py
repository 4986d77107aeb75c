"""A small async client for OCI registries (the distribution API), over httpx.

It answers the operator's three registry questions cheaply and correctly:
which digest does a tag point to now (``resolve_digest``: for a multi-arch
image the **index** digest), what is an image built on (``image_lineage``), and
what are an index's platform manifests (``platform_digests``). Lower-level
calls (``head_manifest``, ``get_manifest``, ``get_blob``) are public for the
rebase strategy and verification.

What it gets right, because users of similar tools trip on each:

* **Accept list.** Every manifest request sends OCI index, OCI manifest,
  Docker manifest list and Docker v2. Without the index types a registry
  answers 404 (or one platform) for a multi-arch tag; with no Accept at all
  docker-registry down-converts to schema1, whose digest differs.
* **Digests are checked.** A GET body must hash to the requested digest and
  to ``Docker-Content-Digest``; anything else is ``DigestMismatch``.
* **Immutable reads are cached.** What is read by digest (manifests, configs,
  HEADs by digest) is kept in a bounded LRU for good; what is read by tag
  never is, since tags move.
* **Auth.** ``WWW-Authenticate: Bearer`` (anonymous, or with credentials sent
  as Basic to the realm) with tokens cached per (host, scope) until
  ``expires_in``; ``Basic`` challenges directly. A host's challenge is
  remembered, so later requests authenticate up front instead of paying a 401
  each time. Credentials come from a ``CredentialProvider``: ``StaticCredentials``
  (a dockerconfigjson Secret) or ``EcrCredentials`` (``GetAuthorizationToken``,
  refreshed before expiry), which ECR hosts use automatically.
* **Bounded retries.** 429, 5xx, timeouts and connection errors are retried
  with jittered exponential backoff (stamina) within a cap on attempts and on
  total time; ``Retry-After`` is a lower bound for the next wait, and a wait
  that would overrun the budget is not started. Then ``TransientError``
  (``RegistryUnavailable``) carries the server's hint up, and the reconciler
  requeues rather than sleeps.
* **Counting.** ``RequestStats`` counts every request that leaves the process,
  per registry host and operation, so tests can assert "one HEAD per base per
  interval" and metrics can export the same numbers.

* **Untrusted input, bounded.** A registry is someone else's server. Every
  body is read as raw bytes with a fixed cap (manifests and indexes 4 MiB as
  containerd does, configs 4 MiB, token and error bodies 64 KiB) and a total
  time budget (a slow drip ends with the operation's budget); a
  ``Content-Encoding`` is decoded here, incrementally, so a gzip bomb costs
  at most the cap. Redirects are followed only for blob GETs, at most
  ``MAX_REDIRECTS`` hops, and only to https or to a configured endpoint
  mirror. A token realm must be https unless the registry itself is spoken to
  over plain HTTP (a configured mirror or insecure host). Realms and redirect
  targets at loopback, link-local or cloud metadata addresses
  (169.254.169.254, fd00:ec2::254) are refused, unless they are a configured
  mirror or the registry's own host. Every digest read from a header or a
  document is checked (algorithm, hex, length) and compared with the bytes;
  a document that is not the JSON object its media type says is refused with
  ``InvalidRegistryResponse``, never an unclassified exception.

Errors are classified here (``adapters/errors.py``). No message, log line or
``repr`` carries a password or token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import datetime as dt
import email.utils
import hashlib
import ipaddress
import json
import logging
import mmap
import random
import re
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import httpx
import stamina

from imagepatch.adapters.errors import (
    BLOB_NOT_FOUND,
    DIGEST_MISMATCH,
    IMAGE_NOT_FOUND,
    INVALID_IMAGE_REFERENCE,
    INVALID_REGISTRY_RESPONSE,
    REGISTRY_ACCESS_DENIED,
    REGISTRY_AUTH_FAILED,
    REGISTRY_CREDENTIALS_UNAVAILABLE,
    REGISTRY_RATE_LIMITED,
    REGISTRY_REJECTED,
    REGISTRY_TIMEOUT,
    REGISTRY_UNAVAILABLE,
    REPOSITORY_NOT_FOUND,
    AdapterError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    TransientError,
)
from imagepatch.core.images import (
    DOCKER_HUB,
    ImageRef,
    InvalidImageReference,
    is_digest,
    is_ecr_host,
    parse_image,
)

__all__ = [
    "ANNOTATION_BASE_DIGEST",
    "ANNOTATION_BASE_NAME",
    "MANIFEST_ACCEPT",
    "Credentials",
    "CredentialProvider",
    "EcrCredentials",
    "Lineage",
    "Manifest",
    "ManifestInfo",
    "RegistryClient",
    "RequestStats",
    "RetryPolicy",
    "StaticCredentials",
    "parse_document",
]

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_V2})
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_V2])

ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"

# containerd refuses manifests and indexes over 4 MiB (remotes/docker,
# MaxManifestSize); configs are far smaller, and get the same fixed cap. A
# larger body is refused rather than read into memory.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BLOB_BYTES = MAX_CONFIG_BYTES
# Token answers and error bodies are only ever a few hundred bytes; an error
# body is cut at this size, a token answer over it is refused.
MAX_TOKEN_BYTES = 64 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_REDIRECTS = 5
_READ_CHUNK = 64 * 1024  # bytes read (and decoded) at a time
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# Cloud instance metadata services: never a realm or a redirect target.
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # per request, before budget clipping
DEFAULT_TOKEN_LIFETIME = 60.0  # the token spec's default for a missing expires_in

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_AUTH_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


# -- results -------------------------------------------------------------------------


class ManifestInfo(NamedTuple):
    """What a HEAD tells: the manifest's digest, media type and size in bytes."""

    digest: str
    media_type: str
    size: int


class Manifest(NamedTuple):
    """A manifest or index as stored: exact bytes, media type, digest."""

    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass(frozen=True)
class Lineage:
    """What an image says it was built on.

    ``source`` is ``"manifest-annotations"``, ``"index-annotations"``,
    ``"config-labels"``, or None when the image records no base.
    ``base_digest`` is as recorded: buildah records the *platform* manifest
    digest for a multi-arch base, so compare it with ``platform_digests`` of
    the base index, not only with its index digest.
    """

    base_name: str | None
    base_digest: str | None
    source: str | None


# -- request accounting ----------------------------------------------------------------


@dataclass
class RequestStats:
    """Counts of requests that left the process, per registry host.

    ``requests[(host, op)]``: every HTTP attempt, retries included, where
    ``op`` is ``head_manifest``, ``get_manifest``, ``get_blob`` or ``token``
    (token fetches are counted under the registry they were for).
    ``errors[(host, reason)]``: classified failures of single attempts.
    ``cache_hits[(host, op)]``: reads answered from the digest cache.
    """

    requests: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    errors: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    cache_hits: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def count(self, host: str | None = None, op: str | None = None) -> int:
        """Requests made, optionally only to ``host`` and/or of kind ``op``."""
        return sum(
            n
            for (h, o), n in self.requests.items()
            if (host is None or h == host) and (op is None or o == op)
        )

    def error_count(self, host: str | None = None, reason: str | None = None) -> int:
        return sum(
            n
            for (h, r), n in self.errors.items()
            if (host is None or h == host) and (reason is None or r == reason)
        )


# -- credentials -----------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token) for one registry. Never printed."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


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
            where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
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
    is valid for every registry the IAM principal may pull from in a region,
    so there is one per region, fetched once and reused until less than
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
            token = await asyncio.to_thread(self._fetch, region, host)
            self._tokens[region] = token
            return token.credentials

    def invalidate(self, host: str) -> None:
        ecr = is_ecr_host(host)
        if ecr is not None:
            self._tokens.pop(ecr.region, None)

    def _fetch(self, region: str, host: str) -> _EcrToken:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        with self._clients_lock:
            # boto3's default session is not safe for concurrent client creation.
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._client_factory(region)
        self.calls += 1
        fetched_at = self._clock()
        try:
            response = client.get_authorization_token()
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


# -- retries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying one registry operation.

    The wait before retry *n* is ``min(wait_max, wait_initial·2^(n-1) +
    uniform(0, wait_jitter))``, raised to ``Retry-After`` when the server
    sent one. No more than ``attempts`` tries, and no wait that would end past
    ``timeout`` seconds from the first try; each request's own timeout is
    clipped to what remains, so the whole operation ends within about
    ``timeout``.
    """

    attempts: int = 5
    timeout: float = 30.0
    wait_initial: float = 0.2
    wait_max: float = 5.0
    wait_jitter: float = 0.5

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One try only (tests, or callers that retry themselves)."""
        return cls(attempts=1)


class _Backoff:
    """stamina backoff hook for one operation: retry only ``TransientError``,
    compute the jittered wait, honour Retry-After, respect the time budget."""

    def __init__(self, policy: RetryPolicy, deadline: float, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.deadline = deadline
        self.clock = clock
        self.failures = 0

    def __call__(self, exc: Exception) -> bool | float:
        if not isinstance(exc, TransientError):
            return False
        self.failures += 1
        p = self.policy
        # stamina's own formula, computed here because a hook that returns a
        # number replaces stamina's backoff, and the wait must be known to
        # check it against the budget. The exponent is capped against overflow.
        jitter = random.uniform(0, p.wait_jitter) if p.wait_jitter else 0.0  # noqa: S311
        wait = min(p.wait_max, p.wait_initial * 2 ** min(self.failures - 1, 60) + jitter)
        if exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        if self.failures >= p.attempts or wait >= self.deadline - self.clock():
            # Sleeping past the budget would only delay the same answer; the
            # caller requeues after ``retry_after`` instead.
            return False
        return wait


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(when.timestamp() - now, 0.0)


# -- auth challenges ----------------------------------------------------------------------


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


# -- the client -----------------------------------------------------------------------------


class _LRU:
    """A small LRU of immutable, digest-addressed registry reads."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get(self, key: tuple) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple, value: Any) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _is_loopback(host: str) -> bool:
    if host.startswith("["):  # [::1]:5000
        name = host.split("]", 1)[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in _LOOPBACK_HOSTS or name.startswith("127.")


def _verify_body(body: bytes, *, expected: str, what: str) -> None:
    _check_digest(expected, what=f"{what}: expected digest")
    algorithm, _, _ = expected.partition(":")
    actual = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    if actual != expected:
        raise TransientError(
            f"{what}: content hashes to {actual}, not {expected}", reason=DIGEST_MISMATCH
        )


class RegistryClient:
    """An async OCI distribution client. Use one per process; close it with
    ``aclose()`` or ``async with``.

    * ``credentials``: for any host (e.g. ``StaticCredentials`` from the
      policy's Secret); ``ecr``: for ECR hosts (``EcrCredentials``), consulted
      first for them.
    * ``insecure_hosts``: hosts spoken to over plain HTTP; loopback hosts
      always are.
    * ``endpoints``: host → base URL overrides (a pull-through mirror, or a
      test proxy standing in for an ECR host). Credentials are still chosen by
      the image's host.
    * ``retry``: a ``RetryPolicy`` (``RetryPolicy.disabled()`` for one try);
      ``stamina.set_testing(True)`` also turns waits off.
    * ``timeout``: per request (httpx), clipped to the retry budget.
    * ``cache_entries``: size of the digest cache (0 turns it off).
    * ``clock``: monotonic seconds, for token expiry and budgets.
    """

    def __init__(
        self,
        *,
        credentials: CredentialProvider | None = None,
        ecr: CredentialProvider | None = None,
        insecure_hosts: Iterable[str] = (),
        endpoints: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        cache_entries: int = 2048,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        clock: Callable[[], float] = time.monotonic,
        stats: RequestStats | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._credentials = credentials
        self._ecr = ecr
        self._insecure = frozenset(h.lower() for h in insecure_hosts)
        self._endpoints = {h: url.rstrip("/") for h, url in (endpoints or {}).items()}
        # Where a configured mirror lives: a realm or redirect there is allowed
        # whatever its scheme or address, because an admin named it.
        self._mirrors = frozenset(
            httpx.URL(url).netloc.decode().lower() for url in self._endpoints.values()
        )
        self.retry = retry or RetryPolicy()
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._cache = _LRU(cache_entries)
        self._max_blob_bytes = max_blob_bytes
        self._clock = clock
        self.stats = stats or RequestStats()
        self._http = httpx.AsyncClient(
            timeout=self._timeout,
            transport=transport,
            # Redirects are followed by hand (``_open``): only for blob GETs,
            # which redirect to storage (S3 for ECR), and only to allowed targets.
            follow_redirects=False,
            headers={"User-Agent": "imagepatch"},
            trust_env=False,
        )
        self._challenges: dict[str, _Challenge] = {}  # api host -> last challenge seen
        self._tokens: dict[tuple[str, str], _Token] = {}  # (api host, scope) -> bearer token
        self._token_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Hosts a provider had credentials for: a 401 then means "refused",
        # not "anonymous access is not enough".
        self._hosts_with_credentials: set[str] = set()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- public API ----------------------------------------------------------------------

    async def head_manifest(self, image: ImageRef | str, ref: str | None = None) -> ManifestInfo:
        """Digest, media type and size of a manifest or index, by tag or digest.

        A HEAD by digest is answered from the cache once known.
        """
        image, ref = self._target(image, ref)
        if is_digest(ref):
            cached = self._cache.get(("manifest", image.api_host, image.repository, ref))
            if cached is not None:
                self.stats.cache_hits[(image.host, "head_manifest")] += 1
                body, media_type = cached
                return ManifestInfo(ref, media_type, len(body))
            info = self._cache.get(("head", image.api_host, image.repository, ref))
            if info is not None:
                self.stats.cache_hits[(image.host, "head_manifest")] += 1
                return info

        async def once(budget: _Budget) -> ManifestInfo | None:
            resp = await self._send(
                "HEAD", image, f"manifests/{ref}", "head_manifest", budget,
                accept=MANIFEST_ACCEPT,
            )  # fmt: skip
            digest = resp.headers.get("Docker-Content-Digest")
            if not digest:
                return None  # some registries omit it on HEAD: fall back to GET
            _check_digest(digest, what=f"HEAD {_display(image, ref)}: Docker-Content-Digest")
            if is_digest(ref) and digest != ref:
                raise TransientError(
                    f"HEAD {image.name}@{ref}: registry answered for {digest}",
                    reason=DIGEST_MISMATCH,
                )
            media_type = _media_type(resp)
            length = resp.headers.get("Content-Length", "0")
            return ManifestInfo(digest, media_type, int(length) if length.isdigit() else 0)

        info = await self._with_retries(f"HEAD {_display(image, ref)}", image.host, once)
        if info is None:
            manifest = await self.get_manifest(image, ref)
            info = ManifestInfo(manifest.digest, manifest.media_type, len(manifest.body))
        if is_digest(ref):
            self._cache.put(("head", image.api_host, image.repository, ref), info)
        return info

    async def get_manifest(self, image: ImageRef | str, ref: str | None = None) -> Manifest:
        """The exact bytes, media type and digest of a manifest or index.

        The body is checked against the requested digest (for a digest ref)
        and against ``Docker-Content-Digest``. Reads by digest are cached; a
        read by tag goes to the registry every time (and primes the cache for
        the digest it found).
        """
        image, ref = self._target(image, ref)
        key = ("manifest", image.api_host, image.repository)
        if is_digest(ref):
            cached = self._cache.get((*key, ref))
            if cached is not None:
                self.stats.cache_hits[(image.host, "get_manifest")] += 1
                return Manifest(cached[0], cached[1], ref)
        what = f"GET {_display(image, ref)}"

        async def once(budget: _Budget) -> Manifest:
            resp = await self._send(
                "GET", image, f"manifests/{ref}", "get_manifest", budget,
                accept=MANIFEST_ACCEPT, max_bytes=MAX_MANIFEST_BYTES,
            )  # fmt: skip
            body = resp.content
            header = resp.headers.get("Docker-Content-Digest")
            if is_digest(ref):
                _verify_body(body, expected=ref, what=what)
            if header:
                _check_digest(header, what=f"{what}: Docker-Content-Digest")
                _verify_body(body, expected=header, what=what)
            # A manifest is a JSON object; anything else is refused here, once.
            parse_document(body, what=what)
            digest = ref if is_digest(ref) else (header or _sha256(body))
            return Manifest(body, _media_type(resp, body), digest)

        manifest = await self._with_retries(what, image.host, once)
        self._cache.put((*key, manifest.digest), (manifest.body, manifest.media_type))
        return manifest

    async def get_blob(
        self, image: ImageRef | str, digest: str, *, max_bytes: int | None = None
    ) -> bytes:
        """A blob (usually an image config) by digest, checked and cached.

        Refuses blobs over ``max_bytes`` (default ``MAX_CONFIG_BYTES``, 4 MiB):
        this client reads configs, not layers.
        """
        image, digest = self._target(image, digest)
        if not is_digest(digest):
            raise ConfigurationError(
                f"blob reference {digest!r} is not a digest", reason=INVALID_IMAGE_REFERENCE
            )
        key = ("blob", image.api_host, image.repository, digest)
        cached = self._cache.get(key)
        if cached is not None:
            self.stats.cache_hits[(image.host, "get_blob")] += 1
            return cached
        what = f"GET blob {image.name}@{digest}"

        async def once(budget: _Budget) -> bytes:
            resp = await self._send(
                "GET", image, f"blobs/{digest}", "get_blob", budget,
                max_bytes=max_bytes or self._max_blob_bytes,
            )  # fmt: skip
            _verify_body(resp.content, expected=digest, what=what)
            return resp.content

        body = await self._with_retries(what, image.host, once)
        self._cache.put(key, body)
        return body

    async def resolve_digest(self, image: ImageRef | str) -> str:
        """The digest ``image``'s tag points to now (one HEAD, never cached).

        For a multi-arch image this is the **index** digest: nothing descends
        into a platform. A reference that already carries a digest is
        returned as is, without a request.
        """
        image = self._image(image)
        if image.digest:
            return image.digest
        info = await self.head_manifest(image, image.reference)
        return info.digest

    async def platform_digests(self, image: ImageRef | str) -> dict[str, str]:
        """``{"linux/amd64": digest, "linux/arm64/v8": digest, …}`` of an index.

        Attestation manifests (BuildKit's ``unknown/unknown``) are left out.
        A single-platform manifest has no entries: ``{}``.
        """
        manifest = await self.get_manifest(image)
        if manifest.media_type not in INDEX_TYPES:
            return {}
        doc = parse_document(manifest.body, what=f"{image} index")
        return {
            platform: entry["digest"] for platform, entry in _platform_entries(doc, what=str(image))
        }

    async def image_lineage(self, image: ImageRef | str) -> Lineage:
        """The base an image records, and where that was found.

        Looked up in order: the manifest's annotations; for an index, the
        index's annotations, then the annotations on its linux/amd64 (else
        first) entry, then that platform manifest's annotations; then that
        manifest's config labels. A recorded base digest that is not
        ``algorithm:hex`` is not a digest, and is read as absent. Everything
        is read by digest, so it is cached for good; pass a pinned reference
        (a tag is resolved first, uncached).
        """
        image = self._image(image)
        digest = image.digest or await self.resolve_digest(image)
        manifest = await self.get_manifest(image, digest)
        what = f"{image.name}@{manifest.digest}"
        doc = parse_document(manifest.body, what=what)
        if manifest.media_type in INDEX_TYPES:
            found = _base_from(doc.get("annotations"))
            if found:
                return Lineage(*found, source="index-annotations")
            entries = _platform_entries(doc, what=str(image))
            if not entries:
                return Lineage(None, None, None)
            chosen = dict(entries).get("linux/amd64") or entries[0][1]
            found = _base_from(chosen.get("annotations"))
            if found:
                return Lineage(*found, source="index-annotations")
            manifest = await self.get_manifest(image, chosen["digest"])
            what = f"{image.name}@{manifest.digest}"
            doc = parse_document(manifest.body, what=what)
        if manifest.media_type not in IMAGE_MANIFEST_TYPES:
            raise ConfigurationError(
                f"{image.name}@{manifest.digest}: unsupported manifest type "
                f"{manifest.media_type!r}",
                reason=REGISTRY_REJECTED,
            )
        found = _base_from(doc.get("annotations"))
        if found:
            return Lineage(*found, source="manifest-annotations")
        config_digest = doc["config"].get("digest") if "config" in doc else None
        if not config_digest:
            return Lineage(None, None, None)
        config = parse_document(
            await self.get_blob(image, config_digest, max_bytes=MAX_CONFIG_BYTES),
            what=f"{what} config",
            kind="config",
        )
        labels = (config.get("config") or {}).get("Labels")
        found = _base_from(labels)
        if found:
            return Lineage(*found, source="config-labels")
        return Lineage(None, None, None)

    # -- writes: blobs and manifests (for the rebase strategy) ---------------------------
    #
    # Added for ``adapters/builders/rebase.py``, which assembles an image from
    # blobs already in a registry, and for tests that check what it pushed.
    # The reads above ask for the ``pull`` scope; writes ask for ``pull,push``
    # on the target (and ``pull`` on a mount's source repository). They share
    # the reads' authentication (remembered challenges, cached tokens,
    # credential providers), endpoints, retries and error classification;
    # One ``_send`` serves both: writes add a scope, a full URL (upload
    # sessions hand one out), a request body and an optionally streamed response.
    # Operation names in ``stats``: ``head_blob``, ``push_blob``,
    # ``mount_blob``, ``get_blob`` (streamed reads too), ``put_manifest``.

    async def blob_exists(self, image: ImageRef | str, digest: str) -> bool:
        """Whether ``image``'s repository has the blob ``digest`` (one HEAD, never cached)."""
        image, digest = self._blob_target(image, digest)

        async def once(budget: _Budget) -> bool:
            try:
                await self._send(
                    "HEAD", image, f"blobs/{digest}", "head_blob", budget,
                )  # fmt: skip
            except NotFoundError:
                return False
            return True

        return await self._with_retries(f"HEAD blob {image.name}@{digest}", image.host, once)

    async def push_blob(self, image: ImageRef | str, data: bytes) -> str:
        """Upload a small blob (a config) in one PUT unless it is there; returns its digest."""
        image = self._image(image)
        digest = _sha256(data)
        if await self.blob_exists(image, digest):
            return digest
        await self._upload_blob(image, digest, lambda: data, len(data), location=None)
        return digest

    async def mount_or_copy_blob(
        self, image: ImageRef | str, digest: str, *, source: ImageRef | str
    ) -> str:
        """Make blob ``digest`` of ``source``'s repository exist in ``image``'s.

        Returns ``"exists"`` (nothing to do), ``"mounted"`` (cross-repository
        mount, ``POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<source
        repo>``, on the same registry: no bytes move) or ``"copied"``. A copy
        is the fallback when the registries differ or the registry declines
        the mount (it answers 202 with an upload session instead of 201): the
        blob is streamed from ``source`` into a temporary file (in memory up
        to 8 MiB), checked against ``digest``, and uploaded in one PUT.
        """
        image, digest = self._blob_target(image, digest)
        source = self._image(source)
        if await self.blob_exists(image, digest):
            return "exists"
        location: str | None = None
        if self._base_url(source) == self._base_url(image):
            scope = f"repository:{image.repository}:pull,push repository:{source.repository}:pull"
            url = str(
                httpx.URL(self._api_url(image, "blobs/uploads/")).copy_merge_params(
                    {"mount": digest, "from": source.repository}
                )
            )

            async def mount(budget: _Budget) -> tuple[bool, str | None]:
                resp = await self._send(
                    "POST", image, f"blobs/{digest}", "mount_blob", budget,
                    url=url, scope=scope, headers={"Content-Length": "0"},
                )  # fmt: skip
                if resp.status_code == 201:
                    return True, None
                return False, resp.headers.get("Location")

            mounted, location = await self._with_retries(
                f"mount blob {digest} from {source.name} into {image.name}", image.host, mount
            )
            if mounted:
                return "mounted"
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            size = await self._download_blob(source, digest, spool)

            def content() -> AsyncIterator[bytes]:
                spool.seek(0)
                return _file_chunks(spool)

            await self._upload_blob(image, digest, content, size, location=location)
        return "copied"

    @contextlib.asynccontextmanager
    async def open_blob(
        self, image: ImageRef | str, digest: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob of any size (a layer): ``async with … as chunks``.

        Not cached and not size-limited; opening is retried, a failure
        mid-stream is a ``TransientError``. The caller checks what the bytes
        hash to (the rebase checks digest, size and diff_id in one pass).
        """
        image, digest = self._blob_target(image, digest)
        what = f"GET blob {image.name}@{digest}"

        async def once(budget: _Budget) -> httpx.Response:
            return await self._send(
                "GET", image, f"blobs/{digest}", "get_blob", budget,
                headers={"Accept-Encoding": "identity"}, stream=True,
            )  # fmt: skip

        resp = await self._with_retries(what, image.host, once)
        try:
            yield _response_chunks(resp, what)
        finally:
            await resp.aclose()

    async def put_manifest(
        self, image: ImageRef | str, ref: str, body: bytes, media_type: str
    ) -> str:
        """PUT a manifest or index under a tag or its digest; returns its digest.

        The registry must keep the exact bytes: a ``Docker-Content-Digest``
        other than sha256(body) is refused (``DigestMismatch``). The pushed
        manifest primes the digest cache.
        """
        image, ref = self._target(image, ref)
        digest = _sha256(body)
        if is_digest(ref) and ref != digest:
            raise ConfigurationError(
                f"PUT {image.name}@{ref}: the body hashes to {digest}",
                reason=DIGEST_MISMATCH,
            )
        scope = f"repository:{image.repository}:pull,push"

        async def once(budget: _Budget) -> str:
            resp = await self._send(
                "PUT", image, f"manifests/{ref}", "put_manifest", budget,
                scope=scope, headers={"Content-Type": media_type},
                content=body,
            )  # fmt: skip
            stored = resp.headers.get("Docker-Content-Digest")
            if stored and stored != digest:
                raise ConfigurationError(
                    f"PUT {_display(image, ref)}: the registry stored {stored}, not {digest} "
                    "(it rewrote the manifest)",
                    reason=DIGEST_MISMATCH,
                )
            return digest

        await self._with_retries(f"PUT {_display(image, ref)}", image.host, once)
        self._cache.put(("manifest", image.api_host, image.repository, digest), (body, media_type))
        return digest

    # write plumbing

    def _blob_target(self, image: ImageRef | str, digest: str) -> tuple[ImageRef, str]:
        image = self._image(image)
        if not is_digest(digest):
            raise ConfigurationError(
                f"blob reference {digest!r} is not a digest", reason=INVALID_IMAGE_REFERENCE
            )
        return image, digest

    def _api_url(self, image: ImageRef, path: str) -> str:
        return f"{self._base_url(image)}/v2/{image.repository}/{path}"

    async def _upload_blob(
        self,
        image: ImageRef,
        digest: str,
        content: Callable[[], bytes | AsyncIterator[bytes]],
        size: int,
        *,
        location: str | None,
    ) -> None:
        """A monolithic upload: POST for a session (unless given one), then one PUT.

        A retry starts a new session: a failed PUT may have spent the old one.
        """
        scope = f"repository:{image.repository}:pull,push"
        sessions = [location] if location else []

        async def once(budget: _Budget) -> None:
            session = sessions.pop() if sessions else None
            if session is None:
                resp = await self._send(
                    "POST", image, f"blobs/{digest}", "push_blob", budget,
                    url=self._api_url(image, "blobs/uploads/"), scope=scope,
                    headers={"Content-Length": "0"},
                )  # fmt: skip
                session = resp.headers.get("Location")
                if not session:
                    raise ConfigurationError(
                        f"POST upload to {image.name}: no Location for the upload session",
                        reason=REGISTRY_REJECTED,
                    )
            base = httpx.URL(self._base_url(image) + "/")
            url = str(base.join(session).copy_add_param("digest", digest))
            await self._send(
                "PUT", image, f"blobs/{digest}", "push_blob", budget,
                url=url, scope=scope, content=content,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )  # fmt: skip

        await self._with_retries(f"upload blob {image.name}@{digest}", image.host, once)

    async def _download_blob(self, image: ImageRef, digest: str, out: Any) -> int:
        """Stream a blob into the file ``out``, checking its digest; returns its size."""
        algorithm = digest.partition(":")[0]
        hasher = hashlib.new(algorithm)
        size = 0
        async with self.open_blob(image, digest) as chunks:
            async for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                out.write(chunk)
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != digest:
            raise TransientError(
                f"GET blob {image.name}@{digest}: content hashes to {actual}",
                reason=DIGEST_MISMATCH,
            )
        return size

    async def _send(
        self,
        method: str,
        image: ImageRef,
        path: str,
        op: str,
        budget: _Budget,
        *,
        accept: str | None = None,
        max_bytes: int | None = None,
        url: str | None = None,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | Callable[[], bytes | AsyncIterator[bytes]] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request, authenticating as the registry asks; classify failures.

        Reads and writes alike. A 401 is answered at most once: with a fresh
        challenge and fresh credentials; a second 401 is a configuration
        problem. ``path`` names the object (for errors); ``url`` overrides
        where the request goes (an upload session's Location). A response is
        read whole (at most ``max_bytes``) unless ``stream``, when a
        successful one is returned unread and open: the caller closes it.
        ``content`` may be a factory, so the body can be sent again after a 401.
        """
        url = url or self._api_url(image, path)
        scope = scope or f"repository:{image.repository}:pull"
        authorization = await self._known_authorization(image, scope, budget)
        for retry_auth in (False, True):
            sent = {**({"Accept": accept} if accept else {}), **(headers or {})}
            if authorization:
                sent["Authorization"] = authorization
            body = content() if callable(content) else content
            try:
                resp = await self._open(method, url, sent, image, op, budget, content=body)
                if not stream or resp.status_code >= 300:
                    try:
                        if method == "HEAD":
                            resp._content = b""  # noqa: SLF001 - no body to read
                        else:
                            await _read_limited(
                                resp, max_bytes or MAX_MANIFEST_BYTES, what=url,
                                timeout=max(budget.remaining(), 0.05),
                            )  # fmt: skip
                    finally:
                        await resp.aclose()
            except httpx.TimeoutException as exc:
                raise TransientError(
                    f"{method} {_safe_url(url)}: timed out ({type(exc).__name__})",
                    reason=REGISTRY_TIMEOUT,
                ) from None
            except httpx.TransportError as exc:
                raise TransientError(
                    f"{method} {_safe_url(url)}: {type(exc).__name__}: {exc}",
                    reason=REGISTRY_UNAVAILABLE,
                ) from None
            log.debug("%s %s -> %s", method, _safe_url(url), resp.status_code)
            if resp.status_code != 401 or retry_auth:
                break
            challenge = _parse_challenge(resp.headers.get("WWW-Authenticate"))
            if challenge is None:
                break
            if authorization:
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
        self._raise_for_status(method, image, path, op, resp)
        return resp

    # -- plumbing ------------------------------------------------------------------------

    def _image(self, image: ImageRef | str) -> ImageRef:
        if isinstance(image, ImageRef):
            return image
        try:
            return parse_image(image)
        except InvalidImageReference as exc:
            raise ConfigurationError(str(exc), reason=INVALID_IMAGE_REFERENCE) from exc

    def _target(self, image: ImageRef | str, ref: str | None) -> tuple[ImageRef, str]:
        image = self._image(image)
        ref = ref or image.reference
        # Validate the tag or digest with the same grammar as references, so a
        # bad one never reaches a URL.
        self._image(f"{image.name}@{ref}" if ":" in ref else f"{image.name}:{ref}")
        return image, ref

    def _base_url(self, image: ImageRef) -> str:
        override = self._endpoints.get(image.host) or self._endpoints.get(image.api_host)
        if override:
            return override
        host = image.api_host
        scheme = "http" if _is_loopback(host) or host.lower() in self._insecure else "https"
        return f"{scheme}://{host}"

    async def _with_retries(
        self, what: str, host: str, once: Callable[[_Budget], Awaitable[Any]]
    ) -> Any:
        """Run ``once`` under the retry policy; count each failed attempt by reason."""
        policy = self.retry
        started = self._clock()
        budget = _Budget(started + policy.timeout, self._clock)
        backoff = _Backoff(policy, budget.deadline, self._clock)
        try:
            async for attempt in stamina.retry_context(
                on=backoff,
                attempts=policy.attempts,
                timeout=policy.timeout,
                wait_initial=policy.wait_initial,
                wait_max=policy.wait_max,
                wait_jitter=policy.wait_jitter,
            ):
                with attempt:
                    try:
                        return await once(budget)
                    except AdapterError as exc:
                        self.stats.errors[(host, exc.reason)] += 1
                        raise
        except TransientError as exc:
            tries = backoff.failures or 1
            raise TransientError(
                f"{what}: registry unavailable after {tries} attempt(s) in "
                f"{self._clock() - started:.1f}s; last error: {exc}",
                reason=REGISTRY_UNAVAILABLE,
                retry_after=exc.retry_after,
            ) from exc
        raise AssertionError("unreachable: stamina yields at least one attempt")

    async def _open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        image: ImageRef,
        op: str,
        budget: _Budget,
        content: Any = None,
    ) -> httpx.Response:
        """Send one request, unread; follow redirects only for blob GETs, by the rules.

        A redirect elsewhere, a loop (more than ``MAX_REDIRECTS`` hops) or a
        target that is neither https nor a configured mirror, or that is a
        loopback, link-local or metadata address, is ``InvalidRegistryResponse``.
        The ``Authorization`` header is dropped when the origin changes.
        """
        sent = dict(headers)
        origin = httpx.URL(url).netloc
        for _hop in range(MAX_REDIRECTS + 1):
            self.stats.requests[(image.host, op)] += 1
            request = self._http.build_request(
                method, url, headers=sent, content=content, timeout=budget.clip(self._timeout)
            )
            resp = await self._http.send(request, stream=True)
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECT_CODES or not location:
                return resp
            await resp.aclose()
            if not (method == "GET" and op == "get_blob"):
                raise ConfigurationError(
                    f"{method} {_safe_url(url)}: HTTP {resp.status_code} redirect refused "
                    "(redirects are followed only for blob downloads)",
                    reason=INVALID_REGISTRY_RESPONSE,
                )
            # httpx already refused a Location that does not parse (a transport error).
            target = httpx.URL(url).join(location)
            problem = self._outbound_problem(image, target, plain_http=False)
            if problem:
                raise ConfigurationError(
                    f"{method} {_safe_url(url)}: redirect to {_safe_url(str(target))} refused: "
                    f"{problem}",
                    reason=INVALID_REGISTRY_RESPONSE,
                )
            if target.netloc != origin:
                sent.pop("Authorization", None)
            url = str(target)
        raise ConfigurationError(
            f"{method} blob {image.name}: more than {MAX_REDIRECTS} redirects (a loop?)",
            reason=INVALID_REGISTRY_RESPONSE,
        )

    def _outbound_problem(self, image: ImageRef, url: httpx.URL, *, plain_http: bool) -> str:
        """Why the operator must not follow a registry to ``url`` (a realm or a redirect).

        A configured mirror is always allowed. Otherwise the scheme must be
        https (or http when ``plain_http``), and the host must not be a
        loopback, link-local or metadata address, unless it is the
        registry's own host: a registry someone else runs must not be able to
        point the operator at 169.254.169.254 or at its own pod's ports.
        """
        netloc = url.netloc.decode().lower()
        if netloc in self._mirrors:
            return ""
        if url.scheme != "https" and not (plain_http and url.scheme == "http"):
            return f"scheme {url.scheme or 'none'!r} is not https"
        own = httpx.URL(self._base_url(image)).host.lower()
        if _refused_address(url.host) and url.host.lower() != own:
            return "a loopback, link-local or metadata address"
        return ""

    def _raise_for_status(
        self,
        method: str,
        image: ImageRef,
        path: str,
        op: str,
        resp: httpx.Response,
    ) -> None:
        status = resp.status_code
        if status < 300:
            return
        kind, _, ref = path.partition("/")
        target = _display(image, ref) if kind == "manifests" else f"blob {image.name}@{ref}"
        codes, detail = _registry_errors(resp)
        what = f"{method} {target}: HTTP {status}" + (f" {detail}" if detail else "")
        error: AdapterError
        if status == 429:
            retry_after = _parse_retry_after(resp.headers.get("Retry-After"), time.time())
            error = TransientError(what, reason=REGISTRY_RATE_LIMITED, retry_after=retry_after)
        elif status >= 500 and status not in (501, 505):
            retry_after = _parse_retry_after(resp.headers.get("Retry-After"), time.time())
            error = TransientError(what, reason=REGISTRY_UNAVAILABLE, retry_after=retry_after)
        elif status == 408:
            error = TransientError(what, reason=REGISTRY_TIMEOUT)
        elif status == 401:
            hint = (
                "the credentials were refused"
                if image.host in self._hosts_with_credentials
                else f"no credentials are configured for {image.host}, and anonymous access "
                "was refused (the repository may not exist, or may be private)"
            )
            error = ConfigurationError(f"{what}: {hint}", reason=REGISTRY_AUTH_FAILED)
        elif status == 403:
            error = ConfigurationError(
                f"{what}: access denied to {image.name}", reason=REGISTRY_ACCESS_DENIED
            )
        elif status == 404:
            if "NAME_UNKNOWN" in codes:
                reason = REPOSITORY_NOT_FOUND
            elif "BLOB_UNKNOWN" in codes or op == "get_blob":
                reason = BLOB_NOT_FOUND
            else:
                reason = IMAGE_NOT_FOUND
            error = NotFoundError(what, reason=reason)
        elif status == 409:
            error = ConflictError(what)
        elif status == 400 and codes & {"NAME_INVALID", "TAG_INVALID", "DIGEST_INVALID"}:
            error = ConfigurationError(what, reason=INVALID_IMAGE_REFERENCE)
        else:
            error = ConfigurationError(what, reason=REGISTRY_REJECTED)
        raise error

    # -- authorization -----------------------------------------------------------------------

    async def _credentials_for(self, host: str) -> Credentials | None:
        provider = self._ecr if (self._ecr is not None and is_ecr_host(host)) else None
        creds = await provider.get(host) if provider is not None else None
        if creds is None and self._credentials is not None:
            creds = await self._credentials.get(host)
        if creds is not None:
            self._hosts_with_credentials.add(host)
        return creds

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
        params: list[tuple[str, str]] = []
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
            resp = await self._http.send(request, stream=True)
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


class _Budget:
    """The time left for one operation; clips each request's timeout to it."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def clip(self, timeout: httpx.Timeout) -> httpx.Timeout:
        # Never below a small floor: a request must get a chance to finish.
        left = max(self.remaining(), 0.05)

        def cap(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=cap(timeout.connect),
            read=cap(timeout.read),
            write=cap(timeout.write),
            pool=cap(timeout.pool),
        )


# -- helpers ---------------------------------------------------------------------------


async def _read_limited(
    resp: httpx.Response, max_bytes: int, *, what: str, timeout: float | None = None
) -> None:
    """Read the body into ``resp`` (so ``resp.content`` works), within bounds.

    The raw bytes are read (httpx would otherwise decompress without limit)
    and a ``Content-Encoding`` of gzip or deflate is decoded here, a chunk at
    a time, never past ``max_bytes`` of output. A success body over the cap
    is refused; an error body (status >= 300) is only for a message, so it is
    cut at ``MAX_ERROR_BYTES`` instead. ``timeout`` bounds the whole read, so
    a server that drips a byte at a time cannot hold the operation open past
    its budget.
    """
    error_body = resp.status_code >= 300
    limit = min(max_bytes, MAX_ERROR_BYTES) if error_body else max_bytes
    declared = resp.headers.get("Content-Length", "")
    if not error_body and declared.isdigit() and int(declared) > limit:
        raise ConfigurationError(
            f"{_safe_url(what)}: body of {declared} bytes exceeds the {limit}-byte limit",
            reason=INVALID_REGISTRY_RESPONSE,
        )
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        decoder = None
    elif encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif error_body:
        resp._content = b""  # noqa: SLF001 - an error body we cannot decode says nothing
        return
    else:
        raise ConfigurationError(
            f"{_safe_url(what)}: unsupported Content-Encoding {encoding[:40]!r}",
            reason=INVALID_REGISTRY_RESPONSE,
        )
    # The body goes into an anonymous mapping of the cap's size: only the pages
    # written are resident, and nothing is left on the heap to fragment it, so
    # an endless body or a bomb costs at most the cap.
    buffer = mmap.mmap(-1, max(limit, 1))
    size = 0
    too_big = False

    def keep(chunk: bytes) -> bool:
        """Add ``chunk``; False once the cap is passed (then nothing more is kept)."""
        nonlocal size, too_big
        if size + len(chunk) > limit:
            too_big = True
            if error_body:  # an error body is cut, not refused
                buffer.write(chunk[: limit - size])
                size = limit
            return False
        buffer.write(chunk)
        size += len(chunk)
        return True

    try:
        try:
            async with asyncio.timeout(timeout):
                async for raw in resp.aiter_raw():
                    if decoder is None:
                        if not keep(raw):
                            break
                        continue
                    # Decode a bounded piece at a time: a bomb's output never
                    # exists in memory beyond the cap plus one piece.
                    pending = raw
                    while pending and not too_big:
                        piece = decoder.decompress(pending, _READ_CHUNK)
                        pending = decoder.unconsumed_tail
                        keep(piece)
                    if too_big:
                        break
        except TimeoutError:
            raise TransientError(
                f"{_safe_url(what)}: body not received within the time budget "
                f"({size} bytes read)",
                reason=REGISTRY_TIMEOUT,
            ) from None
        except zlib.error:
            if not error_body:
                raise ConfigurationError(
                    f"{_safe_url(what)}: body is not valid {encoding}",
                    reason=INVALID_REGISTRY_RESPONSE,
                ) from None
            size = 0
        if too_big and not error_body:
            raise ConfigurationError(
                f"{_safe_url(what)}: body exceeds the {limit}-byte limit",
                reason=INVALID_REGISTRY_RESPONSE,
            )
        resp._content = buffer[:size]  # noqa: SLF001 - httpx's documented cache for .content
    finally:
        buffer.close()


def parse_document(body: bytes, *, what: str, kind: str = "manifest") -> dict[str, Any]:
    """A manifest, index or config as a JSON object whose fields have sane types.

    Raises ``ConfigurationError`` (``InvalidRegistryResponse``) naming what is
    wrong, for anything else: not UTF-8, not JSON, nested too deep, not an
    object, or a field this client reads with the wrong type (``annotations``
    not a string map, ``config`` not an object, ``manifests`` not a list of
    objects, a descriptor digest that is not a digest). The checks are those
    of what ``image_lineage`` and ``platform_digests`` read; unknown fields
    are left alone, as the OCI spec asks.
    """

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{what}: {kind} {problem}", reason=INVALID_REGISTRY_RESPONSE)

    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise bad("is not UTF-8") from None
    except RecursionError:
        raise bad("is nested too deeply") from None
    except ValueError as exc:
        # The decoder's message gives a position, never the text.
        raise bad(f"is not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise bad(f"is a JSON {type(doc).__name__}, not an object")

    def string_map(value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad(f"{where} is not a map of strings")

    def descriptor(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise bad(f"{where} is not an object")
        digest = value.get("digest")
        if digest is not None and not (isinstance(digest, str) and is_digest(digest)):
            raise bad(f"{where}.digest is not an algorithm:hex digest")
        string_map(value.get("annotations"), f"{where}.annotations")
        platform = value.get("platform")
        if platform is not None and (
            not isinstance(platform, dict)
            or not all(isinstance(v, str) for k, v in platform.items() if k != "os.features"
                       and k != "features")
        ):  # fmt: skip
            raise bad(f"{where}.platform is not an object of strings")

    if "mediaType" in doc and not isinstance(doc["mediaType"], str):
        raise bad("mediaType is not a string")
    if kind == "config":
        inner = doc.get("config")
        if inner is not None:
            if not isinstance(inner, dict):
                raise bad("config is not an object")
            string_map(inner.get("Labels"), "config.Labels")
        return doc
    string_map(doc.get("annotations"), "annotations")
    if "config" in doc:
        descriptor(doc["config"], "config")
    manifests = doc.get("manifests")
    if manifests is not None:
        if not isinstance(manifests, list):
            raise bad("manifests is not a list")
        for index, entry in enumerate(manifests):
            descriptor(entry, f"manifests[{index}]")
    return doc


def _check_digest(value: str, *, what: str) -> None:
    """A digest from a header: ``sha256:<64 hex>`` or ``sha512:<128 hex>``, or refused."""
    if not is_digest(value):
        raise ConfigurationError(
            f"{what} {value[:80]!r} is not an algorithm:hex digest",
            reason=INVALID_REGISTRY_RESPONSE,
        )


def _refused_address(host: str) -> bool:
    """True for loopback, link-local, unspecified and cloud metadata hosts."""
    name = host.strip("[]").lower().rstrip(".")
    if name in _METADATA_NAMES or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address in _METADATA_ADDRESSES
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    )


def _display(image: ImageRef, ref: str) -> str:
    """``name:tag`` or ``name@digest``, for messages."""
    return f"{image.name}@{ref}" if is_digest(ref) else f"{image.name}:{ref}"


def _safe_url(url: str) -> str:
    """A URL without its query: redirect targets (S3) carry signatures there."""
    return url.split("?", 1)[0]


def _media_type(resp: httpx.Response, body: bytes | None = None) -> str:
    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if (not media_type or media_type == "application/json") and body:
        # Some registries answer a generic type; the document names its own.
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (ValueError, AttributeError):
            pass
    return media_type


def _sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _registry_errors(resp: httpx.Response) -> tuple[set[str], str]:
    """(error codes, short detail) from a distribution error body, if any.

    Only ``code`` and ``message`` are quoted, never ``detail`` (it can echo
    the request).
    """
    if not resp.content:
        return set(), ""
    try:
        errors = resp.json().get("errors") or []
        if not isinstance(errors, list):
            return set(), ""
        codes = {str(e.get("code"))[:64] for e in errors[:20] if isinstance(e, dict)}
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        text = " ".join(str(first.get(k, ""))[:200] for k in ("code", "message")).strip()
        return codes, text[:200]
    except (ValueError, AttributeError, IndexError, TypeError, RecursionError):
        return set(), ""


def _platform_entries(index: Mapping[str, Any], *, what: str) -> list[tuple[str, dict]]:
    """(``os/arch[/variant]``, descriptor) for each image in an index, in order."""
    entries = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict) or not is_digest(str(entry.get("digest", ""))):
            continue
        platform = entry.get("platform") or {}
        os_, arch = platform.get("os"), platform.get("architecture")
        annotations = entry.get("annotations") or {}
        if (
            not os_
            or not arch
            or os_ == "unknown"
            or (annotations.get("vnd.docker.reference.type") == "attestation-manifest")
        ):
            continue
        key = f"{os_}/{arch}" + (f"/{platform['variant']}" if platform.get("variant") else "")
        entries.append((key, entry))
    if not entries:
        log.debug("%s: index lists no platform images", what)
    return entries


def _base_from(values: Any) -> tuple[str | None, str | None] | None:
    """(base name, base digest) from annotations or labels, if either is recorded.

    A recorded digest that is not ``algorithm:hex`` is not a digest: it is
    read as absent, so it is never compared with, or written as, one.
    """
    if not values or not isinstance(values, Mapping):
        return None
    name = values.get(ANNOTATION_BASE_NAME) or None
    digest = values.get(ANNOTATION_BASE_DIGEST) or None
    name = name if isinstance(name, str) and len(name) <= 1024 else None
    if digest is not None and not (isinstance(digest, str) and is_digest(digest)):
        log.debug("ignoring a recorded base digest that is not a digest: %.80r", digest)
        digest = None
    if name is None and digest is None:
        return None
    return name, digest


# -- write helpers (for the rebase strategy's section of RegistryClient) -------------------


async def _file_chunks(file: Any, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A (spooled temporary) file's content as an async body for httpx."""
    while chunk := file.read(size):
        yield chunk


async def _response_chunks(resp: httpx.Response, what: str) -> AsyncIterator[bytes]:
    """The exact bytes of a streamed response; a broken stream is transient."""
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.TimeoutException:
        raise TransientError(
            f"{what}: timed out while streaming", reason=REGISTRY_TIMEOUT
        ) from None
    except httpx.TransportError as exc:
        raise TransientError(
            f"{what}: {type(exc).__name__} while streaming", reason=REGISTRY_UNAVAILABLE
        ) from None
