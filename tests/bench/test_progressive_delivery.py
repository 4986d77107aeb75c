"""Benchmark (issue 23): imagepatch's own gate on a Deployment against Argo Rollouts'
analysis-driven abort on a Rollout, on the same crash-looping pods.

Not part of ``make test`` (figures are printed, never asserted); ``make bench``.
Each run rolls a workload to a digest whose pods crash-loop (kwok), and times,
as the API server announces them (watch streams), from the first pod on the
new digest reporting ``CrashLoopBackOff`` to the old digest taking the traffic
back:

* **imagepatch**: a 2-replica Deployment, opted in, patched by an ImagePatch;
  the moment its template is restored to the old image (the Deployment
  controller then rolls the pods back).
* **Argo Rollouts**: a 2-replica canary Rollout (50%, then a pause) with a
  background analysis of the same signal, asked every second with
  ``failureLimit: 0`` (a ``web`` metric against a local endpoint that says
  whether any pod of the namespace is in ``CrashLoopBackOff``); the moment
  Argo aborts (``status.abort``: the stable ReplicaSet takes all traffic).
  The Rollout is not opted in: its template is changed as a team would.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok

APP = "registry.local/bench/progressive"
RUNS = 3


def _watch(list_fn, seen: dict, key: str, test, stop: threading.Event, **kwargs) -> None:
    w = watch.Watch()
    try:
        for event in w.stream(list_fn, timeout_seconds=90, **kwargs):
            if key not in seen and test(event["object"]):
                seen[key] = time.monotonic()
            if stop.is_set():
                w.stop()
    except (ProtocolError, client.ApiException):
        return  # the stream ended (the namespace or the cluster went away): nothing to time


def _crashing(digest: str):
    def test(pod: Any) -> bool:
        return any(digest in (cs.image or "") and cs.state and cs.state.waiting
                   and cs.state.waiting.reason == "CrashLoopBackOff"
                   for cs in (pod.status.container_statuses or []))
    return test


class PodHealth(BaseHTTPRequestHandler):
    """``GET /?ns=NS`` -> ``{"healthy": false}`` while any pod of NS is in CrashLoopBackOff."""

    core: client.CoreV1Api

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ns = parse_qs(urlparse(self.path).query).get("ns", [""])[0]
        pods = self.core.list_namespaced_pod(ns).items
        broken = any(cs.state and cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff"
                     for p in pods for cs in (p.status.container_statuses or []))
        body = json.dumps({"healthy": not broken}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _imagepatch_run(given: Scenario, api, policy: str, run: int) -> float:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    digest = fake_digest(f"bench-ip-{run}-{time.time()}")
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{APP}:1", policy=policy, replicas=2, crashloop_on=digest)
    seen: dict[str, float] = {}
    stop = threading.Event()

    def restored(dep) -> bool:
        return "broken" in seen and dep.spec.template.spec.containers[0].image == f"{APP}:1"

    threads = [
        threading.Thread(target=_watch, daemon=True, args=(
            core.list_namespaced_pod, seen, "broken", _crashing(digest), stop),
            kwargs={"namespace": ns}),
        threading.Thread(target=_watch, daemon=True, args=(
            apps.list_namespaced_deployment, seen, "back", restored, stop),
            kwargs={"namespace": ns}),
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    patch = unique("patch")
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    given.wait_phase(patch, "RolledBack", "Failed", "Succeeded")
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert {"broken", "back"} <= set(seen), seen
    return seen["back"] - seen["broken"]


def _argo_run(given: Scenario, api, argo, port: int, run: int) -> float:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    digest = fake_digest(f"bench-argo-{run}-{time.time()}")
    ns = given.namespace()
    given.apply({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "pods-healthy", "namespace": ns},
        "spec": {"metrics": [{
            "name": "pods-healthy", "interval": "1s", "failureLimit": 0,
            "successCondition": "result == true",
            "provider": {"web": {"url": f"http://127.0.0.1:{port}/?ns={ns}",
                                 "jsonPath": "{$.healthy}"}},
        }]},
    })
    template = {"metadata": {"labels": {
        "app": "web", "sim.imagepatch.dev/crashloop-digest": digest.split(":")[1][:16]}},
        "spec": {"containers": [{"name": "app", "image": f"{APP}:1"}]}}
    given.apply({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": template,
                 "strategy": {"canary": {
                     "analysis": {"templates": [{"templateName": "pods-healthy"}]},
                     "steps": [{"setWeight": 50}, {"pause": {"duration": "60s"}}]}}},
    })
    argo.wait_phase(ns, "web", "Healthy")
    seen: dict[str, float] = {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=_watch, daemon=True, args=(
            core.list_namespaced_pod, seen, "broken", _crashing(digest), stop),
            kwargs={"namespace": ns}),
        threading.Thread(target=_watch, daemon=True, args=(
            custom.list_namespaced_custom_object, seen, "back",
            lambda ro: (ro.get("status") or {}).get("abort") is True, stop),
            kwargs={"group": "argoproj.io", "version": "v1alpha1", "namespace": ns,
                    "plural": "rollouts"}),
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    given.kube.kubectl("patch", "rollout", "web", "-n", ns, "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/template/spec/containers/0/image",
         "value": f"{APP}:1@{digest}"}]))
    deadline = time.monotonic() + 120
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert {"broken", "back"} <= set(seen), seen
    return seen["back"] - seen["broken"]


def test_side_by_side_crash_loop_to_old_digest(kube, operator, argo_rollouts) -> None:
    given = Scenario(kube)
    api = kube.api_client
    PodHealth.core = client.CoreV1Api(api)
    server = ThreadingHTTPServer(("127.0.0.1", 0), PodHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    policy = unique("pol")
    # imagepatch's defaults but a short soak: the gate fails on the first crash loop anyway.
    given.policy(policy, rollout={"progressDeadlineSeconds": 120, "healthyFor": "5s",
                                  "maxRestarts": 0})
    try:
        ours = [_imagepatch_run(given, api, policy, run) for run in range(RUNS)]
        argos = [_argo_run(given, api, argo_rollouts, server.server_address[1], run)
                 for run in range(RUNS)]
    finally:
        server.shutdown()
        given.cleanup()
    ip, ar = statistics.median(ours), statistics.median(argos)
    print(f"\n[bench] crash loop -> old digest back, imagepatch gate on a Deployment "
          f"(template restored): median {ip:.2f}s, max {max(ours):.2f}s over {RUNS} runs")
    print(f"[bench] crash loop -> old digest back, Argo Rollouts analysis abort on a canary "
          f"Rollout (1s interval, failureLimit 0): median {ar:.2f}s, max {max(argos):.2f}s "
          f"over {RUNS} runs")
    print(f"[bench] ratio imagepatch / Argo Rollouts: {ip / ar:.2f}")
