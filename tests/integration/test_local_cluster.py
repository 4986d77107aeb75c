"""The local control plane is real: RBAC on, tokens issuable, rollouts and their failures.

These tests prove the test stack itself, so that later rollout and
rollback tests can trust it: Deployments become Available on kwok nodes, and
the pod behaviours chosen by the ``sim.imagepatch.dev/behavior`` label
(never-ready, crashloop, job-fail) produce the states a kubelet would report.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

import pytest

from tests.cluster.harness import kubeconfig_yaml
from tests.support.wait import wait_for

BEHAVIOR = "sim.imagepatch.dev/behavior"


@pytest.fixture
def namespace(kube):
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def deployment(name: str, *, replicas: int = 1, behavior: str | None = None, deadline: int = 600) -> str:
    labels = {"app": name}
    if behavior:
        labels[BEHAVIOR] = behavior
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    })


def get_json(kube, *args: str) -> dict:
    return json.loads(kube.kubectl("get", *args, "-o", "json"))


def condition(obj: dict, ctype: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), {})


def test_rbac_is_enforced_for_service_account_tokens(kube, namespace, tmp_path) -> None:
    """Given a ServiceAccount with no bindings, when it lists pods, then the API says 403."""
    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kube.kubectl("create", "token", "nobody", "-n", namespace).strip()
    assert token.count(".") == 2  # a JWT from the TokenRequest API
    raw = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = raw["clusters"][0]["cluster"]
    only_token = tmp_path / "nobody.kubeconfig"
    only_token.write_text(kubeconfig_yaml(
        server=cluster["server"],
        ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
        user={"token": token},
    ))
    res = subprocess.run(
        [kube.kubectl_bin, "--kubeconfig", str(only_token), "get", "pods", "-n", namespace],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode != 0
    assert "forbidden" in res.stderr.lower()
    assert f"system:serviceaccount:{namespace}:nobody" in res.stderr


def test_default_admission_rejects_what_pod_security_forbids(kube, namespace) -> None:
    """Default admission is on: a restricted namespace refuses a privileged pod."""
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(RuntimeError, match="violates PodSecurity"):
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))


@pytest.mark.kwok
def test_three_replica_deployment_becomes_available(kube, namespace) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", replicas=3))

    def available():
        d = get_json(kube, "deployment", "web", "-n", namespace)
        st = d.get("status", {})
        return d if st.get("availableReplicas") == 3 and st.get("updatedReplicas") == 3 else None

    d = wait_for(available, timeout=60, what="3 available replicas")
    assert condition(d, "Available")["status"] == "True"
    pods = get_json(kube, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-node-0", "kwok-node-1"}
    assert all(p["status"]["phase"] == "Running" for p in pods)


@pytest.mark.kwok
def test_never_ready_pods_end_in_progress_deadline_exceeded(kube, namespace) -> None:
    manifest = deployment("stuck", behavior="never-ready", deadline=5)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def timed_out():
        d = get_json(kube, "deployment", "stuck", "-n", namespace)
        return condition(d, "Progressing").get("reason") == "ProgressDeadlineExceeded" and d

    d = wait_for(timed_out, timeout=60, what="ProgressDeadlineExceeded")
    assert d["status"].get("availableReplicas", 0) == 0
    [pod] = get_json(kube, "pods", "-n", namespace, "-l", "app=stuck")["items"]
    assert pod["status"]["phase"] == "Running"
    assert condition(pod, "Ready")["status"] == "False"


@pytest.mark.kwok
def test_crashloop_pods_wait_in_backoff_with_rising_restarts(kube, namespace) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("crash", behavior="crashloop"))

    def restarts() -> int:
        pods = get_json(kube, "pods", "-n", namespace, "-l", "app=crash")["items"]
        statuses = pods[0]["status"].get("containerStatuses", []) if pods else []
        return statuses[0].get("restartCount", 0) if statuses else 0

    wait_for(lambda: restarts() >= 1, timeout=60, what="a first restart")
    first = restarts()
    wait_for(lambda: restarts() > first, timeout=60, what="restartCount to rise")
    [pod] = get_json(kube, "pods", "-n", namespace, "-l", "app=crash")["items"]
    [cs] = pod["status"]["containerStatuses"]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1


@pytest.mark.kwok
def test_job_fail_pods_fail_their_job_and_plain_jobs_complete(kube, namespace) -> None:
    def job(name: str, behavior: str | None) -> str:
        meta = {"labels": {BEHAVIOR: behavior}} if behavior else {}
        return json.dumps({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"metadata": meta, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "build", "image": "builder:1"}]}}},
        })

    kube.kubectl("apply", "-n", namespace, "-f", "-", input=job("fails", "job-fail"))
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=job("passes", None))

    def finished(name: str, ctype: str):
        return lambda: condition(get_json(kube, "job", name, "-n", namespace), ctype).get("status") == "True"

    wait_for(finished("fails", "Failed"), timeout=60, what="Job 'fails' Failed")
    wait_for(finished("passes", "Complete"), timeout=60, what="Job 'passes' Complete")
    [pod] = get_json(kube, "pods", "-n", namespace, "-l", "job-name=fails")["items"]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


@pytest.mark.kwok
def test_kwok_nodes_renew_their_leases(kube) -> None:
    """Node liveness comes from Leases: without them the node-lifecycle controller
    flips every node NotReady after its grace period and marks all pods not ready."""

    def renewals() -> dict[str, str]:
        leases = get_json(kube, "leases", "-n", "kube-node-lease")["items"]
        return {lease["metadata"]["name"]: lease["spec"].get("renewTime", "") for lease in leases}

    first = wait_for(lambda: (r := renewals()) and set(r) >= {"kwok-node-0", "kwok-node-1"} and r,
                     timeout=30, what="node leases")
    wait_for(lambda: all(renewals()[n] != first[n] for n in ("kwok-node-0", "kwok-node-1")),
             timeout=40, interval=1, what="lease renewals")
