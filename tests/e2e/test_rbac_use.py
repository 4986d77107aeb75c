"""RBAC trimmed to use: every verb deploy/rbac.yaml grants is one the operator calls.

The operator runs under its shipped ServiceAccount and RBAC through
representative scenarios: detection of a base update (with registry
credentials from a Secret), a rollout, a rollback, a ``job:`` rebuild whose
build outlives its timeout, and history pruning. The local API server audits
every request of that ServiceAccount (``tests/cluster/audit-policy.yaml``).
The test then asserts, from the audit log:

* nothing the operator called is outside its RBAC (it would have been denied);
* every (API group, resource, verb, namespace) the RBAC grants was called, or
  is listed in ``NOT_REACHED`` with the reason e2e cannot reach it.

A grant that no code calls fails the test: remove it from deploy/rbac.yaml
and the chart's templates (a packaging test keeps those two equal).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from imagepatch.model.memory import MEMORY_LABEL, MEMORY_LABEL_VALUE
from tests.support.audit import Call, Grant, load_grants, read_calls, uncovered, unused
from tests.support.images import make_base_image
from tests.support.operator import (
    NAMESPACE,
    REPO,
    SERVICE_ACCOUNT,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

ACCOUNT, REGION = "123456789012", "us-east-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
BUILD_NAMESPACE = "imagepatch-builds"
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}
APP = "registry.local/rbac/app"

# Grants reached here or not depending on what earlier modules of the session left in the
# cluster: this operator watches the whole cluster, so it patches the imagepatch.dev/state
# mirror of StatefulSets, DaemonSets and CronJobs that earlier modules left opted out or
# without their policy, only when it runs after them. Listed in NOT_REACHED, never "now used".
ORDER_DEPENDENT = {Grant(g, r, "patch", None) for g, r in (
    ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "cronjobs"))} | {
    # A watch event may reach the planner before the store's first listing: a GET then.
    Grant("imagepatch.dev", r, "get", None) for r in ("imagepatches", "imagepatchpolicies")} | {
    # The memory ConfigMap is patched only once it exists: a fresh session (one xdist
    # worker) may create it and never write it again before this test reads the log.
    Grant("", "configmaps", "patch", "imagepatch-system")}

# Grants e2e does not exercise, each with why it is still needed.
NOT_REACHED: dict[Grant, str] = {
    Grant("", "configmaps", "patch", "imagepatch-system"): (
        "the memory ConfigMap (adapters/memory.py) is patched after it was created; whether a "
        "session reaches that depends on the modules its worker ran first"),
} | {
    Grant("", "namespaces", verb, None): (
        "kopf lists and watches Namespaces only when --namespace (the chart's watchNamespaces) "
        "restricts what it watches; e2e runs the operator cluster-wide")
    for verb in ("list", "watch")
} | {
    Grant("imagepatch.dev", resource, "get", None): (
        f"{resource} are read from the watch store (adapters/store.py); a GET is made only "
        "before the store's first listing of the kind, which here comes first")
    for resource in ("imagepatches", "imagepatchpolicies")
} | {
    **{
        Grant(group, resource, verb, None): (
            f"rollouts of {resource} (get, patch; Jobs list for a CronJob's gate): reached by "
            "test_kinds.py, not by these Deployment scenarios (the cluster-wide Jobs create of a "
            "CronJob's trial run is covered here by the build Job's create)")
        for group, resource, verbs in (
            ("apps", "statefulsets", ("get", "patch")),
            ("apps", "daemonsets", ("get", "patch")),
            ("batch", "cronjobs", ("get", "patch")),
            ("batch", "jobs", ("list",)),
        )
        for verb in verbs
    },
    Grant("", "nodes", "list", None): (
        "the node AMI survey (--node-survey, off by default): reached by test_nodes.py"),
    Grant("", "pods", "delete", None): (
        "the forced rollback of an OrderedReady StatefulSet whose new pod never gets Ready: "
        "reached by test_statefulset_rollback.py, not by these Deployment scenarios"),
    Grant("imagepatch.dev", "imagepatches", "patch", None): (
        "metadata writes only: detection's close request and retargeting of an unstarted patch, "
        "and removing a v0.1 finalizer; reached by test_detection.py::"
        "test_patch_no_longer_needed_is_closed and test_handlers.py, not by these scenarios"),
}


@pytest.fixture(scope="module")
def audited(kube, crds, registry, tmp_path_factory) -> Iterator[tuple[OperatorProcess, int]]:
    """The operator under its ServiceAccount, and where the audit log stood when it started."""
    if kube.audit_log is None:
        pytest.skip("needs the local API server's audit log")
    install_rbac(kube)
    kube.kubectl("apply", "-f", str(REPO / "deploy" / "namespace.yaml"))
    # The operator's memory, as a fresh install has it: none. Earlier modules' operators left
    # its ConfigMaps, and one that exists is patched, never created again.
    kube.kubectl("delete", "configmaps", "-n", NAMESPACE, "-l", f"{MEMORY_LABEL}={MEMORY_LABEL_VALUE}",
                 "--ignore-not-found")
    offset = kube.audit_log.stat().st_size if kube.audit_log.exists() else 0
    work = tmp_path_factory.mktemp("rbac")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        # A Lease of its own, so it is created here (the session's other operators hold theirs).
        extra_args=["--registry-endpoint", f"{ECR}=http://{registry.host}", "--detect-tick", "1",
                    "--lease-name", f"rbac-audit-{uuid.uuid4().hex[:6]}"],
    )
    proc.start()
    try:
        yield proc, offset
    finally:
        proc.stop()


@pytest.fixture
def given(kube, audited) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def retrigger(given: Scenario, policy: str) -> None:
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={dt.datetime.now(dt.UTC).isoformat()}")


def patches_for(given: Scenario, policy: str) -> list[dict]:
    return json.loads(given.kube.kubectl("get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}",
                                         "-o", "json"))["items"]


def detection_with_registry_credentials(given: Scenario, registry, buildah) -> None:
    """A base update opens an ImagePatch; credentials come from a Secret in the operator's namespace."""
    base_repo, app_repo = unique("rbase"), unique("rapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    buildah.build_app(base_v1, app_repo, "1", pinned=False)
    secret, policy = unique("regcred"), unique("pol")
    given.kube.kubectl("apply", "-f", "-", input=given.kube.kubectl(
        "create", "secret", "docker-registry", secret, "-n", NAMESPACE, f"--docker-server={ECR}",
        "--docker-username=ci", "--docker-password=unused", "--dry-run=client", "-o", "json"))
    given.policy(policy, baseImages={"checkInterval": "1h"}, registryCredentials={"secretName": secret})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)

    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_for(lambda: patches_for(given, policy), timeout=90, what="an ImagePatch for the base update")


