"""``helm install`` / ``upgrade`` / ``uninstall`` of the chart on the real API server.

Given the local control plane (kwok runs the operator's pod as a simulated
pod; the operator itself is not what is tested here), a release installed
with the EKS/IRSA values from the README's quick start:

* installs the ServiceAccount with the role annotation, the RBAC (the build
  Role in the build namespace), the build namespace's egress NetworkPolicy,
  the ValidatingAdmissionPolicy bound to this release's ServiceAccount and the
  Deployment, and Helm reports it ``deployed``;
* upgrades in place to new values (metrics on, another region): revision 2,
  the Deployment's arguments follow;
* uninstalls everything it made, except what Helm's conventions keep: the
  CRDs (Helm never deletes ``crds/``), the ImagePatchPolicies and
  ImagePatches (custom resources are users' data) and the build namespace
  (``helm.sh/resource-policy: keep``: it holds the admin's templates).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from tests.integration.test_packaging import CHART, Helm
from tests.support.wait import wait_for

ROLE_ARN = "arn:aws:iam::123456789012:role/imagepatch"


def irsa_values(build_namespace: str, region: str = "eu-west-1", **more) -> dict:
    return {
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": ROLE_ARN}},
        "aws": {"region": region,
                "eventsQueueUrl": f"https://sqs.{region}.amazonaws.com/123456789012/imagepatch-events"},
        "builds": {"namespace": build_namespace},
        **more,
    }


def test_helm_install_upgrade_uninstall_keeps_crds_and_imagepatches(kube, helm: Helm, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    # The release name contains the chart name, so objects are named after the release.
    release, namespace, builds = f"imagepatch-{suffix}", f"ip-sys-{suffix}", f"ip-builds-{suffix}"
    base = ["--kubeconfig", str(kube.kubeconfig), "--namespace", namespace]
    values = tmp_path / "values.yaml"

    def helm_status() -> dict:
        return json.loads(helm.run("status", release, *base, "-o", "json").stdout)

    def get(kind: str, name: str, ns: str | None = None) -> dict | None:
        args = ["get", kind, name, "-o", "json", *(["-n", ns] if ns else [])]
        out = kube.kubectl(*args, check=False)
        return json.loads(out) if out else None

    def args_of_deployment() -> list[str]:
        dep = get("deployment", release, namespace)
        return dep["spec"]["template"]["spec"]["containers"][0]["args"]

    # Given the quick start's IRSA install
    values.write_text(yaml.safe_dump(irsa_values(builds)))
    helm.run("install", release, str(CHART), *base, "--create-namespace", "--values", str(values))
    try:
        status = helm_status()
        assert status["info"]["status"] == "deployed" and status["version"] == 1
        notes = status["info"]["notes"]
        assert f"IAM: IRSA role {ROLE_ARN}" in notes
        assert f"Builds (job:<template> rebuilds): namespace {builds}" in notes
        assert "kubectl delete crd imagepatchpolicies.imagepatch.dev imagepatches.imagepatch.dev" in notes
        sa = get("serviceaccount", release, namespace)
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == ROLE_ARN
        assert get("role", f"{release}-builds", builds), "the build Role lives in the build namespace"
        assert get("namespace", builds)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
        assert get("networkpolicy", f"{release}-builds-egress", builds), "builds have an egress policy"
        # The admission policy applies to this release's ServiceAccount only.
        policy = get("validatingadmissionpolicy", f"{release}-writes")
        assert policy["spec"]["matchConditions"][0]["expression"] == (
            f"request.userInfo.username == 'system:serviceaccount:{namespace}:{release}'")
        assert get("validatingadmissionpolicybinding", f"{release}-writes")
        args = args_of_deployment()
        assert args[args.index("--aws-region") + 1] == "eu-west-1"
        assert args[args.index("--build-namespace") + 1] == builds
        for crd in ("imagepatchpolicies.imagepatch.dev", "imagepatches.imagepatch.dev"):
            wait_for(lambda crd=crd: get("crd", crd), timeout=30, what=f"CRD {crd}")

        # And users' resources made with it
        policy, patch = f"pol-{suffix}", f"patch-{suffix}"
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
            "metadata": {"name": policy},
            "spec": {"namespaceSelector": {"matchLabels": {"imagepatch.dev/enabled": "true"}},
                     "rebuild": {"strategy": "external"}}}))
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
            "metadata": {"name": patch},
            "spec": {"image": "registry.example.com/app", "tag": "1", "policy": policy,
                     "reason": "Manual", "targetDigest": "sha256:" + "a" * 64}}))

        # When it is upgraded with new values
        values.write_text(yaml.safe_dump(irsa_values(builds, region="us-east-2",
                                                     metrics={"enabled": True})))
        helm.run("upgrade", release, str(CHART), *base, "--values", str(values))
        status = helm_status()
        assert status["info"]["status"] == "deployed" and status["version"] == 2
        args = args_of_deployment()
        assert args[args.index("--aws-region") + 1] == "us-east-2"
        assert args[args.index("--metrics-port") + 1] == "9090"
        assert get("service", f"{release}-metrics", namespace)
    finally:
        # Then uninstall removes what the release made ...
        helm.run("uninstall", release, *base, "--wait", "--timeout", "60s")

    assert get("deployment", release, namespace) is None
    assert get("serviceaccount", release, namespace) is None
    assert get("clusterrole", release) is None
    assert get("role", f"{release}-builds", builds) is None
    assert get("networkpolicy", f"{release}-builds-egress", builds) is None
    assert get("validatingadmissionpolicy", f"{release}-writes") is None
    assert get("validatingadmissionpolicybinding", f"{release}-writes") is None
    # ... and keeps the CRDs, the users' resources and the build namespace.
    for crd in ("imagepatchpolicies.imagepatch.dev", "imagepatches.imagepatch.dev"):
        assert get("crd", crd), f"{crd} was deleted by helm uninstall"
    assert get("imagepatchpolicy", policy)
    assert get("imagepatch", patch)
    assert get("namespace", builds), "the build namespace is kept (resource-policy: keep)"

    kube.kubectl("delete", "imagepatch", patch, "--wait=false", check=False)
    kube.kubectl("delete", "imagepatchpolicy", policy, "--wait=false", check=False)
    for ns in (namespace, builds):
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
