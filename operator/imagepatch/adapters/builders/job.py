"""The ``job:<template>`` rebuild strategy: a Kubernetes Job made from a template.

An admin writes the build once, as a ConfigMap in the **build namespace**
(``--build-namespace``, default ``imagepatch-builds``: never the operator's
own namespace unless the admin says so) whose ``job.yaml`` key holds a
``batch/v1`` Job (buildah, Kaniko, BuildKit: see
``deploy/examples/buildah-job-template.yaml``). For each rebuild this
module fills in the placeholders, creates the Job, and later reads its
outcome and the pushed digest. Neighbours: the reconciler calls ``start``
and ``poll`` (``adapters.builders``); ``adapters.kube`` supplies the API
client and classifies API errors; ``adapters.registry`` resolves the digest.

Placeholders, replaced in every string *value* of the parsed manifest:

* ``${BASE_IMAGE}``: the base pinned to the target digest,
  ``host/repo@sha256:…``, so the build cannot pick up a later base by tag;
* ``${TARGET_IMAGE}``: where to push, ``image:tag``: a new tag from the
  policy's ``tagTemplate`` unless ``tagPolicy`` is ``Overwrite``;
* ``${REVISION}``: the source revision the current image records (may be
  empty);
* ``${KEY}``: the build's idempotency key.

Substituting into parsed values, not the YAML text, means a value (a
revision comes from an image label, which anyone who can push may set) can
never add YAML structure. Only these four exact spellings are replaced, so a
shell script's own ``$VAR``, ``${VAR}`` and ``$$`` pass through unchanged.
The template must use ``${BASE_IMAGE}`` and ``${TARGET_IMAGE}``: a build that
ignores either cannot produce the rebuild. Templates should hand the values
to the build through ``env`` and quote them in scripts (``"$REVISION"``): a
placeholder written into script text would run whatever a pushed label says.

Idempotency: the Job's name is derived from the key
(``imagepatch-build-<10 hex of sha256(key)>``), so a second ``start`` with
the same key, e.g. after the operator was killed before recording the build
id, finds the Job (or gets AlreadyExists) instead of creating another. The
build id is the Job's name. The key (repository, tag, source and base
digests, builder) is too long for a label, so the label holds its hash
(``imagepatch.dev/build-key-hash``) and annotations hold the full key, the
tag it rebuilds and the target it pushes to (``imagepatch.dev/build-key``,
``build-tag``, ``build-target``). A Job found by name is adopted only when
all three match the request: a Job made for another tag (a v0.2 Job, whose
key named no tag), for another push target, or by someone else is refused
(``JobNameTaken``), never taken for this build. ``poll`` checks the same of
the recorded Job (what a Job records differently ends the build
``BuildMismatch``; a v0.2 Job records no tag or target, and its poll reads
this request's own target anyway).

Outcome: ``Complete`` → the tag's digest, which must differ from the
current one (a build that pushed nothing is ``Failed``/``NothingPushed``);
``Failed`` → ``BuildFailed`` (``BuildTimedOut`` for ``DeadlineExceeded``)
naming the failed pod and its container's exit code and reason; still
running past ``started_at + timeout`` → the Job is deleted (background
propagation, so its pods go too) and the build is ``BuildTimedOut``.

Defaults the template may override: ``activeDeadlineSeconds`` is set to the
request's timeout, so Kubernetes stops a stuck build even if the operator is
down; ``ttlSecondsAfterFinished`` is a day, so finished Jobs do not pile up
(the operator polls far more often than that).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import yaml

from imagepatch.adapters.builders import (
    BuildRequest,
    BuildState,
    BuildStatus,
)
from imagepatch.adapters.errors import (
    INVALID_IMAGE_REFERENCE,
    ConfigurationError,
    ConflictError,
    NotFoundError,
)
from imagepatch.adapters.kube import CALL_ERRORS, Kube, classify
from imagepatch.adapters.kubeapi import CORE, path
from imagepatch.adapters.registry import RegistryClient
from imagepatch.core.images import InvalidImageReference, parse_image
from imagepatch.core.reasons import (
    BUILD_FAILED,
    BUILD_LOST,
    BUILD_MISMATCH,
    BUILD_TIMED_OUT,
    JOB_NAME_TAKEN,
    JOB_TEMPLATE_INVALID,
    JOB_TEMPLATE_NOT_FOUND,
    NOTHING_PUSHED,
)
from imagepatch.model import names
from imagepatch.model.times import Clock, parse_time_strict, utcnow

# Builds run apart from the operator: a build pod needs the baseline Pod Security
# level (see deploy/examples/buildah-job-template.yaml), the operator's namespace
# enforces restricted and holds its Secrets.
DEFAULT_BUILD_NAMESPACE = "imagepatch-builds"

__all__ = [
    "BUILD_FAILED",
    "BUILD_LOST",
    "BUILD_TIMED_OUT",
    "JOB_NAME_TAKEN",
    "JOB_TEMPLATE_INVALID",
    "JOB_TEMPLATE_NOT_FOUND",
    "KEY_HASH_LABEL",
    "NOTHING_PUSHED",
    "TEMPLATE_KEY",
    "JobBuilder",
    "job_name",
    "render_job",
]

log = logging.getLogger(__name__)



TEMPLATE_KEY = "job.yaml"
NAME_PREFIX = "imagepatch-build-"
KEY_HASH_LABEL = names.BUILD_KEY_HASH_LABEL
KEY_ANNOTATION = names.BUILD_KEY_ANNOTATION
TAG_ANNOTATION = names.BUILD_TAG_ANNOTATION
TARGET_ANNOTATION = names.BUILD_TARGET_ANNOTATION
MANAGED_BY = {"app.kubernetes.io/managed-by": "imagepatch"}
REQUIRED_PLACEHOLDERS = ("${BASE_IMAGE}", "${TARGET_IMAGE}")
DEFAULT_TTL_AFTER_FINISHED = 24 * 3600


def key_hash(key: str) -> str:
    # 10 hex digits (40 bits): short enough for a readable name, and a
    # collision is still caught (the Job's key annotation is compared).
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def job_name(key: str) -> str:
    return NAME_PREFIX + key_hash(key)


def identity(request: BuildRequest) -> dict[str, str]:
    """The annotations that say what a build Job was made for: key, tag, target."""
    return {
        KEY_ANNOTATION: request.key,
        TAG_ANNOTATION: request.tag,
        TARGET_ANNOTATION: request.target,
    }


def differences(job: Mapping[str, Any], request: BuildRequest, *, legacy_ok: bool) -> list[str]:
    """The annotations of ``job`` that do not match ``request`` (missing ones count
    unless ``legacy_ok``: a v0.2 Job records only its key)."""
    recorded = (job.get("metadata") or {}).get("annotations") or {}
    optional = (TAG_ANNOTATION, TARGET_ANNOTATION) if legacy_ok else ()
    return [
        name
        for name, value in identity(request).items()
        if recorded.get(name) != value and not (name in optional and name not in recorded)
    ]


def placeholders(request: BuildRequest) -> dict[str, str]:
    try:
        base = parse_image(request.base_name).pinned(request.base_digest)
    except InvalidImageReference as exc:
        raise ConfigurationError(
            f"cannot pin base {request.base_name!r} to {request.base_digest!r}: {exc}",
            reason=INVALID_IMAGE_REFERENCE,
        ) from None
    return {
        "${BASE_IMAGE}": base,
        "${TARGET_IMAGE}": request.target,
        "${REVISION}": request.revision,
        "${KEY}": request.key,
    }


def _substitute(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in values.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    return value


def render_job(
    template_text: str, request: BuildRequest, *, namespace: str, where: str
) -> dict[str, Any]:
    """The Job to create for ``request`` from a ``job.yaml`` template (pure)."""

    def invalid(problem: str) -> ConfigurationError:
        return ConfigurationError(f"job template {where}: {problem}", reason=JOB_TEMPLATE_INVALID)

    try:
        doc = yaml.safe_load(template_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise invalid(f"{TEMPLATE_KEY} is not valid YAML{at}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Job":
        raise invalid(f"{TEMPLATE_KEY} must hold one object of kind Job")
    if doc.get("apiVersion") != "batch/v1":
        raise invalid("the Job's apiVersion must be batch/v1")
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    if not isinstance(pod.get("containers"), list) or not pod["containers"]:
        raise invalid("spec.template.spec.containers is missing")
    for placeholder in REQUIRED_PLACEHOLDERS:
        if placeholder not in template_text:
            raise invalid(f"it never uses {placeholder}, so it cannot build the new image")

    job: dict[str, Any] = _substitute(doc, placeholders(request))
    name = job_name(request.key)
    old_meta = job.get("metadata") or {}
    labels = {**(old_meta.get("labels") or {}), KEY_HASH_LABEL: key_hash(request.key), **MANAGED_BY}
    job["metadata"] = {
        # Only what an admin may usefully set survives; name, namespace,
        # generateName, uid, resourceVersion are ours to decide.
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {**(old_meta.get("annotations") or {}), **identity(request)},
    }
    spec = job["spec"]
    spec.setdefault("activeDeadlineSeconds", max(int(request.timeout.total_seconds()), 1))
    spec.setdefault("ttlSecondsAfterFinished", DEFAULT_TTL_AFTER_FINISHED)
    pod_meta = spec["template"]["metadata"] = dict(spec["template"].get("metadata") or {})
    pod_meta["labels"] = {
        **(pod_meta.get("labels") or {}),
        KEY_HASH_LABEL: key_hash(request.key),
        **MANAGED_BY,
    }
    return job


class JobBuilder:
    """Runs rebuilds as Jobs in ``namespace``, the build namespace, from templates there."""

    def __init__(
        self,
        kube: Kube,
        registry: RegistryClient,
        namespace: str,
        clock: Clock = utcnow,
    ) -> None:
        self._api = kube.api
        self._request_timeout = kube.request_timeout  # as every call of adapters.kube
        self._registry = registry
        self._namespace = namespace
        self._clock = clock

    async def start(self, request: BuildRequest) -> str:
        name = job_name(request.key)
        # Look first: a Job already made for this key is the build, even if
        # the template has changed or gone since.
        existing = await self._read_job(name)
        if existing is not None:
            return self._same_build(existing, request)
        body = await self._render(request)
        try:
            await self._call(f"create Job {self._namespace}/{name}", "POST", self._jobs(), body)
        except ConflictError:
            # AlreadyExists: another start of the same key won the race.
            existing = await self._read_job(name)
            if existing is None:  # created and deleted in between: let the caller retry
                raise
            return self._same_build(existing, request)
        except ConfigurationError as exc:
            if exc.reason == "Invalid":  # 422 from the API server: the template's fault
                raise ConfigurationError(
                    f"job template {self._where(request)}: {exc}", reason=JOB_TEMPLATE_INVALID
                ) from None
            raise
        log.info("build Job %s/%s created for %s", self._namespace, name, request.key)
        return name

    async def poll(self, build_id: str, request: BuildRequest) -> BuildStatus:
        job = await self._read_job(build_id)
        if job is None:
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="NotFound",
                reason=BUILD_LOST,
                message=f"Job {self._namespace}/{build_id} no longer exists: it was deleted "
                "before its outcome was read",
            )
        differs = differences(job, request, legacy_ok=True)
        if differs:
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="Mismatch",
                reason=BUILD_MISMATCH,
                message=f"Job {self._namespace}/{build_id} was not made for this rebuild: "
                f"its {', '.join(differs)} differ from {request.key!r} pushed to "
                f"{request.target}; its result is not used",
            )
        status = job.get("status") or {}
        finished = {
            c.get("type"): c for c in status.get("conditions") or () if c.get("status") == "True"
        }
        if "Complete" in finished:
            return await self._pushed(build_id, request)
        if "Failed" in finished:
            condition = finished["Failed"]
            timed_out = condition.get("reason") == "DeadlineExceeded"
            detail = await self._failure_detail(job)
            said = condition.get("message") or condition.get("reason") or "failed"
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="Failed",
                reason=BUILD_TIMED_OUT if timed_out else BUILD_FAILED,
                message=f"Job {self._namespace}/{build_id} failed: {said}; {detail}",
            )
        started = request.started_at or parse_time_strict(
            (job.get("metadata") or {}).get("creationTimestamp")
        )
        if started is not None and self._clock() - started > request.timeout:
            await self._call(
                f"delete Job {self._namespace}/{build_id}", "DELETE", self._jobs(build_id),
                {"propagationPolicy": "Background"}, missing_ok=True,
            )
            log.info("build Job %s/%s deleted after its timeout", self._namespace, build_id)
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="Deleted",
                reason=BUILD_TIMED_OUT,
                message=f"Job {self._namespace}/{build_id} did not finish within "
                f"{request.timeout}; it was deleted",
            )
        active = int(status.get("active") or 0)
        return BuildStatus(
            state=BuildState.RUNNING,
            build_id=build_id,
            builder_status="Active" if active else "Pending",
            message=f"Job {self._namespace}/{build_id}: {active} pod(s) active",
        )

    # -- helpers ---------------------------------------------------------------------

    async def _pushed(self, build_id: str, request: BuildRequest) -> BuildStatus:
        target = request.target
        try:
            digest = await self._registry.for_policy(request.policy).resolve_digest(target)
        except NotFoundError:
            digest = ""
        if not digest or digest == request.current_digest:
            found = f"is still {digest}" if digest else "does not exist"
            return BuildStatus(
                state=BuildState.FAILED,
                build_id=build_id,
                builder_status="Complete",
                reason=NOTHING_PUSHED,
                message=f"Job {self._namespace}/{build_id} completed but {target} {found}: "
                "the build pushed nothing new",
            )
        return BuildStatus(
            state=BuildState.SUCCEEDED,
            build_id=build_id,
            digest=digest,
            builder_status="Complete",
            message=f"Job {self._namespace}/{build_id} completed; {target} is {digest}",
        )

    async def _failure_detail(self, job: Mapping[str, Any]) -> str:
        """Which pod failed and how: exit code and reason of its first failed container.

        The container's termination *message* is left out: it is whatever
        the build wrote, and may quote a credential.
        """
        name = job["metadata"]["name"]
        selector = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels") or {
            "job-name": name
        }
        data = await self._call(
            f"list pods of Job {self._namespace}/{name}", "GET",
            path(CORE, "v1", "pods", namespace=self._namespace),
            params={"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())},
        )
        pods = sorted(
            (data or {}).get("items") or (),
            key=lambda p: p["metadata"].get("creationTimestamp") or "",
            reverse=True,
        )
        for pod in pods:
            status = pod.get("status") or {}
            for cs in [
                *(status.get("initContainerStatuses") or ()),
                *(status.get("containerStatuses") or ()),
            ]:
                terminated = (cs.get("state") or {}).get("terminated") or (
                    cs.get("lastState") or {}
                ).get("terminated")
                if terminated and terminated.get("exitCode", 0) != 0:
                    pod_name, container = pod["metadata"]["name"], cs.get("name")
                    why = terminated.get("reason") or "no reason given"
                    return (
                        f"pod {pod_name} container {container} exited with code "
                        f"{terminated.get('exitCode')} ({why}); "
                        f"see kubectl logs -n {self._namespace} {pod_name} -c {container}"
                    )
        if pods:
            pod = pods[0]
            phase = (pod.get("status") or {}).get("phase")
            return f"pod {pod['metadata']['name']} is {phase}; no container exited non-zero"
        return "none of its pods remain to say why"

    async def _render(self, request: BuildRequest) -> dict[str, Any]:
        where = self._where(request)
        if not request.job_template:
            raise ConfigurationError(
                "no job template is named for the job rebuild strategy",
                reason=JOB_TEMPLATE_NOT_FOUND,
            )
        config_map = await self._call(
            f"get ConfigMap {where}", "GET",
            path(CORE, "v1", "configmaps", namespace=self._namespace, name=request.job_template),
            missing_ok=True,
        )
        if config_map is None:
            raise ConfigurationError(
                f"job template ConfigMap {where} does not exist: create it with a "
                f"{TEMPLATE_KEY!r} key holding the build Job",
                reason=JOB_TEMPLATE_NOT_FOUND,
            )
        text = (config_map.get("data") or {}).get(TEMPLATE_KEY)
        if not text:
            raise ConfigurationError(
                f"job template ConfigMap {where} has no {TEMPLATE_KEY!r} key",
                reason=JOB_TEMPLATE_INVALID,
            )
        return render_job(text, request, namespace=self._namespace, where=where)

    def _same_build(self, job: Mapping[str, Any], request: BuildRequest) -> str:
        meta = job.get("metadata") or {}
        differs = differences(job, request, legacy_ok=False)
        if differs:
            # A Job of that name made for another key (a 40-bit hash
            # collision, a v0.2 key naming no tag), for another target, or by
            # someone else: never mistake it for ours.
            raise ConfigurationError(
                f"Job {self._namespace}/{meta.get('name')} exists but was not made for "
                f"{request.key!r} pushed to {request.target} (its {', '.join(differs)} "
                "differ); delete it to let the rebuild start",
                reason=JOB_NAME_TAKEN,
            )
        name: str = meta["name"]
        return name

    def _where(self, request: BuildRequest) -> str:
        return f"{self._namespace}/{request.job_template}"

    async def _read_job(self, name: str) -> dict[str, Any] | None:
        return await self._call(f"get Job {self._namespace}/{name}", "GET", self._jobs(name),
                                missing_ok=True)

    def _jobs(self, name: str | None = None) -> str:
        return path("batch", "v1", "jobs", namespace=self._namespace, name=name)

    async def _call(
        self, what: str, method: str, url: str, body: Any = None, *, missing_ok: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        # The raw JSON, as the API serves it (camelCase), like adapters.kube;
        # the blocking client runs in a thread so the event loop never waits.
        try:
            return await asyncio.to_thread(self._api.request, method, url, params=params,
                                           body=body, timeout=self._request_timeout)
        except CALL_ERRORS as exc:
            error = classify(exc, what)
            if missing_ok and isinstance(error, NotFoundError):
                return None
            raise error from None