def rollout_and_rollback(given: Scenario) -> None:
    policy = unique("pol")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    good, bad = fake_digest(f"good-{uuid.uuid4()}"), fake_digest(f"bad-{uuid.uuid4()}")
    given.deployment(ns, "web", image=f"{APP}:1", policy=policy, replicas=1)
    given.deployment(ns, "api", image=f"{APP}:2", policy=policy, replicas=1, crashloop_on=bad)
    forward, back = unique("fwd"), unique("back")
    given.imagepatch(forward, image=APP, tag="1", policy=policy, target_digest=good)
    given.imagepatch(back, image=APP, tag="2", policy=policy, target_digest=bad)
    assert given.wait_phase(forward, "Succeeded", "RolledBack", "Failed")["status"]["phase"] == "Succeeded"
    assert given.wait_phase(back, "Succeeded", "RolledBack", "Failed")["status"]["phase"] == "RolledBack"


def job_build_past_its_timeout(given: Scenario, registry) -> None:
    """A ``job:`` build that outlives ``spec.rebuild.timeout`` is deleted (jobs delete)."""
    import yaml

    template = unique("tmpl")
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never",
        "nodeSelector": {"imagepatch.dev/test": "never-scheduled"},  # stays in flight
        "containers": [{"name": "build", "image": "quay.io/buildah/stable:v1.38",
                        "env": [{"name": "BASE_IMAGE", "value": "${BASE_IMAGE}"},
                                {"name": "TARGET_IMAGE", "value": "${TARGET_IMAGE}"}]}]}}}}
    given.apply({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": template, "namespace": BUILD_NAMESPACE},
                 "data": {"job.yaml": yaml.safe_dump(job)}})
    base_repo, app_repo = unique("jbase"), unique("japp")
    old_base = make_base_image(registry, base_repo, "1", marker="v1")
    new_base = make_base_image(registry, base_repo, "1", marker="v2")
    app = make_base_image(registry, app_repo, "1", marker="app")
    policy, patch = unique("pol"), unique("patch")
    given.policy(policy, rebuild={"strategy": "job", "job": {"template": template}, "timeout": "1m"})
    given.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch", "metadata": {"name": patch},
                 "spec": {"image": f"{registry.host}/{app_repo}", "tag": "1", "policy": policy,
                          "reason": "BaseImageOutdated", "currentDigest": app.digest,
                          "evidence": {"baseImage": {"name": f"{registry.host}/{base_repo}:1",
                                                     "oldDigest": old_base.digest,
                                                     "newDigest": new_base.digest}},
                          "rebuild": {"strategy": "job", "jobTemplate": template}}})

    def building():
        return (given.get("imagepatch", patch).get("status") or {}).get("rebuild", {}).get("buildId")
    try:
        build_id = wait_for(building, timeout=60, what="the build Job to be recorded")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nstatus: {json.dumps(given.get('imagepatch', patch).get('status'))}") from None
    # Nothing to wait a minute for: the build is made to have started two hours ago.
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    given.kube.kubectl("patch", "imagepatch", patch, "--subresource=status", "--type=merge", "-p",
                       json.dumps({"status": {"rebuild": {"startedAt": started}}}))

    def job_gone():
        return not given.kube.kubectl("get", "job", build_id, "-n", BUILD_NAMESPACE,
                                      "--ignore-not-found", "-o", "name").strip()
    wait_for(job_gone, timeout=60, what="the timed-out build Job to be deleted")


