"""Detection on the real cluster, registry, buildah and moto: who needs a patch, and why.

Images are built with buildah into the local registry. Workloads name them as
if they lived in ECR (``123456789012.dkr.ecr.us-east-1.amazonaws.com/…``);
the operator runs with ``--registry-endpoint`` mapping that host to the local
registry, so image bytes come from a real registry while ECR scan findings
and EventBridge → SQS events come from moto, exactly as on EKS.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import make_base_image, make_base_index, strip_lineage
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import start_htpasswd_registry
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

ACCOUNT, REGION = "123456789012", "us-east-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


@pytest.fixture(scope="module")
def queue(moto_server):
    """An SQS queue fed by an EventBridge rule for ECR and Inspector events."""
    sqs, events = moto_server.client("sqs"), moto_server.client("events")
    url = sqs.create_queue(QueueName=f"imagepatch-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = f"imagepatch-{uuid.uuid4().hex[:6]}"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["aws.ecr", "aws.inspector2"]}))
    # The whole event, unchanged (moto drops `account` without a transformer).
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": arn, "InputTransformer": {
        "InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}}])
    return url


@pytest.fixture(scope="module")
def detector(kube, crds, registry, moto_server, queue, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("detector")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}=http://{registry.host}",
                    "--aws-region", REGION, "--events-queue-url", queue, "--detect-tick", "1",
                    "--securityhub", "--cluster-name", "e2e"],
        extra_env={**moto_server.env(), "AWS_ENDPOINT_URL": moto_server.endpoint_url},
        metrics=True,
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, detector) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def state_of(given: Scenario, ns: str, name: str = "web") -> dict:
    dep = given.get("deployment", name, ns)
    raw = (dep["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
    return json.loads(raw) if raw else {}


def wait_state(given: Scenario, ns: str, *states: str, name: str = "web", timeout: float = 60) -> dict:
    def probe():
        st = state_of(given, ns, name)
        return st if st.get("state") in states else None
    try:
        return wait_for(probe, timeout=timeout, interval=0.5, what=f"{ns}/{name} in {states}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast state: {json.dumps(state_of(given, ns, name))}") from None


def wait_annotation_lineage(given: Scenario, ns: str, name: str = "web") -> dict:
    """Compliant, with the base known from the imagepatch.dev/base-image annotation."""
    def probe():
        st = state_of(given, ns, name)
        containers = st.get("containers") or [{}]
        return st if st.get("state") == "Compliant" and all(
            c.get("lineage") == "workload-annotation" for c in containers) else None
    return wait_for(probe, timeout=60, interval=0.5, what=f"{ns}/{name} on its annotated base")


def patches_for(given: Scenario, policy: str) -> list[dict]:
    out = json.loads(given.kube.kubectl("get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}",
                                        "-o", "json"))
    return out["items"]


def retrigger(given: Scenario, policy: str) -> None:
    """`kubectl annotate` the policy: evaluate now rather than at the next interval."""
    stamp = dt.datetime.now(dt.UTC).isoformat()
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={stamp}")


def build_app_on(buildah, base, repo: str):
    return buildah.build_app(base, repo, "1", pinned=False)


def ci_push(buildah, base, repo: str, tag: str):
    """External CI: rebuild the app on ``base`` and push it under the tag the patch names."""
    return buildah.build_app(base, repo, tag, pinned=False)


def test_base_update_creates_one_patch_with_the_digests(given, registry, buildah, detector) -> None:
    base_repo, app_repo = unique("base"), unique("app")
    base_v1 = make_base_image(registry, base_repo, "3.12", marker="v1")
    app = build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=2)

    state = wait_state(given, ns, "Compliant")
    [container] = state["containers"]
    assert container["digest"] == app.digest
    assert container["digestSource"] == "tag-resolved"  # kwok pods report no imageID
    assert container["baseDigest"] == base_v1.digest
    assert container["lineage"] == "manifest-annotations"
    assert patches_for(given, policy) == []

    base_v2 = make_base_image(registry, base_repo, "3.12", marker="v2")
    retrigger(given, policy)
    state = wait_state(given, ns, "Patching", "BaseImageOutdated")
    [patch] = patches_for(given, policy)
    assert patch["spec"]["reason"] == "BaseImageOutdated"
    assert patch["spec"]["image"] == f"{ECR}/{app_repo}"
    assert patch["spec"]["currentDigest"] == app.digest
    assert patch["spec"]["evidence"]["baseImage"] == {
        "name": f"{registry.host}/{base_repo}:3.12",
        "oldDigest": base_v1.digest, "newDigest": base_v2.digest}
    assert state["state"] == "Patching"

    # Re-evaluation never duplicates it.
    passes = detector.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    detector.wait_passes(after=passes)
    assert [p["metadata"]["name"] for p in patches_for(given, policy)] == [patch["metadata"]["name"]]
    reasons = [e["reason"] for e in given.events(ns, "web")]
    assert "Compliant" in reasons and "Patching" in reasons
    status = given.get("imagepatchpolicy", policy)["status"]
    assert status["workloads"]["total"] == 1 and status["workloads"]["patching"] == 1


def test_multi_arch_base_resolves_to_its_index(given, registry, buildah) -> None:
    base_repo, app_repo = unique("mbase"), unique("mapp")
    index = make_base_index(registry, base_repo, "1", marker="v1")
    app = build_app_on(buildah, index, app_repo)
    policy = unique("pol")
    given.policy(policy)
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)

    state = wait_state(given, ns, "Compliant")
    [container] = state["containers"]
    # buildah records the amd64 platform digest; the base tag resolves to the index.
    assert container["baseCurrent"] == index.digest
    assert container["baseDigest"] != index.digest
    assert app.digest == container["digest"]


def test_push_event_triggers_detection_within_seconds(given, registry, buildah, moto_server) -> None:
    base_repo, app_repo = unique("ebase"), unique("eapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    # The annotation names the base tag to follow, under its ECR name: the base the image
    # records, under another name of the same registry (--registry-endpoint), so followed.
    doc_base = f"{ECR}/{base_repo}:1"
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    given.kube.kubectl("annotate", "deployment", "web", "-n", ns, f"imagepatch.dev/base-image={doc_base}")
    wait_state(given, ns, "Compliant")

    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    pushed = time.monotonic()
    moto_server.client("events").put_events(Entries=[{
        "Source": "aws.ecr", "DetailType": "ECR Image Action",
        "Detail": json.dumps({"action-type": "PUSH", "result": "SUCCESS",
                              "repository-name": base_repo, "image-digest": base_v2.digest,
                              "image-tag": "1"}),
    }])
    wait_state(given, ns, "Patching", "BaseImageOutdated", timeout=30)
    print(f"\n[measured] SQS push event → ImagePatch: {time.monotonic() - pushed:.2f}s")
    [patch] = patches_for(given, policy)
    assert patch["spec"]["evidence"]["baseImage"]["newDigest"] == base_v2.digest


def test_findings_over_the_baseline_make_the_workload_vulnerable(
    given, registry, buildah, moto_server, detector
) -> None:
    base = make_base_image(registry, unique("fbase"), "1", marker="v1")
    bad_repo, ok_repo = unique("vuln"), unique("clean")
    bad = build_app_on(buildah, base, bad_repo)
    ok = build_app_on(buildah, base, ok_repo)
    ecr = moto_server.client("ecr")

    def scan(repo: str, digest: str, findings: list[dict]) -> None:
        ecr.create_repository(repositoryName=repo)
        manifest, media_type, _ = registry.get_manifest(repo, digest)
        ecr.put_image(repositoryName=repo, imageManifest=manifest.decode(),
                      imageManifestMediaType=media_type, imageTag="1", imageDigest=digest)
        ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
        moto_server.inject_ecr_scan_findings({
            "imageScanStatus": {"status": "COMPLETE", "description": "done"},
            "imageScanFindings": {"findings": findings, "findingSeverityCounts": {}},
            "registryId": ACCOUNT, "repositoryName": repo, "imageId": {"imageDigest": digest},
        })

    def finding(cve: str, severity: str) -> dict:
        return {"name": cve, "severity": severity, "uri": f"https://nvd.example/{cve}",
                "attributes": [{"key": "package_name", "value": "openssl"},
                               {"key": "package_version", "value": "3.0.1"}]}

    scan(bad_repo, bad.digest, [finding("CVE-2026-0001", "CRITICAL"), finding("CVE-2026-0002", "LOW")])
    # Below the baseline (LOW) or explicitly ignored: compliant.
    scan(ok_repo, ok.digest, [finding("CVE-2026-0003", "LOW"), finding("CVE-2026-0004", "HIGH")])
    policy = unique("pol")
    given.policy(policy, vulnerabilities={"source": "ecr", "minSeverity": "HIGH",
                                          "ignore": ["CVE-2026-0004"]})
    ns = given.namespace()
    given.deployment(ns, "bad", image=f"{ECR}/{bad_repo}:1", policy=policy, replicas=1)
    given.deployment(ns, "ok", image=f"{ECR}/{ok_repo}:1", policy=policy, replicas=1)

    wait_state(given, ns, "Patching", "Vulnerable", name="bad")
    wait_state(given, ns, "Compliant", name="ok")
    # A pass writes the policy's counts after the workloads' states: let it end.
    detector.wait_passes()
    [patch] = patches_for(given, policy)
    assert patch["spec"]["reason"] == "Vulnerable"
    assert [f["id"] for f in patch["spec"]["evidence"]["findings"]] == ["CVE-2026-0001"]
    status = given.get("imagepatchpolicy", policy)["status"]["workloads"]
    assert (status["total"], status["compliant"], status["patching"]) == (2, 1, 1)


def test_namespace_not_admitted_and_unknown_policy_are_warned_and_left_alone(given, detector) -> None:
    policy = unique("pol")
    given.policy(policy, namespaceSelector={"matchLabels": {"team": "payments"}})
    ns = given.namespace()  # no team label
    given.deployment(ns, "web", image=f"{ECR}/whatever:1", policy=policy, replicas=1)
    given.deployment(ns, "ghost", image=f"{ECR}/whatever:1", policy="no-such-policy", replicas=1)

    assert wait_state(given, ns, "NotAdmitted")["state"] == "NotAdmitted"
    assert wait_state(given, ns, "PolicyNotFound", name="ghost")["state"] == "PolicyNotFound"
    # A pass posts each Event after it writes the state: let it end.
    detector.wait_passes()
    warnings = {e["reason"]: e["message"] for e in given.events(ns, "web") if e["type"] == "Warning"}
    assert "not admitted" in warnings["NotAdmitted"]
    ghost = {e["reason"]: e["message"] for e in given.events(ns, "ghost") if e["type"] == "Warning"}
    assert "'no-such-policy' does not exist" in ghost["PolicyNotFound"]
    assert patches_for(given, policy) == []


def test_deleted_base_tag_is_unknown_and_creates_no_patch(given, registry, buildah) -> None:
    base_repo, app_repo = unique("dbase"), unique("dapp")
    base = make_base_image(registry, base_repo, "1", marker="v1")
    build_app_on(buildah, base, app_repo)
    policy = unique("pol")
    given.policy(policy)
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")

    registry.delete_manifest(base_repo, base.digest)
    retrigger(given, policy)
    state = wait_state(given, ns, "Unknown")
    assert state["containers"][0]["reason"] == "ImageNotFound"
    assert patches_for(given, policy) == []


def test_removing_the_annotation_stops_management(given, registry, buildah) -> None:
    base = make_base_image(registry, unique("rbase"), "1", marker="v1")
    app_repo = unique("rapp")
    build_app_on(buildah, base, app_repo)
    policy = unique("pol")
    given.policy(policy)
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")

    given.kube.kubectl("annotate", "deployment", "web", "-n", ns, "imagepatch.dev/policy-")
    wait_for(lambda: not state_of(given, ns), timeout=30, what="the state annotation to go")
    retrigger(given, policy)
    wait_for(lambda: given.get("imagepatchpolicy", policy)["status"].get("workloads", {}).get("total") == 0,
             timeout=30, what="the policy to count no workload")


@pytest.fixture(scope="module")
def base_proxy(registry) -> Iterator[FaultProxy]:
    """The registry again, through a proxy that counts requests and injects faults."""
    proxy = FaultProxy.start(upstream=registry.host)
    yield proxy
    proxy.stop()


def test_fifty_workloads_on_two_bases_cost_two_base_heads(given, registry, buildah, base_proxy, detector) -> None:
    base_a, base_b = unique("sa"), unique("sb")
    bases = [make_base_image(registry, base_a, "1", marker="a"), make_base_image(registry, base_b, "1", marker="b")]
    # Images that record no base: the annotation (through the proxy) is their lineage.
    apps = [strip_lineage(registry, build_app_on(buildah, bases[i % 2], unique(f"s{i}")))
            for i in range(5)]
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    items = []
    for i in range(50):
        app = apps[i % 5]
        base_repo = (base_a, base_b)[(i % 5) % 2]
        items.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"w{i:02d}", "namespace": ns, "annotations": {
                "imagepatch.dev/policy": policy,
                "imagepatch.dev/base-image": f"{base_proxy.host}/{base_repo}:1"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": f"w{i:02d}"}},
                     "template": {"metadata": {"labels": {"app": f"w{i:02d}"}},
                                  "spec": {"containers": [{"name": "app", "image": f"{ECR}/{app.name}:1"}]}}},
        })
    base_proxy.clear()
    heads_before = base_proxy.count("HEAD")
    given.kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def all_evaluated():
        status = given.get("imagepatchpolicy", policy).get("status", {}).get("workloads", {})
        return status.get("total") == 50 and status.get("compliant") == 50 and status
    wait_for(all_evaluated, timeout=120, interval=1, what="50 workloads evaluated")

    heads = base_proxy.count("HEAD") - heads_before
    print(f"\n[measured] 50 workloads, 5 images, 2 bases: {heads} base HEADs, "
          f"{base_proxy.count() } requests through the base proxy")
    assert heads <= 2
    timings = [ln for ln in detector.log().splitlines() if f"policy {policy}:" in ln]
    print("[measured] " + timings[-1].split("imagepatch.detection: ", 1)[-1])


def test_registry_faults_make_workloads_unknown_and_create_no_patch(
    given, registry, buildah, base_proxy, detector
) -> None:
    base_repo, app_repo = unique("fbase"), unique("fapp")
    base = make_base_image(registry, base_repo, "1", marker="v1")
    # The image records no base: the annotation (through the proxy) is its lineage.
    strip_lineage(registry, build_app_on(buildah, base, app_repo))
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    given.kube.kubectl("annotate", "deployment", "web", "-n", ns,
                       f"imagepatch.dev/base-image={base_proxy.host}/{base_repo}:1")
    wait_annotation_lineage(given, ns)

    # The base registry fails every request for a while (more than the retry budget).
    make_base_image(registry, base_repo, "1", marker="v2")  # an update it cannot see
    base_proxy.respond_next(1000, 503)
    retrigger(given, policy)
    state = wait_state(given, ns, "Unknown", timeout=90)
    # The pass posts the Event after it writes the state: let it end.
    detector.wait_passes()
    assert state["containers"][0]["reason"] == "RegistryUnavailable"
    assert patches_for(given, policy) == []
    warnings = [e for e in given.events(ns, "web") if e["type"] == "Warning"]
    assert warnings and warnings[-1]["reason"] == "Unknown"

    # It recovers by itself once the registry does, and only then sees the update.
    base_proxy.clear()
    base_proxy.respond_next(1, 429, retry_after=1)  # one more rate limit, honoured
    retrigger(given, policy)
    wait_state(given, ns, "Patching", "BaseImageOutdated", timeout=60)
    assert len(patches_for(given, policy)) == 1


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory) -> Iterator:
    reg = start_htpasswd_registry(tmp_path_factory.mktemp("private-registry"), "ci", "s3cret-Pa55")
    yield reg
    reg.stop()


def test_private_registry_credentials_come_from_the_policy_secret(given, private_registry, detector) -> None:
    image = make_base_image(private_registry, unique("priv"), "1", marker="p1")
    secret, policy = unique("regcred"), unique("pol")
    given.policy(policy, registryCredentials={"secretName": secret})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{image.repository}:1", policy=policy, replicas=1)

    # Absent credentials: the registry's 401 is a visible reason, not a crash.
    state = wait_state(given, ns, "Unknown")
    assert state["containers"][0]["reason"] == "RegistryAuthFailed"

    def make_secret(password: str) -> None:
        manifest = given.kube.kubectl(
            "create", "secret", "docker-registry", secret, "-n", "imagepatch-system",
            f"--docker-server={private_registry.host}", "--docker-username=ci",
            f"--docker-password={password}", "--dry-run=client", "-o", "json")
        given.kube.kubectl("apply", "-f", "-", input=manifest)

    make_secret("wrong-password")
    passes = detector.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    detector.wait_passes(after=passes)
    assert wait_state(given, ns, "Unknown")["containers"][0]["reason"] == "RegistryAuthFailed"

    make_secret("s3cret-Pa55")
    retrigger(given, policy)
    state = wait_state(given, ns, "Compliant")
    assert state["containers"][0]["digest"] == image.digest
    assert "s3cret-Pa55" not in json.dumps(state)
    assert "s3cret-Pa55" not in detector.log()


def test_patch_no_longer_needed_is_closed(given, registry, buildah) -> None:
    base_repo, app_repo = unique("cbase"), unique("capp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_state(given, ns, "Patching")
    [patch] = patches_for(given, policy)

    # The base tag is moved back before anything was rebuilt: nothing to patch any more.
    again = make_base_image(registry, base_repo, "1", marker="v1")
    assert again.digest == base_v1.digest
    retrigger(given, policy)
    wait_state(given, ns, "Compliant")
    # Detection asks; the patch's planner (the one writer of its status) closes it.
    assert given.get("imagepatch", patch["metadata"]["name"])["metadata"]["annotations"][
        "imagepatch.dev/close"]
    closed = given.wait_phase(patch["metadata"]["name"], "Closed", timeout=60)
    assert "no longer needed" in closed["status"]["history"][-1]["message"]


def test_full_loop_external_rebuild_is_verified_and_rolled_out(given, registry, buildah) -> None:
    """Given an app on base v1, when the base moves and CI rebuilds the app on it,
    then the ImagePatch goes Building → Verifying → RollingOut → Succeeded and the
    Deployment runs the new digest."""
    base_repo, app_repo = unique("lbase"), unique("lapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    old_app = build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, rebuild={"strategy": "external"},
                 rollout={"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=2)
    wait_state(given, ns, "Compliant")

    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_state(given, ns, "Patching")
    [patch] = patches_for(given, policy)
    name = patch["metadata"]["name"]
    assert patch["spec"]["tag"] == "1"
    building = given.wait_phase(name, "Building")
    # One build per repository, tag, source digest, target base digest and builder.
    assert building["status"]["idempotencyKey"] == (
        f"v2|{ECR}/{app_repo}:1|{old_app.digest}|{base_v2.digest}|external")

    # CI rebuilds the app on the new base and pushes it under the tag the patch names.
    tag = given.pushed_tag(name)
    assert re.fullmatch(r"1-patch\.\d{8}\.1", tag), tag
    new_app = ci_push(buildah, base_v2, app_repo, tag)
    assert new_app.digest != old_app.digest
    done = given.wait_phase(name, "Succeeded", "RolledBack", "Failed", "Closed", timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["rebuild"]["digest"] == new_app.digest
    assert done["status"]["verification"]["result"] == "Passed"
    assert done["status"]["verification"]["baseDigest"] == base_v2.digest
    assert [h["phase"] for h in done["status"]["history"]][:3] == ["Building", "Verifying", "RollingOut"]
    assert given.image_of(ns, "web") == f"{ECR}/{app_repo}:{tag}@{new_app.digest}"
    assert wait_state(given, ns, "Compliant")["containers"][0]["digest"] == new_app.digest



def scrape(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_metrics_count_workloads_patches_and_registry_requests(given, registry, buildah, detector) -> None:
    base = make_base_image(registry, unique("mbase"), "1", marker="v1")
    app_repo = unique("mapp")
    build_app_on(buildah, base, app_repo)
    policy = unique("pol")
    given.policy(policy)
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")

    text = wait_for(lambda: (t := scrape(detector.metrics_url)) and
                    f'imagepatch_workloads{{policy="{policy}",state="compliant"}} 1.0' in t and t,
                    timeout=30, what="the compliant workload in /metrics")
    assert "imagepatch_registry_requests_total" in text or "imagepatch_registry_requests{" in text
    assert f'imagepatch_oldest_unpatched_seconds{{policy="{policy}"}}' in text
    last_pass = re.search(rf'imagepatch_last_pass_timestamp_seconds{{policy="{policy}"}} (\S+)', text)
    assert last_pass and abs(float(last_pass.group(1)) - time.time()) < 120, "a recent pass time"
    assert "# TYPE imagepatch_patches gauge" in text
    # The detection loop counts its passes (every --detect-tick, 1 s here).
    passes = detector.metric("imagepatch_detection_passes_total")
    assert passes >= 1
    assert detector.wait_passes(2, after=passes, timeout=30) >= passes + 2


def test_vulnerable_workloads_become_security_hub_findings_and_are_archived(
        given, registry, buildah, moto_server, detector) -> None:
    base = make_base_image(registry, unique("hbase"), "1", marker="v1")
    repo = unique("hub")
    app = build_app_on(buildah, base, repo)
    ecr = moto_server.client("ecr")
    ecr.create_repository(repositoryName=repo)
    manifest, media_type, _ = registry.get_manifest(repo, app.digest)
    ecr.put_image(repositoryName=repo, imageManifest=manifest.decode(),
                  imageManifestMediaType=media_type, imageTag="1", imageDigest=app.digest)
    ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": app.digest})
    moto_server.inject_ecr_scan_findings({
        "imageScanStatus": {"status": "COMPLETE", "description": "done"},
        "imageScanFindings": {"findings": [{"name": "CVE-2026-0101", "severity": "CRITICAL",
                                            "attributes": [{"key": "package_name", "value": "zlib"}]}],
                              "findingSeverityCounts": {"CRITICAL": 1}},
        "registryId": ACCOUNT, "repositoryName": repo, "imageId": {"imageDigest": app.digest},
    })
    policy = unique("pol")
    given.policy(policy, vulnerabilities={"source": "ecr", "minSeverity": "HIGH"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Patching", "Vulnerable")

    hub = moto_server.client("securityhub")

    def ours():
        found = hub.get_findings()["Findings"]
        return [f for f in found if f"/{ns}/" in f["Id"]]
    [finding] = wait_for(ours, timeout=30, what="a Security Hub finding for the workload")
    assert finding["RecordState"] == "ACTIVE"
    assert finding["Compliance"]["Status"] == "FAILED"
    assert finding["Resources"][0]["Details"]["Container"]["ImageId"] == app.digest

    # The id is stable per workload, container and repository: re-evaluation updates
    # the same finding and never makes a second one (archiving is covered by
    # tests/integration/test_securityhub.py).
    passes = detector.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    detector.wait_passes(after=passes)
    assert len(ours()) == 1


def test_history_retention_prunes_finished_patches_only(given, kube) -> None:
    policy = unique("pol")
    given.policy(policy, history={"keepCount": 0, "maxAge": "2160h"})
    digest = "sha256:" + "d" * 64
    for name, phase in ((unique("done"), "Succeeded"), (unique("open"), None)):
        given.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatch",
                     "metadata": {"name": name, "labels": {"imagepatch.dev/policy": policy}},
                     "spec": {"image": f"{ECR}/retained", "policy": policy, "reason": "Manual",
                              "currentDigest": digest}})
        if phase:
            done_name = name
            kube.kubectl("patch", "imagepatch", name, "--subresource=status", "--type=merge", "-p",
                         json.dumps({"status": {"phase": phase, "history": [
                             {"phase": phase, "at": "2026-01-01T00:00:00Z"}]}}))
        else:
            open_name = name
    retrigger(given, policy)

    def pruned():
        names = {p["metadata"]["name"] for p in patches_for(given, policy)}
        return done_name not in names and names
    remaining = wait_for(pruned, timeout=30, what="the finished patch to be pruned")
    assert open_name in remaining


def test_a_rebuild_no_better_by_its_findings_is_refused(given, registry, buildah, moto_server) -> None:
    base = make_base_image(registry, unique("vbase"), "1", marker="v1")
    repo = unique("vapp")
    old = build_app_on(buildah, base, repo)
    ecr = moto_server.client("ecr")
    ecr.create_repository(repositoryName=repo)

    def scanned(image, findings) -> None:
        manifest, media_type, _ = registry.get_manifest(repo, image.digest)
        ecr.put_image(repositoryName=repo, imageManifest=manifest.decode(),
                      imageManifestMediaType=media_type, imageDigest=image.digest)
        ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": image.digest})
        moto_server.inject_ecr_scan_findings({
            "imageScanStatus": {"status": "COMPLETE", "description": "done"},
            "imageScanFindings": {"findings": findings, "findingSeverityCounts": {}},
            "registryId": ACCOUNT, "repositoryName": repo, "imageId": {"imageDigest": image.digest},
        })

    critical = [{"name": "CVE-2026-0201", "severity": "CRITICAL",
                 "attributes": [{"key": "package_name", "value": "openssl"}]}]
    scanned(old, critical)
    policy = unique("pol")
    given.policy(policy, vulnerabilities={"source": "ecr", "minSeverity": "HIGH"},
                 rebuild={"strategy": "external"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Patching", "Vulnerable")
    [patch] = patches_for(given, policy)
    name = patch["metadata"]["name"]
    given.wait_phase(name, "Building")

    # CI rebuilds, but the rebuild still carries the same critical finding.
    new = ci_push(buildah, base, repo, given.pushed_tag(name))
    scanned(new, critical)
    done = given.wait_phase(name, "Failed", "Succeeded", "RolledBack", timeout=120)
    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["verification"]["result"] == "Failed"
    assert done["status"]["verification"]["findingsBefore"] == 1
    assert done["status"]["verification"]["findingsAfter"] == 1
    assert new.digest in done["status"]["failedDigests"]
    stalled = {c["type"]: c for c in done["status"]["conditions"]}["Stalled"]
    assert stalled["reason"] == "VerificationFailed"
    assert given.image_of(ns, "web") == f"{ECR}/{repo}:1"  # nothing was rolled out


def scan_in_ecr(registry, moto_server, repo: str, image, cves: dict[str, str]) -> None:
    """Put ``image`` into moto's ECR repository ``repo`` with a finished scan of ``cves``."""
    ecr = moto_server.client("ecr")
    manifest, media_type, _ = registry.get_manifest(repo, image.digest)
    ecr.put_image(repositoryName=repo, imageManifest=manifest.decode(),
                  imageManifestMediaType=media_type, imageDigest=image.digest)
    ecr.start_image_scan(repositoryName=repo, imageId={"imageDigest": image.digest})
    moto_server.inject_ecr_scan_findings({
        "imageScanStatus": {"status": "COMPLETE", "description": "done"},
        "imageScanFindings": {"findingSeverityCounts": {}, "findings": [
            {"name": cve, "severity": severity, "attributes": [{"key": "package_name", "value": "pkg"}]}
            for cve, severity in cves.items()]},
        "registryId": ACCOUNT, "repositoryName": repo, "imageId": {"imageDigest": image.digest},
    })


