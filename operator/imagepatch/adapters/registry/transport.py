"""How the registry client talks HTTP: one ``_send``, bounded, retried, classified.

``_Transport`` is the part of ``RegistryClient`` that every read and write
goes through. ``_send`` sends one request (authenticating up front from a
remembered challenge, and answering a 401 at most once through the auth
mixin), reads the body within its cap, and classifies the status
(``_raise_for_status``, ``adapters/errors.py``); ``_with_retries`` runs an
operation under a ``RetryPolicy``; ``_open`` follows redirects, only for blob
downloads and only to allowed targets.

What it gets right, because registries are someone else's servers:

* **Bounded retries.** 429, 5xx, timeouts and connection errors are retried
  with jittered exponential backoff (stamina) within a cap on attempts and on
  total time; ``Retry-After`` is a lower bound for the next wait, and a wait
  that would overrun the budget is not started. Then ``TransientError``
  (``RegistryUnavailable``) carries the server's hint up, and the reconciler
  requeues rather than sleeps.
* **Bounded time per host.** Each operation (with its retries) holds one
  of its host's ``--registry-max-in-flight`` slots and is one outcome for
  the host's circuit breaker (``gate.py``): a host that keeps failing is
  open for a cool-down, and calls to it fail fast (``RegistryCircuitOpen``).
* **Untrusted input, bounded.** Every body is read as raw bytes with a fixed
  cap (manifests and indexes 4 MiB as containerd does, configs 4 MiB, token
  and error bodies 64 KiB) and a total time budget (a slow drip ends with the
  operation's budget); a ``Content-Encoding`` is decoded here, incrementally,
  so a gzip bomb costs at most the cap. Redirects are followed only for blob
  GETs, at most ``MAX_REDIRECTS`` hops, and only to https or to a configured
  endpoint mirror.
* **Reach.** Every connection, to a registry, a realm (``auth.py``) or a
  redirect target, goes through ``reach.py``: the name is resolved once, the
  connection is refused when any address is not public (loopback,
  link-local with 169.254.169.254, private…) unless the admin allowed it, and
  the connection goes to the address that was checked. A realm or redirect
  whose host is such an address literally is refused before any request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import logging
import mmap
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import stamina

from imagepatch.adapters.errors import (
    BLOB_NOT_FOUND,
    IMAGE_NOT_FOUND,
    INVALID_IMAGE_REFERENCE,
    INVALID_REGISTRY_RESPONSE,
    REGISTRY_ACCESS_DENIED,
    REGISTRY_ADDRESS_REFUSED,
    REGISTRY_AUTH_FAILED,
    REGISTRY_CIRCUIT_OPEN,
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
from imagepatch.adapters.registry.gate import HostGate
from imagepatch.adapters.registry.reach import (
    AddressRefused,
    Reach,
    Resolver,
    guarded_transport,
)
from imagepatch.adapters.registry.stats import RequestStats
from imagepatch.core.images import ImageRef, InvalidImageReference, is_digest, parse_image

__all__ = ["MAX_CONFIG_BYTES", "MAX_MANIFEST_BYTES", "MAX_REDIRECTS", "RetryPolicy"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")  # what one attempt of a retried operation returns

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
# Names of cloud metadata services: never a realm or a redirect target, even
# before they are resolved (they resolve to 169.254.169.254, refused anyway).
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # per request, before budget clipping
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


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
        wait = min(p.wait_max, p.wait_initial * 2.0 ** min(self.failures - 1, 60) + jitter)
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


def _is_loopback(host: str) -> bool:
    if host.startswith("["):  # [::1]:5000
        name = host.split("]", 1)[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in _LOOPBACK_HOSTS or name.startswith("127.")


class _Transport:
    """HTTP for ``RegistryClient``: endpoints, one ``_send``, retries, classification."""

    def __init__(
        self,
        *,
        insecure_hosts: Iterable[str],
        endpoints: Mapping[str, str] | None,
        retry: RetryPolicy | None,
        timeout: float | httpx.Timeout,
        clock: Callable[[], float],
        stats: RequestStats | None,
        transport: httpx.AsyncBaseTransport | None,
        allow_networks: Iterable[str] = (),
        resolve: Resolver | None = None,
        gate: HostGate | None = None,
    ) -> None:
        self._insecure = frozenset(h.lower() for h in insecure_hosts)
        self._endpoints = {h: url.rstrip("/") for h, url in (endpoints or {}).items()}
        # Where a configured mirror lives: a realm or redirect there is allowed
        # whatever its scheme or address, because an admin named it.
        self._mirrors = frozenset(
            httpx.URL(url).netloc.decode().lower() for url in self._endpoints.values()
        )
        self.retry = retry or RetryPolicy()
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._clock = clock
        self.stats = stats or RequestStats()
        # Per host: at most N operations in flight, and a circuit breaker
        # (gate.py). Views (``for_policy``) share it: a host is one host.
        self.gate = gate or HostGate(clock=clock)
        # Admin-named mirrors and insecure hosts may be anywhere but metadata;
        # everything else must be public unless an allowed network says so.
        self.reach = Reach.configured(
            allow_networks=allow_networks, mirrors=self._endpoints.values(),
            insecure_hosts=self._insecure, resolve=resolve,
        )  # fmt: skip
        self._owns_http = True
        self._http = httpx.AsyncClient(
            timeout=self._timeout,
            transport=transport or guarded_transport(self.reach),
            # Redirects are followed by hand (``_open``): only for blob GETs,
            # which redirect to storage (S3 for ECR), and only to allowed targets.
            follow_redirects=False,
            headers={"User-Agent": "imagepatch"},
            trust_env=False,
        )

    async def aclose(self) -> None:
        if self._owns_http:  # a policy's view shares its parent's connections
            await self._http.aclose()

    if TYPE_CHECKING:
        # Supplied by the auth mixin (``auth._Auth``), which ``RegistryClient`` adds.
        async def _known_authorization(
            self, image: ImageRef, scope: str, budget: _Budget
        ) -> str | None: ...

        async def _answer_challenge(
            self,
            method: str,
            image: ImageRef,
            resp: httpx.Response,
            scope: str,
            sent: str | None,
            budget: _Budget,
        ) -> tuple[bool, str | None]: ...

        async def credential_scope(self, host: str) -> str: ...

        _hosts_with_credentials: set[str]

    def _blob_target(self, image: ImageRef | str, digest: str) -> tuple[ImageRef, str]:
        image = self._image(image)
        if not is_digest(digest):
            raise ConfigurationError(
                f"blob reference {digest!r} is not a digest", reason=INVALID_IMAGE_REFERENCE
            )
        return image, digest

    def _api_url(self, image: ImageRef, path: str) -> str:
        return f"{self._base_url(image)}/v2/{image.repository}/{path}"

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
            except AddressRefused as exc:
                raise ConfigurationError(
                    f"{method} {_safe_url(url)}: connection refused: {exc}",
                    reason=REGISTRY_ADDRESS_REFUSED,
                ) from None
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
            answered, authorization = await self._answer_challenge(
                method, image, resp, scope, authorization, budget
            )
            if not answered:
                break
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

    def endpoint(self, image: ImageRef) -> str:
        """Where requests for ``image`` go: two names with one endpoint are one registry
        (an admin's ``--registry-endpoint`` mapping; detection reads it to tell an alias
        of a recorded base from another base)."""
        return self._base_url(image)

    def _base_url(self, image: ImageRef) -> str:
        override = self._endpoints.get(image.host) or self._endpoints.get(image.api_host)
        if override:
            return override
        host = image.api_host
        scheme = "http" if _is_loopback(host) or host.lower() in self._insecure else "https"
        return f"{scheme}://{host}"

    async def _with_retries(
        self, what: str, host: str, once: Callable[[_Budget], Awaitable[_T]]
    ) -> _T:
        """Run ``once`` under the retry policy; count each failed attempt by reason.

        The whole operation, retries included, holds one of ``host``'s slots
        and is one outcome for its circuit breaker (``gate.py``); while the
        breaker is open it fails fast, without a request.
        """
        try:
            async with self.gate.operation(host):
                return await self._retried(what, host, once)
        except TransientError as exc:
            if exc.reason == REGISTRY_CIRCUIT_OPEN:
                self.stats.errors[(host, exc.reason)] += 1
                raise TransientError(f"{what}: {exc}", reason=exc.reason,
                                     retry_after=exc.retry_after) from None
            raise

    async def _retried(
        self, what: str, host: str, once: Callable[[_Budget], Awaitable[_T]]
    ) -> _T:
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
        for hop in range(MAX_REDIRECTS + 1):
            self.stats.requests[(image.host, op)] += 1
            request = self._http.build_request(
                method, url, headers=sent, content=content, timeout=budget.clip(self._timeout)
            )
            try:
                resp = await self._http.send(request, stream=True)
            except AddressRefused as exc:
                if not hop:
                    raise  # the registry's own address: ``_send`` says so
                raise ConfigurationError(
                    f"{method} blob {image.name}: redirect to {_safe_url(url)} refused: {exc}",
                    reason=INVALID_REGISTRY_RESPONSE,
                ) from None
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
        https (or http when ``plain_http``), and a host that is an address
        must be one ``self.reach`` allows (public, or in an allowed network):
        a registry someone else runs must not be able to point the operator
        at 169.254.169.254 or at its own pod's ports. A name is resolved and
        checked when the connection is made (``reach.py``).
        """
        netloc = url.netloc.decode().lower()
        if netloc in self._mirrors:
            return ""
        if url.scheme != "https" and not (plain_http and url.scheme == "http"):
            return f"scheme {url.scheme or 'none'!r} is not https"
        if url.host.lower().rstrip(".") in _METADATA_NAMES:
            return f"{url.host} is a cloud metadata service"
        port = url.port or (443 if url.scheme == "https" else 80)
        refused = self.reach.literal_refusal(url.host, port)
        return f"{url.host} is {refused}" if refused else ""

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


def _display(image: ImageRef, ref: str) -> str:
    """``name:tag`` or ``name@digest``, for messages."""
    return f"{image.name}@{ref}" if is_digest(ref) else f"{image.name}:{ref}"


def _safe_url(url: str) -> str:
    """A URL without its query: redirect targets (S3) carry signatures there."""
    return url.split("?", 1)[0]


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
