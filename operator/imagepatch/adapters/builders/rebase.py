"""The ``rebase`` rebuild strategy: swap the base layers in the registry, no build.

Opt-in (``imagepatch.dev/rebuild: rebase``), for images whose own layers do
not depend on the base's contents. ``core.rebase`` decides and computes the
new config and manifest; this module reads the inputs, checks the bytes,
moves blobs and pushes. Neighbours: the reconciler calls ``start`` and
``poll`` like any other builder (``adapters.builders``); every registry call
goes through ``adapters.registry.RegistryClient`` (its writes,
``adapters/registry/writes.py``, were added for this module).

**Idempotency.** ``start`` does no I/O: it returns ``rebase:<hash>`` of the
idempotency key, the current digest, the old base digest and the push
target, so a restart
between starting and recording the id gets the same id. ``poll`` does the
work, in one call: the result is a pure function of three immutable inputs
(app, old base and new base, all read by digest) and is serialized
deterministically, so every poll, before or after a restart, computes the same
bytes and the same digest; pushing them again is harmless (blobs are checked
with a HEAD before any upload, the manifest PUT is of identical bytes). There
is never a second, different result for one key. Nothing is adopted: the
result is computed from this request's own running image
(``image@current_digest``), and a push tag that points to any other image
(another tag's rebuild included) is refused (``TagMoved``, step 5).

What ``poll`` does:

1. Read the app (``request.image@request.current_digest``), the old base
   (``base_name``'s repository at ``old_base_digest``) and the new base (at
   ``base_digest``); the base name and old digest come from the image's own
   record when the request lacks them. A base that cannot be read is refused:
   ``OldBaseNotFound`` (its layer count and history are what tell the base's
   layers from the app's; a copy already read by digest is as good, being
   content-addressed) or ``NewBaseNotFound``.
2. Single image: a base that is an index is resolved to the app's platform
   (buildah records the *platform* digest of a multi-arch base). An index is
   rebased per platform, and only onto indexes (``core.rebase.plan_index``);
   when the recorded old base is one platform manifest (an app index without
   index annotations: lineage falls back to its amd64 manifest), each
   platform's old base is the digest that platform's manifest records.
3. ``core.rebase.rebase_image`` validates and computes (refusals: see there).
4. Every layer of the result is made present in the app's repository
   (cross-repository mount from the base's repository, else a copy) and then
   read back **from the app's repository** and checked: the blob's sha256 and
   size against its descriptor, the gunzipped tar's sha256 against its
   diff_id. Checked (digest, diff_id) pairs are remembered, since blobs are
   immutable. The config blob is pushed.
5. The push tag (``request.push_to``: a new tag unless the policy says
   ``tagPolicy: Overwrite``) must not exist yet, or already point to the
   result (then it is not PUT again: immutable tags refuse even that), or,
   with ``Overwrite``, still point to the current image: a tag someone moved
   on is not overwritten (``TagMoved``). Then the manifest (for an index:
   each platform manifest by digest, then the index) is pushed under it, and
   the build has ``Succeeded`` with the new digest.
6. With ``spec.rebuild.rebase.signingKey``, the new digest is signed as
   cosign signs (``adapters.signatures.Signer``: a ``sha256-<hex>.sig``
   manifest), so a policy that requires signatures accepts the operator's own
   rebuilds; a key that cannot sign fails the build ``SigningFailed``.

Refusals end the build ``Failed`` with reason ``RebaseRefused`` (the precise
refusal in ``builder_status``), except a missing old base: ``OldBaseNotFound``.
A transient registry error propagates (the reconciler polls again) until
``started_at + timeout``, then the build fails with ``BuildTimedOut``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from imagepatch.adapters.builders import (
    BuildRequest,
    BuildState,
    BuildStatus,
)
from imagepatch.adapters.errors import (
    INVALID_IMAGE_REFERENCE,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from imagepatch.adapters.registry import Manifest, RegistryClient
from imagepatch.adapters.signatures import Signer
from imagepatch.core.images import ImageRef, InvalidImageReference, is_digest, parse_image
from imagepatch.core.oci import ANNOTATION_BASE_DIGEST
from imagepatch.core.reasons import (
    BASE_UNKNOWN,
    BUILD_TIMED_OUT,
    INCONSISTENT_IMAGE,
    INDEX_MISMATCH,
    LAYER_NOT_FOUND,
    NEW_BASE_NOT_FOUND,
    OLD_BASE_NOT_FOUND,
    PLATFORM_MISMATCH,
    REBASE_REFUSED,
    SIGNING_FAILED,
    TAG_MOVED,
)
from imagepatch.core.rebase import (
    Image,
    Layer,
    LayerDigester,
    PlatformPlan,
    RebasedImage,
    RebaseRefused,
    check_image,
    index_platforms,
    is_index,
    plan_index,
    platform_of,
    rebase_image,
    rebase_index,
    repin,
    select_platform,
)
from imagepatch.model.times import Clock, utcnow

__all__ = [
    "BASE_UNKNOWN",
    "LAYER_NOT_FOUND",
    "NEW_BASE_NOT_FOUND",
    "OLD_BASE_NOT_FOUND",
    "REBASE_REFUSED",
    "TAG_MOVED",
    "RebaseBuilder",
    "RebaseOutcome",
    "VerifiedImage",
    "rebase_build_id",
    "verify_image",
]

log = logging.getLogger(__name__)



_VERIFIED_MAX = 4096  # (blob digest, diff_id) pairs remembered as checked
_DIGEST_STEP = 1024 * 1024  # bytes handed to the layer check per worker-thread call


def rebase_build_id(request: BuildRequest) -> str:
    """The same inputs always give the same id (no I/O)."""
    text = f"{request.key}|{request.current_digest}|{request.old_base_digest}|{request.target}"
    return "rebase:" + hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RebaseOutcome:
    """What a rebase pushed."""

    digest: str
    media_type: str
    platforms: tuple[str, ...]
    notes: tuple[str, ...] = ()  # config values that followed the new base
    blobs: dict[str, int] = field(default_factory=dict)  # exists / mounted / copied
    dropped: tuple[str, ...] = ()  # index entries left out (attestations)


@dataclass(frozen=True)
class VerifiedImage:
    """An image that passed ``verify_image``."""

    digest: str
    media_type: str
    platforms: tuple[str, ...]
    layers: int  # layer checks made (each distinct blob once)


class _Verified:
    """Bounded memory of layer blobs already checked against a diff_id."""

    def __init__(self, max_entries: int = _VERIFIED_MAX) -> None:
        self.max_entries = max_entries
        self._data: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def add(self, key: tuple[str, str]) -> None:
        self._data[key] = None
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


async def _check_layer(
    registry: RegistryClient, repo: ImageRef, layer: Layer, verified: _Verified | None
) -> bool:
    """Stream ``layer`` from ``repo`` and check its bytes; False if already known good."""
    key = (layer.digest, layer.diff_id)
    if verified is not None and key in verified:
        return False
    digester = LayerDigester(layer.descriptor, layer.diff_id)
    pending: list[bytes] = []
    size = 0
    try:
        async with registry.open_blob(repo, layer.digest) as chunks:
            async for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                if size >= _DIGEST_STEP:
                    # Hashing and inflating a big layer must not stall the loop.
                    await asyncio.to_thread(digester.update, b"".join(pending))
                    pending, size = [], 0
    except NotFoundError:
        raise RebaseRefused(
            LAYER_NOT_FOUND, f"layer {layer.digest} is not in {repo.name}"
        ) from None
    if pending:
        await asyncio.to_thread(digester.update, b"".join(pending))
    digester.verify()
    if verified is not None:
        verified.add(key)
    return True


async def _read_image(
    registry: RegistryClient, repo: ImageRef, manifest: Manifest, what: str
) -> Image:
    doc = manifest.json()
    config_digest = str((doc.get("config") or {}).get("digest", ""))
    if not is_digest(config_digest):
        raise RebaseRefused(INCONSISTENT_IMAGE, f"{what}: manifest has no config digest")
    config = json.loads(await registry.get_blob(repo, config_digest))
    return Image(manifest.digest, manifest.media_type, doc, config, what=what)


async def verify_image(
    registry: RegistryClient, image: ImageRef | str, *, verified: _Verified | None = None
) -> VerifiedImage:
    """The project's consistency check of an image **as it is in the registry**.

    For each platform image (one, or every platform of an index): the
    manifest, config and layer media types are one family, the layers,
    diff_ids and non-empty history entries agree in number, the index entry's
    platform is the config's, and every layer blob hashes to its digest and
    size and, uncompressed, to its diff_id. Raises ``RebaseRefused``.
    """
    ref = image if isinstance(image, ImageRef) else _parse(image, "image")
    repo = ImageRef(ref.host, ref.repository)
    top = await registry.get_manifest(ref)
    if is_index(top.media_type):
        entries = index_platforms(top.json(), what=f"{ref.name}@{top.digest}")
        targets = [(platform, str(e["digest"])) for platform, e in entries.items()]
    else:
        targets = [("", top.digest)]
    local = verified if verified is not None else _Verified()
    checked = 0
    platforms = []
    for platform, digest in targets:
        manifest = top if digest == top.digest else await registry.get_manifest(repo, digest)
        img = await _read_image(registry, repo, manifest, f"{ref.name}@{digest}")
        check_image(img)
        actual = platform_of(img.config)
        if platform and actual != platform:
            raise RebaseRefused(
                PLATFORM_MISMATCH, f"{img.what}: listed as {platform}, its config says {actual}"
            )
        platforms.append(actual)
        diff_ids = img.config["rootfs"]["diff_ids"]
        for descriptor, diff_id in zip(img.manifest["layers"], diff_ids, strict=True):
            if await _check_layer(registry, repo, Layer(descriptor, diff_id, False), local):
                checked += 1
    return VerifiedImage(top.digest, top.media_type, tuple(platforms), checked)


class RebaseBuilder:
    """Rebases ``request.image@request.current_digest`` onto ``request.base_digest``."""

    def __init__(
        self, registry: RegistryClient, *, clock: Clock = utcnow, signer: Signer | None = None
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._verified = _Verified()
        self._signer = signer

    async def start(self, request: BuildRequest) -> str:
        # The work is deterministic and done by poll: nothing to start.
        return rebase_build_id(request)

    async def poll(self, build_id: str, request: BuildRequest) -> BuildStatus:
        try:
            outcome = await self.rebase(request)
            signed = await self._sign(request, outcome.digest)
        except RebaseRefused as exc:
            log.warning("rebase of %s refused: %s: %s", request.image, exc.reason, exc)
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status=exc.reason,
                reason=exc.reason if exc.reason in (OLD_BASE_NOT_FOUND, SIGNING_FAILED)
                else REBASE_REFUSED,
                message=f"{exc.reason}: {exc.message}",
            )
        except TransientError as exc:
            if request.started_at is not None and (
                self._clock() - request.started_at > request.timeout
            ):
                return BuildStatus(
                    state=BuildState.FAILED,
                    build_id=build_id,
                    builder_status="TimedOut",
                    reason=BUILD_TIMED_OUT,
                    message=f"the rebase did not complete within {request.timeout}: {exc}",
                )
            raise
        moved = ", ".join(f"{n} {how}" for how, n in sorted(outcome.blobs.items()) if n)
        message = (
            f"{request.target} is now {outcome.digest}, rebased onto "
            f"{request.base_digest} ({', '.join(outcome.platforms)}; layers: {moved or 'none'})"
        )
        if outcome.notes:
            message += "; " + "; ".join(dict.fromkeys(outcome.notes))
        if signed:
            message += f"; signed with {signed}"
        return BuildStatus(
            state=BuildState.SUCCEEDED,
            build_id=build_id,
            digest=outcome.digest,
            builder_status="Pushed",
            message=message,
        )

    async def _sign(self, request: BuildRequest, digest: str) -> str:
        """Sign the pushed ``digest`` with the policy's rebase signing key; the key's name.

        '' when the policy names no key. A key that cannot sign (missing
        Secret, not a P-256 PEM, KMS refusing) fails the build
        ``SigningFailed``; a transient error is retried by the next poll (the
        rebase itself is then found done, and signing is idempotent).
        """
        key = request.signing_key
        if key is None:
            return ""
        if self._signer is None:
            raise RebaseRefused(SIGNING_FAILED, "this operator has no signer configured")
        app = _repo(request.image, "image")
        try:
            await self._signer.sign_and_push(
                self._registry.for_policy(request.policy), app, digest, key
            )
        except ConfigurationError as exc:
            raise RebaseRefused(SIGNING_FAILED, f"{key.describe()}: {exc}") from None
        return key.describe()

    async def rebase(self, request: BuildRequest) -> RebaseOutcome:
        """Do the rebase and push it; raises ``RebaseRefused`` or an adapter error.

        Every read and write is made with the credentials of the patch's
        policy (``RegistryClient.for_policy``), never another team's.
        """
        scoped = self._registry.for_policy(request.policy)
        if scoped is not self._registry:
            builder = RebaseBuilder(scoped, clock=self._clock)
            builder._verified = self._verified  # noqa: SLF001 - content-addressed: shared
            return await builder.rebase(request)
        registry = self._registry
        app = _repo(request.image, "image")
        if not is_digest(request.current_digest):
            raise ConfigurationError(
                f"rebase of {app.name}: no current digest to rebase",
                reason=INVALID_IMAGE_REFERENCE,
            )
        if not is_digest(request.base_digest):
            raise RebaseRefused(BASE_UNKNOWN, f"rebase of {app.name}: no target base digest")
        app_top = await registry.get_manifest(app, request.current_digest)
        base_name, old_digest = request.base_name, request.old_base_digest
        if not base_name or not old_digest:
            lineage = await registry.image_lineage(app.with_digest(request.current_digest))
            base_name = base_name or lineage.base_name or ""
            old_digest = old_digest or lineage.base_digest or ""
        if not base_name or not is_digest(old_digest):
            raise RebaseRefused(
                BASE_UNKNOWN,
                f"{app.name}@{request.current_digest} records no base name and digest, and the "
                "request names none: its base layers cannot be identified",
            )
        base = _repo(base_name, "base")
        old_top = await _read_base(registry, base, old_digest, "old base", OLD_BASE_NOT_FOUND)
        new_top = await _read_base(
            registry, base, request.base_digest, "new base", NEW_BASE_NOT_FOUND
        )
        name = repin(base_name, request.base_digest)

        results: dict[str, RebasedImage] = {}
        if is_index(app_top.media_type):
            old_doc, old_type = old_top.json(), old_top.media_type
            if not is_index(old_type) and is_index(new_top.media_type):
                # The app's record named one platform's base (an index app's
                # lineage falls back to its amd64 manifest): each platform
                # manifest records its own old base, as buildah writes it.
                old_doc = await self._recorded_bases(app, app_top)
                old_type = app_top.media_type
            plans = plan_index(
                app_top.json(), app_top.media_type,
                old_doc, old_type,
                new_top.json(), new_top.media_type,
            )  # fmt: skip
            for plan in plans:
                app_img = await _read_image(
                    registry, app, await registry.get_manifest(app, plan.app_digest),
                    f"app ({plan.platform})",
                )  # fmt: skip
                old_img = await self._base_image(base, plan.old_base_digest, "old base", plan)
                new_img = await self._base_image(base, plan.new_base_digest, "new base", plan)
                results[plan.app_digest] = rebase_image(app_img, old_img, new_img, base_name=name)
        else:
            app_img = await _read_image(registry, app, app_top, "app")
            platform = platform_of(app_img.config)
            old_img = await self._platform_image(base, old_top, platform, "old base")
            new_img = await self._platform_image(base, new_top, platform, "new base")
            results[app_top.digest] = rebase_image(app_img, old_img, new_img, base_name=name)

        # Every layer present in the app's repository, then checked there.
        blobs: collections.Counter[str] = collections.Counter()
        done: set[str] = set()
        for result in results.values():
            for layer in result.layers:
                if layer.digest in done:
                    continue
                done.add(layer.digest)
                if layer.from_base:
                    try:
                        how = await registry.mount_or_copy_blob(app, layer.digest, source=base)
                    except NotFoundError:
                        raise RebaseRefused(
                            LAYER_NOT_FOUND,
                            f"new base layer {layer.digest} is not in {base.name}",
                        ) from None
                    blobs[how] += 1
                await _check_layer(registry, app, layer, self._verified)
            await registry.push_blob(app, result.config_bytes)

        if is_index(app_top.media_type):
            index = rebase_index(
                app_top.json(), app_top.media_type, results,
                base_digest=request.base_digest, base_name=name,
            )  # fmt: skip
            digest, media_type, body, dropped = (
                index.digest,
                index.media_type,
                index.body,
                index.dropped,
            )
        else:
            only = results[app_top.digest]
            digest, media_type, body, dropped = (
                only.digest,
                only.media_type,
                only.manifest_bytes,
                (),
            )

        already_there = await self._check_tag(app, request, digest)
        if is_index(media_type):
            for result in results.values():
                await registry.put_manifest(
                    app, result.digest, result.manifest_bytes, result.media_type
                )
        if not already_there:
            # Never PUT a tag again, even to the same digest: an immutable ECR
            # repository refuses that (ImageTagAlreadyExistsException).
            await registry.put_manifest(app, request.push_to, body, media_type)
        log.info(
            "rebased %s@%s onto %s: %s:%s is now %s",
            app.name, request.current_digest, request.base_digest, app.name, request.push_to,
            digest,
        )  # fmt: skip
        return RebaseOutcome(
            digest=digest,
            media_type=media_type,
            platforms=tuple(r.platform for r in results.values()),
            notes=tuple(n for r in results.values() for n in r.notes),
            blobs=dict(blobs),
            dropped=dropped,
        )

    async def _recorded_bases(self, app: ImageRef, app_top: Manifest) -> dict[str, Any]:
        """An "old base index" of what each platform manifest of the app records."""
        entries = []
        for platform, entry in index_platforms(app_top.json(), what="app index").items():
            manifest = await self._registry.get_manifest(app, str(entry["digest"]))
            recorded = (manifest.json().get("annotations") or {}).get(ANNOTATION_BASE_DIGEST)
            if not recorded or not is_digest(str(recorded)):
                raise RebaseRefused(
                    INDEX_MISMATCH,
                    f"the app's {platform} manifest records no base digest, and the app index "
                    "names no base index: its old base cannot be identified",
                )
            entries.append({"digest": recorded, "platform": entry.get("platform")})
        return {"schemaVersion": 2, "manifests": entries}

    async def _base_image(
        self, base: ImageRef, digest: str, what: str, plan: PlatformPlan
    ) -> Image:
        reason = OLD_BASE_NOT_FOUND if what == "old base" else NEW_BASE_NOT_FOUND
        label = f"{what} ({plan.platform})"
        manifest = await _read_base(self._registry, base, digest, label, reason)
        return await _read_image(self._registry, base, manifest, label)

    async def _platform_image(
        self, base: ImageRef, top: Manifest, platform: str, what: str
    ) -> Image:
        if not is_index(top.media_type):
            return await _read_image(self._registry, base, top, what)
        digest = select_platform(top.json(), platform, what=f"{what} index {top.digest}")
        reason = OLD_BASE_NOT_FOUND if what == "old base" else NEW_BASE_NOT_FOUND
        manifest = await _read_base(self._registry, base, digest, f"{what} ({platform})", reason)
        return await _read_image(self._registry, base, manifest, f"{what} ({platform})")

    async def _check_tag(self, app: ImageRef, request: BuildRequest, digest: str) -> bool:
        """Whether the push tag already points to ``digest``; refused if to another image."""
        try:
            info = await self._registry.head_manifest(app, request.push_to)
        except NotFoundError:
            return False
        if info.digest == digest:
            return True
        if info.digest != request.current_digest or request.push_to != request.tag:
            raise RebaseRefused(
                TAG_MOVED,
                f"{app.name}:{request.push_to} now points to {info.digest}, not to the image "
                f"being rebased ({request.current_digest}); it is not overwritten",
            )
        return False


def _parse(name: str, what: str) -> ImageRef:
    try:
        return parse_image(name)
    except InvalidImageReference as exc:
        raise ConfigurationError(f"{what}: {exc}", reason=INVALID_IMAGE_REFERENCE) from exc


def _repo(name: str, what: str) -> ImageRef:
    ref = _parse(name, what)
    return ImageRef(ref.host, ref.repository)


async def _read_base(
    registry: RegistryClient, base: ImageRef, digest: str, what: str, reason: str
) -> Manifest:
    try:
        return await registry.get_manifest(base, digest)
    except NotFoundError:
        raise RebaseRefused(
            reason,
            f"the {what} {base.name}@{digest} is not in the registry"
            + (
                ": without its layer count and history the app's own layers cannot be told "
                "apart from the base's"
                if reason == OLD_BASE_NOT_FOUND
                else ""
            ),
        ) from None
