"""What users install is what is tested: the Helm chart, deploy/, the image and the AWS docs.

* The chart's ``crds/`` are byte-identical copies of the top-level ``crds/``.
* The chart's RBAC holds exactly the rules of ``deploy/rbac.yaml`` (the RBAC
  the e2e tests run the operator under).
* The chart's ValidatingAdmissionPolicy equals ``deploy/admission-policy.yaml``
  with the defaults and follows the release's ServiceAccount, namespace and
  build namespace; the build namespace's egress NetworkPolicy equals
  ``deploy/build-networkpolicy.yaml`` and never admits instance metadata,
  whatever CIDRs the values give; the Secrets grant names the Secrets the
  values list; metrics are reachable only from the monitoring namespace by
  default. (``test_admission_policy.py`` proves the policy on the API server.)
* ``helm lint --strict`` passes; ``helm template`` renders with the defaults
  and with EKS-style values; ``values.schema.json`` rejects bad values.
* The rendered chart and ``kubectl apply -k deploy/`` pass a server-side
  dry-run on the real API server (nothing persists), and both Deployments'
  pod specs pass the **restricted** Pod Security Standard: no PodSecurity
  warning for the Deployment in a namespace that warns at ``restricted``, and
  a Pod made from its template is admitted where ``restricted`` is enforced
  (for workload objects the API server only warns; it enforces on Pods).
* The Dockerfile pins its base by digest and labels it;
  ``docs/eventbridge-sqs.yaml`` is a well-formed CloudFormation template.
  (``docs/iam-policy.json`` has its own test: ``test_iam_policy.py``.)

helm is built from its Go module by ``tests/cluster/build-helm.sh`` into the
project cache (``$IMAGEPATCH_CACHE/bin/helm-v3.22.0/helm``), once.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "imagepatch"
DEPLOY = REPO / "deploy"
RELEASE = "imagepatch"

# kubectl's note when client-side apply meets an object created by another
# means (the `crds` fixture applies the CRDs server-side): not a problem here.
BENIGN_WARNING = "missing the kubectl.kubernetes.io/last-applied-configuration annotation"

EKS_VALUES = {
    "serviceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/imagepatch"},
    },
    "aws": {
        "region": "eu-west-1",
        "eventsQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/imagepatch-events",
    },
    "watchNamespaces": ["staging", "prod"],
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
}


# -- helm ---------------------------------------------------------------------------


@dataclass
class Helm:
    binary: str
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
        return res

    def template(
        self, *, namespace: str = "imagepatch-system", values: Path | None = None,
        include_crds: bool = False,
    ) -> list[dict[str, Any]]:
        args = ["template", RELEASE, str(CHART), "--namespace", namespace]
        if values is not None:
            args += ["--values", str(values)]
        if include_crds:
            args.append("--include-crds")
        return [d for d in yaml.safe_load_all(self.run(*args).stdout) if d]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    build = subprocess.run(
        ["bash", str(REPO / "tests" / "cluster" / "build-helm.sh")],
        capture_output=True, text=True, timeout=1800,
    )
    if build.returncode != 0:
        pytest.fail(f"tests/cluster/build-helm.sh failed:\n{build.stderr[-3000:]}")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    env.pop("KUBECONFIG", None)  # helm template/lint never need a cluster
    return Helm(binary=build.stdout.strip().splitlines()[-1], env=env)


@pytest.fixture
def eks_values(tmp_path: Path) -> Path:
    path = tmp_path / "eks-values.yaml"
    path.write_text(yaml.safe_dump(EKS_VALUES))
    return path


AGGREGATE_TO_VIEW = "rbac.authorization.k8s.io/aggregate-to-view"


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one document of ``kind`` (the read-only view role aside: it has its own test)."""
    found = [d for d in docs if d["kind"] == kind
             and AGGREGATE_TO_VIEW not in (d["metadata"].get("labels") or {})]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -- CRDs and RBAC ------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_top_level_crds() -> None:
    top = {p.name: p for p in (REPO / "crds").glob("*.yaml") if p.name != "kustomization.yaml"}
    chart = {p.name: p for p in (CHART / "crds").iterdir()}
    assert top, "no CRDs in crds/"
    assert sorted(chart) == sorted(top), "charts/imagepatch/crds/ must hold exactly the CRD files of crds/"
    for name, path in top.items():
        assert chart[name].read_bytes() == path.read_bytes(), (
            f"charts/imagepatch/crds/{name} differs from crds/{name}: cp crds/{name} charts/imagepatch/crds/"
        )


