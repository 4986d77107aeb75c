"""The registry client's reads, and the class that puts the package together.

``RegistryClient`` answers the operator's three registry questions cheaply
and correctly: which digest does a tag point to now (``resolve_digest``: for
a multi-arch image the **index** digest), what is an image built on
(``image_lineage``), and what are an index's platform manifests
(``platform_digests``). Lower-level reads (``head_manifest``,
``get_manifest``, ``get_blob``) are public for the rebase strategy and
verification; writes come from ``writes.py``, HTTP from ``transport.py``,
authentication from ``auth.py``.

* **Accept list.** Every manifest request sends ``MANIFEST_ACCEPT``
  (``core/oci.py``): OCI index, OCI manifest, Docker manifest list and Docker v2.
* **Digests are checked.** A GET body must hash to the requested digest and
  to ``Docker-Content-Digest``; anything else is ``DigestMismatch``. Every
  digest read from a header or a document is checked (algorithm, hex,
  length); a document that is not the JSON object its media type says is
  refused with ``InvalidRegistryResponse`` (``parse_document``), never an
  unclassified exception.
* **Immutable reads are cached** (``cache.py``); reads by tag never are.
  Each entry is keyed by the credentials it was read with
  (``credential_scope``): a manifest one team read with its login is never
  served to a workload of another team that merely names its digest.
* **Per policy.** ``for_policy(P)`` is this client as policy P's workloads
  use it: P's Secret only, P's own tokens, the same connections and cache.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import httpx

from imagepatch.adapters.errors import (
    DIGEST_MISMATCH,
    INVALID_IMAGE_REFERENCE,
    INVALID_REGISTRY_RESPONSE,
    REGISTRY_REJECTED,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from imagepatch.adapters.registry.auth import _Auth
from imagepatch.adapters.registry.cache import _LRU, DEFAULT_CACHE_BYTES
from imagepatch.adapters.registry.credentials import CredentialProvider
from imagepatch.adapters.registry.gate import DEFAULT_MAX_IN_FLIGHT, HostGate
from imagepatch.adapters.registry.reach import Resolver
from imagepatch.adapters.registry.stats import RequestStats
from imagepatch.adapters.registry.transport import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_TIMEOUT,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    RetryPolicy,
    _Budget,
    _display,
    _sha256,
)
from imagepatch.adapters.registry.writes import _Writes
from imagepatch.core.breaker import BreakerSettings
from imagepatch.core.images import ImageRef, is_digest
from imagepatch.core.oci import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    ANNOTATION_CREATED,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    OCI_INDEX,
)
from imagepatch.model.times import parse_time

__all__ = ["Lineage", "Manifest", "ManifestInfo", "RegistryClient", "parse_document"]

log = logging.getLogger(__name__)


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
        # get_manifest refused anything but a JSON object (parse_document).
        doc: dict[str, Any] = json.loads(self.body)
        return doc


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

class PolicyCredentialSource(Protocol):
    """Where each policy's credentials come from (``PolicySecrets``)."""

    def for_policy(self, policy: str) -> CredentialProvider: ...


