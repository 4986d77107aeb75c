"""One refused write never stops detection, on the real API server (issue 21, item 5).

Given a ValidatingAdmissionPolicy (installed by the test, as an admin would)
that refuses every write of the operator's ServiceAccount to the Deployments
of one namespace, and in that namespace a Deployment that opted out with our
state annotation left on it (the operator clears it) and one naming a policy
that does not exist (the operator records ``PolicyNotFound`` on it); when
detection runs; then both writes are refused and logged, and a workload in
another namespace whose base moved is still evaluated and gets its
ImagePatch, in pass after pass.

On the main branch before this change, the refused orphan clean-up raised
out of the pass before any policy was evaluated, on every pass, forever.

The operator's resident memory is printed at the end (not asserted).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.images import _json_bytes, _push_platform_manifest, make_base_image
from tests.support.operator import (
    NAMESPACE,
    SERVICE_ACCOUNT,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.registry import OCI_MANIFEST, sha256_digest
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
STATE = "imagepatch.dev/state"


@pytest.fixture(scope="module")
def detector(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("supervision")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--detect-tick", "1"],
        metrics=True,
    )
    proc.start()
    yield proc
    proc.stop()
    # The admission refusals this test provokes name no missing permission.
    forbidden = [ln for ln in proc.forbidden_lines() if "ValidatingAdmissionPolicy" not in ln]
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, detector) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


@pytest.fixture
def refuse_operator_writes(kube) -> Iterator[Callable[[str], str]]:
    """Install a ValidatingAdmissionPolicy refusing the operator's Deployment writes in a namespace."""
    made: list[str] = []

    def install(namespace: str) -> str:
        name = unique("refuse-operator")
        policy = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["deployments"]}]},
                "matchConditions": [{"name": "the-operator",
                                     "expression": f"request.userInfo.username == '{OPERATOR_USER}'"}],
                "validations": [{"expression": "false",
                                 "message": "this namespace's workloads are frozen for the operator"}],
            },
        }
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name, "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace}}},
            },
        }
        for doc in (policy, binding):
            kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
        made.append(name)
        return name

    yield install
    for name in made:
        kube.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False)
        kube.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)


def app_on(registry, repo: str, base) -> None:
    """Push ``repo:1``, an image whose manifest records ``base`` (as buildah would)."""
    manifest, _ = _push_platform_manifest(registry, repo, f"app-{repo}", "amd64", None, "oci")
    doc = json.loads(manifest)
    doc["annotations"] = {"org.opencontainers.image.base.name": base.ref,
                          "org.opencontainers.image.base.digest": base.digest}
    body = _json_bytes(doc)
    registry.put_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
    registry.put_manifest(repo, "1", body, OCI_MANIFEST)


def unmanaged_deployment(ns: str, name: str, annotations: dict | None = None) -> dict:
    """A Deployment with no imagepatch.dev/policy annotation (0 replicas: nothing to run)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}},
    }


def annotations(given: Scenario, ns: str, name: str) -> dict:
    return given.get("deployment", name, ns)["metadata"].get("annotations") or {}


def refused_as_operator(given: Scenario, proc: OperatorProcess, ns: str, name: str, vap: str) -> None:
    """Wait until the operator's own credentials are refused a write (the policy is in force).

    The probe is a write the shipped admission policy (deploy/admission-policy.yaml) lets the
    operator make, its state mirror on an opted-in workload, so only this test's policy refuses
    it; a server-side dry run, so nothing is written while the policy is not yet in force.
    """
    def refused() -> bool:
        res = subprocess.run(
            [given.kube.kubectl_bin, "--kubeconfig", str(proc.kubeconfig), "annotate", "deployment",
             name, "-n", ns, "--overwrite", "--dry-run=server", f"{STATE}=probe-{time.monotonic()}"],
            capture_output=True, text=True, timeout=30)
        return res.returncode != 0 and vap in res.stderr

    wait_for(refused, timeout=30, interval=0.5, what=f"{vap} to refuse the operator's writes")


def rss_mib(proc: OperatorProcess) -> tuple[float, float]:
    """(current, peak) resident memory of the operator process, in MiB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def test_a_refused_annotation_write_does_not_stop_other_workloads_being_evaluated(
    given, registry, detector, refuse_operator_writes
) -> None:
    # Given: the frozen namespace, refusing the operator before anything it would touch exists.
    frozen = given.namespace("frozen")
    # (opted in to a policy that does not exist: the probe below writes what the shipped
    # admission policy allows the operator on an opted-in workload)
    given.apply(unmanaged_deployment(frozen, "sentinel",
                                     {"imagepatch.dev/policy": unique("no-such-policy")}))
    vap = refuse_operator_writes(frozen)
    refused_as_operator(given, detector, frozen, "sentinel", vap)
    # ... an opted-out Deployment with our state annotation still on it, and one whose
    # policy does not exist: the operator writes to both.
    given.apply(unmanaged_deployment(frozen, "opted-out",
                                     {STATE: json.dumps({"state": "Compliant"})}))
    given.deployment(frozen, "lost", image="busybox:1", policy=unique("no-such-policy"), replicas=1)
    # The first refusal happens (and is logged) before the healthy workload exists.
    wait_for(lambda: f"annotate Deployment {frozen}/opted-out" in detector.log(),
             timeout=60, what="the operator's refused write in the log")

    # ... and elsewhere, an app whose base moved since it was built.
    base_repo, app_repo = unique("base"), unique("app")
    base_v1 = make_base_image(registry, base_repo, "3.12", marker="v1")
    app_on(registry, app_repo, base_v1)
    make_base_image(registry, base_repo, "3.12", marker="v2")
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()

    # When: the workload is created, and detection runs.
    given.deployment(ns, "web", image=f"{registry.host}/{app_repo}:1", policy=policy, replicas=1)

    # Then: it is evaluated and its ImagePatch created, while the refusals go on.
    def patched():
        items = json.loads(given.kube.kubectl(
            "get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}", "-o", "json"))["items"]
        return items or None

    [patch] = wait_for(patched, timeout=60, interval=0.5, what="the ImagePatch for web")
    assert patch["spec"]["image"] == f"{registry.host}/{app_repo}"
    assert [(t["namespace"], t["name"]) for t in patch["spec"]["targets"]] == [(ns, "web")]
    state = wait_for(lambda: json.loads(annotations(given, ns, "web").get(STATE, "{}")).get("state"),
                     timeout=30, what="web's state")
    assert state in ("Patching", "BaseImageOutdated")

    # The refused workloads kept what they had: the writes really were refused.
    assert json.loads(annotations(given, frozen, "opted-out")[STATE]) == {"state": "Compliant"}
    assert STATE not in annotations(given, frozen, "lost")
    log = detector.log()
    assert vap in log  # the API server's refusal is what was logged
    assert "could not clear the state of Deployment " + f"{frozen}/opted-out" in log
    assert f"could not record state of {frozen}/lost" in log
    # Detection keeps going: more passes complete after all this.
    detector.wait_passes(2)
    assert detector.metric("imagepatch_task_restarts_total") == 0  # nothing crashed
    current, peak = rss_mib(detector)
    print(f"operator RSS {current:.1f} MiB (peak {peak:.1f} MiB)")
