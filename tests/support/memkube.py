"""An in-memory implementation of the project's own ``Kube`` adapter interface.

For unit tests of ``reconcile/`` and ``handlers.py`` only: it keeps objects in
dicts, bumps ``resourceVersion`` on every write and enforces the same
preconditions the adapter sends (a stale ``resourceVersion`` raises
``ConflictError``), and counts calls, so a test can assert how many reads a
loop made. It is not a Kubernetes API server: e2e tests use the real one.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Mapping
from typing import Any

from imagepatch.adapters.errors import ConfigurationError, ConflictError, TransientError

POLICY_ANNOTATION = "imagepatch.dev/policy"


class MemoryKube:
    def __init__(self) -> None:
        self.policies: dict[str, dict[str, Any]] = {}
        self.patches: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        # The other kinds, by (namespace, name), as for Deployments.
        self.statefulsets: dict[tuple[str, str], dict[str, Any]] = {}
        self.daemonsets: dict[tuple[str, str], dict[str, Any]] = {}
        self.cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[str, list[dict[str, Any]]] = {}  # namespace -> Jobs
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.fail: dict[str, Exception] = {}  # method name -> error to raise (once per call)
        self.last_answer: float | None = None
        # Kube.flagger: off here (adapters.flagger reads Canaries from a real API server).
        self.flagger = False
        self._rv = itertools.count(1)

    # -- helpers for tests ---------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        error = self.fail.get(method)
        if error is not None:
            raise error

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        meta.setdefault("uid", f"uid-{meta.get('namespace', '')}-{meta.get('name', '')}")
        return obj

    def add_policy(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        self.policies[name] = self._stamp({"metadata": {"name": name}, "spec": dict(spec)})
        return self.policies[name]

    def add_patch(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        self.patches[name] = self._stamp({"metadata": {"name": name}, "spec": dict(spec)})
        return self.patches[name]

    def edit_patch_spec(self, name: str, **spec: Any) -> None:
        """What ``kubectl patch`` of the spec does: new spec, generation + 1."""
        body = self.patches[name]
        body["spec"].update(spec)
        body["metadata"]["generation"] += 1
        self._stamp(body)

    def add_deployment(self, namespace: str, name: str, *, image: str, policy: str,
                       replicas: int = 1) -> dict[str, Any]:
        self.namespaces.setdefault(namespace, {})
        dep = {
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": {POLICY_ANNOTATION: policy}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}},
            "status": {},
        }
        self.deployments[(namespace, name)] = self._stamp(dep)
        return dep

    def add_workload(self, kind: str, namespace: str, name: str, *, image: str, policy: str,
                     spec: Mapping[str, Any] | None = None,
                     init_containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A StatefulSet, DaemonSet or CronJob (``spec`` merged over a minimal one)."""
        self.namespaces.setdefault(namespace, {})
        pod: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
        if init_containers:
            pod["initContainers"] = copy.deepcopy(init_containers)
        template = {"metadata": {"labels": {"app": name}}, "spec": pod}
        base: dict[str, Any] = (
            {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}
            if kind == "CronJob"
            else {"selector": {"matchLabels": {"app": name}}, "template": template}
        )
        obj = {"kind": kind,
               "metadata": {"name": name, "namespace": namespace,
                            "annotations": {POLICY_ANNOTATION: policy}},
               "spec": {**base, **(spec or {})}, "status": {}}
        self.store(kind)[(namespace, name)] = self._stamp(obj)
        return obj

    # -- imagepatch resources ------------------------------------------------------

    async def get_policy(self, name: str) -> dict[str, Any] | None:
        self._enter("get_policy")
        return copy.deepcopy(self.policies.get(name))

    async def get_imagepatch(self, name: str) -> dict[str, Any] | None:
        self._enter("get_imagepatch")
        return copy.deepcopy(self.patches.get(name))

    async def list_policies(self) -> list[dict[str, Any]]:
        self._enter("list_policies")
        return copy.deepcopy(list(self.policies.values()))

    async def annotate_imagepatch(self, name: str, annotations: Mapping[str, str | None]) -> None:
        self._enter("annotate_imagepatch")
        body = self.patches.get(name)
        if body is None:
            return
        current = body["metadata"].setdefault("annotations", {})
        for k, v in annotations.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v
        self._stamp(body)

    async def set_imagepatch_targets(
        self, name: str, targets: list[dict[str, Any]], *, resource_version: str
    ) -> None:
        self._enter("set_imagepatch_targets")
        body = self.patches.get(name)
        if body is None:
            return
        if body["metadata"]["resourceVersion"] != resource_version:
            raise ConflictError(f"ImagePatch {name} changed", reason="Conflict")
        body["spec"]["targets"] = copy.deepcopy(targets)
        body["metadata"]["generation"] += 1
        self._stamp(body)

    async def list_imagepatches(self, *, label_selector: str = "") -> list[dict[str, Any]]:
        self._enter("list_imagepatches")
        return copy.deepcopy(list(self.patches.values()))

    async def create_imagepatch(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        self._enter("create_imagepatch")
        name = body["metadata"]["name"]
        if name in self.patches:
            return None
        self.patches[name] = self._stamp(copy.deepcopy(dict(body)))
        return copy.deepcopy(self.patches[name])

    async def delete_imagepatch(self, name: str, *, resource_version: str) -> bool:
        self._enter("delete_imagepatch")
        body = self.patches.get(name)
        if body is None or body["metadata"]["resourceVersion"] != resource_version:
            return False
        del self.patches[name]
        return True

    async def remove_imagepatch_finalizer(self, name: str, finalizers, finalizer: str) -> None:
        self._enter("remove_imagepatch_finalizer")
        body = self.patches.get(name)
        if body is None:
            return
        current = body["metadata"].get("finalizers") or []
        if current != list(finalizers):
            raise ConflictError("finalizers changed", reason="Conflict")
        body["metadata"]["finalizers"] = [f for f in current if f != finalizer]
        self._stamp(body)

    async def write_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        self._enter("write_policy_status")
        self.policies[name].setdefault("status", {}).update(copy.deepcopy(dict(status)))

    async def write_imagepatch_status(
        self, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        self._enter("write_imagepatch_status")
        body = self.patches[name]
        if body["metadata"]["resourceVersion"] != resource_version:
            raise ConflictError(f"ImagePatch {name} changed", reason="Conflict")
        merged = body.setdefault("status", {})
        for key, value in copy.deepcopy(dict(status)).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self._stamp(body)
        return copy.deepcopy(body)

    # -- workloads -----------------------------------------------------------------

    def store(self, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {"Deployment": self.deployments, "StatefulSet": self.statefulsets,
                "DaemonSet": self.daemonsets, "CronJob": self.cronjobs}[kind]

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_deployment")
        return copy.deepcopy(self.deployments.get((namespace, name)))

    async def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_workload")
        return copy.deepcopy(self.store(kind).get((namespace, name)))

    async def workload_pods(self, kind: str, workload: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._enter("workload_pods")
        return copy.deepcopy(self.pods.get(workload["metadata"]["namespace"], []))

    async def create_trial_job(self, cronjob: Mapping[str, Any], name: str) -> bool:
        self._enter("create_trial_job")
        ns = cronjob["metadata"]["namespace"]
        if any(j["metadata"]["name"] == name for j in self.jobs.get(ns, [])):
            return False
        job = {"metadata": {"name": name, "namespace": ns,
                            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                            "ownerReferences": [{"kind": "CronJob",
                                                 "uid": cronjob["metadata"]["uid"]}]},
               "spec": copy.deepcopy(cronjob["spec"]["jobTemplate"]["spec"]), "status": {}}
        self.jobs.setdefault(ns, []).append(job)
        return True

    async def cronjob_jobs(self, cronjob: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._enter("cronjob_jobs")
        uid = cronjob["metadata"].get("uid")
        return [copy.deepcopy(j) for j in self.jobs.get(cronjob["metadata"]["namespace"], [])
                if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or ())]

    async def list_pods(self, namespace: str, selector: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._enter("list_pods")
        return copy.deepcopy(self.pods.get(namespace, []))

    async def delete_stuck_pods(self, namespace: str, pods) -> list[str]:
        """As the adapter: each only while its uid and resourceVersion are as observed."""
        self._enter("delete_stuck_pods")
        deleted = []
        for pod in pods:
            items = self.pods.get(namespace, [])
            found = next((p for p in items if p["metadata"].get("name") == pod.name), None)
            if found is None or found["metadata"].get("uid") != pod.uid or (
                    pod.resource_version
                    and found["metadata"].get("resourceVersion") != pod.resource_version):
                continue
            items.remove(found)
            deleted.append(pod.name)
        return deleted

    async def list_namespace_pods(self, namespace: str) -> list[dict[str, Any]]:
        self._enter("list_namespace_pods")
        return copy.deepcopy(self.pods.get(namespace, []))

    async def annotate_deployment(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        await self.annotate_workload("Deployment", namespace, name, annotations)

    async def annotate_workload(
        self, kind: str, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        self._enter("annotate_workload")
        dep = self.store(kind).get((namespace, name))
        if dep is None:
            return
        current = dep["metadata"].setdefault("annotations", {})
        for k, v in annotations.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v
        self._stamp(dep)

    async def list_opted_in_deployments(self, policy: str) -> list[dict[str, Any]]:
        self._enter("list_opted_in_deployments")
        return [copy.deepcopy(d) for d in self.deployments.values()
                if (d["metadata"].get("annotations") or {}).get(POLICY_ANNOTATION) == policy]

    async def list_opted_in_workloads(self, policy: str) -> list[tuple[str, dict[str, Any]]]:
        self._enter("list_opted_in_workloads")
        return [(kind, copy.deepcopy(d))
                for kind in ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
                for d in self.store(kind).values()
                if (d["metadata"].get("annotations") or {}).get(POLICY_ANNOTATION) == policy]

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_secret")
        return None

    async def namespace_labels(self, name: str) -> dict[str, str]:
        self._enter("namespace_labels")
        return dict(self.namespaces.get(name, {}))

    async def set_container_image(
        self, namespace: str, name: str, *, container: str, image: str, resource_version: str,
        annotations: Mapping[str, str] | None = None, allow_unpinned: bool = False,
        kind: str = "Deployment", container_list: str = "containers",
    ) -> dict[str, Any]:
        self._enter("set_container_image")
        dep = self.store(kind)[(namespace, name)]
        if dep["metadata"]["resourceVersion"] != resource_version:
            raise ConflictError(f"{kind} {namespace}/{name} changed", reason="Conflict")
        if not allow_unpinned and "@sha256:" not in image:
            raise ConfigurationError(f"unpinned {image}", reason="UnpinnedImage")
        dep["metadata"].setdefault("annotations", {}).update(annotations or {})
        spec = dep["spec"]
        template = spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]
        for c in template["spec"].get(container_list) or []:
            if c["name"] == container:
                c["image"] = image
        dep["metadata"]["generation"] += 1
        self._stamp(dep)
        return copy.deepcopy(dep)

    # -- leases --------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_lease")
        return copy.deepcopy(self.leases.get((namespace, name)))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._enter("create_lease")
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise ConflictError("exists", reason="Conflict")
        self.leases[key] = self._stamp(copy.deepcopy(dict(body)))
        return copy.deepcopy(self.leases[key])

    async def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._enter("replace_lease")
        key = (namespace, body["metadata"]["name"])
        current = self.leases.get(key)
        if current is None or current["metadata"]["resourceVersion"] != \
                body["metadata"].get("resourceVersion"):
            raise ConflictError("changed", reason="Conflict")
        self.leases[key] = self._stamp(copy.deepcopy(dict(body)))
        return copy.deepcopy(self.leases[key])

    # -- events --------------------------------------------------------------------

    async def emit_event(
        self, *, involved: Mapping[str, Any], type: str, reason: str, message: str
    ) -> None:
        self._enter("emit_event")
        self.events.append({"involved": dict(involved), "type": type, "reason": reason,
                            "message": message})


def unavailable(what: str = "API") -> TransientError:
    return TransientError(f"{what}: HTTP 503", reason="APIUnavailable")