APP_CVE = {"CVE-2026-0301": "HIGH"}  # in the application's own dependencies: no base fixes it
BASE_CVES = {"CVE-2026-0302": "CRITICAL", "CVE-2026-0303": "HIGH"}


def vulnerable_app_on_an_outdated_base(given, registry, buildah, moto_server):
    """Given an app (with its own CVE) on base v1, whose CVEs v2 fixes, when detection
    opens the patch and CI rebuilds the app on v2: (patch name, namespace, repo, new base)."""
    base_repo, repo = unique("cbase"), unique("capp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    old = build_app_on(buildah, base_v1, repo)
    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    moto_server.client("ecr").create_repository(repositoryName=repo)
    scan_in_ecr(registry, moto_server, repo, old, {**APP_CVE, **BASE_CVES})
    policy = unique("pol")
    given.policy(policy, vulnerabilities={"source": "ecr", "minSeverity": "HIGH"},
                 rebuild={"strategy": "external"},
                 rollout={"progressDeadlineSeconds": 90, "healthyFor": "2s", "maxRestarts": 0})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Patching", "Vulnerable")
    [patch] = patches_for(given, policy)
    assert sorted(f["id"] for f in patch["spec"]["evidence"]["findings"]) == sorted({**APP_CVE, **BASE_CVES})
    assert patch["spec"]["evidence"]["baseImage"]["newDigest"] == base_v2.digest
    name = patch["metadata"]["name"]
    given.wait_phase(name, "Building")
    return name, ns, repo, ci_push(buildah, base_v2, repo, given.pushed_tag(name))


def test_a_base_update_that_fixes_the_base_cves_is_rolled_out_though_the_app_keeps_its_own(
    given, registry, buildah, moto_server
) -> None:
    name, ns, repo, new = vulnerable_app_on_an_outdated_base(given, registry, buildah, moto_server)
    # Then the rebuild's scan: the base's CVEs are gone, the app's own is still there.
    scan_in_ecr(registry, moto_server, repo, new, APP_CVE)
    done = given.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    verification = done["status"]["verification"]
    assert verification["result"] == "Passed"
    assert (verification["findingsBefore"], verification["findingsAfter"]) == (3, 1)
    assert "fixed CVE-2026-0302, CVE-2026-0303" in verification["message"]
    assert "still present (not fixed by the base): CVE-2026-0301" in verification["message"]
    assert given.image_of(ns, "web") == f"{ECR}/{repo}:{new.tag}@{new.digest}"


def test_a_rebuild_that_adds_a_finding_at_the_baseline_is_refused_and_names_it(
    given, registry, buildah, moto_server
) -> None:
    name, ns, repo, new = vulnerable_app_on_an_outdated_base(given, registry, buildah, moto_server)
    # The base's CVEs are fixed, but the new base brings one at the baseline (HIGH).
    scan_in_ecr(registry, moto_server, repo, new, {**APP_CVE, "CVE-2026-0399": "HIGH"})
    done = given.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=180)
    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["verification"]["result"] == "Failed"
    assert "new findings at or over the baseline: CVE-2026-0399" in done["status"]["verification"]["message"]
    assert new.digest in done["status"]["failedDigests"]
    assert given.image_of(ns, "web") == f"{ECR}/{repo}:1"  # nothing was rolled out