def history_pruning(given: Scenario) -> None:
    policy, done = unique("pol"), unique("done")
    given.policy(policy, history={"keepCount": 0, "maxAge": "2160h"})
    given.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
                 "metadata": {"name": done, "labels": {"imagepatch.dev/policy": policy}},
                 "spec": {"image": f"{ECR}/retained", "policy": policy, "reason": "Manual",
                          "currentDigest": "sha256:" + "d" * 64}})
    given.kube.kubectl("patch", "imagepatch", done, "--subresource=status", "--type=merge", "-p",
                       json.dumps({"status": {"phase": "Succeeded", "history": [
                           {"phase": "Succeeded", "at": "2026-01-01T00:00:00Z"}]}}))
    retrigger(given, policy)
    wait_for(lambda: done not in {p["metadata"]["name"] for p in patches_for(given, policy)},
             timeout=30, what="the finished patch to be pruned")


def test_every_granted_verb_is_used_and_nothing_used_is_missing(
    given: Scenario, kube, registry, buildah, audited,
) -> None:
    operator, offset = audited
    job_build_past_its_timeout(given, registry)
    detection_with_registry_credentials(given, registry, buildah)
    rollout_and_rollback(given)
    history_pruning(given)
    # Let the watches' and timers' requests of the last scenario reach the log.
    time.sleep(2)

    used = read_calls(kube.audit_log, offset=offset)
    granted = load_grants(REPO / "deploy" / "rbac.yaml", service_account=(NAMESPACE, SERVICE_ACCOUNT))
    print("\noperator API calls (group, resource, verb, namespace):")
    for call in sorted({Call(c.group, c.resource, c.verb,
                             c.namespace if c.namespace in (NAMESPACE, BUILD_NAMESPACE) else
                             ("*" if c.namespace else None)) for c in used}, key=str):
        print("  ", call)

    missing = uncovered(used, granted)
    assert not missing, f"the operator called what its RBAC does not grant: {missing}"
    idle = [g for g in unused(granted, used) if g not in NOT_REACHED]
    assert not idle, (f"deploy/rbac.yaml grants what the operator never called: {idle}; "
                      "remove them (and from charts/imagepatch/templates), or list them in NOT_REACHED "
                      "with the reason")
    stale = [g for g in NOT_REACHED if g not in granted
             or (g not in unused(granted, used) and g not in ORDER_DEPENDENT)]
    assert not stale, f"NOT_REACHED lists grants that are gone or now used: {stale}"
    assert not operator.forbidden_lines()
