"""The ``codebuild:<project>`` rebuild strategy: AWS CodeBuild ``StartBuild``.

The project (its source, buildspec, role and registry login) is the team's;
the operator only starts a build of it with five environment overrides, and
reads the outcome. Neighbours: the reconciler calls ``start`` and ``poll``
(``adapters.builders``); ``adapters.registry`` confirms the pushed digest;
the AWS reasons, the error classification and the client conventions
(standard retry mode, an injectable endpoint, region and session) are those
of ``adapters.aws``, shared with ``adapters.findings``.

What the build receives (``environmentVariablesOverride``, PLAINTEXT):

* ``BASE_IMAGE``: the base pinned to the target digest, ``host/repo@sha256:…``
  (for ``docker build --build-arg BASE_IMAGE=$BASE_IMAGE``);
* ``TARGET_IMAGE``: where to push, ``image:tag``, and ``IMAGE_TAG``, its tag:
  a new tag from the policy's ``tagTemplate`` unless ``tagPolicy`` is
  ``Overwrite`` (``core.tags``);
* ``IMAGEPATCH_KEY``: the idempotency key (repository, tag, source digest,
  target base digest, builder);
* ``SOURCE_REVISION``: the revision the current image records (may be
  empty); it is also passed as ``sourceVersion`` when set, so the build
  checks out the code the running image was built from.

Idempotency. ``idempotencyToken`` is ``sha256(key|target)`` (64 hex,
CodeBuild's maximum), so a repeated ``StartBuild`` returns the same build,
but CodeBuild honours a token for five minutes only. An operator that was
down longer between starting a build and recording its id would start a
second one, so ``start`` first looks for a build of the request: the newest
page (up to 100) of ``ListBuildsForProject``, read with ``BatchGetBuilds``,
adopted only when the variables the build ran with match the request
exactly: ``IMAGEPATCH_KEY`` (repository, tag, source and base digests, builder),
``TARGET_IMAGE`` and ``IMAGE_TAG``. A build of another tag of the same
repository on the same base (which a v0.2 key, ``image|base digest``, did not
tell apart) is never adopted, so its exported digest is never rolled out to
this tag's workloads. ``poll`` checks the same of the build whose id is
recorded: a build that ran for another key or pushed elsewhere (one a v0.2
operator adopted) ends ``Failed``/``BuildMismatch``. This needs
``codebuild:ListBuildsForProject`` besides ``StartBuild`` and
``BatchGetBuilds``; ``StopBuild`` is used to stop a build past its deadline.

Outcome. ``SUCCEEDED`` → the digest the build exported as ``IMAGE_DIGEST``
(``exportedVariables`` in the buildspec), checked to exist in the registry,
else whatever ``image:tag`` resolves to now; it must differ from the current
digest (``NothingPushed``). ``FAILED``/``FAULT``/``STOPPED`` →
``BuildFailed``, ``TIMED_OUT`` → ``BuildTimedOut``, with the failing
phase's context (status code and message, truncated). ``logs_url`` is the
build's CloudWatch deep link. Past ``started_at + timeout`` on the injected
clock a running build is stopped and reported ``BuildTimedOut``.

Errors are classified once, by ``adapters.aws``'s classifier with CodeBuild's
own codes added here, with messages made of the operation, the error code and
the project name, never AWS's own text: a missing project is
``NotFoundError``/``CodeBuildProjectNotFound``, a full account is
``TransientError``/``AwsThrottled``, a denial is
``ConfigurationError``/``AwsAccessDenied``, throttling is retried by
botocore's standard mode and then ``TransientError``/``AwsThrottled``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import boto3

from imagepatch.adapters.aws import (
    AWS_THROTTLED,
    DEFAULT_MAX_ATTEMPTS,
    SERVER_CODES,
    ErrorRules,
    classified,
    client_config,
)
from imagepatch.adapters.builders import (
    BuildRequest,
    BuildState,
    BuildStatus,
)
from imagepatch.adapters.errors import (
    INVALID_IMAGE_REFERENCE,
    AdapterError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from imagepatch.adapters.registry import RegistryClient
from imagepatch.core.images import InvalidImageReference, is_digest, parse_image
from imagepatch.core.reasons import (
    BUILD_FAILED,
    BUILD_LOST,
    BUILD_MISMATCH,
    BUILD_TIMED_OUT,
    CODEBUILD_PROJECT_NOT_FOUND,
    CODEBUILD_PROJECT_NOT_SET,
    NOTHING_PUSHED,
)
from imagepatch.model.times import Clock, utcnow

__all__ = [
    "BUILD_FAILED",
    "BUILD_TIMED_OUT",
    "CODEBUILD_PROJECT_NOT_FOUND",
    "NOTHING_PUSHED",
    "CodeBuildBuilder",
    "idempotency_token",
]

log = logging.getLogger(__name__)



KEY_VARIABLE = "IMAGEPATCH_KEY"
TARGET_VARIABLE = "TARGET_IMAGE"
TAG_VARIABLE = "IMAGE_TAG"
_IDENTITY = (KEY_VARIABLE, TARGET_VARIABLE, TAG_VARIABLE)
DIGEST_VARIABLE = "IMAGE_DIGEST"  # exported by the buildspec, if it cares to
_FAILED_STATUSES = {"FAILED", "FAULT", "STOPPED"}
# A phase context message is the build's own words (a command line, an
# error); enough of it to act on, not a whole log.
_CONTEXT_LIMIT = 300
# One page of ListBuildsForProject, and BatchGetBuilds' maximum per call.
_LOOKBACK = 100


def idempotency_token(key: str, target: str) -> str:
    """``StartBuild``'s idempotencyToken for a build of ``key`` pushed to ``target``:
    sha256 hex, 64 characters. The target is part of it because CodeBuild answers a
    token it has seen with the build it started, whatever the other parameters say."""
    return hashlib.sha256(f"{key}|{target}".encode()).hexdigest()[:64]


def recorded_for(build: Mapping[str, Any]) -> dict[str, str]:
    """The identifying variables a build ran with: key, target and tag (absent ones left out)."""
    variables = (build.get("environment") or {}).get("environmentVariables") or ()
    return {
        str(v.get("name")): str(v.get("value"))
        for v in variables
        if v.get("name") in _IDENTITY and v.get("value") is not None
    }


def identity(request: BuildRequest) -> dict[str, str]:
    """What a build of ``request`` records: its key, where it pushes, and the tag."""
    return {
        KEY_VARIABLE: request.key,
        TARGET_VARIABLE: request.target,
        TAG_VARIABLE: request.push_to,
    }


class CodeBuildBuilder:
    """Starts and reads CodeBuild builds in one region.

    ``session`` defaults to a new ``boto3.Session`` (EKS Pod Identity or IRSA
    in a cluster); ``endpoint_url`` points the client elsewhere (moto in
    tests). The client is made on first use and shared (boto3 clients are
    thread-safe; making them is not, so it is serialised).
    """

    def __init__(
        self,
        registry: RegistryClient,
        region: str | None,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Clock = utcnow,
    ) -> None:
        self._registry = registry
        self._region = region
        self._endpoint_url = endpoint_url
        self._session = session
        self._clock = clock
        self._config = client_config(max_attempts)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 CodeBuild client (public so tests can stub or hook it)."""
        with self._lock:
            if self._client is None:
                with _classified("CreateClient", None, self._region):
                    if self._session is None:
                        self._session = boto3.Session()
                    self._client = self._session.client(
                        "codebuild",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
            return self._client

    # -- start -----------------------------------------------------------------------

    async def start(self, request: BuildRequest) -> str:
        project = request.codebuild_project
        if not project:
            raise ConfigurationError(
                "no CodeBuild project is named for the codebuild rebuild strategy",
                reason=CODEBUILD_PROJECT_NOT_SET,
            )
        params = start_build_params(request)
        return await asyncio.to_thread(self._start, project, request, params)

    def _start(self, project: str, request: BuildRequest, params: dict[str, Any]) -> str:
        existing = self._find_build(project, request)
        if existing:
            log.info("CodeBuild build %s already runs for %s", existing, request.key)
            return existing
        with _classified("StartBuild", project, self._region):
            build = self.client.start_build(**params)["build"]
        log.info("CodeBuild build %s started for %s", build["id"], request.key)
        return str(build["id"])

    def _find_build(self, project: str, request: BuildRequest) -> str | None:
        """A recent build of ``project`` made for ``request`` (same key, target and tag),
        newest first."""
        with _classified("ListBuildsForProject", project, self._region):
            ids = (
                self.client.list_builds_for_project(
                    projectName=project, sortOrder="DESCENDING"
                ).get("ids")
                or []
            )
        ids = ids[:_LOOKBACK]
        if not ids:
            return None
        with _classified("BatchGetBuilds", project, self._region):
            builds = self.client.batch_get_builds(ids=ids).get("builds") or []
        order = {build_id: i for i, build_id in enumerate(ids)}
        wanted = identity(request)
        for build in sorted(builds, key=lambda b: order.get(b.get("id"), len(order))):
            if recorded_for(build) == wanted:
                return str(build["id"])
        return None

    # -- poll ------------------------------------------------------------------------

    async def poll(self, build_id: str, request: BuildRequest) -> BuildStatus:
        project = request.codebuild_project or build_id.split(":", 1)[0]
        build = await asyncio.to_thread(self._get_build, build_id, project)
        if build is None:
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="NotFound",
                reason=BUILD_LOST,
                message=f"CodeBuild has no build {build_id}",
            )
        status = str(build.get("buildStatus") or "")
        logs_url = str((build.get("logs") or {}).get("deepLink") or "")
        # A build that says it ran for something else is not this request's build.
        # (One that records nothing is ours: its id was recorded when we started it;
        # moto, for one, drops the overrides.)
        differs = sorted(
            name for name, value in recorded_for(build).items() if identity(request)[name] != value
        )
        if differs:
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status=status or "IN_PROGRESS",
                reason=BUILD_MISMATCH,
                message=f"CodeBuild build {build_id} was not made for this rebuild: its "
                + ", ".join(differs)
                + f" differ from {request.key!r} pushed to {request.target}; its result is "
                "not used",
                logs_url=logs_url,
            )
        if status == "SUCCEEDED":
            return await self._succeeded(build_id, build, request, logs_url)
        if status in _FAILED_STATUSES or status == "TIMED_OUT":
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status=status,
                reason=BUILD_TIMED_OUT if status == "TIMED_OUT" else BUILD_FAILED,
                message=_failure_message(build_id, status, build.get("phases") or ()),
                logs_url=logs_url,
            )
        if request.started_at is not None and self._clock() - request.started_at > request.timeout:
            await asyncio.to_thread(self._stop, build_id, project)
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status=status or "IN_PROGRESS",
                reason=BUILD_TIMED_OUT,
                message=f"CodeBuild build {build_id} did not finish within {request.timeout}; "
                "it was asked to stop",
                logs_url=logs_url,
            )
        phase = build.get("currentPhase") or ""
        return BuildStatus(
            state=BuildState.RUNNING,
            build_id=build_id,
            builder_status=status or "IN_PROGRESS",
            message=f"CodeBuild build {build_id} is {status or 'IN_PROGRESS'}"
            + (f" in phase {phase}" if phase else ""),
            logs_url=logs_url,
        )

    def _get_build(self, build_id: str, project: str) -> dict[str, Any] | None:
        with _classified("BatchGetBuilds", project, self._region):
            builds = self.client.batch_get_builds(ids=[build_id]).get("builds") or []
        return next((b for b in builds if b.get("id") == build_id), None)

    def _stop(self, build_id: str, project: str) -> None:
        # Best effort: the timeout is the outcome either way, and CodeBuild's
        # own project timeout ends the build if this call is not allowed.
        try:
            with _classified("StopBuild", project, self._region):
                self.client.stop_build(id=build_id)
        except AdapterError as exc:
            log.warning("could not stop CodeBuild build %s: %s: %s", build_id, exc.reason, exc)

    async def _succeeded(
        self, build_id: str, build: Mapping[str, Any], request: BuildRequest, logs_url: str
    ) -> BuildStatus:
        target = request.target
        exported = {
            v.get("name"): v.get("value") for v in build.get("exportedEnvironmentVariables") or ()
        }
        reported = str(exported.get(DIGEST_VARIABLE) or "").strip()
        digest = ""
        if is_digest(reported):
            # Trust, but check: the digest must be in the repository.
            try:
                await self._registry.for_policy(request.policy).head_manifest(
                    f"{request.image}@{reported}"
                )
                digest = reported
            except NotFoundError:
                pass
            source = f"exported {DIGEST_VARIABLE}"
        else:
            try:
                digest = await self._registry.for_policy(request.policy).resolve_digest(target)
            except NotFoundError:
                digest = ""
            source = f"{target}"
        if not digest or digest == request.current_digest:
            seen = (
                f"{DIGEST_VARIABLE}={reported} is not in {request.image}"
                if is_digest(reported) and not digest
                else f"{target} is {'still ' + digest if digest else 'missing'}"
            )
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="SUCCEEDED",
                reason=NOTHING_PUSHED,
                message=f"CodeBuild build {build_id} succeeded but pushed nothing new: {seen}",
                logs_url=logs_url,
            )
        return BuildStatus(
            state=BuildState.SUCCEEDED,
            build_id=build_id,
            digest=digest,
            builder_status="SUCCEEDED",
            message=f"CodeBuild build {build_id} succeeded; {digest} (from {source})",
            logs_url=logs_url,
        )