def by_namespace(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["namespace"]: d for d in docs if d["kind"] == kind}


def test_chart_rbac_rules_equal_deploy_rbac(helm: Helm) -> None:
    deploy = load_yaml_docs(DEPLOY / "rbac.yaml")
    rendered = helm.template()
    assert one(rendered, "ClusterRole")["rules"] == one(deploy, "ClusterRole")["rules"]
    # Two Roles: Secrets in the operator's namespace, builds in the build namespace.
    roles, shipped = by_namespace(rendered, "Role"), by_namespace(deploy, "Role")
    assert sorted(roles) == sorted(shipped) == ["imagepatch-builds", "imagepatch-system"]
    for namespace, role in roles.items():
        assert role["rules"] == shipped[namespace]["rules"], f"Role rules in {namespace} differ"
    build_resources = {r for rule in roles["imagepatch-builds"]["rules"] for r in rule["resources"]}
    assert build_resources == {"configmaps", "jobs"}
    assert not any("jobs" in rule["resources"]
                   for rule in roles["imagepatch-system"]["rules"]), "no builds in the operator's namespace"
    # ConfigMaps there are the operator's memory (issue 20): listed, created, merge-patched;
    # never a `get` of a Job template.
    assert [sorted(rule["verbs"]) for rule in roles["imagepatch-system"]["rules"]
            if "configmaps" in rule["resources"]] == [["create", "list", "patch"]]

    # The bindings tie those rules to the ServiceAccount the Deployment runs as.
    sa = one(rendered, "ServiceAccount")["metadata"]
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["name"]
    subjects = [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    binding = one(rendered, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": one(rendered, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == subjects
    for namespace, binding in by_namespace(rendered, "RoleBinding").items():
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": roles[namespace]["metadata"]["name"]}
        assert binding["subjects"] == subjects
    assert sa["namespace"] == "imagepatch-system"


def test_build_namespace_value_sets_the_flag_the_role_and_the_namespace(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template()
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--build-namespace") + 1] == "imagepatch-builds"
    (ns,) = [d for d in docs if d["kind"] == "Namespace"]
    assert ns["metadata"]["name"] == "imagepatch-builds"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    values = tmp_path / "builds.yaml"
    values.write_text(yaml.safe_dump({"builds": {"namespace": "ci-builds", "createNamespace": False}}))
    docs = helm.template(values=values)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--build-namespace") + 1] == "ci-builds"
    assert not [d for d in docs if d["kind"] == "Namespace"]
    assert sorted(by_namespace(docs, "Role")) == ["ci-builds", "imagepatch-system"]
    assert sorted(by_namespace(docs, "RoleBinding")) == ["ci-builds", "imagepatch-system"]


# -- lint, render, schema -----------------------------------------------------------


def test_helm_lint_strict(helm: Helm, eks_values: Path) -> None:
    helm.run("lint", "--strict", str(CHART))
    helm.run("lint", "--strict", str(CHART), "--values", str(eks_values))


def test_default_render_is_one_restricted_rolling_replica(helm: Helm) -> None:
    docs = helm.template()
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
         "Role", "RoleBinding", "Namespace", "Deployment", "NetworkPolicy", "NetworkPolicy",
         "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    ), "metrics are off by default: no Service, no ServiceMonitor"
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    # Leader election makes a rolling update safe: the new pod stands by.
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    shipped = one(load_yaml_docs(DEPLOY / "deployment.yaml"), "Deployment")
    assert container["image"] == shipped["spec"]["template"]["spec"]["containers"][0]["image"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
    assert container["resources"]["requests"] and container["resources"]["limits"]

    args = container["args"]
    assert args[:3] == ["run", "--liveness-endpoint", "http://0.0.0.0:8080/healthz"]
    assert "--namespace" not in args, "no watchNamespaces: all namespaces"
    assert "--metrics-port" not in args
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # kubectl apply -k deploy/ runs the same probes as the chart's defaults.
    shipped_container = shipped["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert shipped_container[probe] == container[probe], probe
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


def test_eks_values_render_irsa_region_queue_namespaces_and_metrics(
    helm: Helm, eks_values: Path
) -> None:
    docs = helm.template(values=eks_values)
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == EKS_VALUES["serviceAccount"]["annotations"]

    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]

    def values_of(flag: str) -> list[str]:
        return [args[i + 1] for i, a in enumerate(args) if a == flag]

    assert values_of("--aws-region") == ["eu-west-1"]
    assert values_of("--events-queue-url") == [EKS_VALUES["aws"]["eventsQueueUrl"]]
    assert values_of("--namespace") == ["staging", "prod"]
    assert values_of("--metrics-port") == ["9090"]
    # One Lease per release, in its namespace (the Role grants leases there only).
    assert len(values_of("--lease-name")) == 1
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    # Secrets are read from the operator's own namespace, where the Role is.
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]

    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The ServiceMonitor selects the Service, which selects the operator's pod.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def ingress_ports(policy: dict[str, Any]) -> list[tuple[int, tuple]]:
    """(port, its allowed peers) of a NetworkPolicy's ingress rules; () peers: anyone."""
    return sorted((p["port"], tuple(json.dumps(f, sort_keys=True) for f in rule.get("from") or ()))
                  for rule in policy["spec"]["ingress"] for p in rule["ports"])


MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def operator_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator pod's NetworkPolicy (the build namespace has its own)."""
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"
                 and not d["metadata"]["name"].endswith("-builds-egress")]
    return policy


def test_network_policy_admits_only_the_health_and_metrics_ports(helm: Helm, tmp_path: Path) -> None:
    """Ingress to the operator pod only on its probe port, plus metrics for the monitoring namespace."""
    default = helm.template()
    policy = operator_policy(default)
    pod_labels = one(default, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress: API server, registries, AWS
    assert ingress_ports(policy) == [(8080, ())]

    # Metrics on: restricted by default to Prometheus's usual namespace, never open to all.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"metrics": {"enabled": True}}))
    assert ingress_ports(operator_policy(helm.template(values=path))) == [
        (8080, ()), (9090, (json.dumps(MONITORING, sort_keys=True),))]

    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
    path.write_text(yaml.safe_dump({"health": {"port": 8081},
                                    "metrics": {"enabled": True, "port": 9100},
                                    "networkPolicy": {"metricsFrom": [scraper]}}))
    assert ingress_ports(operator_policy(helm.template(values=path))) == [
        (8081, ()), (9100, (json.dumps(scraper, sort_keys=True),))]
    # An empty list admits nobody to the metrics port (no rule without `from`).
    path.write_text(yaml.safe_dump({"metrics": {"enabled": True}, "networkPolicy": {"metricsFrom": []}}))
    assert ingress_ports(operator_policy(helm.template(values=path))) == [(8080, ())]

    path.write_text(yaml.safe_dump({"networkPolicy": {"enabled": False}}))
    assert [d["metadata"]["name"] for d in helm.template(values=path) if d["kind"] == "NetworkPolicy"] == [
        "imagepatch-builds-egress"]

    # deploy/: the same policy for its pod, with the metrics port the operator's
    # --metrics-port would use (9090, the chart's default), for the monitoring namespace.
    shipped = load_yaml_docs(DEPLOY / "networkpolicy.yaml")
    deployment = one(load_yaml_docs(DEPLOY / "deployment.yaml"), "Deployment")
    assert one(shipped, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items())
    assert ingress_ports(one(shipped, "NetworkPolicy")) == [
        (8080, ()), (9090, (json.dumps(MONITORING, sort_keys=True),))]
    assert "networkpolicy.yaml" in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]


# Never reachable from a build pod: instance metadata (IMDSv4/v6) and the EKS Pod
# Identity agent, whatever CIDRs the values give.
METADATA = [ipaddress.ip_address(a) for a in
            ("169.254.169.254", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23")]


def admitted(peer: dict[str, Any], address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an ipBlock peer admits ``address`` (its cidr minus its excepts)."""
    block = peer["ipBlock"]
    cidr = ipaddress.ip_network(block["cidr"])
    if cidr.version != address.version or address not in cidr:
        return False
    return not any(address in ipaddress.ip_network(e) for e in block.get("except") or ())


def build_policy(docs: list[dict[str, Any]], namespace: str = "imagepatch-builds") -> dict[str, Any]:
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"
                 and d["metadata"]["name"].endswith("-builds-egress")]
    assert policy["metadata"]["namespace"] == namespace
    return policy


def test_build_egress_policy_admits_dns_registries_and_api_server_never_metadata(
    helm: Helm, tmp_path: Path
) -> None:
    policy = build_policy(helm.template())
    # Every pod of the build namespace, egress only: DNS to kube-dns, registries on 443.
    assert policy["spec"]["podSelector"] == {} and policy["spec"]["policyTypes"] == ["Egress"]
    dns, registries = policy["spec"]["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert registries["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert {p["ipBlock"]["cidr"] for p in registries["to"]} == {"0.0.0.0/0", "::/0"}
    assert not [a for a in METADATA for p in registries["to"] if admitted(p, a)]
    # deploy/ ships the same policy, in its kustomization.
    shipped = one(load_yaml_docs(DEPLOY / "build-networkpolicy.yaml"), "NetworkPolicy")
    assert shipped["metadata"]["namespace"] == "imagepatch-builds"
    assert shipped["spec"] == policy["spec"]
    assert "build-networkpolicy.yaml" in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]

    # Given CIDRs of every shape: the chart keeps link-local out of each block that holds it.
    cidrs = ["10.0.0.0/8", "169.0.0.0/8", "169.254.0.0/15", "128.0.0.0/1", "0.0.0.0/0",
             "::/0", "2600::/12", "fd12:3456::/32", "192.168.1.5/32"]
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"builds": {"namespace": "imagepatch-system", "egressPolicy": {
        "registries": {"cidrs": cidrs, "ports": [443, 5000]},
        "apiServer": {"cidrs": ["172.20.0.0/16", "0.0.0.0/0"]}}}}))
    policy = build_policy(helm.template(values=path), "imagepatch-system")
    _, registries, api = policy["spec"]["egress"]
    assert [p["ipBlock"]["cidr"] for p in registries["to"]] == cidrs
    assert [p["port"] for p in registries["ports"]] == [443, 5000]
    assert [p["port"] for p in api["ports"]] == [443, 6443]
    assert not [(a, p) for a in METADATA for rule in (registries, api) for p in rule["to"] if admitted(p, a)]
    # Blocks that do not hold link-local addresses carry no `except` (the API server
    # accepts an except only inside its block).
    assert [p["ipBlock"]["cidr"] for p in registries["to"] if "except" in p["ipBlock"]] == [
        "169.0.0.0/8", "169.254.0.0/15", "128.0.0.0/1", "0.0.0.0/0", "::/0"]
    # Builds in the release's own namespace: the policy leaves the operator's pod out.
    assert policy["spec"]["podSelector"] == {"matchExpressions": [
        {"key": "app.kubernetes.io/instance", "operator": "NotIn", "values": [RELEASE]}]}

    # A block inside link-local, or one the chart cannot place, is refused.
    for cidr in ("169.254.169.254/32", "169.254.0.0/16", "fd00:ec2::/32", "fd00:ec2:0:1::/64",
                 "fd00::/8", "8000::/1"):
        path.write_text(yaml.safe_dump({"builds": {"egressPolicy": {"registries": {"cidrs": [cidr]}}}}))
        res = helm.run("template", RELEASE, str(CHART), "--values", str(path), check=False)
        assert res.returncode != 0 and cidr in res.stderr, (cidr, res.stderr)

    path.write_text(yaml.safe_dump({"builds": {"egressPolicy": {"enabled": False}}}))
    assert [d["metadata"]["name"] for d in helm.template(values=path) if d["kind"] == "NetworkPolicy"] == [
        "imagepatch"]


def test_secrets_grant_names_the_credential_secrets_when_the_values_list_them(
    helm: Helm, tmp_path: Path
) -> None:
    def secrets_rule(docs: list[dict[str, Any]]) -> dict[str, Any]:
        (rule,) = [r for r in by_namespace(docs, "Role")["imagepatch-system"]["rules"]
                   if r["resources"] == ["secrets"]]
        return rule

    # Without names (the chart cannot know what policies will name): get only, as deploy/.
    assert secrets_rule(helm.template()) == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"registry": {"credentialSecrets": ["ghcr-pull", "quay.pull"]}}))
    assert secrets_rule(helm.template(values=path)) == {
        "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
        "resourceNames": ["ghcr-pull", "quay.pull"]}
    # Notification sinks' Secrets join them; either list alone narrows the grant too.
    path.write_text(yaml.safe_dump({"registry": {"credentialSecrets": ["ghcr-pull"]},
                                    "notifications": {"secretNames": ["slack-webhook", "ghcr-pull"]}}))
    assert secrets_rule(helm.template(values=path))["resourceNames"] == ["ghcr-pull", "slack-webhook"]
    path.write_text(yaml.safe_dump({"notifications": {"secretNames": ["slack-webhook"]}}))
    assert secrets_rule(helm.template(values=path))["resourceNames"] == ["slack-webhook"]
    # cosign key Secrets (spec.verification.signatures, spec.rebuild.rebase) join the same grant.
    path.write_text(yaml.safe_dump({"registry": {"credentialSecrets": ["ghcr-pull"]},
                                    "signatures": {"keySecrets": ["cosign-ci"]}}))
    assert secrets_rule(helm.template(values=path))["resourceNames"] == ["ghcr-pull", "cosign-ci"]


def test_admission_policy_in_the_chart_equals_deploy_and_follows_the_release(
    helm: Helm, tmp_path: Path
) -> None:
    shipped = {d["kind"]: d for d in load_yaml_docs(DEPLOY / "admission-policy.yaml")}
    assert "admission-policy.yaml" in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    rendered = helm.template()
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert one(rendered, kind)["spec"] == shipped[kind]["spec"], (
            f"the chart's {kind} differs from deploy/admission-policy.yaml's")
    policy = shipped["ValidatingAdmissionPolicy"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert shipped["ValidatingAdmissionPolicyBinding"]["spec"]["validationActions"] == ["Deny"]
    # deploy/'s ServiceAccount and build namespace (deploy/rbac.yaml, the operator's default).
    sa = one(load_yaml_docs(DEPLOY / "rbac.yaml"), "ServiceAccount")["metadata"]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{sa['namespace']}:{sa['name']}'")
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["buildNamespace"] == "'imagepatch-builds'"

    # Another release, namespace and build namespace: the policy follows them.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"builds": {"namespace": "ci-builds"},
                                    "serviceAccount": {"name": "patcher"}}))
    docs = helm.template(namespace="ops", values=path)
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:ops:patcher'")
    assert {v["name"]: v["expression"] for v in policy["spec"]["variables"]}["buildNamespace"] == "'ci-builds'"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]

    path.write_text(yaml.safe_dump({"admissionPolicy": {"enabled": False}}))
    assert not [d for d in helm.template(values=path) if d["kind"].startswith("ValidatingAdmissionPolicy")]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicaCount": "1"}, "/replicaCount"),
        ({"aws": {"region": 5}}, "/aws/region"),
        ({"aws": {"region": "Europe"}}, "/aws/region"),
        ({"watchNamespaces": "prod"}, "/watchNamespaces"),
        ({"metrics": {"port": 0}}, "/metrics/port"),
        ({"metrics": {"enabled": "yes"}}, "/metrics/enabled"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"networkPolicy": {"enabled": "no"}}, "/networkPolicy/enabled"),
        ({"networkPolicy": {"ingress": []}}, "ingress"),  # unknown key under networkPolicy
        ({"detectTick": 0}, "/detectTick"),
        ({"builds": {"namespace": "Not_A_Namespace"}}, "/builds/namespace"),
        ({"builds": {"podSecurityLevel": "lax"}}, "/builds/podSecurityLevel"),
        ({"builds": {"namespaces": "x"}}, "namespaces"),  # unknown key under builds
        ({"builds": {"egressPolicy": {"registries": {"cidrs": ["registry.example.com"]}}}},
         "/builds/egressPolicy/registries/cidrs/0"),
        ({"builds": {"egressPolicy": {"apiServer": {"ports": [0]}}}}, "/builds/egressPolicy/apiServer/ports/0"),
        ({"builds": {"egressPolicy": {"metadata": True}}}, "metadata"),  # unknown key
        ({"registry": {"credentialSecrets": ["Not_A_Secret"]}}, "/registry/credentialSecrets/0"),
        ({"notifications": {"secretNames": ["Not_A_Secret"]}}, "/notifications/secretNames/0"),
        ({"notifications": {"retryTimeout": 0}}, "/notifications/retryTimeout"),
        ({"admissionPolicy": {"enabled": "yes"}}, "/admissionPolicy/enabled"),
        ({"replicas": 1}, "replicas"),  # unknown top-level key (a typo of replicaCount)
        ({"serviceAccount": {"annotation": {}}}, "annotation"),  # unknown nested key
    ],
)
def test_schema_rejects_bad_values(helm: Helm, tmp_path: Path, values: dict, error: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    res = helm.run("template", RELEASE, str(CHART), "--values", str(path), check=False)
    assert res.returncode != 0, f"schema accepted {values}"
    assert "schema" in res.stderr and error in res.stderr, res.stderr


def test_template_rejects_inconsistent_values(helm: Helm, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"metrics": {"serviceMonitor": {"enabled": True}}}))
    res = helm.run("template", RELEASE, str(CHART), "--values", str(path), check=False)
    assert res.returncode != 0 and "needs metrics.enabled" in res.stderr, res.stderr


# -- the real API server ------------------------------------------------------------


def kubectl(kube, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl with its stderr kept: server warnings (PodSecurity) are printed there."""
    return subprocess.run(
        [kube.kubectl_bin, "--kubeconfig", str(kube.kubeconfig), *args],
        input=input, capture_output=True, text=True, timeout=120,
    )


def unexpected_warnings(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines()
        if line.startswith("Warning:") and BENIGN_WARNING not in line
    ]


@pytest.fixture
def restricted_namespace(kube) -> Iterator[str]:
    """A namespace that enforces, warns and audits at the restricted Pod Security level."""
    name = f"t-pkg-{uuid.uuid4().hex[:8]}"
    level = "restricted"
    kube.kubectl("create", "namespace", name)
    kube.kubectl(
        "label", "namespace", name,
        f"pod-security.kubernetes.io/enforce={level}",
        f"pod-security.kubernetes.io/warn={level}",
        f"pod-security.kubernetes.io/audit={level}",
    )
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def assert_pod_admitted_as_restricted(kube, deployment: dict[str, Any], namespace: str) -> None:
    """A Pod from the Deployment's template is admitted where restricted is enforced."""
    template = copy.deepcopy(deployment["spec"]["template"])
    sa = template["spec"].get("serviceAccountName", "default")
    # The ServiceAccount admission plugin wants the pod's ServiceAccount to exist.
    kubectl(kube, "-n", namespace, "create", "serviceaccount", sa)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-check", "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    res = kubectl(kube, "create", "--dry-run=server", "-f", "-", input=json.dumps(pod))
    assert res.returncode == 0, f"restricted Pod Security rejected the pod:\n{res.stderr}"
    assert not unexpected_warnings(res.stderr), res.stderr


def servicemonitor_crd_installed(kube) -> bool:
    res = kubectl(kube, "get", "crd", "servicemonitors.monitoring.coreos.com", "-o", "name")
    return res.returncode == 0


def test_rendered_chart_passes_server_dry_run_and_restricted_pss(
    kube, helm: Helm, eks_values: Path, restricted_namespace: str
) -> None:
    # The build namespace the chart's build Role goes into (the chart creates it on a
    # real install; a dry-run cannot put objects into a namespace it only pretends to make).
    kube.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    for values in (None, eks_values):
        docs = helm.template(namespace=restricted_namespace, values=values)
        if not servicemonitor_crd_installed(kube):
            # No Prometheus Operator here: its CR cannot be dry-run without its CRD;
            # test_eks_values_render... checks it client-side.
            docs = [d for d in docs if d["kind"] != "ServiceMonitor"]
        manifest = yaml.safe_dump_all(docs)
        res = kubectl(kube, "apply", "--dry-run=server", "-f", "-", input=manifest)
        assert res.returncode == 0, f"server dry-run rejected the chart ({values}):\n{res.stderr}"
        assert not unexpected_warnings(res.stderr), res.stderr
        applied = res.stdout.splitlines()
        assert any(line.startswith("deployment.apps/") for line in applied), applied
        assert all("(server dry run)" in line for line in applied), applied
    assert_pod_admitted_as_restricted(kube, one(docs, "Deployment"), restricted_namespace)

    # The chart's CRDs too (server-side apply: the `crds` fixture may own them already).
    crds = [d for d in helm.template(include_crds=True) if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 2
    res = kubectl(
        kube, "apply", "--server-side", "--force-conflicts", "--field-manager=imagepatch-packaging-test",
        "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(crds),
    )
    assert res.returncode == 0, res.stderr


def test_deploy_kustomization_passes_server_dry_run_and_restricted_pss(
    kube, restricted_namespace: str
) -> None:
    # The namespace must exist for a dry-run of what goes into it; tests/support/
    # operator.py's install_rbac applies the same file.
    kube.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    res = kubectl(kube, "apply", "-k", str(DEPLOY), "--dry-run=server")
    assert res.returncode == 0, f"server dry-run rejected deploy/:\n{res.stderr}"
    assert not unexpected_warnings(res.stderr), res.stderr
    applied = res.stdout
    for name in ("deployment.apps/imagepatch", "clusterrole.rbac.authorization.k8s.io/imagepatch-operator"):
        assert name in applied, applied

    docs = list(yaml.safe_load_all(kube.kubectl("kustomize", str(DEPLOY))))
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    # Its template raises no PodSecurity warning in a namespace warning at restricted...
    moved = copy.deepcopy(deployment)
    moved["metadata"]["namespace"] = restricted_namespace
    res = kubectl(kube, "apply", "--dry-run=server", "-f", "-", input=json.dumps(moved))
    assert res.returncode == 0 and not unexpected_warnings(res.stderr), res.stderr
    # ... and a Pod from it is admitted where restricted is enforced.
    assert_pod_admitted_as_restricted(kube, deployment, restricted_namespace)


def test_example_build_template_needs_baseline_and_the_build_namespace_allows_it(kube) -> None:
    """deploy/examples/buildah-job-template.yaml says it needs baseline: prove both halves."""
    (config_map,) = load_yaml_docs(DEPLOY / "examples" / "buildah-job-template.yaml")
    assert config_map["metadata"]["namespace"] == "imagepatch-builds"
    job = yaml.safe_load(config_map["data"]["job.yaml"])
    spec = job["spec"]["template"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if "secret" not in v]  # no Secret needed to admit
    for c in spec["initContainers"] + spec["containers"]:
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "push-credentials"]

    def admit(namespace: str) -> subprocess.CompletedProcess[str]:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "build-psa-check", "namespace": namespace}, "spec": spec}
        return kubectl(kube, "create", "--dry-run=server", "-f", "-", input=json.dumps(pod))

    kube.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    builds = json.loads(kube.kubectl("get", "namespace", "imagepatch-builds", "-o", "json"))
    labels = builds["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    res = admit("imagepatch-builds")
    assert res.returncode == 0, f"baseline refused the example build pod:\n{res.stderr}"
    # Admitted, with the restricted-level warning the namespace asks for.
    assert "restricted" in res.stderr, res.stderr

    res = admit("imagepatch-system")  # the operator's namespace enforces restricted
    assert res.returncode != 0
    assert "capabilities" in res.stderr and "runAsNonRoot" in res.stderr, res.stderr


# -- image and AWS docs -------------------------------------------------------------


def test_dockerfile_pins_base_by_digest_and_labels_it() -> None:
    text = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(froms) >= 2, "multi-stage: a builder and a final stage"
    digest = args["BASE_DIGEST"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
    assert args["BASE_NAME"].endswith(("python:3.11-slim-bookworm", "python:3.11-slim"))
    for ref in froms:
        assert ref == "${BASE_NAME}@${BASE_DIGEST}", f"unpinned base: FROM {ref}"
    for label in ("source", "revision", "version", "licenses", "base.name", "base.digest"):
        assert f"org.opencontainers.image.{label}=" in text, label
    assert 'org.opencontainers.image.base.digest="${BASE_DIGEST}"' in text
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert not re.search(r"pip (wheel|install)|apt-get install", final), "no building in the final stage"
    assert re.search(r"^USER 65532", final, re.MULTILINE)
    assert 'ENTRYPOINT ["imagepatch"]' in final and 'CMD ["run"]' in final


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _cfn_tag)


def test_eventbridge_sqs_template() -> None:
    tpl = yaml.load((REPO / "docs" / "eventbridge-sqs.yaml").read_text(), Loader=_CloudFormationLoader)  # noqa: S506 - a SafeLoader
    res = tpl["Resources"]
    by_type: dict[str, list[str]] = {}
    for name, r in res.items():
        by_type.setdefault(r["Type"], []).append(name)
    assert len(by_type["AWS::SQS::Queue"]) == 2, "the queue and its dead-letter queue"
    (rule_name,) = by_type["AWS::Events::Rule"]
    (policy_name,) = by_type["AWS::SQS::QueuePolicy"]

    queue_name = next(n for n in by_type["AWS::SQS::Queue"] if "RedrivePolicy" in res[n]["Properties"])
    redrive = res[queue_name]["Properties"]["RedrivePolicy"]
    dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert dlq in by_type["AWS::SQS::Queue"] and dlq != queue_name
    assert "maxReceiveCount" in redrive

    (statement,) = res[policy_name]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": [rule_name, "Arn"]}

    rule = res[rule_name]["Properties"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue_name, "Arn"]}
    matched = {
        (source, detail_type)
        for branch in rule["EventPattern"]["$or"]
        for source in branch["source"]
        for detail_type in branch["detail-type"]
    }
    assert {
        ("aws.ecr", "ECR Image Action"),
        ("aws.ecr", "ECR Image Scan"),
        ("aws.inspector2", "Inspector2 Finding"),
    } <= matched
    push = next(b for b in rule["EventPattern"]["$or"] if "ECR Image Action" in b["detail-type"])
    assert push["detail"]["action-type"] == ["PUSH"]
    assert {"QueueUrl", "QueueArn"} <= set(tpl["Outputs"])


def test_make_pin_image_pins_deploy_and_the_chart_by_digest(tmp_path: Path) -> None:
    """The release step: `make pin-image DIGEST=...` pins both installs and drops the checkov skip."""
    for rel in ("Makefile", "deploy/deployment.yaml", "charts/imagepatch/values.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((REPO / rel).read_text())
    bad = subprocess.run(["make", "-s", "pin-image", "DIGEST=latest"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "usage" in bad.stderr
    digest = "sha256:" + "ab" * 32
    for _ in range(2):  # idempotent: pinning again replaces the digest, never appends one
        subprocess.run(["make", "-s", "pin-image", f"DIGEST={digest}"], cwd=tmp_path, check=True,
                       capture_output=True)
    shipped = one(load_yaml_docs(tmp_path / "deploy" / "deployment.yaml"), "Deployment")
    image = shipped["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/imagepatch/imagepatch:0.3.0@{digest}"
    skips = " ".join((shipped["metadata"].get("annotations") or {}).values())
    assert "CKV_K8S_43" not in skips and "CKV_K8S_11" in skips
    assert yaml.safe_load((tmp_path / "charts/imagepatch/values.yaml").read_text())["image"]["digest"] == digest


def test_two_replicas_render_with_a_rolling_update(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"replicaCount": 2}))
    deploy = one(helm.template(values=values), "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"


def test_argo_rollouts_access_is_granted_only_with_argo_rollouts_enabled(
    helm: Helm, tmp_path: Path
) -> None:
    """Issue 23: the Rollout CRD may not exist, so rollouts are granted only when asked for,
    with the rules of deploy/rbac-argo-rollouts.yaml, and the operator then watches them."""
    def argo_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if d["metadata"]["name"].endswith("-argo-rollouts")]

    docs = helm.template()
    assert not argo_docs(docs)
    assert not any("argoproj.io" in rule["apiGroups"] for rule in one(docs, "ClusterRole")["rules"])
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--argo-rollouts" not in container["args"]

    values = tmp_path / "argo.yaml"
    values.write_text(yaml.safe_dump({"argoRollouts": {"enabled": True}}))
    docs = helm.template(values=values)
    role, binding = sorted(argo_docs(docs), key=lambda d: d["kind"])
    shipped = {d["kind"]: d for d in load_yaml_docs(DEPLOY / "rbac-argo-rollouts.yaml")}
    assert role["kind"] == "ClusterRole" and role["rules"] == shipped["ClusterRole"]["rules"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                    "namespace": sa["namespace"]}]
    assert binding["subjects"] == shipped["ClusterRoleBinding"]["subjects"]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--argo-rollouts" in container["args"]


def test_flagger_access_is_granted_only_with_flagger_enabled(helm: Helm, tmp_path: Path) -> None:
    """Issue 23: the Canary CRD may not exist, so canaries are granted (read only) only when
    asked for, with the rules of deploy/rbac-flagger.yaml, and the operator then reads them."""
    def flagger_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if d["metadata"]["name"].endswith("-flagger")]

    docs = helm.template()
    assert not flagger_docs(docs)
    assert not any("flagger.app" in rule["apiGroups"] for rule in one(docs, "ClusterRole")["rules"])
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--flagger" not in container["args"]

    values = tmp_path / "flagger.yaml"
    values.write_text(yaml.safe_dump({"flagger": {"enabled": True}}))
    docs = helm.template(values=values)
    role, binding = sorted(flagger_docs(docs), key=lambda d: d["kind"])
    shipped = {d["kind"]: d for d in load_yaml_docs(DEPLOY / "rbac-flagger.yaml")}
    assert role["kind"] == "ClusterRole" and role["rules"] == shipped["ClusterRole"]["rules"]
    assert role["rules"] == [{"apiGroups": ["flagger.app"], "resources": ["canaries"],
                              "verbs": ["get", "list", "watch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                    "namespace": sa["namespace"]}]
    assert binding["subjects"] == shipped["ClusterRoleBinding"]["subjects"]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--flagger" in container["args"]
