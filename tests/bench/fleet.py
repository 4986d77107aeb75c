"""The fleet benchmark: one imagepatch operator over N opted-in Deployments, measured.

``run_fleet`` sets up, on the cluster it is given, the fleet the benchmark
issue describes and measures the operator (a subprocess under its shipped
RBAC, debug logging off) from the outside:

* **Fleet.** ``FleetSpec.workloads`` Deployments (1 replica: kwok pods) over
  ``namespaces`` namespaces, running ``apps`` app images built on ``bases``
  base images, all named as if in ECR and served by the real registry. An
  app's base is recorded in its OCI manifest annotations (a quarter), in its
  config labels (a quarter), or only in the workload's
  ``imagepatch.dev/base-image`` annotation (half). Every ``vulnerable_every``-th
  app has a fixable CRITICAL ECR finding (moto); the others have none. One
  policy, ECR findings, ``approval: Manual`` (so patches wait, and waiting must
  cost nothing). Workloads run ``repo:tag@digest``, the form imagepatch writes
  and the digest a kubelet reports in ``imageID``; kwok reports no ``imageID``,
  so with bare tags the operator would resolve each tag itself. The **by-tag
  fleet** (``FleetSpec.by_tag``) runs bare ``repo:tag`` (as most fleets do), so
  the operator resolves each app tag: it measures what a base push event costs
  then (the rollout and rollback phases are the digest fleet's, skipped).
* **Counting.** Registry traffic goes through ``FaultProxy`` (no faults: it
  only records), AWS traffic (ECR, SQS) through a second one in front of moto
  (operations read from ``X-Amz-Target``). kube-apiserver's ``/metrics``
  (``apiserver_request_total``) gives all requests, its audit log (which
  records only the operator's ServiceAccount) the operator's own. RSS and CPU
  come from ``/proc/<pid>`` of the operator process.
* **Phases.** apply the fleet → every workload evaluated (the cold cycle);
  one steady detection cycle (forced with ``imagepatch.dev/requestedAt``, which
  costs what an expired ``checkInterval`` costs); idle; an ECR push of one base
  through EventBridge → SQS → the ImagePatches of every app on it; idle
  again with those patches waiting; a rollout of one image to its workloads
  ("patching"); a broken pod → rollback started.

Figures are returned (and printed by the caller); nothing here asserts a
timing. ``format_table`` prints one table with a column per scale.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import re
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from tests.support.audit import OPERATOR_USER
from tests.support.faultproxy import FaultProxy
from tests.support.images import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    make_base_image,
)
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import OCI_MANIFEST, sha256_digest
from tests.support.scenario import fake_digest
from tests.support.wait import wait_for

ACCOUNT, REGION = "123456789012", "us-east-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
GROUP, VERSION = "imagepatch.dev", "v1alpha1"
BENCH_LABEL = "imagepatch-bench"
LINEAGES = ("manifest-annotations", "config-labels", "workload-annotation", "workload-annotation")
EVALUATED_LINE = re.compile(
    r"policy (?P<policy>\S+): (?P<n>\d+) workloads evaluated in (?P<secs>[\d.]+)s in pass (?P<pass>\d+)"
)
METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class FleetSpec:
    workloads: int
    namespaces: int = 10
    apps: int = 100
    bases: int = 5
    vulnerable_every: int = 10
    idle_seconds: float = 60.0
    # Workloads run ``repo:1`` (no digest): the operator resolves each app tag itself.
    by_tag: bool = False
    # Watch only the fleet's namespaces (--namespace PREFIX-*): for a run that shares its
    # cluster with other tests, whose leftover opted-in workloads would be counted too.
    own_namespaces_only: bool = False

    @property
    def apps_on_first_base(self) -> int:
        return len(range(0, self.apps, self.bases))


@dataclass(frozen=True)
class App:
    index: int
    repo: str  # the repository path in the registry and in (moto's) ECR
    digest: str
    base: int
    lineage: str
    vulnerable: bool

    @property
    def image(self) -> str:
        return f"{ECR}/{self.repo}:1@{self.digest}"

    @property
    def tagged(self) -> str:
        return f"{ECR}/{self.repo}:1"


# -- images -------------------------------------------------------------------------


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def push_app(registry, repo: str, *, base_name: str, base_digest: str, lineage: str) -> str:
    """A small single-layer app image recording its base as ``lineage`` says; its digest.

    Detection reads manifests and configs, never layers, so the layer is one
    small file rather than the base's rootfs.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = f"{repo}\n".encode()
        info = tarfile.TarInfo("app/id")
        info.size, info.mtime, info.mode = len(data), 1704067200, 0o644
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    recorded = {ANNOTATION_BASE_NAME: base_name, ANNOTATION_BASE_DIGEST: base_digest}
    config = _json_bytes({
        "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Labels": recorded if lineage == "config-labels" else {}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw)]},
    })
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config), "layers": [_descriptor(OCI_LAYER_GZIP, layer)],
    }
    if lineage == "manifest-annotations":
        manifest["annotations"] = recorded
    registry.push_blob(repo, layer)
    registry.push_blob(repo, config)
    return registry.put_manifest(repo, "1", _json_bytes(manifest), OCI_MANIFEST)


