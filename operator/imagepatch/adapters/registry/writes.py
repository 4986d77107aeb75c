"""What the registry client writes: blobs and manifests, for the rebase strategy.

``_Writes`` is the part of ``RegistryClient`` that ``adapters/builders/rebase.py``
uses to assemble an image from blobs already in a registry (and tests use to
check what it pushed). Reads ask for the ``pull`` scope; writes ask for
``pull,push`` on the target (and ``pull`` on a mount's source repository).
They go through the same ``_send`` as reads (``transport.py``), so they share
authentication (remembered challenges, cached tokens, credential providers),
endpoints, retries and error classification; a write adds a scope, a full URL
(upload sessions hand one out), a request body and an optionally streamed
response. Operation names in ``stats``: ``head_blob``, ``push_blob``,
``mount_blob``, ``get_blob`` (streamed reads too), ``put_manifest``.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from imagepatch.adapters.errors import (
    DIGEST_MISMATCH,
    REGISTRY_REJECTED,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from imagepatch.adapters.registry.cache import _LRU
from imagepatch.adapters.registry.transport import (
    _Budget,
    _display,
    _response_chunks,
    _sha256,
    _Transport,
)
from imagepatch.core.images import ImageRef, is_digest


class _Writes(_Transport):
    """Blob and manifest writes, and streamed blob reads, for ``RegistryClient``."""

    _cache: _LRU  # the client's digest cache: a pushed manifest primes it

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
        scope = await self.credential_scope(image.host)  # pushed with these credentials
        self._cache.put((scope, "manifest", image.api_host, image.repository, digest),
                        (body, media_type))  # fmt: skip
        return digest

    # write plumbing

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


async def _file_chunks(file: Any, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A (spooled temporary) file's content as an async body for httpx."""
    while chunk := file.read(size):
        yield chunk
