"""``imagepatch report`` on the real API server, under nothing but the shipped ``view`` RBAC.

Given two ImagePatchPolicies, opted-in Deployments whose ``imagepatch.dev/state``
records say compliant, base image outdated, vulnerable, rolled back (Failed)
and awaiting approval (Patching), and ImagePatches with recorded statuses
(written through the status subresource, as the operator writes them), when
``imagepatch report`` runs as a subprocess with a token-only kubeconfig for a
ServiceAccount bound to the built-in ``view`` ClusterRole (which holds our
rules only through ``deploy/view-role.yaml``'s aggregation label), then:

* its JSON matches the cluster's objects field by field;
* ``-o csv`` and the table say the same; the filters narrow it;
* bound to ``view`` in one namespace only, it still reports that namespace
  and warns that it cannot list the cluster-scoped resources;
* the HTML page opens in headless Chromium, and the screenshot shows the
  chart's bars and the table's state badges (skipped, loudly, without
  ``/usr/bin/chromium``);
* history retention deletes exactly what ``core.report.retention`` chose,
  never an active patch, and nothing that changed after the choice.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import kubeconfig_yaml
from tests.support.argo import install_crds
from tests.support.scenario import unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
HOST = "registry.example.com"


def dg(c: str) -> str:
    return "sha256:" + c * 64


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the scene ------------------------------------------------------------------------------


class Scene:
    """The objects the tests create, with what the report should say of them."""

    def __init__(self, kube) -> None:
        self.kube = kube
        self.tag = unique("rpt")
        self.ns_a, self.ns_b = f"{self.tag}-shop", f"{self.tag}-jobs"
        self.critical, self.weekly = f"{self.tag}-critical", f"{self.tag}-weekly"
        self.now = dt.datetime.now(dt.UTC)

    def ago(self, **delta: float) -> str:
        return iso(self.now - dt.timedelta(**delta))

    def apply(self, doc: dict) -> None:
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def status(self, kind: str, name: str, status: dict) -> None:
        self.kube.kubectl("patch", kind, name, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))

    def get(self, *args: str) -> Any:
        return json.loads(self.kube.kubectl("get", *args, "-o", "json"))


def container_record(name: str, repo: str, digest: str, state: str, reason: str, message: str,
                     **extra: Any) -> dict:
    return {"name": name, "image": f"{HOST}/{repo}:1.0", "digest": digest,
            "digestSource": "pod-status", "base": f"{HOST}/base/python:3.12",
            "baseDigest": dg("b"), "baseCurrent": extra.pop("baseCurrent", dg("b")),
            "lineage": "manifest-annotations", "state": state, "reason": reason,
            "message": message, **extra}


def deployment(scene: Scene, namespace: str, name: str, policy: str | None,
               record: dict | None) -> dict:
    annotations = {}
    if policy:
        annotations["imagepatch.dev/policy"] = policy
    if record is not None:
        annotations["imagepatch.dev/state"] = json.dumps(record, sort_keys=True)
    image = record["containers"][0]["image"] if record and record["containers"] else f"{HOST}/x:1"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "replicas": 0,  # nothing to schedule: the report reads only the Deployment
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }


def imagepatch(name: str, policy: str, repo: str, digest: str, reason: str, **spec: Any) -> dict:
    return {
        "apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
        "metadata": {"name": name, "labels": {"imagepatch.dev/policy": policy}},
        "spec": {"image": f"{HOST}/{repo}", "currentDigest": digest, "policy": policy,
                 "reason": reason, **spec},
    }


@pytest.fixture(scope="module")
def scene(kube, crds) -> Scene:
    s = Scene(kube)
    for ns in (s.ns_a, s.ns_b):
        kube.kubectl("create", "namespace", ns)

    for name, approval in ((s.critical, "Manual"), (s.weekly, "Automatic")):
        s.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
                 "metadata": {"name": name},
                 "spec": {"namespaceSelector": {}, "approval": approval}})
    s.status("imagepatchpolicy", s.critical, {
        "workloads": {"total": 4, "compliant": 1, "baseImageOutdated": 0, "vulnerable": 1,
                      "untrustedBase": 0, "patching": 1, "failed": 1},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled",
                        "message": "4 workloads", "lastTransitionTime": s.ago(hours=6)}]})
    s.status("imagepatchpolicy", s.weekly, {
        "workloads": {"total": 1, "compliant": 0, "baseImageOutdated": 1, "vulnerable": 0,
                      "untrustedBase": 0, "patching": 0, "failed": 0},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled",
                        "message": "1 workload", "lastTransitionTime": s.ago(hours=6)}]})

    # ImagePatches: a success (web), a rollback (cart), one awaiting approval (pay),
    # and a closed one for batch's previous digest.
    s.apply(imagepatch(f"{s.tag}-web", s.critical, "team/web", dg("0"), "BaseImageOutdated",
                       targetDigest=dg("1"),
                       approval={"decision": "Approved", "by": "bob", "reason": "routine"}))
    s.status("imagepatch", f"{s.tag}-web", {
        "phase": "Succeeded", "targetDigest": dg("1"),
        "history": [{"phase": "Pending", "at": s.ago(hours=5, minutes=30)},
                    {"phase": "RollingOut", "at": s.ago(hours=4, minutes=30), "by": "bob"},
                    {"phase": "Succeeded", "at": s.ago(hours=4, minutes=10),
                     "message": "all 1 workloads healthy"}],
        "rollouts": [{"namespace": s.ns_a, "name": "web", "kind": "Deployment", "container": "app",
                      "phase": "Healthy", "previousImage": f"{HOST}/team/web:1.0@{dg('0')}",
                      "targetImage": f"{HOST}/team/web:1.0@{dg('1')}",
                      "startedAt": s.ago(hours=4, minutes=30),
                      "finishedAt": s.ago(hours=4, minutes=10)}]})
    s.apply(imagepatch(f"{s.tag}-cart", s.critical, "team/cart", dg("2"), "BaseImageOutdated",
                       approval={"decision": "Approved", "by": "alice", "reason": "CAB-42"},
                       evidence={"baseImage": {"name": f"{HOST}/base/python:3.12",
                                               "oldDigest": dg("b"), "newDigest": dg("c")}}))
    s.status("imagepatch", f"{s.tag}-cart", {
        "phase": "RolledBack", "targetDigest": dg("3"), "failedDigests": [dg("3")],
        "history": [{"phase": "Pending", "at": s.ago(hours=3, minutes=40)},
                    {"phase": "AwaitingApproval", "at": s.ago(hours=3, minutes=39)},
                    {"phase": "Building", "at": s.ago(hours=3, minutes=20), "by": "alice"},
                    {"phase": "RollingOut", "at": s.ago(hours=2, minutes=40)},
                    {"phase": "RolledBack", "at": s.ago(hours=2, minutes=20),
                     "message": "1 workload rolled back"}],
        "rollouts": [{"namespace": s.ns_a, "name": "cart", "kind": "Deployment",
                      "container": "app", "phase": "RolledBack", "reason": "CrashLoopBackOff",
                      "message": "pod cart-7d9 container app: back-off restarting",
                      "startedAt": s.ago(hours=2, minutes=40),
                      "finishedAt": s.ago(hours=2, minutes=20)}]})
    s.apply(imagepatch(f"{s.tag}-pay", s.critical, "team/pay", dg("4"), "BaseImageOutdated",
                       evidence={"baseImage": {"name": f"{HOST}/base/python:3.12",
                                               "oldDigest": dg("b"), "newDigest": dg("c")}}))
    s.status("imagepatch", f"{s.tag}-pay", {
        "phase": "AwaitingApproval",
        "history": [{"phase": "Pending", "at": s.ago(hours=1, minutes=5)},
                    {"phase": "AwaitingApproval", "at": s.ago(hours=1)}]})
    s.apply(imagepatch(f"{s.tag}-batch-old", s.weekly, "team/batch", dg("5"), "Vulnerable",
                       evidence={"findings": [{"id": "CVE-2026-1111", "severity": "HIGH"}]}))
    s.status("imagepatch", f"{s.tag}-batch-old", {
        "phase": "Closed",
        "history": [{"phase": "Pending", "at": s.ago(hours=3, minutes=50)},
                    {"phase": "Closed", "at": s.ago(hours=3, minutes=10),
                     "message": "no longer needed: the image no longer breaks the policy"}]})

    records = {
        (s.ns_a, "web", s.critical): {
            "policy": s.critical, "state": "Compliant", "message": "Compliant",
            "since": s.ago(hours=4),
            "containers": [container_record("app", "team/web", dg("1"), "Compliant", "Compliant",
                                            f"base {HOST}/base/python:3.12 is current")]},
        (s.ns_a, "api", s.critical): {
            "policy": s.critical, "state": "Vulnerable",
            "message": "app: 2 findings over the baseline: CVE-2026-0001, CVE-2026-0002",
            "since": s.ago(minutes=50),
            "containers": [container_record(
                "app", "team/api", dg("6"), "Vulnerable", "Vulnerable",
                "2 findings over the baseline: CVE-2026-0001, CVE-2026-0002",
                findingsOverBaseline=2)]},
        (s.ns_a, "cart", s.critical): {
            "policy": s.critical, "state": "Failed",
            "message": "app: base moved", "since": s.ago(hours=2, minutes=15),
            "containers": [container_record("app", "team/cart", dg("2"), "Failed",
                                            "BaseImageOutdated", "base moved", baseCurrent=dg("c"))]},
        (s.ns_b, "pay", s.critical): {
            "policy": s.critical, "state": "Patching",
            "message": "app: base moved", "since": s.ago(hours=1),
            "containers": [container_record("app", "team/pay", dg("4"), "Patching",
                                            "BaseImageOutdated", "base moved", baseCurrent=dg("c"))]},
        (s.ns_b, "batch", s.weekly): {
            "policy": s.weekly, "state": "BaseImageOutdated",
            "message": "app: base moved", "since": s.ago(minutes=20),
            "containers": [container_record("app", "team/batch", dg("7"), "BaseImageOutdated",
                                            "BaseImageOutdated", "base moved", baseCurrent=dg("c"))]},
    }
    for (ns, name, policy), record in records.items():
        s.apply(deployment(s, ns, name, policy, record))
    s.apply(deployment(s, s.ns_a, "db", None, None))  # not opted in: never reported
    return s


@pytest.fixture(scope="module")
def view_kubeconfig(kube, crds, tmp_path_factory) -> Path:
    """A token-only kubeconfig for a ServiceAccount bound only to the built-in ``view``."""
    kube.kubectl("apply", "-f", str(REPO / "deploy" / "view-role.yaml"))
    ns, sa = unique("report-reader"), "reader"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("create", "serviceaccount", sa, "-n", ns)
    kube.kubectl("create", "clusterrolebinding", f"{ns}-view", "--clusterrole=view",
                 f"--serviceaccount={ns}:{sa}")
    who = f"--as=system:serviceaccount:{ns}:{sa}"
    # The aggregation controller copies our rules into `view` asynchronously.
    wait_for(lambda: kube.kubectl("auth", "can-i", "list", "imagepatches.imagepatch.dev", who,
                                  check=False).strip() == "yes",
             timeout=60, what="view to aggregate imagepatch-view")
    for verb, resource in (("delete", "imagepatches.imagepatch.dev"),
                           ("patch", "imagepatchpolicies.imagepatch.dev"),
                           ("update", "imagepatches.imagepatch.dev/status"),
                           ("list", "secrets")):
        assert kube.kubectl("auth", "can-i", verb, resource, who, check=False).strip() == "no", \
            f"view must not allow {verb} {resource}"
    return token_kubeconfig(kube, ns, sa, tmp_path_factory.mktemp("view") / "kubeconfig")


def token_kubeconfig(kube, namespace: str, sa: str, path: Path) -> Path:
    token = kube.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").strip()
    raw = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = raw["clusters"][0]["cluster"]
    ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    path.write_text(kubeconfig_yaml(server=cluster["server"], ca_pem=ca_pem, user={"token": token}))
    return path


def run_report(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    res = subprocess.run(
        [sys.executable, "-m", "imagepatch", "report", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"imagepatch report {' '.join(args)} exited {res.returncode}:\n"
                             f"{res.stderr}")
    return res


def scene_args(scene: Scene) -> list[str]:
    # The cluster is shared with other tests: look at this scene's policies only.
    return ["--policy", f"{scene.critical},{scene.weekly}"]


# --- JSON, field by field --------------------------------------------------------------------


def test_json_under_view_rbac_matches_the_cluster(scene: Scene, view_kubeconfig: Path) -> None:
    res = run_report(view_kubeconfig, "-o", "json", *scene_args(scene))
    assert "forbidden" not in res.stderr.lower(), res.stderr
    doc = json.loads(res.stdout)
    now = parse(doc["generatedAt"])
    assert doc["kind"] == "ImagePatchReport" and doc["schemaVersion"] == 1
    # `view` does not reach the operator's memory: the states shown are the annotations,
    # mirrors their owners can edit, and the report says so (issue 20).
    [mirrors] = doc["warnings"]
    assert "mirror the workloads' owners can edit" in mirrors
    assert abs((now - dt.datetime.now(dt.UTC)).total_seconds()) < 60

    # Workloads: every opted-in Deployment of the scene, from its annotations.
    deployments = [d for ns in (scene.ns_a, scene.ns_b)
                   for d in scene.get("deployments", "-n", ns)["items"]]
    opted_in = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in deployments
                if "imagepatch.dev/policy" in (d["metadata"].get("annotations") or {})}
    rows = {(w["namespace"], w["name"]): w for w in doc["workloads"]}
    assert set(rows) == set(opted_in) and len(opted_in) == 5
    assert [(w["policy"], w["namespace"], w["name"]) for w in doc["workloads"]] == sorted(
        (w["policy"], w["namespace"], w["name"]) for w in doc["workloads"])
    for key, dep in opted_in.items():
        w, annotations = rows[key], dep["metadata"]["annotations"]
        record = json.loads(annotations["imagepatch.dev/state"])
        assert w["kind"] == "Deployment"
        assert w["policy"] == annotations["imagepatch.dev/policy"] == record["policy"]
        assert (w["state"], w["message"], w["since"]) == (record["state"], record["message"],
                                                           record["since"])
        assert w["digests"] == [c["digest"] for c in record["containers"]]
        assert len(w["containers"]) == len(record["containers"])
        for got, want in zip(w["containers"], record["containers"], strict=True):
            for field in ("name", "image", "digest", "digestSource", "base", "baseDigest",
                          "baseCurrent", "state", "reason", "message"):
                assert got[field] == want[field], (key, field)
            assert got["findingsOverBaseline"] == want.get("findingsOverBaseline")
            assert got["repository"] == want["image"].rsplit(":", 1)[0]
            assert got["baseOutdated"] == (want["reason"] == "BaseImageOutdated")
        assert w["reason"] == record["containers"][0]["reason"]

    # Times out of compliance, from the records and the patches (see core.report).
    patches = {p["metadata"]["name"]: p for p in scene.get("imagepatches")["items"]
               if p["spec"]["policy"] in (scene.critical, scene.weekly)}

    def first_seen(name: str) -> dt.datetime:
        p = patches[f"{scene.tag}-{name}"]
        return min(parse(p["metadata"]["creationTimestamp"]),
                   *(parse(h["at"]) for h in p["status"]["history"]))

    def since(key) -> dt.datetime:
        return parse(json.loads(opted_in[key]["metadata"]["annotations"]["imagepatch.dev/state"])["since"])

    expected_out = {
        (scene.ns_a, "web"): None,
        (scene.ns_a, "api"): since((scene.ns_a, "api")),  # no patch for its digest
        (scene.ns_a, "cart"): first_seen("cart"),  # the rolled-back patch began earlier
        (scene.ns_b, "pay"): first_seen("pay"),
        (scene.ns_b, "batch"): since((scene.ns_b, "batch")),  # the Closed patch does not count
    }
    for key, start in expected_out.items():
        w = rows[key]
        if start is None:
            assert w["outOfComplianceSince"] is None and w["outOfComplianceSeconds"] is None
        else:
            assert parse(w["outOfComplianceSince"]) == start, key
            assert w["outOfComplianceSeconds"] == int((now - start).total_seconds()), key
    (cart_app,) = rows[(scene.ns_a, "cart")]["containers"]
    assert parse(cart_app["baseOutdatedSince"]) == first_seen("cart")
    (batch_app,) = rows[(scene.ns_b, "batch")]["containers"]
    assert batch_app["baseOutdated"] and parse(batch_app["baseOutdatedSince"]) == since((scene.ns_b, "batch"))
    assert rows[(scene.ns_a, "api")]["findingsOverBaseline"] == 2

    # Last patches and their results.
    def last(key):
        return rows[key]["lastPatch"]

    assert last((scene.ns_a, "web"))["name"] == f"{scene.tag}-web"
    assert last((scene.ns_a, "web"))["phase"] == "Succeeded"
    # Its Healthy rollout entry says nothing: the last history entry's message does.
    assert last((scene.ns_a, "web"))["result"] == "all 1 workloads healthy"
    assert last((scene.ns_a, "web"))["approval"] == {"decision": "Approved", "by": "bob",
                                                     "reason": "routine"}
    cart = patches[f"{scene.tag}-cart"]
    assert last((scene.ns_a, "cart")) == {
        "name": f"{scene.tag}-cart", "phase": "RolledBack", "reason": "BaseImageOutdated",
        "at": cart["status"]["history"][-1]["at"],
        "result": "CrashLoopBackOff: " + cart["status"]["rollouts"][0]["message"],
        "approval": cart["spec"]["approval"],
    }
    assert last((scene.ns_b, "pay"))["phase"] == "AwaitingApproval"
    assert last((scene.ns_b, "pay"))["approval"] is None
    assert last((scene.ns_b, "batch"))["phase"] == "Closed"
    assert last((scene.ns_a, "api")) is None

    # Policies: the recorded status as it is, and the report's own counts.
    policies = {p["name"]: p for p in doc["policies"]}
    assert list(policies) == sorted([scene.critical, scene.weekly])
    for name in (scene.critical, scene.weekly):
        body = scene.get("imagepatchpolicy", name)
        got = policies[name]
        assert got["exists"] is True
        assert got["statusCounts"] == body["status"]["workloads"]
        (ready,) = [c for c in body["status"]["conditions"] if c["type"] == "Ready"]
        assert got["ready"] == {k: ready[k] for k in ("status", "reason", "message")}
        mine = [p for p in patches.values() if p["spec"]["policy"] == name]
        assert got["openPatches"] == sum(
            p["status"]["phase"] not in ("Succeeded", "RolledBack", "Failed", "Closed") for p in mine)
        assert sum(got["patchesByPhase"].values()) == len(mine)
    # The recorded counts were written to match the scene: the report agrees with them.
    for name in (scene.critical, scene.weekly):
        assert policies[name]["reportCounts"] == policies[name]["statusCounts"]

    # Patches: the audit trail, as recorded.
    assert [p["name"] for p in doc["patches"]] == sorted(patches)
    for p in doc["patches"]:
        body = patches[p["name"]]
        assert p["policy"] == body["spec"]["policy"]
        assert p["image"] == body["spec"]["image"]
        assert p["currentDigest"] == body["spec"]["currentDigest"]
        assert p["reason"] == body["spec"]["reason"]
        assert p["phase"] == body["status"]["phase"]
        approval = body["spec"].get("approval")
        assert p["approval"] == ({"by": "", "reason": "", **approval} if approval else None)
        assert p["history"] == body["status"]["history"]
        assert [(r["namespace"], r["name"], r["phase"]) for r in p["rollouts"]] == [
            (r["namespace"], r["name"], r["phase"]) for r in body["status"].get("rollouts", [])]
        terminal = [h["at"] for h in body["status"]["history"]
                    if h["phase"] in ("Succeeded", "RolledBack", "Failed", "Closed")]
        assert p["endedAt"] == (terminal[0] if terminal else None)

    # History: hourly buckets from the first event to now; each result counted once.
    history = doc["history"]
    assert history["unit"] == "hour"
    buckets = history["buckets"]
    first = min(first_seen(n) for n in ("web", "cart", "pay", "batch-old"))
    assert parse(buckets[0]["start"]) == first.replace(minute=0, second=0)
    assert parse(buckets[-1]["start"]) == now.replace(minute=0, second=0, microsecond=0)
    assert all(parse(a["end"]) == parse(b["start"]) for a, b in zip(buckets, buckets[1:], strict=False))
    assert [sum(b[k] for b in buckets) for k in ("succeeded", "rolledBack", "failed", "closed")] == [1, 1, 0, 1]
    assert buckets[-1]["open"] == 1  # pay, awaiting approval


def test_filters_narrow_the_json(scene: Scene, view_kubeconfig: Path) -> None:
    def names(*args: str) -> list[str]:
        doc = json.loads(run_report(view_kubeconfig, "-o", "json", *args).stdout)
        return [w["name"] for w in doc["workloads"]]

    assert names("-n", scene.ns_b, *scene_args(scene)) == ["pay", "batch"]
    assert names("--policy", scene.weekly) == ["batch"]
    # Sorted by policy, namespace (…-jobs before …-shop), name.
    assert names("--state", "failed,patching", *scene_args(scene)) == ["pay", "cart"]
    assert names("-n", scene.ns_a, "--state", "Compliant") == ["web"]
    bad = run_report(view_kubeconfig, "--state", "Sideways", check=False)
    assert bad.returncode == 2 and "unknown state 'Sideways'" in bad.stderr


def test_csv_and_table_say_the_same(scene: Scene, view_kubeconfig: Path) -> None:
    doc = json.loads(run_report(view_kubeconfig, "-o", "json", *scene_args(scene)).stdout)
    rows = list(csv.DictReader(io.StringIO(run_report(view_kubeconfig, "-o", "csv",
                                                      *scene_args(scene)).stdout)))
    assert [(r["namespace"], r["name"], r["container"], r["state"], r["digest"]) for r in rows] == [
        (w["namespace"], w["name"], c["name"], w["state"], c["digest"])
        for w in doc["workloads"] for c in w["containers"]]
    by_name = {r["name"]: r for r in rows}
    assert by_name["cart"]["lastPatchPhase"] == "RolledBack"
    assert by_name["cart"]["approvedBy"] == "alice"
    assert by_name["api"]["findingsOverBaseline"] == "2"

    table = run_report(view_kubeconfig, *scene_args(scene)).stdout
    lines = table.splitlines()
    header = next(ln for ln in lines if ln.startswith("NAMESPACE"))
    body = lines[lines.index(header) + 1:]
    assert len(body) == len(doc["workloads"])
    for w, line in zip(doc["workloads"], body, strict=True):
        assert line.split()[:5] == [w["namespace"], w["kind"], w["name"], w["policy"], w["state"]]
        assert line[header.index("STATE"):].startswith(w["state"])  # columns aligned
    assert any(ln.startswith(scene.critical) for ln in lines)


def test_a_namespace_viewer_gets_its_workloads_and_a_warning(scene: Scene, kube, crds,
                                                             tmp_path: Path) -> None:
    kube.kubectl("apply", "-f", str(REPO / "deploy" / "view-role.yaml"))
    sa = "ns-reader"
    kube.kubectl("create", "serviceaccount", sa, "-n", scene.ns_b)
    kube.kubectl("create", "rolebinding", "ns-reader-view", "--clusterrole=view",
                 f"--serviceaccount={scene.ns_b}:{sa}", "-n", scene.ns_b)
    config = token_kubeconfig(kube, scene.ns_b, sa, tmp_path / "kubeconfig")
    res = run_report(config, "-o", "json", "-n", scene.ns_b)
    doc = json.loads(res.stdout)
    assert sorted(w["name"] for w in doc["workloads"]) == ["batch", "pay"]
    assert doc["patches"] == [] and all(not p["exists"] for p in doc["policies"])
    # ...and one saying the states shown are the annotations (mirrors), see issue 20.
    assert len(doc["warnings"]) == 3 and "warning: cannot list ImagePatches" in res.stderr
    # All namespaces is beyond its rights: a clear error, no traceback.
    denied = run_report(config, "-o", "json", check=False)
    assert denied.returncode == 1 and "Traceback" not in denied.stderr
    assert "HTTP 403" in denied.stderr


def workload_of(kind: str, namespace: str, name: str, policy: str, record: dict) -> dict:
    """An opted-in workload of ``kind`` that runs no pod (the report reads only the object)."""
    pod = {"containers": [{"name": "app", "image": record["containers"][0]["image"]}]}
    meta = {"name": name, "namespace": namespace, "annotations": {
        "imagepatch.dev/policy": policy, "imagepatch.dev/state": json.dumps(record, sort_keys=True)}}
    template = {"metadata": {"labels": {"app": name}}, "spec": pod}
    selector = {"matchLabels": {"app": name}}
    if kind == "CronJob":
        pod["restartPolicy"] = "Never"
        spec: dict[str, Any] = {"schedule": "0 3 1 1 *", "suspend": True,
                                "jobTemplate": {"spec": {"template": template}}}
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": meta, "spec": spec}
    spec = {"selector": selector, "template": template}
    if kind == "DaemonSet":
        pod["nodeSelector"] = {"imagepatch.dev/no-such-node": "true"}
    else:
        spec["replicas"] = 0
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def test_every_kind_is_reported_keyed_by_kind_namespace_and_name(kube, crds,
                                                                 view_kubeconfig: Path) -> None:
    # Given a StatefulSet and a Deployment of one name, a DaemonSet and a CronJob, opted in,
    s = Scene(kube)
    ns, policy = f"{s.tag}-kinds", f"{s.tag}-kinds"
    kube.kubectl("create", "namespace", ns)
    s.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
             "metadata": {"name": policy}, "spec": {"namespaceSelector": {}}})
    states = {("Deployment", "web"): ("team/web", "Compliant"),
              ("StatefulSet", "web"): ("team/db", "Failed"),
              ("DaemonSet", "agent"): ("team/agent", "Compliant"),
              ("CronJob", "nightly"): ("team/batch", "BaseImageOutdated")}
    for (kind, name), (repo, state) in states.items():
        record = {"policy": policy, "state": state, "message": f"{kind} {name}: {state}",
                  "since": s.ago(hours=1),
                  "containers": [container_record("app", repo, dg("d"), state, state, state)]}
        s.apply(workload_of(kind, ns, name, policy, record))
    # and a rolled-back patch that targeted the StatefulSet `web` only
    patch = f"{s.tag}-db"
    s.apply(imagepatch(patch, policy, "team/db", dg("d"), "BaseImageOutdated",
                       targets=[{"kind": "StatefulSet", "namespace": ns, "name": "web",
                                 "container": "app"}]))
    s.status("imagepatch", patch, {
        "phase": "RolledBack",
        "history": [{"phase": "RolledBack", "at": s.ago(minutes=30)}],
        "rollouts": [{"kind": "StatefulSet", "namespace": ns, "name": "web", "container": "app",
                      "phase": "RolledBack", "reason": "CrashLoopBackOff", "message": "web-0/app"}]})

    # When the report runs under the built-in view role
    doc = json.loads(run_report(view_kubeconfig, "-o", "json", "--policy", policy).stdout)

    # Then it has one row per kind, namespace and name, each with its own state and patch
    rows = {(w["kind"], w["name"]): w for w in doc["workloads"]}
    assert set(rows) == set(states) and len(doc["workloads"]) == 4
    for key, (_, state) in states.items():
        assert rows[key]["state"] == state and rows[key]["namespace"] == ns
    assert rows[("StatefulSet", "web")]["lastPatch"]["result"] == "CrashLoopBackOff: web-0/app"
    assert rows[("Deployment", "web")]["lastPatch"] is None  # the same name, another workload
    # (a view user cannot read the operator's memory: the one warning says the states are
    # mirrors, naming each workload by its kind)
    [warning] = doc["warnings"]
    assert "mirror" in warning and f"StatefulSet {ns}/web" in warning and f"Deployment {ns}/web" in warning
    # and the table and CSV show the kind beside the name
    table = run_report(view_kubeconfig, "--policy", policy).stdout.splitlines()
    header = next(ln for ln in table if ln.startswith("NAMESPACE"))
    body = [ln.split()[:3] for ln in table[table.index(header) + 1:]]
    assert sorted(body) == sorted([ns, kind, name] for kind, name in states)
    csv_rows = list(csv.DictReader(io.StringIO(
        run_report(view_kubeconfig, "-o", "csv", "--policy", policy).stdout)))
    assert sorted((r["kind"], r["name"]) for r in csv_rows) == sorted(states)


def test_view_role_is_shipped_in_deploy_and_the_chart_with_the_same_rules() -> None:
    shipped = yaml.safe_load((REPO / "deploy" / "view-role.yaml").read_text())
    assert shipped["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "view-role.yaml" in yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())["resources"]
    for rule in shipped["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    template = (REPO / "charts" / "imagepatch" / "templates" / "view-clusterrole.yaml").read_text()
    # The rules are plain YAML after the last template line; compare them as data.
    rules_text = template[template.index("rules:"):]
    assert "{{" not in rules_text
    assert yaml.safe_load(rules_text)["rules"] == shipped["rules"]
    assert 'rbac.authorization.k8s.io/aggregate-to-view: "true"' in template


# --- HTML in a real browser -----------------------------------------------------------------


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


def pixels_near(rows: list[bytes], color: str, tolerance: int = 6) -> int:
    want = bytes.fromhex(color.lstrip("#"))
    count = 0
    for row in rows:
        for i in range(0, len(row), 3):
            if all(abs(row[i + k] - want[k]) <= tolerance for k in range(3)):
                count += 1
    return count


def test_html_renders_the_table_and_chart_in_headless_chromium(scene: Scene, view_kubeconfig: Path,
                                                               tmp_path: Path) -> None:
    page = run_report(view_kubeconfig, "-o", "html", *scene_args(scene)).stdout
    doc = json.loads(run_report(view_kubeconfig, "-o", "json", *scene_args(scene)).stdout)

    # The page itself: a row per workload, one bar group and one point per bucket.
    assert page.count('<tr class="workload"') == len(doc["workloads"]) == 5
    for w in doc["workloads"]:
        assert (f'data-namespace="{w["namespace"]}" data-kind="{w["kind"]}" data-name="{w["name"]}" '
                f'data-state="{w["state"]}"') in page
    starts = re.findall(r'<g class="bucket" data-start="([^"]+)"', page)
    assert len(starts) in (len(doc["history"]["buckets"]), len(doc["history"]["buckets"]) + 1)  # an hour may turn
    assert page.count("<svg") == 1
    (points,) = re.findall(r'<polyline class="open-line" points="([^"]+)"', page)
    assert len(points.split()) == len(starts)
    # One Succeeded (web), one RolledBack (cart), one Closed (batch-old), each in its own hour.
    assert page.count('<rect class="bar succeeded"') == 1
    assert page.count('<rect class="bar rolledBack"') == 1
    assert page.count('<rect class="bar closed"') == 1
    assert page.count('<rect class="bar') == 3
    assert not re.search(r"<script|\b(src|href)=|@import|url\(", page), "must be self-contained"

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: the HTML screenshot test needs Debian's chromium "
                    "package; .ci/setup must `apt-get install chromium`")
    html_path, png_path = tmp_path / "report.html", tmp_path / "report.png"
    html_path.write_text(page)
    profile = tmp_path / "chromium-profile"
    res = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--screenshot={png_path}", "--window-size=1280,2400",
         html_path.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert res.returncode == 0 and png_path.exists(), res.stderr[-2000:]
    width, height, rows = read_png(png_path.read_bytes())
    assert (width, height) == (1280, 2400)  # tall enough for the whole page
    assert len(set(rows)) > 50, "the screenshot is (nearly) blank"
    # The chart drew its bars (CSS fills), and the table its state badges.
    assert pixels_near(rows, "#1a7f37") > 100, "no Succeeded bar / Compliant badge"
    assert pixels_near(rows, "#bc4c00") > 100, "no RolledBack bar"
    assert pixels_near(rows, "#818b98") > 100, "no Closed bar"
    assert pixels_near(rows, "#cf222e") > 100, "no Vulnerable/Failed badge"
    shutil.rmtree(profile, ignore_errors=True)


# --- retention: the pure choice, then the adapter's delete ------------------------------------


def test_retention_deletes_what_it_chose_and_never_an_active_patch(kube, crds) -> None:
    from imagepatch.adapters.report_source import delete_imagepatches
    from imagepatch.core.retention import retention

    s = Scene(kube)
    names = {"old": ("Succeeded", 30), "new": ("Succeeded", 10), "changed": ("Failed", 20),
             "busy": ("Building", 40)}
    for name, (phase, minutes) in names.items():
        s.apply(imagepatch(f"{s.tag}-{name}", s.tag, "team/ret", dg("8"), "Manual"))
        s.status("imagepatch", f"{s.tag}-{name}", {
            "phase": phase, "history": [{"phase": phase, "at": s.ago(minutes=minutes)}]})
    listed = [p for p in s.get("imagepatches")["items"] if p["spec"]["policy"] == s.tag]
    chosen = retention(listed, keep_count=1, max_age=None, now=dt.datetime.now(dt.UTC))
    assert chosen == [f"{s.tag}-changed", f"{s.tag}-old"]  # "busy" is active: never
    versions = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in listed}
    # Someone touches "changed" after the choice: its precondition fails, it stays.
    kube.kubectl("annotate", "imagepatch", f"{s.tag}-changed", "note=keep")
    deleted = delete_imagepatches(kube.api_client, {n: versions[n] for n in chosen})
    assert deleted == [f"{s.tag}-old"]
    left = sorted(p["metadata"]["name"] for p in s.get("imagepatches")["items"]
                  if p["spec"]["policy"] == s.tag)
    assert left == sorted(f"{s.tag}-{n}" for n in ("new", "changed", "busy"))
    # Deleting what is already gone is not an error.
    assert delete_imagepatches(kube.api_client, {f"{s.tag}-old": versions[f"{s.tag}-old"]}) == []


# Last in this module: the tests above run where Argo's CRD may not exist (a report there
# lists no Rollout and says nothing of it); this one installs it.
def test_opted_in_argo_rollouts_are_reported_once_the_crd_exists(kube, crds,
                                                                  view_kubeconfig: Path) -> None:
    # Given Argo Rollouts' CRDs, an opted-in Rollout with its state, and one not opted in
    install_crds(kube)
    s = Scene(kube)
    ns, policy = f"{s.tag}-argo", f"{s.tag}-argo"
    kube.kubectl("create", "namespace", ns)
    s.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
             "metadata": {"name": policy}, "spec": {"namespaceSelector": {}}})
    record = {"policy": policy, "state": "BaseImageOutdated", "message": "web: outdated",
              "since": s.ago(hours=1),
              "containers": [container_record("app", "team/web", dg("r"), "BaseImageOutdated",
                                              "BaseImageOutdated", "outdated")]}
    for name, opted_in in (("web", True), ("other", False)):
        body = workload_of("Deployment", ns, name, policy, record)
        body["apiVersion"], body["kind"] = "argoproj.io/v1alpha1", "Rollout"
        body["spec"]["strategy"] = {"blueGreen": {"activeService": name}}
        if not opted_in:
            body["metadata"]["annotations"] = {}
        s.apply(body)

    # When the report runs under the built-in view role (imagepatch-view lists Rollouts)
    doc = json.loads(run_report(view_kubeconfig, "-o", "json", "--policy", policy).stdout)

    # Then the opted-in Rollout is a row of kind Rollout, with its state
    assert [(w["kind"], w["namespace"], w["name"], w["state"]) for w in doc["workloads"]] == [
        ("Rollout", ns, "web", "BaseImageOutdated")]
    assert not [w for w in doc["warnings"] if "Rollouts" in w]