def build_images(registry, moto_server, prefix: str, spec: FleetSpec) -> tuple[list[str], list[App]]:
    """The bases (their digests) and apps in the registry, the apps' scans in moto's ECR."""
    bases = [make_base_image(registry, f"{prefix}/base-{k}", "1", marker=f"{prefix}-{k}-v1").digest
             for k in range(spec.bases)]
    ecr = moto_server.client("ecr")
    apps, results = [], []
    for i in range(spec.apps):
        repo, base, lineage = f"{prefix}/app-{i}", i % spec.bases, LINEAGES[i % len(LINEAGES)]
        digest = push_app(registry, repo, base_name=f"{ECR}/{prefix}/base-{base}:1",
                          base_digest=bases[base], lineage=lineage)
        vulnerable = i % spec.vulnerable_every == spec.vulnerable_every - 1
        apps.append(App(i, repo, digest, base, lineage, vulnerable))
        manifest, media_type, _ = registry.get_manifest(repo, digest)
        ecr.create_repository(repositoryName=repo)
        ecr.put_image(repositoryName=repo, imageManifest=manifest.decode(),
                      imageManifestMediaType=media_type, imageTag="1", imageDigest=digest)
        ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
        findings = [{"name": f"CVE-2026-{i:04d}", "severity": "CRITICAL", "uri": "https://nvd.example/",
                     "attributes": [{"key": "package_name", "value": "openssl"},
                                    {"key": "package_version", "value": "3.0.1"}]}] if vulnerable else []
        results.append({
            "imageScanStatus": {"status": "COMPLETE", "description": "done"},
            "imageScanFindings": {"findings": findings, "findingSeverityCounts": {}},
            "registryId": ACCOUNT, "repositoryName": repo, "imageId": {"imageDigest": digest},
        })
    moto_server.inject_ecr_scan_findings(*results)
    return bases, apps


# -- the fleet ------------------------------------------------------------------------


def deployments(spec: FleetSpec, prefix: str, apps: list[App], policy: str,
                crashloop: tuple[int, str] | None = None) -> list[dict]:
    """Workload ``w`` runs app ``w % apps`` in namespace ``w % namespaces``."""
    out = []
    for w in range(spec.workloads):
        app = apps[w % len(apps)]
        ns, name = f"{prefix}-{w % spec.namespaces}", f"app-{w}"
        annotations = {"imagepatch.dev/policy": policy}
        if app.lineage == "workload-annotation":
            annotations["imagepatch.dev/base-image"] = f"{ECR}/{prefix}/base-{app.base}:1"
        labels = {"app": name}
        if crashloop and crashloop[0] == w:
            # The kwok stage crash-loops pods once they run this digest.
            labels["sim.imagepatch.dev/crashloop-digest"] = crashloop[1].split(":")[1][:16]
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"replicas": 1, "progressDeadlineSeconds": 60,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{
                                      "name": "app",
                                      "image": app.tagged if spec.by_tag else app.image}]}}},
        })
    return out


def create(kube, docs: list[dict], *, chunk: int = 200) -> None:
    for i in range(0, len(docs), chunk):
        body = {"apiVersion": "v1", "kind": "List", "items": docs[i:i + chunk]}
        kube.kubectl("create", "-f", "-", input=json.dumps(body))


# -- counters -------------------------------------------------------------------------


def _in_fleet(path: str, repositories: str | None) -> bool:
    """Whether ``path`` is a request about the fleet's own repositories (``<prefix>/...``).

    On a shared test cluster the bench's operator also sees the other tests'
    ImagePatches and policies (both cluster-scoped) and may resolve their images
    through the same proxy; those requests are not the fleet's figures.
    """
    if repositories is None or path.rstrip("/") == "/v2":
        return True
    return path.startswith(f"/v2/{repositories}/")


