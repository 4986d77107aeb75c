"""The ``external`` rebuild strategy: wait for someone else's CI to push.

The operator starts nothing. It watches the rebuild's tag
(``request.target``: a new tag from the policy's template, which CI reads
from ``status.rebuild.tag`` with the base in ``status.rebuild.baseImage`` and
the revision in ``status.rebuild.revision``; the workload's own tag with
``tagPolicy: Overwrite``) in the registry until it points to a new digest
that was built on the target base, and takes that digest. Neighbours: the
reconciler calls ``start`` and ``poll`` like any other builder
(``adapters.builders``); the registry client (``adapters.registry``) answers
every question here.

An image counts as the rebuild when all of these hold:

* the tag resolves to a digest other than ``request.current_digest``;
* its recorded base digest (``image_lineage``: OCI annotations, then config
  labels) is ``request.base_digest``, **or** one of that base's platform
  manifest digests. buildah and BuildKit record the *platform* manifest
  digest when the base is a multi-arch index, while the operator tracks the
  index digest, so a plain equality would never match such an image.

The platform digests are read from the registry (by digest, so cached for
good) from ``request.base_name`` pinned to ``request.base_digest``. A caller
that already knows them may pass them instead, as comma-separated digests in
``request.extra["base_platforms"]``; then no lookup is made.

An image that records no base at all (its lineage is known only from the
workload's ``imagepatch.dev/base-image`` annotation) counts when its layers
start with the target base's layers (``lineage.base_by_layers``).

Nothing is adopted: the only push that counts is one under this request's
own target, ``image:<push tag>``, and the push tag is made from the running
tag (``{tag}`` in the template, or the tag itself with ``Overwrite``), so
CI's push of another tag of the repository (``app:2``'s rebuild, while this
waits for ``app:1``'s) is never taken; the id names the key and the target.

A push built on another base (say CI rebuilt from a stale cache on the old
base) is not accepted: the build stays ``Running`` and says why, until the
right image arrives or the deadline passes. The deadline is
``request.started_at + request.timeout`` on the injected clock; without
``started_at`` (the reconciler records it before starting) there is none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

from imagepatch.adapters.builders import (
    BuildRequest,
    BuildState,
    BuildStatus,
)
from imagepatch.adapters.builders.lineage import base_by_layers
from imagepatch.adapters.errors import NotFoundError
from imagepatch.adapters.registry import Lineage, RegistryClient
from imagepatch.core.images import InvalidImageReference, is_digest, parse_image
from imagepatch.core.reasons import BUILD_TIMED_OUT
from imagepatch.model.times import Clock, utcnow

__all__ = ["BASE_PLATFORMS_EXTRA", "BUILD_TIMED_OUT", "ExternalBuilder", "external_build_id"]

log = logging.getLogger(__name__)

BASE_PLATFORMS_EXTRA = "base_platforms"  # request.extra key: "sha256:…,sha256:…"


def external_build_id(key: str, target: str) -> str:
    """A stable id for the wait: the same key and target always give the same id."""
    return "external:" + hashlib.sha256(f"{key}|{target}".encode()).hexdigest()[:12]


class ExternalBuilder:
    """Waits for CI to push ``image:tag`` built on the target base."""

    def __init__(self, registry: RegistryClient, *, clock: Clock = utcnow) -> None:
        self._registry = registry
        self._clock = clock

    async def start(self, request: BuildRequest) -> str:
        # Nothing to start: CI builds on its own trigger (e.g. the base's push).
        return external_build_id(request.key, request.target)

    async def poll(self, build_id: str, request: BuildRequest) -> BuildStatus:
        target = request.target
        try:
            digest = await self._registry.for_policy(request.policy).resolve_digest(target)
        except NotFoundError:
            # The tag may be briefly absent while CI re-pushes it.
            digest = ""
        if not digest:
            waiting = f"{target} does not exist yet"
        elif digest == request.current_digest:
            waiting = f"{target} is still the current image {digest}"
        else:
            try:
                lineage = await self._registry.for_policy(request.policy).image_lineage(
                    f"{request.image}@{digest}"
                )
            except NotFoundError:
                # The tag moved on between the HEAD and this read; look again next poll.
                lineage = Lineage(None, None, None)
            built_on = await self._built_on_target(lineage, request, digest)
            if built_on:
                return BuildStatus(
                    state=BuildState.SUCCEEDED,
                    build_id=build_id,
                    digest=digest,
                    builder_status="Pushed",
                    message=f"{target} is now {digest}, built on {built_on}",
                )
            recorded = lineage.base_digest or "a base it does not record"
            waiting = (
                f"{target} is {digest}, built on {recorded}, not on the target base "
                f"{request.base_digest}"
            )
        if _timed_out(request, self._clock()):
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="TimedOut",
                reason=BUILD_TIMED_OUT,
                message=f"no image built on {request.base_digest} was pushed to {target} "
                f"within {request.timeout}: {waiting}",
            )
        return BuildStatus(
            state=BuildState.RUNNING,
            build_id=build_id,
            builder_status="Waiting",
            message=f"waiting for CI: {waiting}",
        )

    async def _built_on_target(self, lineage: Lineage, request: BuildRequest, digest: str) -> str:
        """The target base digest the push is built on (as recorded or by its layers), or ""."""
        recorded = lineage.base_digest
        if not request.base_digest:
            return ""
        if not recorded:
            return await self._built_on_by_layers(request, digest)
        if recorded == request.base_digest:
            return recorded
        given = request.extra.get(BASE_PLATFORMS_EXTRA)
        if given is not None:
            platforms = {d.strip() for d in given.split(",") if is_digest(d.strip())}
        else:
            platforms = await self._platform_digests(request, lineage)
        return recorded if recorded in platforms else ""

    async def _built_on_by_layers(self, request: BuildRequest, digest: str) -> str:
        # Lineage known only from the imagepatch.dev/base-image annotation: the
        # push records no base, so its layers must start with the target base's.
        try:
            base = parse_image(request.base_name).with_digest(request.base_digest)
            image = parse_image(request.image).with_digest(digest)
        except InvalidImageReference:
            return ""
        try:
            return await base_by_layers(self._registry.for_policy(request.policy), image, base)
        except NotFoundError:
            return ""

    async def _platform_digests(self, request: BuildRequest, lineage: Lineage) -> set[str]:
        # The recorded base name may be missing from the request (a human
        # made the ImagePatch); the new image's own record names it then.
        name = request.base_name or lineage.base_name
        if not name:
            return set()
        try:
            base = parse_image(name)
            pinned = base.pinned(request.base_digest)
        except InvalidImageReference:
            log.debug("base %r cannot be pinned to %s", name, request.base_digest)
            return set()
        try:
            registry = self._registry.for_policy(request.policy)
            return set((await registry.platform_digests(pinned)).values())
        except NotFoundError:
            # The target base is gone (tag deleted and garbage-collected):
            # nothing can be shown to be built on it.
            return set()


def _timed_out(request: BuildRequest, now: dt.datetime) -> bool:
    return request.started_at is not None and now - request.started_at > request.timeout