def start_build_params(request: BuildRequest) -> dict[str, Any]:
    """The ``StartBuild`` parameters for ``request`` (pure)."""
    try:
        base = parse_image(request.base_name).pinned(request.base_digest)
    except InvalidImageReference as exc:
        raise ConfigurationError(
            f"cannot pin base {request.base_name!r} to {request.base_digest!r}: {exc}",
            reason=INVALID_IMAGE_REFERENCE,
        ) from None
    variables = {
        "BASE_IMAGE": base,
        TARGET_VARIABLE: request.target,
        TAG_VARIABLE: request.push_to,
        KEY_VARIABLE: request.key,
        "SOURCE_REVISION": request.revision,
    }
    params: dict[str, Any] = {
        "projectName": request.codebuild_project,
        "idempotencyToken": idempotency_token(request.key, request.target),
        "environmentVariablesOverride": [
            {"name": name, "value": value, "type": "PLAINTEXT"} for name, value in variables.items()
        ],
    }
    if request.revision:
        params["sourceVersion"] = request.revision
    return params


def _failure_message(build_id: str, status: str, phases: Any) -> str:
    """What failed, from the first phase that did not succeed, with its context."""
    verb = "was stopped" if status == "STOPPED" else f"ended {status}"
    for phase in phases:
        phase_status = phase.get("phaseStatus")
        if phase_status in (None, "SUCCEEDED"):
            continue
        contexts = [
            ": ".join(s for s in (c.get("statusCode"), c.get("message")) if s)
            for c in phase.get("contexts") or ()
        ]
        context = "; ".join(c for c in contexts if c)
        if len(context) > _CONTEXT_LIMIT:
            context = context[: _CONTEXT_LIMIT - 1] + "…"
        return (
            f"CodeBuild build {build_id} {verb} in phase {phase.get('phaseType')} "
            f"({phase_status})" + (f": {context}" if context else "")
        )
    return f"CodeBuild build {build_id} {verb}"


# -- error classification ------------------------------------------------------------

# What CodeBuild adds to adapters/aws.py's classification.
_RULES = ErrorRules(
    service_codes={
        "ResourceNotFoundException": lambda f: NotFoundError(
            f"CodeBuild {f.where} does not exist in {f.region or 'this region'}{f.suffix}",
            reason=CODEBUILD_PROJECT_NOT_FOUND,
        ),
        # Too many concurrent builds in the account: one will finish.
        "AccountLimitExceededException": lambda f: TransientError(
            f"{f.action} on {f.where}: the account's CodeBuild limit is reached "
            f"({f.code}){f.suffix}",
            reason=AWS_THROTTLED,
        ),
    },
    server_codes=SERVER_CODES | {"InternalFailure"},
    credentials_advice="check the IAM role of the operator's ServiceAccount",
    expired_advice="",
)


def _classified(
    operation: str, project: str | None, region: str | None
) -> AbstractContextManager[None]:
    """botocore's exceptions as adapter errors (see adapters/aws.py), about ``project``."""
    where = f"project {project!r}" if project else "CodeBuild"
    return classified(f"codebuild:{operation}", where, region, _RULES)