def registry_counts(proxy: FaultProxy, repositories: str | None = None) -> dict[str, int]:
    """Requests that reached the registry, by method and kind (manifests, blobs, ...);
    with ``repositories`` (a prefix), only those about repositories under it."""
    out: Counter[str] = Counter()
    for r in list(proxy.requests):
        path = r.path.split("?", 1)[0]
        if not _in_fleet(path, repositories):
            continue
        kind = ("manifest" if "/manifests/" in path else "blob" if "/blobs/" in path
                else "ping" if path.rstrip("/") == "/v2" else "other")
        out[f"{r.method} {kind}"] += 1
    return dict(sorted(out.items()))


def foreign_requests(proxy: FaultProxy, repositories: str) -> int:
    """Requests about repositories outside ``repositories`` (other tests' images)."""
    return sum(1 for r in list(proxy.requests)
               if not _in_fleet(r.path.split("?", 1)[0], repositories))


def manifest_heads_by_repository(proxy: FaultProxy, repositories: str | None = None
                                 ) -> dict[str, int]:
    """Manifest HEADs that reached the registry, by repository (``/v2/<repo>/manifests/<ref>``)."""
    out: Counter[str] = Counter()
    for r in list(proxy.requests):
        path = r.path.split("?", 1)[0]
        if r.method == "HEAD" and "/manifests/" in path and _in_fleet(path, repositories):
            out[path.removeprefix("/v2/").split("/manifests/", 1)[0]] += 1
    return dict(sorted(out.items()))


def aws_counts(proxy: FaultProxy, repositories: str | None = None) -> dict[str, int]:
    """AWS API calls, by service operation (from ``X-Amz-Target``, else the query's Action);
    with ``repositories`` (a prefix), ECR calls about other repositories are left out."""
    out: Counter[str] = Counter()
    for r in list(proxy.requests):
        target = r.header("X-Amz-Target") or ""
        service, _, op = target.rpartition(".")
        if "ContainerRegistry" in service:
            if repositories is not None and not _ecr_in_fleet(r.body, repositories):
                continue
            out[f"ecr:{op}"] += 1
        elif "SQS" in service:
            out[f"sqs:{op}"] += 1
        else:
            out[target or f"other {r.method}"] += 1
    return dict(sorted(out.items()))


def _ecr_in_fleet(body: bytes, repositories: str) -> bool:
    try:
        name = json.loads(body or b"{}").get("repositoryName")
    except ValueError:
        return True
    return not isinstance(name, str) or name.startswith(f"{repositories}/")


def only(counts: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(prefix))


def apiserver_requests(kube) -> float:
    """``apiserver_request_total`` summed over every label (all clients)."""
    total = 0.0
    for line in kube.kubectl("get", "--raw", "/metrics").splitlines():
        m = METRIC.match(line)
        if m:
            total += float(m.group("value"))
    return total


class AuditCounter:
    """The operator's own API requests, from the API server's audit log (one per auditID)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = 0
        self.seen: set[str] = set()

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path and self.path.exists() else 0

    def since_mark(self) -> Counter[str]:
        out: Counter[str] = Counter()
        if not self.path or not self.path.exists():
            return out
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        for line in data.decode(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if (event.get("user") or {}).get("username") != OPERATOR_USER:
                continue
            if event.get("auditID") in self.seen:
                continue
            self.seen.add(event.get("auditID"))
            ref = event.get("objectRef") or {}
            out[f"{event.get('verb')} {ref.get('resource', 'nonresource')}"] += 1
        return out


def proc_stats(pid: int) -> dict[str, float]:
    """RSS, peak RSS (MiB) and CPU seconds (user + system) of one process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in status.splitlines())
          if k in ("VmRSS", "VmHWM")}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return {"rss_mb": kb["VmRSS"] / 1024, "hwm_mb": kb["VmHWM"] / 1024, "cpu_s": cpu}


@dataclass
class Window:
    """What one stretch of time cost: API requests, operator CPU, registry and AWS calls."""

    seconds: float
    api_all: float
    api_operator: int
    api_operator_by_verb: dict[str, int]
    cpu_s: float
    rss_mb: float

    def per_minute(self, value: float) -> float:
        return value / self.seconds * 60 if self.seconds else 0.0


