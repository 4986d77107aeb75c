"""Given/When/Then building blocks for end-to-end scenarios on the real cluster.

Each helper does one thing a user (or CI) would do with kubectl: create a
labelled namespace, an opted-in Deployment, a policy, an ImagePatch; read
them back; wait for a phase. Kept here so every scenario reads the same way.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.wait import wait_for

GROUP_VERSION = "imagepatch.dev/v1alpha1"
TERMINAL = ("Succeeded", "RolledBack", "Failed")


def fake_digest(seed: str) -> str:
    """A well-formed digest; kwok never pulls, so no image needs to exist for rollouts."""
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class Scenario:
    kube: Any
    namespaces: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        """Delete the namespaces this scenario made (their simulated pods load the cluster)."""
        for ns in self.namespaces:
            self.kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    # -- Given ---------------------------------------------------------------------

    def namespace(self, prefix: str = "ns", **labels: str) -> str:
        name = unique(prefix)
        doc = {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": {"imagepatch-test": "true", **labels}}}
        self.apply(doc)
        self.namespaces.append(name)
        return name

    def deployment(
        self, namespace: str, name: str, *, image: str, policy: str, replicas: int = 3,
        crashloop_on: str | None = None, never_ready_on: str | None = None,
        progress_deadline: int = 600, annotations: dict[str, str] | None = None,
    ) -> dict:
        labels = {"app": name}
        # The kwok stages turn pods bad only once they run the named digest.
        if crashloop_on:
            labels["sim.imagepatch.dev/crashloop-digest"] = crashloop_on.split(":")[1][:16]
        if never_ready_on:
            labels["sim.imagepatch.dev/never-ready-digest"] = never_ready_on.split(":")[1][:16]
        doc = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": {"imagepatch.dev/policy": policy, **(annotations or {})}},
            "spec": {
                "replicas": replicas,
                "progressDeadlineSeconds": progress_deadline,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "app", "image": image}]}},
            },
        }
        self.apply(doc)
        return self.wait_available(namespace, name, replicas)

    def workload(
        self, kind: str, namespace: str, name: str, *, image: str, policy: str, replicas: int = 2,
        crashloop_on: str | None = None, never_ready_on: str | None = None,
        job_fail_on: str | None = None, init_containers: list[dict] | None = None,
        partition: int = 0, strategy: str = "RollingUpdate", schedule: str = "*/1 * * * *",
        suspend: bool = False, pod_management: str = "Parallel",
    ) -> dict:
        """An opted-in workload of any kind, as a team would write it.

        ``init_containers`` go into the pod template as given (a native
        sidecar has ``restartPolicy: Always``). The kwok stages turn pods bad
        only once a container runs the named digest, as for Deployments.
        ``pod_management`` is a StatefulSet's ``podManagementPolicy``
        (``Parallel`` starts its pods at once, so most tests use it; the
        Kubernetes default is ``OrderedReady``).
        """
        labels = {"app": name}
        for key, digest in (("crashloop", crashloop_on), ("never-ready", never_ready_on),
                            ("job-fail", job_fail_on)):
            if digest:
                labels[f"sim.imagepatch.dev/{key}-digest"] = digest.split(":")[1][:16]
        pod_spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
        if init_containers:
            pod_spec["initContainers"] = init_containers
        template = {"metadata": {"labels": labels}, "spec": pod_spec}
        meta = {"name": name, "namespace": namespace,
                "annotations": {"imagepatch.dev/policy": policy}}
        if kind == "CronJob":
            pod_spec["restartPolicy"] = "Never"
            spec: dict[str, Any] = {
                "schedule": schedule, "suspend": suspend,
                "jobTemplate": {"spec": {"backoffLimit": 0, "template": template}},
            }
            self.apply({"apiVersion": "batch/v1", "kind": kind, "metadata": meta, "spec": spec})
            return self.get("cronjob", name, namespace)
        spec = {"selector": {"matchLabels": {"app": name}}, "template": template}
        if kind == "Deployment":
            spec["replicas"] = replicas
            self.apply({"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec})
            return self.wait_available(namespace, name, replicas)
        update: dict[str, Any] = {"type": strategy}
        if kind == "StatefulSet":
            spec |= {"replicas": replicas, "serviceName": name,
                     "podManagementPolicy": pod_management}
            if strategy == "RollingUpdate":
                update["rollingUpdate"] = {"partition": partition}
        spec["updateStrategy"] = update
        self.apply({"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec})
        return self.wait_rolled_out(kind, namespace, name)

    def policy(self, name: str, **spec: Any) -> None:
        spec.setdefault("namespaceSelector", {"matchLabels": {"imagepatch-test": "true"}})
        self.apply({"apiVersion": GROUP_VERSION, "kind": "ImagePatchPolicy",
                    "metadata": {"name": name}, "spec": spec})

    def imagepatch(self, name: str, *, image: str, policy: str, target_digest: str, **spec: Any) -> None:
        self.apply({"apiVersion": GROUP_VERSION, "kind": "ImagePatch", "metadata": {"name": name},
                    "spec": {"image": image, "policy": policy, "reason": "Manual",
                             "targetDigest": target_digest, **spec}})

    # -- When ----------------------------------------------------------------------

    def apply(self, doc: dict) -> None:
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def approve(self, patch: str, *, decision: str = "Approved", by: str = "alice") -> None:
        body = {"spec": {"approval": {"decision": decision, "by": by}}}
        self.kube.kubectl("patch", "imagepatch", patch, "--type", "merge", "-p", json.dumps(body))

    # -- Then ----------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        return json.loads(self.kube.kubectl(*args))

    def image_of(self, namespace: str, name: str, container: str = "app") -> str:
        dep = self.get("deployment", name, namespace)
        return next(c["image"] for c in dep["spec"]["template"]["spec"]["containers"]
                    if c["name"] == container)

    def template_image(self, kind: str, namespace: str, name: str, container: str = "app") -> str:
        """The image of ``container`` (in containers or initContainers) in the pod template."""
        obj = self.get(kind.lower(), name, namespace)
        spec = obj["spec"]
        template = spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]
        pod = template["spec"]
        return next(c["image"] for key in ("containers", "initContainers")
                    for c in pod.get(key) or [] if c["name"] == container)

    def wait_rolled_out(self, kind: str, namespace: str, name: str, *, timeout: float = 90) -> dict:
        """A StatefulSet or DaemonSet whose controller reports every pod updated and ready."""
        def probe():
            obj = self.get(kind.lower(), name, namespace)
            st, gen = obj.get("status", {}), obj["metadata"]["generation"]
            if st.get("observedGeneration") != gen:
                return None
            if kind == "StatefulSet":
                want = obj["spec"].get("replicas", 1)
                done = st.get("readyReplicas") == want and st.get("updatedReplicas") == want
            else:
                want = st.get("desiredNumberScheduled", 0)
                done = want > 0 and st.get("numberAvailable") == want == st.get(
                    "updatedNumberScheduled")
            return obj if done else None

        return wait_for(probe, timeout=timeout, what=f"{kind} {namespace}/{name} rolled out")

    def wait_available(self, namespace: str, name: str, replicas: int, *, timeout: float = 60) -> dict:
        def probe():
            d = self.get("deployment", name, namespace)
            st = d.get("status", {})
            rolled = (st.get("observedGeneration") == d["metadata"]["generation"]
                      and st.get("updatedReplicas") == replicas == st.get("availableReplicas")
                      and st.get("replicas") == replicas)
            return d if rolled else None

        try:
            return wait_for(probe, timeout=timeout, what=f"{namespace}/{name} available")
        except TimeoutError as exc:
            d = self.get("deployment", name, namespace)
            pods = json.loads(self.kube.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
            summary = [(p["metadata"]["name"], p["metadata"].get("deletionTimestamp"),
                        p["status"].get("phase"),
                        [(c.get("image"), c.get("ready"), c.get("restartCount"), list(c.get("state", {})))
                         for c in p["status"].get("containerStatuses", [])]) for p in pods]
            raise TimeoutError(f"{exc}\ndeployment status: {json.dumps(d.get('status'))}\n"
                               f"pods: {json.dumps(summary)}") from None

    def wait_phase(self, patch: str, *phases: str, timeout: float = 180) -> dict:
        def probe():
            obj = self.get("imagepatch", patch)
            return obj if obj.get("status", {}).get("phase") in phases else None

        try:
            return wait_for(probe, timeout=timeout, interval=0.5, what=f"{patch} phase in {phases}")
        except TimeoutError as exc:
            obj = self.get("imagepatch", patch)
            raise TimeoutError(f"{exc}\nstatus: {json.dumps(obj.get('status'), indent=1)}") from None

    def pushed_tag(self, patch: str, timeout: float = 60) -> str:
        """The tag the patch's rebuild is to be pushed under (``status.rebuild.tag``), once chosen.

        What CI reads for the ``external`` strategy; with the default
        ``tagPolicy: New`` it is a new tag, e.g. ``1-patch.20261129.1``.
        """
        def probe():
            return (self.get("imagepatch", patch).get("status") or {}).get("rebuild", {}).get("tag")
        return wait_for(probe, timeout=timeout, interval=0.5, what=f"{patch}'s rebuild tag")

    def events(self, namespace: str, name: str) -> list[dict]:
        items = json.loads(self.kube.kubectl(
            "get", "events", "-n", namespace, "-o", "json",
            f"--field-selector=involvedObject.name={name}"))["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or "")

    def wait_events(self, namespace: str, name: str, *reasons: str, type: str | None = None,
                    timeout: float = 30) -> list[dict]:
        """The Events on ``name`` (of ``type``, if given), once each of ``reasons`` is among them.

        The operator writes a status before it posts the Event that reports it
        (intent first), so the phase or state a test waited for can be seen
        before its Event exists: wait for the Event rather than list at once.
        """
        def probe():
            found = [e for e in self.events(namespace, name) if type is None or e["type"] == type]
            return found if set(reasons) <= {e["reason"] for e in found} else None

        try:
            return wait_for(probe, timeout=timeout, interval=0.5,
                            what=f"{type or 'any'} Events {reasons} on {namespace}/{name}")
        except TimeoutError as exc:
            seen = [(e["type"], e["reason"]) for e in self.events(namespace, name)]
            raise TimeoutError(f"{exc}\nEvents seen: {seen}") from None
