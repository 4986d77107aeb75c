"""The Kubernetes API adapter: reads and writes the operator needs, errors classified.

Objects come back as plain dicts exactly as the API serves them (camelCase
keys), because ``core`` reads the API's own shapes. Every write that acts on
a decision carries a ``resourceVersion`` precondition, so a decision made on a
stale read fails with ``ConflictError`` instead of overwriting someone's
change. Calls are synchronous ``kubernetes`` client calls run in a thread, so
the kopf event loop never blocks; each one, body read included, is bounded by
``request_timeout`` (a hung API server or proxy ends as a ``TransientError``,
never a worker thread held for good).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, overload

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from imagepatch.adapters.errors import (
    AdapterError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    TransientError,
)
from imagepatch.core import kinds_rollout, reasons, workload_ref
from imagepatch.core.kinds import CONTAINER_LISTS, CRONJOB, JOB_NAME_LABELS, KINDS, StuckPod
from imagepatch.core.reasons import (
    UNPINNED_IMAGE,
)
from imagepatch.core.rollout import is_pinned
from imagepatch.model.names import GROUP, IMAGEPATCHES, POLICIES, POLICY_ANNOTATION, VERSION

COMPONENT = "imagepatch"
# Seconds one API call may take, connect and read (``--kube-request-timeout``).
DEFAULT_REQUEST_TIMEOUT = 60.0
# Items per page of a workload listing. Each page is parsed, filtered and
# reduced (``keep``) before the next is asked for, so a listing of thousands
# of Deployments never sits in memory whole (issue 21 item 3: its parsed
# bodies, managedFields and all, are a transient that grows with the fleet).
# A continue token that expired (410) fails the listing like any other error;
# the store lists again on its next read.
LIST_PAGE_SIZE = 200


def load_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (as kubectl)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def classify(exc: Exception, what: str) -> AdapterError:
    """Map a client exception to the adapter error kinds, with a safe message."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        detail = ""
        try:
            detail = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            detail = ""
        message = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
        if status == 404:
            return NotFoundError(message, reason="NotFound")
        if status == 409:
            return ConflictError(message, reason="Conflict")
        if status in (401, 403):
            return ConfigurationError(message, reason=reasons.FORBIDDEN)
        if status in (400, 422):
            return ConfigurationError(message, reason="Invalid")
        if status == 429 or status >= 500:
            retry = exc.headers.get("Retry-After") if exc.headers else None
            return TransientError(
                message,
                reason="APIUnavailable",
                retry_after=float(retry) if retry and retry.isdigit() else None,
            )
        return ConfigurationError(message, reason=reasons.REJECTED)
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return TransientError(f"{what}: {type(exc).__name__}", reason="APIUnavailable")
    raise exc


def _json(resp: Any) -> dict[str, Any]:
    # Every call imagepatch makes answers a JSON object (a resource, a list, a Status).
    doc: dict[str, Any] = json.loads(resp.data)
    return doc