class Meter:
    def __init__(self, kube, audit: AuditCounter, pid: int) -> None:
        self.kube, self.audit, self.pid = kube, audit, pid

    def start(self) -> tuple[float, float, float]:
        self.audit.mark()
        return time.monotonic(), apiserver_requests(self.kube), proc_stats(self.pid)["cpu_s"]

    def stop(self, began: tuple[float, float, float]) -> Window:
        t0, api0, cpu0 = began
        ops = self.audit.since_mark()
        now = proc_stats(self.pid)
        return Window(seconds=time.monotonic() - t0, api_all=apiserver_requests(self.kube) - api0,
                      api_operator=sum(ops.values()), api_operator_by_verb=dict(ops.most_common(8)),
                      cpu_s=now["cpu_s"] - cpu0, rss_mb=now["rss_mb"])


# -- the run --------------------------------------------------------------------------


def _custom(kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def _patches(custom: client.CustomObjectsApi, policy: str) -> list[dict]:
    return custom.list_cluster_custom_object(
        GROUP, VERSION, "imagepatches", label_selector=f"imagepatch.dev/policy={policy}")["items"]


def _phase(custom: client.CustomObjectsApi, name: str) -> str:
    obj = custom.get_cluster_custom_object(GROUP, VERSION, "imagepatches", name)
    return (obj.get("status") or {}).get("phase", "")


def _approve(kube, name: str) -> None:
    body = {"spec": {"approval": {"decision": "Approved", "by": "bench"}}}
    kube.kubectl("patch", "imagepatch", name, "--type", "merge", "-p", json.dumps(body))


def _wait_cycle(operator: OperatorProcess, policy: str, offset: int, *, timeout: float) -> dict:
    def probe():
        for m in EVALUATED_LINE.finditer(operator.log()[offset:]):
            if m.group("policy") == policy:
                return {"workloads": int(m.group("n")), "seconds": float(m.group("secs"))}
        return None
    return wait_for(probe, timeout=timeout, interval=0.2, what=f"a detection pass of {policy}")


def run_fleet(kube, audit_log: Path | None, registry, moto_server, workdir: Path, spec: FleetSpec,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Set up the fleet, run the operator over it, measure every phase; the figures."""
    prefix = f"bench-{uuid.uuid4().hex[:5]}"
    policy = f"{prefix}-policy"
    custom = _custom(kube)
    t = time.monotonic()
    bases, apps = build_images(registry, moto_server, prefix, spec)
    say(f"[bench {spec.workloads}] {len(bases)} bases, {len(apps)} apps pushed and scanned "
        f"in {time.monotonic() - t:.1f}s")

    reg_proxy = FaultProxy.start(upstream=registry.host)
    # On a shared cluster, only requests about the fleet's own repositories are its figures.
    own = prefix if spec.own_namespaces_only else None
    aws_proxy = FaultProxy.start(upstream=moto_server.endpoint_url.removeprefix("http://"))
    sqs, events = moto_server.client("sqs"), moto_server.client("events")
    queue = sqs.create_queue(QueueName=prefix)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=prefix, EventPattern=json.dumps({"source": ["aws.ecr", "aws.inspector2"]}))
    events.put_targets(Rule=prefix, Targets=[{"Id": "q", "Arn": arn, "InputTransformer": {
        "InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}}])

    install_rbac(kube)
    for j in range(spec.namespaces):
        kube.kubectl("create", "namespace", f"{prefix}-{j}")
        kube.kubectl("label", "namespace", f"{prefix}-{j}", f"{BENCH_LABEL}=true")
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePatchPolicy", "metadata": {"name": policy},
        "spec": {"namespaceSelector": {"matchLabels": {BENCH_LABEL: "true"}},
                 "baseImages": {"checkInterval": "1h"},
                 "vulnerabilities": {"source": "ecr", "minSeverity": "HIGH"},
                 "approval": "Manual",
                 "rollout": {"progressDeadlineSeconds": 60, "healthyFor": "2s", "maxRestarts": 0}}}))

    operator = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, workdir / "operator.kubeconfig"),
        log_path=workdir / "operator.log", verbose=False,
        extra_args=["--registry-endpoint", f"{ECR}=http://{reg_proxy.host}", "--aws-region", REGION,
                    "--events-queue-url", queue, "--lease-name", f"{prefix}-leader",
                    *(["--namespace", f"{prefix}-*"] if spec.own_namespaces_only else [])],
        extra_env={**moto_server.env(), "AWS_ENDPOINT_URL": aws_proxy.url},
    )
    operator.start()
    pid = operator.proc.pid
    meter = Meter(kube, AuditCounter(audit_log), pid)
    out: dict[str, Any] = {"workloads": spec.workloads, "namespaces": spec.namespaces,
                           "apps": spec.apps, "bases": spec.bases, "prefix": prefix,
                           "by_tag": spec.by_tag}
    bad_digest = fake_digest(f"{prefix}-crashes")
    try:
        # 1. Apply the fleet; every workload evaluated (the cold cycle).
        began = meter.start()
        create(kube, deployments(spec, prefix, apps, policy, crashloop=(0, bad_digest)))
        applied = time.monotonic() - began[0]

        def all_evaluated():
            obj = custom.get_cluster_custom_object(GROUP, VERSION, "imagepatchpolicies", policy)
            return ((obj.get("status") or {}).get("workloads") or {}).get("total") == spec.workloads
        wait_for(all_evaluated, timeout=120 + spec.workloads * 0.5, interval=0.25,
                 what=f"all {spec.workloads} workloads evaluated")
        cold = meter.stop(began)
        vulnerable = sum(a.vulnerable for a in apps)
        wait_for(lambda: len(_patches(custom, policy)) >= vulnerable, timeout=60,
                 what=f"{vulnerable} ImagePatches for the vulnerable images")
        out["fleet"] = {"apply_seconds": round(applied, 2), "evaluated_seconds": round(cold.seconds, 2),
                        "waiting_patches": len(_patches(custom, policy))}
        out["registry_cold"] = registry_counts(reg_proxy, own)
        out["aws_cold"] = aws_counts(aws_proxy, own)
        say(f"[bench {spec.workloads}] applied in {applied:.1f}s, all evaluated after {cold.seconds:.1f}s")

        # 2. One steady detection cycle.
        reg_proxy.clear()
        aws_proxy.clear()
        offset = len(operator.log())
        began = meter.start()
        kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                     f"imagepatch.dev/requestedAt={dt.datetime.now(dt.UTC).isoformat()}")
        cycle = _wait_cycle(operator, policy, offset, timeout=60 + spec.workloads * 0.2)
        steady = meter.stop(began)
        out["cycle"] = {"seconds": cycle["seconds"], "workloads": cycle["workloads"],
                        "registry": registry_counts(reg_proxy, own), "aws": aws_counts(aws_proxy, own),
                        "heads_by_repository": manifest_heads_by_repository(reg_proxy, own),
                        "registry_foreign": foreign_requests(reg_proxy, prefix),
                        "api_operator": steady.api_operator}
        say(f"[bench {spec.workloads}] steady cycle: {cycle['seconds']:.2f}s, "
            f"registry {out['cycle']['registry']}, aws {out['cycle']['aws']}, "
            f"{out['cycle']['registry_foreign']} registry requests about other tests' images")

        # 3. Idle.
        time.sleep(3)  # let the cycle's writes settle (not a wait for a state)
        began = meter.start()
        time.sleep(spec.idle_seconds)  # a measurement window
        idle = meter.stop(began)

        # 4. An ECR push of base 0 through EventBridge -> SQS -> ImagePatches.
        before = {p["metadata"]["name"] for p in _patches(custom, policy)}
        v2 = make_base_image(registry, f"{prefix}/base-0", "1", marker=f"{prefix}-0-v2")
        reg_proxy.clear()
        aws_proxy.clear()
        pushed = time.monotonic()
        events.put_events(Entries=[{
            "Source": "aws.ecr", "DetailType": "ECR Image Action",
            "Detail": json.dumps({"action-type": "PUSH", "result": "SUCCESS",
                                  "repository-name": f"{prefix}/base-0", "image-digest": v2.digest,
                                  "image-tag": "1"})}])
        expected = spec.apps_on_first_base

        def new_base_patches():
            found = [p for p in _patches(custom, policy) if p["metadata"]["name"] not in before
                     and p["spec"].get("reason") == "BaseImageOutdated"]
            return found if len(found) >= expected else None
        try:
            found = wait_for(new_base_patches, timeout=60 + spec.workloads * 0.05, interval=0.05,
                             what=f"{expected} BaseImageOutdated ImagePatches")
            latency: float | None = time.monotonic() - pushed
        except TimeoutError:
            found, latency = [], None
        # The pass that opened them goes on recording states; its requests count too.
        time.sleep(3)
        out["push"] = {"images": expected, "patches": len(found),
                       "seconds": None if latency is None else round(latency, 2),
                       "registry": registry_counts(reg_proxy, own), "aws": aws_counts(aws_proxy, own),
                       "workloads_on_base": len(range(0, spec.workloads, spec.bases))}
        say(f"[bench {spec.workloads}{' by tag' if spec.by_tag else ''}] push -> "
            f"{len(found)}/{expected} ImagePatches: {latency if latency is None else round(latency, 2)}s; "
            f"registry {out['push']['registry']}, aws {out['push']['aws']}")

        # 5. Idle again, with more patches waiting.
        waiting = len(_patches(custom, policy))
        began = meter.start()
        time.sleep(spec.idle_seconds)
        idle_more = meter.stop(began)

        # 6. Patching: one image rolled out to all its workloads (the digest fleet only).
        if spec.by_tag:
            out["api_per_minute"] = {
                "idle_operator": round(idle.per_minute(idle.api_operator), 1),
                "idle_all": round(idle.per_minute(idle.api_all), 1),
                "idle_operator_by_verb": idle.api_operator_by_verb,
                "idle_more_waiting_operator": round(idle_more.per_minute(idle_more.api_operator), 1),
                "waiting_patches": [out["fleet"]["waiting_patches"], waiting],
                "evaluating_operator": round(cold.per_minute(cold.api_operator), 1),
            }
            out["operator"] = {"rss_idle_mb": round(idle_more.rss_mb, 1),
                               "rss_peak_mb": round(proc_stats(pid)["hwm_mb"], 1),
                               "cpu_idle_s_per_min": round(idle.per_minute(idle.cpu_s), 2)}
            say(f"[bench {spec.workloads} by tag] idle: operator "
                f"{out['api_per_minute']['idle_operator']} API req/min "
                f"({idle.api_operator_by_verb}); RSS idle {out['operator']['rss_idle_mb']} MiB, "
                f"peak {out['operator']['rss_peak_mb']} MiB")
            out["forbidden"] = operator.forbidden_lines()[:5]
            return out
        chosen = next(a for a in apps if a.base != 0 and not a.vulnerable and a.index != 0)
        rollout = f"{prefix}-rollout"
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePatch", "metadata": {"name": rollout},
            "spec": {"image": f"{ECR}/{chosen.repo}", "tag": "1", "currentDigest": chosen.digest,
                     "policy": policy, "reason": "Manual",
                     "targetDigest": fake_digest(f"{prefix}-fixed")}}))
        wait_for(lambda: _phase(custom, rollout) == "AwaitingApproval", timeout=60,
                 what="the rollout patch to await approval")
        targets = len(range(chosen.index, spec.workloads, len(apps)))
        began = meter.start()
        _approve(kube, rollout)
        wait_for(lambda: _phase(custom, rollout) in ("Succeeded", "Failed", "RolledBack"),
                 timeout=120 + targets * 20, interval=0.5, what="the rollout to finish")
        patching = meter.stop(began)
        out["rollout"] = {"targets": targets, "phase": _phase(custom, rollout),
                          "seconds": round(patching.seconds, 2)}

        # 7. A broken pod -> rollback started.
        out["rollback_seconds"] = _rollback_latency(kube, custom, prefix, policy, apps[0], bad_digest)
        say(f"[bench {spec.workloads}] rollout of {targets} workloads: {patching.seconds:.1f}s; "
            f"broken pod -> rollback: {out['rollback_seconds']}s")

        final = proc_stats(pid)
        out["api_per_minute"] = {
            "idle_operator": round(idle.per_minute(idle.api_operator), 1),
            "idle_all": round(idle.per_minute(idle.api_all), 1),
            "idle_operator_by_verb": idle.api_operator_by_verb,
            "idle_more_waiting_operator": round(idle_more.per_minute(idle_more.api_operator), 1),
            "waiting_patches": [out["fleet"]["waiting_patches"], waiting],
            "patching_operator": round(patching.per_minute(patching.api_operator), 1),
            "patching_all": round(patching.per_minute(patching.api_all), 1),
            "evaluating_operator": round(cold.per_minute(cold.api_operator), 1),
        }
        out["operator"] = {
            "rss_idle_mb": round(idle_more.rss_mb, 1),
            "rss_peak_mb": round(final["hwm_mb"], 1),
            "cpu_idle_s_per_min": round(idle.per_minute(idle.cpu_s), 2),
            "cpu_idle_more_waiting_s_per_min": round(idle_more.per_minute(idle_more.cpu_s), 2),
            "cpu_evaluating_s_per_min": round(cold.per_minute(cold.cpu_s), 2),
            "cpu_patching_s_per_min": round(patching.per_minute(patching.cpu_s), 2),
        }
        out["operator"]["cpu_peak_s_per_min"] = max(
            out["operator"]["cpu_evaluating_s_per_min"], out["operator"]["cpu_patching_s_per_min"])
        out["forbidden"] = operator.forbidden_lines()[:5]
    finally:
        operator.stop()
        reg_proxy.stop()
        aws_proxy.stop()
        _remove_fleet(kube, prefix, policy, spec)
    return out


def _remove_fleet(kube, prefix: str, policy: str, spec: FleetSpec) -> None:
    """Leave nothing for the next test in a shared cluster: its images are behind proxies now gone.

    The policy and its ImagePatches go first (an operator that sees an opted-in
    workload of an unknown policy only reports it), then the namespaces, in the
    background like every scenario's.
    """
    kube.kubectl("delete", "imagepatchpolicy", policy, "--ignore-not-found", "--wait=false",
                 check=False)
    kube.kubectl("delete", "imagepatches", "-l", f"imagepatch.dev/policy={policy}",
                 "--ignore-not-found", "--wait=false", check=False)
    for name in (f"{prefix}-rollback", f"{prefix}-rollout"):
        kube.kubectl("delete", "imagepatch", name, "--ignore-not-found", "--wait=false", check=False)
    for j in range(spec.namespaces):
        kube.kubectl("delete", "namespace", f"{prefix}-{j}", "--wait=false", check=False)


def _rollback_latency(kube, custom, prefix: str, policy: str, app: App, bad: str) -> float | None:
    """Roll workload 0 to a digest whose pods crash-loop; time CrashLoopBackOff -> RollingBack."""
    ns, name, patch = f"{prefix}-0", "app-0", f"{prefix}-rollback"
    core = client.CoreV1Api(kube.api_client)
    seen: dict[str, float] = {}
    stop = threading.Event()

    def crashing(pod) -> bool:
        return any(bad in (cs.image or "") and cs.state and cs.state.waiting
                   and cs.state.waiting.reason == "CrashLoopBackOff"
                   for cs in (pod.status.container_statuses or []))

    def rolling_back(obj) -> bool:
        return any(r.get("phase") in ("RollingBack", "RolledBack")
                   for r in (obj.get("status") or {}).get("rollouts", []))

    def follow(list_fn, key, test, **kwargs) -> None:
        w = watch.Watch()
        for event in w.stream(list_fn, timeout_seconds=120, **kwargs):
            if key not in seen and test(event["object"]):
                seen[key] = time.monotonic()
            if stop.is_set() or key in seen:
                w.stop()

    threads = [
        threading.Thread(target=follow, daemon=True, args=(core.list_namespaced_pod, "broken", crashing),
                         kwargs={"namespace": ns}),
        threading.Thread(target=follow, daemon=True,
                         args=(custom.list_cluster_custom_object, "rollback", rolling_back),
                         kwargs={"group": GROUP, "version": VERSION, "plural": "imagepatches",
                                 "field_selector": f"metadata.name={patch}"}),
    ]
    for th in threads:
        th.start()
    time.sleep(0.5)  # the watches are open before anything happens
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImagePatch", "metadata": {"name": patch},
        "spec": {"image": f"{ECR}/{app.repo}", "tag": "1", "currentDigest": app.digest,
                 "policy": policy, "reason": "Manual", "targetDigest": bad,
                 "targets": [{"namespace": ns, "name": name, "container": "app"}]}}))
    try:
        wait_for(lambda: _phase(custom, patch) == "AwaitingApproval", timeout=60,
                 what="the rollback patch to await approval")
        _approve(kube, patch)
        wait_for(lambda: {"broken", "rollback"} <= set(seen), timeout=120, interval=0.1,
                 what="a crash-looping pod and the rollback")
    except TimeoutError:
        return None
    finally:
        stop.set()
    return round(seen["rollback"] - seen["broken"], 2)


# -- output ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
               if ln.startswith("MemTotal:"))
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "unknown")
    return {"cores": os.cpu_count(), "memory_gib": round(mem / 1024 / 1024, 1), "cpu": model,
            "load_avg_at_end": os.getloadavg()[0]}


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"
    return str(v)


ROWS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("time until every workload evaluated (s)", lambda r: r["fleet"]["evaluated_seconds"], "linear"),
    ("  of which applying the fleet (s)", lambda r: r["fleet"]["apply_seconds"], ""),
    ("steady cycle: evaluation pass (s)", lambda r: r["cycle"]["seconds"], "linear"),
    ("steady cycle: registry HEAD manifest", lambda r: only(r["cycle"]["registry"], "HEAD manifest"),
     "= bases"),
    ("steady cycle: registry GET manifest", lambda r: only(r["cycle"]["registry"], "GET manifest"), "0"),
    ("steady cycle: registry GET blob", lambda r: only(r["cycle"]["registry"], "GET blob"), "0"),
    ("steady cycle: registry, all", lambda r: sum(r["cycle"]["registry"].values()), "= bases"),
    ("cold cycle: registry HEAD manifest", lambda r: only(r["registry_cold"], "HEAD manifest"), "= bases"),
    ("cold cycle: registry GET manifest", lambda r: only(r["registry_cold"], "GET manifest"), "= apps"),
    ("cold cycle: registry GET blob (configs)", lambda r: only(r["registry_cold"], "GET blob"),
     "= apps w/o annotations"),
    ("steady cycle: ECR API calls", lambda r: only(r["cycle"]["aws"], "ecr:"), "= apps"),
    ("cold cycle: ECR API calls", lambda r: only(r["aws_cold"], "ecr:"), "= apps"),
    ("API req/min idle, operator", lambda r: r["api_per_minute"]["idle_operator"], "flat"),
    ("API req/min idle, more patches waiting", lambda r: r["api_per_minute"]["idle_more_waiting_operator"],
     "= idle"),
    ("  waiting ImagePatches (before, after)", lambda r: "→".join(map(str, r["api_per_minute"]["waiting_patches"])), ""),
    ("API req/min idle, all clients", lambda r: r["api_per_minute"]["idle_all"], ""),
    ("API req/min evaluating, operator", lambda r: r["api_per_minute"]["evaluating_operator"], ""),
    ("API req/min patching, operator", lambda r: r["api_per_minute"]["patching_operator"], ""),
    ("API req/min patching, all clients", lambda r: r["api_per_minute"]["patching_all"], ""),
    ("push → ImagePatches (s)", lambda r: r["push"]["seconds"], "≤ 5 (by tag ≤ 2)"),
    ("push event: registry requests", lambda r: sum(r["push"]["registry"].values()), "≤ 5"),
    ("push event: registry HEAD manifest", lambda r: only(r["push"]["registry"], "HEAD manifest"),
     "1 (the base)"),
    ("  ImagePatches opened / images on the base", lambda r: f"{r['push']['patches']}/{r['push']['images']}", ""),
    ("broken pod → rollback started (s)", lambda r: r["rollback_seconds"], ""),
    ("rollout of one image (targets, s)", lambda r: f"{r['rollout']['targets']}, {r['rollout']['seconds']}", ""),
    ("operator RSS idle (MiB)", lambda r: r["operator"]["rss_idle_mb"], ""),
    ("operator RSS peak (MiB)", lambda r: r["operator"]["rss_peak_mb"], "≤ 150"),
    ("operator CPU idle (s/min)", lambda r: r["operator"]["cpu_idle_s_per_min"], "< 1.2"),
    ("operator CPU peak (s/min)", lambda r: r["operator"]["cpu_peak_s_per_min"], ""),
]


def format_table(runs: list[dict]) -> str:
    """One table: a row per figure, a column per scale, the target or physical limit."""
    head = ["figure", *[f"{r['workloads']} wl{' by tag' if r.get('by_tag') else ''}" for r in runs],
            "target / limit"]
    rows = [head]
    for label, get, target in ROWS:
        values = []
        for r in runs:
            try:
                values.append(_fmt(get(r)))
            except (KeyError, TypeError, StopIteration):
                values.append("—")
        rows.append([label, *values, target])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def growth(runs: list[dict]) -> str:
    """How the main figures grow from the smallest to the largest scale."""
    if len(runs) < 2:
        return ""
    a, b = runs[0], runs[-1]
    scale = b["workloads"] / a["workloads"]
    parts = [f"workloads ×{scale:g}"]
    for label, get in (("evaluation time", lambda r: r["fleet"]["evaluated_seconds"]),
                       ("steady-cycle registry requests", lambda r: sum(r["cycle"]["registry"].values())),
                       ("steady-cycle ECR calls", lambda r: only(r["cycle"]["aws"], "ecr:")),
                       ("idle API req/min", lambda r: r["api_per_minute"]["idle_operator"]),
                       ("peak RSS", lambda r: r["operator"]["rss_peak_mb"])):
        try:
            x, y = get(a), get(b)
            parts.append(f"{label} ×{(y / x):.2f}" if x else f"{label} {x}→{y}")
        except (KeyError, TypeError, ZeroDivisionError):
            continue
    return "growth: " + ", ".join(parts)


def write_results(path: Path, runs: list[dict]) -> None:
    path.write_text(json.dumps({"generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                "machine": machine(), "runs": runs}, indent=1) + "\n")