def test_an_image_known_only_by_the_base_image_annotation_is_verified_by_its_layers(
    given, registry, buildah
) -> None:
    """Given an app whose image records no base (the workload's imagepatch.dev/base-image
    annotation names it), when the base moves and CI pushes a rebuild that records none
    either, then the rebuild is accepted and verified because its layers start with the
    new base's, and the status says which base the build was told to use."""
    base_repo, app_repo = unique("abase"), unique("aapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    strip_lineage(registry, build_app_on(buildah, base_v1, app_repo))
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, rebuild={"strategy": "external"},
                 rollout={"progressDeadlineSeconds": 90, "healthyFor": "2s", "maxRestarts": 0})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    given.kube.kubectl("annotate", "deployment", "web", "-n", ns,
                       f"imagepatch.dev/base-image={registry.host}/{base_repo}:1")
    retrigger(given, policy)
    wait_for(lambda: (state_of(given, ns).get("containers") or [{}])[0].get("lineage")
             == "workload-annotation", timeout=60, what="the base to be known from the annotation")

    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_state(given, ns, "Patching")
    [patch] = patches_for(given, policy)
    name = patch["metadata"]["name"]
    building = given.wait_phase(name, "Building")
    new_app = strip_lineage(registry, ci_push(buildah, base_v2, app_repo, given.pushed_tag(name)))
    done = given.wait_phase(name, "Succeeded", "RolledBack", "Failed", "Closed", timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["rebuild"]["baseImage"] == f"{registry.host}/{base_repo}@{base_v2.digest}"
    assert building["status"]["rebuild"]["strategy"] == "external"
    assert done["status"]["verification"]["baseDigest"] == base_v2.digest
    assert given.image_of(ns, "web") == f"{ECR}/{app_repo}:{new_app.tag}@{new_app.digest}"


def test_a_rolled_back_rebuild_is_never_rolled_out_again_after_its_patch_is_pruned(
    given, registry, buildah, detector
) -> None:
    """Given an app on base v1 and a rebuild on v2 that crashes, when the patch rolls back
    and history retention prunes it, then re-detection opens no new patch for the same
    facts: the workload shows Failed and keeps the digest that ran."""
    base_repo, app_repo = unique("fbase"), unique("fapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    old_app = build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    # CI overwrites the running tag (a mutable repository): tagPolicy Overwrite.
    given.policy(policy, baseImages={"checkInterval": "1h"},
                 rebuild={"strategy": "external", "tagPolicy": "Overwrite"},
                 approval="Manual", history={"keepCount": 0, "maxAge": "2160h"},
                 rollout={"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0})
    ns = given.namespace()
    # Pinned by digest, so moving the tag below does not change what detection sees running.
    running = f"{ECR}/{app_repo}:1@{old_app.digest}"
    given.deployment(ns, "web", image=running, policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")

    base_v2 = make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_state(given, ns, "Patching")
    [patch] = patches_for(given, policy)
    name = patch["metadata"]["name"]
    assert patch["spec"]["targets"] == [
        {"kind": "Deployment", "namespace": ns, "name": "web", "container": "app", "wave": 0}]
    given.wait_phase(name, "AwaitingApproval")
    # CI's rebuild on v2 is bad: the simulated pods crash once they run its digest.
    new_app = build_app_on(buildah, base_v2, app_repo)
    given.kube.kubectl("patch", "deployment", "web", "-n", ns, "--type", "merge", "-p", json.dumps(
        {"spec": {"template": {"metadata": {"labels": {
            "sim.imagepatch.dev/crashloop-digest": new_app.digest.split(":")[1][:16]}}}}}))
    given.wait_available(ns, "web", 1)
    given.approve(name)
    done = given.wait_phase(name, "Succeeded", "RolledBack", "Failed", "Closed", timeout=180)
    assert done["status"]["phase"] == "RolledBack", done["status"]
    assert given.image_of(ns, "web") == running

    # Retention prunes the finished patch; re-detection must not propose it again.
    retrigger(given, policy)
    wait_for(lambda: not patches_for(given, policy), timeout=60, what="the patch to be pruned")
    for _ in range(3):
        # The workload already reads Failed (the pruned patch's overlay), so wait for
        # whole passes that began after the retrigger before reading its state.
        passes = detector.metric("imagepatch_detection_passes_total")
        retrigger(given, policy)
        detector.wait_passes(after=passes)
        state = wait_state(given, ns, "Failed", timeout=30)
        assert not patches_for(given, policy), "the failed rebuild was proposed again"
    assert state["containers"][0]["reason"] == "RebuildFailedBefore"
    assert new_app.digest in state["message"]
    assert given.image_of(ns, "web") == running


# -- governance: spec.rebuild.allowed (issue #16) -------------------------------------------


def annotate_rebuild(given: Scenario, ns: str, name: str, value: str) -> None:
    given.kube.kubectl("annotate", "deployment", name, "-n", ns, "--overwrite",
                       f"imagepatch.dev/rebuild={value}")


def test_codebuild_project_outside_allowed_gets_no_build_and_shows_why(
    given, registry, buildah, detector
) -> None:
    # Given a policy that lets workloads ask only for team A's CodeBuild projects
    base_repo, app_repo = unique("gbase"), unique("gapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, rebuild={"strategy": "codebuild", "codebuild": {"project": "team-a-api"},
                                  "allowed": {"strategies": ["codebuild"],
                                              "codebuildProjects": ["team-a-*"]}})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    # and a developer who names the platform team's deploy project on their Deployment
    annotate_rebuild(given, ns, "web", "codebuild:platform-admin-deploy")
    wait_state(given, ns, "Compliant")

    # When its base is updated
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)

    # Then the workload shows the reason and the field to change, and nothing is built
    state = wait_state(given, ns, "RebuildNotAllowed")
    # The pass posts the Event after it writes the state: let it end.
    detector.wait_passes()
    assert "spec.rebuild.allowed.codebuildProjects" in state["message"]
    assert "platform-admin-deploy" in state["message"]
    warnings = [e for e in given.events(ns, "web") if e["reason"] == "RebuildNotAllowed"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert "spec.rebuild.allowed.codebuildProjects" in warnings[0]["message"]
    passes = detector.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    detector.wait_passes(after=passes)
    assert patches_for(given, policy) == [], "no ImagePatch, so no build, for a refused rebuild"
    # The policy still counts it by what it is: outdated.
    status = given.get("imagepatchpolicy", policy)["status"]
    assert status["workloads"]["baseImageOutdated"] == 1

    # And once the admin allows the project, the same workload gets its patch with it.
    given.policy(policy, rebuild={"strategy": "codebuild", "codebuild": {"project": "team-a-api"},
                                  "allowed": {"strategies": ["codebuild"],
                                              "codebuildProjects": ["team-a-*", "platform-admin-deploy"]}})
    retrigger(given, policy)
    [patch] = wait_for(lambda: patches_for(given, policy), timeout=60, what="the allowed patch")
    assert patch["spec"]["rebuild"] == {"strategy": "codebuild", "codebuildProject": "platform-admin-deploy"}


def test_team_a_override_patch_never_targets_team_b_on_the_same_repository(
    given, registry, buildah, detector
) -> None:
    # Given two teams running the same image under one policy; team A asks for a rebase.
    # Approval is manual so that only team A's patch runs (team B's own patch waits:
    # with a shared tag, a later build of B's could otherwise pick up what A pushed).
    base_repo, app_repo = unique("tbase"), unique("tapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, approval="Manual",
                 rebuild={"strategy": "external", "allowed": {"strategies": ["external", "rebase"]}})
    team_a, team_b = given.namespace("team-a"), given.namespace("team-b")
    image = f"{ECR}/{app_repo}:1"
    given.deployment(team_a, "web", image=image, policy=policy, replicas=1)
    given.deployment(team_b, "web", image=image, policy=policy, replicas=1)
    annotate_rebuild(given, team_a, "web", "rebase")
    wait_state(given, team_a, "Compliant")
    wait_state(given, team_b, "Compliant")

    # When the base is updated
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)

    # Then each team gets its own patch, targeting only its own Deployment
    def two_patches():
        found = patches_for(given, policy)
        return found if len(found) == 2 else None
    patches = wait_for(two_patches, timeout=60, what="one patch per team")
    by_strategy = {p["spec"]["rebuild"]["strategy"]: p for p in patches}
    assert set(by_strategy) == {"rebase", "external"}
    assert {t["namespace"] for t in by_strategy["rebase"]["spec"]["targets"]} == {team_a}
    assert {t["namespace"] for t in by_strategy["external"]["spec"]["targets"]} == {team_b}

    # When team A's patch is approved, it is rebuilt and rolled out to team A ...
    given.kube.kubectl("patch", "imagepatch", by_strategy["rebase"]["metadata"]["name"], "--type", "merge",
                       "-p", json.dumps({"spec": {"approval": {"decision": "Approved", "by": "team-a"}}}))

    def a_patched():
        a = given.get("deployment", "web", team_a)
        ref = a["spec"]["template"]["spec"]["containers"][0]["image"]
        return ref if "@sha256:" in ref else None
    rolled = wait_for(a_patched, timeout=120, what="team A's Deployment rolled to the rebased digest")
    # The rebuild went to a new tag (tagPolicy New, the default) and the rollout
    # wrote that tag with the rebuilt digest.
    built = given.get("imagepatch", by_strategy["rebase"]["metadata"]["name"])["status"]["rebuild"]
    assert built["tag"].startswith("1-patch.")
    assert rolled == f"{ECR}/{app_repo}:{built['tag']}@{built['digest']}"

    # ... and team B's Deployment is never touched.
    passes = detector.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    detector.wait_passes(after=passes)
    b = given.get("deployment", "web", team_b)
    assert b["spec"]["template"]["spec"]["containers"][0]["image"] == image
    b_patch = given.get("imagepatch", by_strategy["external"]["metadata"]["name"])
    # B's own patch never ran: it waits for approval (B's tag 1 still names the old
    # digest, as the rebuild went to a new tag; "Closed" would be the Overwrite case).
    assert (b_patch.get("status") or {}).get("phase") in {"AwaitingApproval", "Closed"}
    assert not (b_patch.get("status") or {}).get("rebuild"), "nothing was built for team B"


def test_approve_after_holds_a_fresh_base_and_adopts_one_published_long_enough(
    given, registry, buildah
) -> None:
    """spec.baseImages.approveAfter: as an SSM patch baseline's auto-approval delay."""
    base_repo, app_repo = unique("abase"), unique("aapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    build_app_on(buildah, base_v1, app_repo)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h", "approveAfter": "1h"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1", policy=policy, replicas=1)
    wait_state(given, ns, "Compliant")

    # A base pushed now (its config says it was created now): not adopted for an hour.
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fresh = make_base_image(registry, base_repo, "1", marker="v2",
                            created=created.isoformat().replace("+00:00", "Z"))
    retrigger(given, policy)

    def held():
        st = state_of(given, ns)
        containers = st.get("containers") or [{}]
        return st if containers[0].get("reason") == "BaseNotYetApproved" else None

    state = wait_for(held, timeout=60, interval=0.5, what="the fresh base to be held")
    [container] = state["containers"]
    eligible = (created + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    print(container["message"])
    assert state["state"] == "Compliant"
    assert container["baseCurrent"] == fresh.digest
    assert f"it is adopted from {eligible}" in container["message"]
    assert "created in the registry" in container["message"]
    assert patches_for(given, policy) == []

    # A digest whose registry creation time is older than approveAfter is adopted at once
    # (make_base_image's default config time is 2024-01-01).
    old = make_base_image(registry, base_repo, "1", marker="v3")
    retrigger(given, policy)
    wait_state(given, ns, "Patching", "BaseImageOutdated")
    [patch] = patches_for(given, policy)
    assert patch["spec"]["evidence"]["baseImage"]["newDigest"] == old.digest