class Kube:
    """The operations imagepatch performs on the API server."""

    def __init__(
        self, api_client: client.ApiClient | None = None, *, namespaces: Sequence[str] = (),
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT, argo_rollouts: bool = False,
    ) -> None:
        """``namespaces``: the ``--namespace`` scope (names or kopf's glob patterns); empty: all.

        ``request_timeout``: seconds any one call may take (a call may ask for less).
        ``argo_rollouts``: Argo Rollouts' Rollouts are targets too (``--argo-rollouts``;
        the Rollout CRD and the operator's access to it exist).
        """
        self.argo_rollouts = argo_rollouts
        # --flagger: a Deployment's gate follows the Flagger Canary that targets it
        # (adapters.flagger; set by the handlers' startup).
        self.flagger = False
        self.api = api_client or load_api_client()
        self.namespaces = tuple(namespaces)
        self.request_timeout = request_timeout
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        # When a request last got an answer from the API server (monotonic):
        # the liveness probe reads it (handlers.liveness).
        self.last_answer: float | None = None

    @overload
    async def _call(
        self, what: str, fn: Callable[..., Any], *args: Any,
        missing_ok: Literal[False] = False, **kwargs: Any,
    ) -> dict[str, Any]: ...

    @overload
    async def _call(
        self, what: str, fn: Callable[..., Any], *args: Any,
        missing_ok: Literal[True], **kwargs: Any,
    ) -> dict[str, Any] | None: ...

    async def _call(
        self, what: str, fn: Callable[..., Any], *args: Any,
        missing_ok: bool = False, **kwargs: Any,
    ) -> dict[str, Any] | None:
        # One timeout for every call, here rather than at each call site. The
        # body is read in the worker thread too, under the same timeout: a
        # slow read must neither hang for good nor block the event loop.
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            data = await asyncio.to_thread(
                lambda: _json(fn(*args, _preload_content=False, **kwargs))
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            error = classify(exc, what)
            if isinstance(exc, ApiException) and (exc.status or 0) < 500:
                self.last_answer = time.monotonic()  # an answer, if not the one we wanted
            if missing_ok and isinstance(error, NotFoundError):
                return None
            raise error from None
        self.last_answer = time.monotonic()
        return data

    # -- imagepatch resources -------------------------------------------------------

    async def get_policy(self, name: str) -> dict[str, Any] | None:
        return await self._call(
            f"get ImagePatchPolicy {name}",
            self.custom.get_cluster_custom_object,
            GROUP,
            VERSION,
            POLICIES,
            name,
            missing_ok=True,
        )

    async def get_imagepatch(self, name: str) -> dict[str, Any] | None:
        return await self._call(
            f"get ImagePatch {name}",
            self.custom.get_cluster_custom_object,
            GROUP,
            VERSION,
            IMAGEPATCHES,
            name,
            missing_ok=True,
        )

    async def list_policies(self) -> list[dict[str, Any]]:
        data = await self._call("list ImagePatchPolicies", self.custom.list_cluster_custom_object,
                                GROUP, VERSION, POLICIES)
        return list(data.get("items", []))

    async def annotate_imagepatch(
        self, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any] | None:
        """Set (or, with None, remove) annotations on an ImagePatch (a request to its planner).

        Returns the object as written (None if it is gone): a read store applies it.
        """
        return await self._call(f"annotate ImagePatch {name}",
                                self.custom.patch_cluster_custom_object,
                                GROUP, VERSION, IMAGEPATCHES, name,
                                {"metadata": {"annotations": dict(annotations)}}, missing_ok=True)

    async def set_imagepatch_targets(
        self, name: str, targets: list[dict[str, Any]], *, resource_version: str
    ) -> dict[str, Any] | None:
        """Replace ``spec.targets``, if the ImagePatch is unchanged since read."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"targets": targets}}
        return await self._call(f"retarget ImagePatch {name}",
                                self.custom.patch_cluster_custom_object,
                                GROUP, VERSION, IMAGEPATCHES, name, body, missing_ok=True)

    async def list_imagepatches(self, *, label_selector: str = "") -> list[dict[str, Any]]:
        data = await self._call("list ImagePatches", self.custom.list_cluster_custom_object,
                                GROUP, VERSION, IMAGEPATCHES, label_selector=label_selector)
        return list(data.get("items", []))

    async def create_imagepatch(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create it; None if one of that name exists already (names are deterministic)."""
        try:
            return await self._call(f"create ImagePatch {body['metadata']['name']}",
                                    self.custom.create_cluster_custom_object,
                                    GROUP, VERSION, IMAGEPATCHES, dict(body))
        except ConflictError:
            return None

    async def delete_imagepatch(self, name: str, *, resource_version: str) -> bool:
        """Delete it if unchanged since read; False if it changed or is gone already."""
        body = {"preconditions": {"resourceVersion": resource_version}}
        try:
            await self._call(f"delete ImagePatch {name}", self.custom.delete_cluster_custom_object,
                             GROUP, VERSION, IMAGEPATCHES, name, body=body)
        except (NotFoundError, ConflictError):
            return False
        return True

    async def remove_imagepatch_finalizer(self, name: str, finalizers: Sequence[str],
                                          finalizer: str) -> dict[str, Any] | None:
        """Drop ``finalizer`` from an ImagePatch, if the list is still ``finalizers``."""
        index = list(finalizers).index(finalizer)
        ops = [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
               {"op": "remove", "path": f"/metadata/finalizers/{index}"}]
        try:
            return await self._call(f"remove finalizer of ImagePatch {name}",
                             self.custom.patch_cluster_custom_object, GROUP, VERSION,
                             IMAGEPATCHES, name, ops, missing_ok=True,
                             _content_type="application/json-patch+json")
        except ConfigurationError as exc:
            if exc.reason != "Invalid":
                raise
            # A failed "test" op (422): the list changed since it was read.
            raise ConflictError(str(exc), reason="Conflict") from None

    async def write_policy_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge fields into a policy's status (no precondition: these fields are ours alone)."""
        return await self._call(f"record status of ImagePatchPolicy {name}",
                         self.custom.patch_cluster_custom_object_status,
                         GROUP, VERSION, POLICIES, name, {"status": dict(status)})

    async def write_imagepatch_status(
        self, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        """Merge ``status`` in, only if the object is still at ``resource_version``."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        return await self._call(
            f"record status of ImagePatch {name}",
            self.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            IMAGEPATCHES,
            name,
            body,
        )

    # -- workloads ------------------------------------------------------------------

    def _workload_calls(self, kind: str) -> dict[str, Any]:
        """The client calls for ``kind`` (one of ``core.kinds.KINDS``)."""
        if kind not in KINDS:
            raise ConfigurationError(f"imagepatch does not patch {kind!r} workloads",
                                     reason="Invalid")
        if kind == kinds_rollout.ROLLOUT:
            return self._rollout_calls()
        api = self.batch if kind == CRONJOB else self.apps
        plural = {"Deployment": "deployment", "StatefulSet": "stateful_set",
                  "DaemonSet": "daemon_set", "CronJob": "cron_job"}[kind]
        return {
            "read": getattr(api, f"read_namespaced_{plural}"),
            "patch": getattr(api, f"patch_namespaced_{plural}"),
            "list": getattr(api, f"list_namespaced_{plural}"),
            "list_all": getattr(api, f"list_{plural}_for_all_namespaces"),
        }

    def _rollout_calls(self) -> dict[str, Any]:
        """Argo Rollouts' Rollout through the custom objects API, shaped as the apps calls."""
        c, g, v, p = self.custom, kinds_rollout.GROUP, kinds_rollout.VERSION, kinds_rollout.PLURAL
        return {
            "read": lambda name, ns, **kw: c.get_namespaced_custom_object(g, v, ns, p, name, **kw),
            "patch": lambda name, ns, body, **kw: c.patch_namespaced_custom_object(
                g, v, ns, p, name, body, **kw),
            "list": lambda ns, **kw: c.list_namespaced_custom_object(g, v, ns, p, **kw),
            "list_all": lambda **kw: c.list_cluster_custom_object(g, v, p, **kw),
        }

    async def promote_rollout(self, rollout: Mapping[str, Any]) -> None:
        """``kubectl argo rollouts promote``: its spec patch, then its status patch."""
        meta = rollout["metadata"]
        ns, name = meta["namespace"], meta["name"]
        spec_patch, status_patch = kinds_rollout.promote_patches(rollout)
        g, v, p = kinds_rollout.GROUP, kinds_rollout.VERSION, kinds_rollout.PLURAL
        if status_patch is not None:
            await self._call(f"promote Rollout {ns}/{name} (status)",
                             self.custom.patch_namespaced_custom_object_status, g, v, ns, p, name,
                             dict(status_patch), missing_ok=True,
                             _content_type="application/merge-patch+json")
        if spec_patch is not None:
            await self._call(f"promote Rollout {ns}/{name}",
                             self.custom.patch_namespaced_custom_object, g, v, ns, p, name,
                             dict(spec_patch), missing_ok=True,
                             _content_type="application/merge-patch+json")

    async def abort_rollout(self, namespace: str, name: str) -> None:
        """``kubectl argo rollouts abort``: ``status.abort`` set on the status subresource."""
        await self._call(f"abort Rollout {namespace}/{name}",
                         self.custom.patch_namespaced_custom_object_status,
                         kinds_rollout.GROUP, kinds_rollout.VERSION, namespace,
                         kinds_rollout.PLURAL, name, dict(kinds_rollout.ABORT_PATCH),
                         missing_ok=True, _content_type="application/merge-patch+json")

    async def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A workload of ``kind``; None if it is gone. A Rollout comes resolved
        (``resolve_workload_ref``)."""
        obj = await self._call(f"get {kind} {namespace}/{name}",
                               self._workload_calls(kind)["read"], name, namespace,
                               missing_ok=True)
        return obj if obj is None else await self.resolve_workload_ref(kind, obj)

    async def resolve_workload_ref(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A Rollout with ``spec.workloadRef``: with the referenced Deployment's pod template,
        read from the Rollout's own namespace (``core.workload_ref``); any other object as is."""
        if kind != kinds_rollout.ROLLOUT or workload_ref.reference(obj) is None:
            return dict(obj)
        name = workload_ref.deployment_name(obj)
        deployment = (
            await self.get_workload("Deployment", obj["metadata"]["namespace"], name)
            if name else None
        )
        return workload_ref.resolve(obj, deployment)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_workload("Deployment", namespace, name)

    async def workload_pods(self, kind: str, workload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pods of a workload: its selector's, or for a CronJob its Jobs' pods."""
        namespace = workload["metadata"]["namespace"]
        if kind != CRONJOB:
            return await self.list_pods(namespace, workload["spec"].get("selector") or {})
        names = {j["metadata"]["name"] for j in await self.cronjob_jobs(workload)}
        pods = await self.list_namespace_pods(namespace) if names else []
        return [p for p in pods
                if any((p["metadata"].get("labels") or {}).get(k) in names
                       for k in JOB_NAME_LABELS)]

    async def cronjob_jobs(self, cronjob: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Jobs a CronJob owns (ownerReferences; Jobs carry no selector for their CronJob)."""
        namespace, uid = cronjob["metadata"]["namespace"], cronjob["metadata"].get("uid")
        data = await self._call(f"list Jobs in {namespace}", self.batch.list_namespaced_job,
                                namespace)
        return [j for j in data.get("items", [])
                if any(r.get("uid") == uid
                       for r in j["metadata"].get("ownerReferences") or ())]

    async def create_trial_job(self, cronjob: Mapping[str, Any], name: str) -> bool:
        """``kubectl create job --from=cronjob/X``: a Job from the job template, owned by it.

        False if a Job of that name exists already (the name is recorded
        before this call, so a retry after a restart creates nothing twice).
        """
        meta, spec = cronjob["metadata"], cronjob["spec"]["jobTemplate"]
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                # As kubectl sets it: the CronJob controller ignores such a Job.
                "annotations": {**(spec.get("metadata") or {}).get("annotations", {}),
                                "cronjob.kubernetes.io/instantiate": "manual"},
                "labels": dict((spec.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                    "uid": meta["uid"], "controller": True,
                }],
            },
            "spec": spec["spec"],
        }
        try:
            await self._call(f"create Job {meta['namespace']}/{name}",
                             self.batch.create_namespaced_job, meta["namespace"], body)
        except ConflictError:
            return False
        return True

    async def list_pods(self, namespace: str, selector: Mapping[str, Any]) -> list[dict[str, Any]]:
        labels = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
        exprs = []
        for e in selector.get("matchExpressions") or []:
            op, key, values = e["operator"], e["key"], ",".join(e.get("values") or [])
            exprs.append(
                {
                    "In": f"{key} in ({values})",
                    "NotIn": f"{key} notin ({values})",
                    "Exists": key,
                    "DoesNotExist": f"!{key}",
                }[op]
            )
        label_selector = ",".join([s for s in [labels, *exprs] if s])
        data = await self._call(
            f"list pods in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )
        return list(data.get("items", []))

    async def delete_stuck_pods(self, namespace: str, pods: Sequence[StuckPod]) -> list[str]:
        """Delete each pod only while it is still the pod observed; return the names deleted.

        Only for a StatefulSet's forced rollback: ``core.kinds.forced_rollback``
        chose them from a read of the StatefulSet's pods (owned by it, of the
        bad revision, not Ready). Each delete carries the pod's uid and
        resourceVersion as preconditions, so it never hits a pod recreated
        under the same name or changed since that read (409: it is judged
        again on the next pass); a pod gone already (404) is fine. Pods are
        deleted gracefully, with their own termination grace period.
        """
        deleted: list[str] = []
        for pod in pods:
            preconditions = {"uid": pod.uid}
            if pod.resource_version:
                preconditions["resourceVersion"] = pod.resource_version
            try:
                await self._call(f"delete Pod {namespace}/{pod.name}",
                                 self.core.delete_namespaced_pod, pod.name, namespace,
                                 body={"preconditions": preconditions})
            except (NotFoundError, ConflictError):
                continue
            deleted.append(pod.name)
        return deleted

    async def list_namespace_pods(self, namespace: str) -> list[dict[str, Any]]:
        data = await self._call(f"list pods in {namespace}", self.core.list_namespaced_pod,
                                namespace)
        return list(data.get("items", []))

    async def annotate_workload(
        self, kind: str, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any] | None:
        """Set (or, with None, remove) metadata annotations; never touches the pod template."""
        body = {"metadata": {"annotations": dict(annotations)}}
        return await self._call(f"annotate {kind} {namespace}/{name}",
                         self._workload_calls(kind)["patch"], name, namespace, body,
                         _content_type="application/merge-patch+json", missing_ok=True)

    async def annotate_deployment(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        await self.annotate_workload("Deployment", namespace, name, annotations)

    async def list_opted_in_deployments(self, policy: str) -> list[dict[str, Any]]:
        return await self.list_opted_in("Deployment", policy)

    async def list_opted_in_workloads(self, policy: str) -> list[tuple[str, dict[str, Any]]]:
        """(kind, object) of every kind imagepatch patches whose annotation names ``policy``."""
        return [
            (kind, await self.resolve_workload_ref(kind, obj))
            for kind in KINDS
            for obj in await self.list_opted_in(kind, policy)
        ]

    async def list_opted_in(self, kind: str, policy: str) -> list[dict[str, Any]]:
        """Workloads of ``kind`` in the watched namespaces whose annotation names ``policy``."""
        return [
            d
            for d in await self.list_all_opted_in(kind)
            if (d["metadata"].get("annotations") or {}).get(POLICY_ANNOTATION) == policy
        ]

    async def list_all_opted_in(
        self, kind: str, *, keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Workloads of ``kind`` in the watched namespaces that name any policy.

        Annotations cannot be selected server-side, so this lists and filters,
        a page at a time; ``keep`` reduces each kept object as its page
        arrives (the store keeps slim copies only). With ``--namespace`` it
        lists only those namespaces (a glob pattern lists all and keeps the
        matching ones, as kopf's watch does).
        """
        if kind == kinds_rollout.ROLLOUT and not self.argo_rollouts:
            return []
        try:
            return await self._list_workloads(kind, keep)
        except NotFoundError:
            if kind != kinds_rollout.ROLLOUT:
                raise
            return []  # --argo-rollouts without Argo's CRD: no Rollout to patch

    async def _list_workloads(
        self, kind: str, keep: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> list[dict[str, Any]]:
        calls = self._workload_calls(kind)
        globs = any(ch in ns for ns in self.namespaces for ch in "*?[!")
        if not self.namespaces or globs:
            listings: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
                (f"list {kind}s", calls["list_all"], ())
            ]
        else:
            listings = [(f"list {kind}s in {ns}", calls["list"], (ns,)) for ns in self.namespaces]
        kept: list[dict[str, Any]] = []
        for what, fn, args in listings:
            token = ""
            while True:
                page: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
                if token:
                    page["_continue"] = token
                data = await self._call(what, fn, *args, **page)
                for d in data.get("items") or ():
                    if POLICY_ANNOTATION not in (d["metadata"].get("annotations") or {}):
                        continue
                    if globs and not self.watches(d["metadata"]["namespace"]):
                        continue
                    kept.append(keep(d) if keep else d)
                token = (data.get("metadata") or {}).get("continue") or ""
                del data  # this page's bodies go before the next page is parsed
                if not token:
                    break
        return kept

    def watches(self, namespace: str) -> bool:
        """Is ``namespace`` in the ``--namespace`` scope? (kopf's globs; ``!`` excludes)."""
        if not self.namespaces:
            return True
        included = [p for p in self.namespaces if not p.startswith("!")]
        excluded = [p[1:] for p in self.namespaces if p.startswith("!")]
        if any(fnmatch.fnmatchcase(namespace, p) for p in excluded):
            return False
        return not included or any(fnmatch.fnmatchcase(namespace, p) for p in included)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"get Secret {namespace}/{name}", self.core.read_namespaced_secret,
                                name, namespace, missing_ok=True)

    async def namespace_labels(self, name: str) -> dict[str, str]:
        ns = await self._call(
            f"get Namespace {name}", self.core.read_namespace, name, missing_ok=True
        )
        return dict((ns or {}).get("metadata", {}).get("labels") or {})

    async def set_container_image(
        self,
        namespace: str,
        name: str,
        *,
        container: str,
        image: str,
        resource_version: str,
        annotations: Mapping[str, str] | None = None,
        allow_unpinned: bool = False,
        kind: str = "Deployment",
        container_list: str = "containers",
    ) -> dict[str, Any]:
        """Change only one container's image, if the workload is unchanged since read.

        ``kind`` is any of ``core.kinds.KINDS``; ``container_list`` is the
        list the container is in (``containers`` or ``initContainers``; see
        ``core.kinds.find_container``). A strategic merge patch keyed by the
        container's name changes that one entry and nothing beside it.

        Only digest-pinned references are written (``repo:tag@sha256:…``); the
        one exception, ``allow_unpinned``, is the documented rollback of a
        workload whose digest was never known. ``annotations`` are set in the
        same write (the failed-digest memory travels with the rollback).
        """
        if not allow_unpinned and not is_pinned(image):
            raise ConfigurationError(
                f"refusing to set {namespace}/{name}/{container} to {image!r}: "
                "imagepatch writes only digest-pinned image references",
                reason=UNPINNED_IMAGE,
            )
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if annotations:
            metadata["annotations"] = dict(annotations)
        if container_list not in CONTAINER_LISTS:
            raise ConfigurationError(f"imagepatch never changes {container_list}",
                                     reason="Invalid")
        if kind == kinds_rollout.ROLLOUT:
            return await self._set_rollout_image(namespace, name, container=container, image=image,
                                                 container_list=container_list, metadata=metadata)
        template = {"spec": {container_list: [{"name": container, "image": image}]}}
        spec = {"jobTemplate": {"spec": {"template": template}}} if kind == CRONJOB else {
            "template": template}
        body = {"metadata": metadata, "spec": spec}
        return await self._call(
            f"patch {kind} {namespace}/{name}",
            self._workload_calls(kind)["patch"],
            name,
            namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
        )

    async def _set_rollout_image(
        self, namespace: str, name: str, *, container: str, image: str, container_list: str,
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        """A Rollout's container image: custom resources take no strategic merge patch, so the
        one list is written whole, as read at ``metadata.resourceVersion`` (the precondition:
        a change since that read is a ConflictError, never overwritten)."""
        rollout = await self.get_workload(kinds_rollout.ROLLOUT, namespace, name)
        if rollout is None:
            raise NotFoundError(f"Rollout {namespace}/{name} is gone", reason="NotFound")
        if rollout["metadata"].get("resourceVersion") != metadata["resourceVersion"]:
            raise ConflictError(f"Rollout {namespace}/{name} changed since read", reason="Conflict")
        if (ref := workload_ref.resolved(rollout)) is not None:
            return await self._set_referenced_image(
                rollout, ref, container=container, image=image, container_list=container_list,
                annotations=metadata.get("annotations") or {},
            )  # fmt: skip
        listed = (rollout["spec"].get("template") or {}).get("spec", {}).get(container_list) or []
        entries = [{**c, "image": image} if c.get("name") == container else c for c in listed]
        body = {"metadata": dict(metadata),
                "spec": {"template": {"spec": {container_list: entries}}}}
        return await self._call(f"patch Rollout {namespace}/{name}",
                                self._workload_calls(kinds_rollout.ROLLOUT)["patch"], name,
                                namespace, body, _content_type="application/merge-patch+json")

    async def _set_referenced_image(
        self, rollout: Mapping[str, Any], ref: Mapping[str, Any], *, container: str, image: str,
        container_list: str, annotations: Mapping[str, str],
    ) -> dict[str, Any]:
        """A workloadRef Rollout's image: written into the referenced Deployment's template
        (as Argo documents), at the Deployment's resourceVersion as just read; the
        operator's annotations go on the Rollout, the target."""
        ns, name = rollout["metadata"]["namespace"], rollout["metadata"]["name"]
        if why := workload_ref.problem(rollout):
            raise ConfigurationError(why, reason=reasons.WORKLOAD_REF_UNRESOLVED)
        body = {"metadata": {"resourceVersion": ref["resourceVersion"]},
                "spec": {"template": {"spec": {container_list: [
                    {"name": container, "image": image}]}}}}
        await self._call(f"patch Deployment {ns}/{ref['deployment']} (Rollout {ns}/{name})",
                         self.apps.patch_namespaced_deployment, ref["deployment"], ns, body,
                         _content_type="application/strategic-merge-patch+json")
        if annotations:
            written = await self.annotate_workload(kinds_rollout.ROLLOUT, ns, name, annotations)
            return written if written is not None else dict(rollout)
        return dict(rollout)

    # -- leader election (coordination.k8s.io Leases) -------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"get Lease {namespace}/{name}",
                                self.coordination.read_namespaced_lease, name, namespace,
                                missing_ok=True, _request_timeout=5)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create it; ConflictError if another replica created it first."""
        return await self._call(f"create Lease {namespace}/{body['metadata']['name']}",
                                self.coordination.create_namespaced_lease, namespace, dict(body),
                                _request_timeout=5)

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace it; ``metadata.resourceVersion`` is the precondition (ConflictError)."""
        name = body["metadata"]["name"]
        return await self._call(f"update Lease {namespace}/{name}",
                                self.coordination.replace_namespaced_lease, name, namespace,
                                dict(body), _request_timeout=5)

    # -- events ---------------------------------------------------------------------

    async def emit_event(
        self, *, involved: Mapping[str, Any], type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on ``involved`` (apiVersion, kind, namespace, name, uid)."""
        now = dt.datetime.now(dt.UTC)
        namespace = involved.get("namespace") or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        await self._call(
            f"create Event in {namespace}", self.core.create_namespaced_event, namespace, body
        )

    # -- nodes (adapters.nodes: the AMI survey) -------------------------------------------

    async def list_nodes(self) -> list[dict[str, Any]]:
        data = await self._call("list Nodes", self.core.list_node)
        return list(data.get("items", []))

    # -- the operator's memory (ConfigMaps in its own namespace: adapters.memory) --------

    async def list_configmaps(
        self, namespace: str, *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        data = await self._call(f"list ConfigMaps in {namespace}",
                                self.core.list_namespaced_config_map, namespace,
                                label_selector=label_selector, field_selector=field_selector)
        return list(data.get("items", []))

    async def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create it; ConflictError if it exists already."""
        return await self._call(f"create ConfigMap {namespace}/{body['metadata']['name']}",
                                self.core.create_namespaced_config_map, namespace, dict(body))

    async def patch_configmap(
        self, namespace: str, name: str, data: Mapping[str, str | None], *, resource_version: str
    ) -> dict[str, Any]:
        """Merge ``data`` (None removes a key), if unchanged since read (else ConflictError)."""
        body = {"metadata": {"resourceVersion": resource_version}, "data": dict(data)}
        return await self._call(f"patch ConfigMap {namespace}/{name}",
                                self.core.patch_namespaced_config_map, name, namespace, body,
                                _content_type="application/merge-patch+json")
