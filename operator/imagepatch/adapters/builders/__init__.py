"""Rebuild strategies: turn an ImagePatch into a new image digest.

Every builder implements the same two calls, so the reconcile loop treats
them alike and records intent before each one:

* ``start(request) -> build_id``: begin the rebuild. It must be **idempotent
  on** ``request.key`` (repository, tag, source digest, target base
  digest and builder: ``core.rebuild.idempotency_key``): calling it again with the same
  key, e.g. after the operator was killed between starting a build and
  recording its id, returns the same build and never starts a second one
  (CodeBuild: ``idempotencyToken``; Job: a name derived from the key;
  external: nothing to start; rebase: a deterministic result). A build that
  exists already is **adopted only when its recorded key, tag and target**
  (``request.target``, where it pushes) **all match**: a build of another
  tag of the same repository is never this request's build, whatever its
  key says (a v0.2 key named no tag).
* ``poll(build_id, request) -> BuildStatus``: where it stands. ``Succeeded``
  carries the resulting image **digest** (resolved from the registry, never
  trusted from a log line); ``Failed`` carries the builder's own status and a
  reason. Polling never sleeps: the caller requeues.

Errors are the adapter kinds from ``adapters.errors``: a transient error
means "poll again later", a configuration error (no such project or
template, access denied) ends the patch as ``Failed`` with that reason.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Protocol

from imagepatch.core.images import InvalidImageReference, parse_image
from imagepatch.model.policy import KeyRef


class BuildState(enum.StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildRequest:
    """What to build. ``image``/``tag`` name where the result is pushed."""

    key: str  # "v2|<image>:<tag>|<current digest>|<target base digest>|<builder>"
    strategy: str  # codebuild | job | external | rebase
    image: str  # repository, host/repo, no tag
    tag: str  # the tag the workloads run, e.g. "1.4"
    current_digest: str  # the image being replaced
    base_name: str  # the base the image was built on, as recorded (host/repo:tag)
    base_digest: str  # the base digest to build on now (the new one)
    old_base_digest: str = ""  # the base digest the current image records
    revision: str = ""  # org.opencontainers.image.revision of the current image
    codebuild_project: str = ""
    job_template: str = ""  # a ConfigMap name in the operator's namespace
    started_at: dt.datetime | None = None
    timeout: dt.timedelta = dt.timedelta(hours=1)
    extra: dict[str, str] = field(default_factory=dict)
    # The tag to push the rebuild under (spec.rebuild.tagPolicy New: a new one
    # from the template, chosen by the reconciler); "" pushes over ``tag``.
    push_tag: str = ""
    # The policy the patch belongs to: the builder reads the registry with
    # that policy's credentials only (``RegistryClient.for_policy``).
    policy: str = ""
    # spec.rebuild.rebase.signingKey: the rebase signs what it pushes with it.
    signing_key: KeyRef | None = None

    @property
    def push_to(self) -> str:
        """The tag the rebuild is pushed under."""
        return self.push_tag or self.tag

    @property
    def target(self) -> str:
        """Where the rebuild is pushed: ``image:tag`` (the TARGET_IMAGE argument)."""
        return f"{self.image}:{self.push_to}"

    @property
    def base_image(self) -> str:
        """The base to build on, pinned: ``host/repo@sha256:…`` (the BASE_IMAGE argument), or ""."""
        if not (self.base_name and self.base_digest):
            return ""
        try:
            return parse_image(self.base_name).pinned(self.base_digest)
        except InvalidImageReference:
            return ""


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildStatus:
    state: BuildState
    build_id: str
    digest: str = ""  # with SUCCEEDED: the pushed image's digest
    builder_status: str = ""  # the builder's own words, e.g. IN_PROGRESS, SUCCEEDED, Failed
    reason: str = ""  # CamelCase, with FAILED: BuildFailed, BuildTimedOut, ...
    message: str = ""
    logs_url: str = ""


class Builder(Protocol):
    async def start(self, request: BuildRequest) -> str: ...

    async def poll(self, build_id: str, request: BuildRequest) -> BuildStatus: ...