class RegistryClient(_Writes, _Auth):
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
    * ``cache_bytes``: budget of the digest cache in bytes (0 turns it off).
    * ``clock``: monotonic seconds, for token expiry and budgets.
    * ``policy_credentials``: each policy's credentials (``PolicySecrets``);
      then ``for_policy(P)`` reads with P's only, and this client itself
      with ``credentials`` (None in the operator: anonymous and ECR).
    * ``allow_networks``: non-public networks (CIDRs) the client may reach
      (``reach.py``); mirrors and insecure hosts are allowed by being named.
      ``resolve`` replaces the system resolver (tests of the rule).
    * ``max_in_flight``: operations in flight per registry host at most;
      ``breaker``: when a host's circuit breaker opens and for how long
      (``gate.py``, ``core/breaker.py``). Shared by every ``for_policy`` view.
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
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        clock: Callable[[], float] = time.monotonic,
        stats: RequestStats | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        policy_credentials: PolicyCredentialSource | None = None,
        allow_networks: Iterable[str] = (),
        resolve: Resolver | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        breaker: BreakerSettings | None = None,
    ) -> None:
        super().__init__(
            insecure_hosts=insecure_hosts, endpoints=endpoints, retry=retry, timeout=timeout,
            clock=clock, stats=stats, transport=transport, allow_networks=allow_networks,
            resolve=resolve,
            gate=HostGate(max_in_flight=max_in_flight, breaker=breaker, clock=clock),
        )  # fmt: skip
        self._init_auth(credentials, ecr)
        self._cache = _LRU(cache_bytes)
        self._max_blob_bytes = max_blob_bytes
        self._policy_credentials = policy_credentials
        self._views: dict[str, RegistryClient] = {}
        self.policy: str | None = None  # the policy a view reads for

    def for_policy(self, policy: str) -> RegistryClient:
        """This client as workloads under ``policy`` use it: only that policy's credentials.

        The view shares connections, the digest cache (keyed by credentials)
        and the stats, and has its own tokens and remembered challenges.
        Without ``policy_credentials`` (one set of credentials for everyone:
        tests, the CLI) it is this client itself.
        """
        if self._policy_credentials is None:
            return self
        view = self._views.get(policy)
        if view is None:
            view = copy.copy(self)
            view._init_auth(self._policy_credentials.for_policy(policy), self._ecr)
            view._owns_http = False
            view._policy_credentials = None
            view._views = {}
            view.policy = policy
            self._views[policy] = view
        return view

    def retain_policies(self, policies: Iterable[str]) -> None:
        """Forget the views (and their tokens) of policies that no longer exist."""
        keep = set(policies)
        for gone in [p for p in self._views if p not in keep]:
            del self._views[gone]

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- public API ----------------------------------------------------------------------

    async def head_manifest(self, image: ImageRef | str, ref: str | None = None) -> ManifestInfo:
        """Digest, media type and size of a manifest or index, by tag or digest.

        A HEAD by digest is answered from the cache once known.
        """
        image, ref = self._target(image, ref)
        scope = await self.credential_scope(image.host)
        if is_digest(ref):
            cached = self._cache.get((scope, "manifest", image.api_host, image.repository, ref))
            if cached is not None:
                self.stats.cache_hits[(image.host, "head_manifest")] += 1
                body, media_type = cached
                return ManifestInfo(ref, media_type, len(body))
            known: ManifestInfo | None = self._cache.get(
                (scope, "head", image.api_host, image.repository, ref)
            )
            if known is not None:
                self.stats.cache_hits[(image.host, "head_manifest")] += 1
                return known

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
            self._cache.put((scope, "head", image.api_host, image.repository, ref), info)
        return info

    async def get_manifest(self, image: ImageRef | str, ref: str | None = None) -> Manifest:
        """The exact bytes, media type and digest of a manifest or index.

        The body is checked against the requested digest (for a digest ref)
        and against ``Docker-Content-Digest``. Reads by digest are cached; a
        read by tag goes to the registry every time (and primes the cache for
        the digest it found).
        """
        image, ref = self._target(image, ref)
        key = (await self.credential_scope(image.host), "manifest", image.api_host,
               image.repository)  # fmt: skip
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
        key = (await self.credential_scope(image.host), "blob", image.api_host,
               image.repository, digest)  # fmt: skip
        cached: bytes | None = self._cache.get(key)
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

    async def referrers(self, image: ImageRef | str, digest: str) -> dict[str, Any] | None:
        """The OCI 1.1 referrers index of ``digest`` (``GET /v2/<repo>/referrers/<digest>``).

        None when the registry has no referrers API (a 404, or a refusal of
        the path, as distribution v2 answers): the caller then reads the
        referrers tag schema's ``sha256-<hex>`` tag. Never cached: referrers
        are added after the image is pushed.
        """
        image, digest = self._target(image, digest)
        _check_digest(digest, what=f"referrers of {image.name}")
        what = f"GET referrers of {image.name}@{digest}"

        async def once(budget: _Budget) -> dict[str, Any] | None:
            resp = await self._send(
                "GET", image, f"referrers/{digest}", "referrers", budget,
                accept=OCI_INDEX, max_bytes=MAX_MANIFEST_BYTES,
            )  # fmt: skip
            return parse_document(resp.content, what=what)

        try:
            return await self._with_retries(what, image.host, once)
        except NotFoundError:
            return None
        except ConfigurationError as exc:
            if exc.reason == REGISTRY_REJECTED:
                return None
            raise

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

    async def image_created(self, image: ImageRef | str) -> dt.datetime | None:
        """When the registry says ``image`` was created, or None if it does not say.

        For ``spec.baseImages.approveAfter`` (core/approval.py). Read in order:
        the ``org.opencontainers.image.created`` annotation of the manifest
        (for an index: of the index, then of its linux/amd64, else first,
        entry and that manifest), then the image config's ``created``. Read
        by digest, so cached for good; an unreadable time reads as None.
        """
        image = self._image(image)
        digest = image.digest or await self.resolve_digest(image)
        manifest = await self.get_manifest(image, digest)
        what = f"{image.name}@{manifest.digest}"
        doc = parse_document(manifest.body, what=what)
        if manifest.media_type in INDEX_TYPES:
            if created := _created(doc.get("annotations")):
                return created
            entries = _platform_entries(doc, what=str(image))
            if not entries:
                return None
            chosen = dict(entries).get("linux/amd64") or entries[0][1]
            if created := _created(chosen.get("annotations")):
                return created
            manifest = await self.get_manifest(image, chosen["digest"])
            what = f"{image.name}@{manifest.digest}"
            doc = parse_document(manifest.body, what=what)
        if manifest.media_type not in IMAGE_MANIFEST_TYPES:
            return None
        if created := _created(doc.get("annotations")):
            return created
        config_digest = doc["config"].get("digest") if "config" in doc else None
        if not config_digest:
            return None
        config = parse_document(
            await self.get_blob(image, config_digest, max_bytes=MAX_CONFIG_BYTES),
            what=f"{what} config",
            kind="config",
        )
        return parse_time(config.get("created"))


def _created(annotations: Any) -> dt.datetime | None:
    """The ``org.opencontainers.image.created`` annotation as a time, if readable."""
    if not isinstance(annotations, Mapping):
        return None
    return parse_time(annotations.get(ANNOTATION_CREATED))


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


def _verify_body(body: bytes, *, expected: str, what: str) -> None:
    _check_digest(expected, what=f"{what}: expected digest")
    algorithm, _, _ = expected.partition(":")
    actual = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    if actual != expected:
        raise TransientError(
            f"{what}: content hashes to {actual}, not {expected}", reason=DIGEST_MISMATCH
        )


def _media_type(resp: httpx.Response, body: bytes | None = None) -> str:
    media_type: str = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if (not media_type or media_type == "application/json") and body:
        # Some registries answer a generic type; the document names its own.
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (ValueError, AttributeError):
            pass
    return media_type


def _platform_entries(index: Mapping[str, Any], *, what: str) -> list[tuple[str, dict[str, Any]]]:
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
