"""The end-to-end demo (``make demo``): detection → rebuild → verification → waves → rollback.

Everything is real and local: the control plane built by ``tests/cluster``
(with kwok nodes), Debian's OCI registry, moto for EventBridge → SQS, buildah
for the builds, and the operator as a process under the ServiceAccount and
RBAC that ship in ``deploy/``. The demo narrates each step with timings and
cleans up after itself.

1. a base image and an app built FROM it, deployed to ``staging`` and
   ``prod`` under a policy with a maintenance window and two waves;
2. a patched base is pushed and announced (EventBridge → SQS): imagepatch
   detects it, waits for CI (the demo plays CI and rebuilds the app with
   buildah), verifies the new image, and rolls it out wave by wave;
3. a base whose rebuild crashes: the staging rollout fails its health gate,
   is rolled back with the reason, and prod is never touched;
4. a compliance summary (``imagepatch report``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.cluster.harness import LocalCluster, build_binaries
from tests.support.images import Buildah, make_base_image
from tests.support.moto import MotoServer
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.registry import LocalRegistry
from tests.support.wait import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCOUNT, REGION = "123456789012", "us-east-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def step(title: str) -> None:
    print(f"\n[{time.monotonic() - T0:6.1f}s] ==> {title}", flush=True)


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cluster: LocalCluster | None = None
        self.registry: LocalRegistry | None = None
        self.moto: MotoServer | None = None
        self.buildah: Buildah | None = None
        self.operator: OperatorProcess | None = None
        self.policy = "demo-critical-fixes"

    # -- plumbing ---------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        assert self.cluster is not None
        return self.cluster.kubectl(*args, input=input, check=check)

    def apply(self, doc: dict) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def wait(self, probe, what: str, timeout: float = 180.0, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}")

    def state(self, ns: str, name: str = "payments-api") -> dict:
        dep = self.get("deployment", name, "-n", ns)
        raw = (dep["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
        return json.loads(raw) if raw else {}

    def image(self, ns: str) -> str:
        dep = self.get("deployment", "payments-api", "-n", ns)
        return dep["spec"]["template"]["spec"]["containers"][0]["image"]

    def push_event(self, repo: str, digest: str) -> None:
        assert self.moto is not None
        self.moto.client("events").put_events(Entries=[{
            "Source": "aws.ecr", "DetailType": "ECR Image Action",
            "Detail": json.dumps({"action-type": "PUSH", "result": "SUCCESS",
                                  "repository-name": repo, "image-digest": digest,
                                  "image-tag": "1"})}])

    def follow(self, *, exclude: set[str], until: tuple[str, ...], on_building=None) -> dict:
        """Narrate the new ImagePatch's phases (and each target's) until it ends."""
        patch = self.wait(lambda: next((p for p in self.get("imagepatches")["items"]
                                        if p["metadata"]["name"] not in exclude), None),
                          "an ImagePatch")
        name = patch["metadata"]["name"]
        say(f"ImagePatch {name}: reason {patch['spec']['reason']}, image "
            f"{patch['spec']['image'].split('/', 1)[1]}")
        seen_phase, seen_targets, built = None, {}, False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            obj = self.get("imagepatch", name)
            status = obj.get("status", {})
            phase = status.get("phase")
            if phase != seen_phase:
                detail = (status.get("conditions") or [{}])[0].get("message", "")
                say(f"  phase {phase}" + (f"  ({detail[:110]})" if detail else ""))
                seen_phase = phase
            for r in status.get("rollouts", []):
                key = r["namespace"]
                if seen_targets.get(key) != r["phase"]:
                    seen_targets[key] = r["phase"]
                    say(f"    wave {r['wave']} {r['namespace']}/{r['name']}: {r['phase']}"
                        + (f" - {r['reason']}: {r.get('message', '')[:100]}"
                           if r.get("reason") and r["phase"] in ("RollingBack", "RolledBack")
                           else ""))
            if phase == "Building" and on_building and not built:
                built = True
                on_building(name)
            if phase in until:
                return obj
            time.sleep(0.3)
        raise TimeoutError(f"ImagePatch {name} did not finish")

    # -- the story ----------------------------------------------------------------------

    def run(self) -> None:
        step("Starting the local Kubernetes control plane (etcd, apiserver with RBAC, kwok nodes)")
        self.cluster = LocalCluster(state_dir=self.work / "cluster", bin_dir=build_binaries())
        self.cluster.start()
        say("control plane ready")

        step("Starting the OCI registry and moto (EventBridge → SQS)")
        self.registry = LocalRegistry.start(self.work / "registry")
        self.moto = MotoServer.start(self.work / "moto")
        sqs, events = self.moto.client("sqs"), self.moto.client("events")
        queue = sqs.create_queue(QueueName="imagepatch-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        events.put_rule(Name="imagepatch", EventPattern=json.dumps({"source": ["aws.ecr"]}))
        events.put_targets(Rule="imagepatch", Targets=[{"Id": "q", "Arn": arn, "InputTransformer": {
            "InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"}}])
        say(f"registry at {self.registry.host}; ECR host {ECR} is served from it")

        step("Installing imagepatch: CRDs, RBAC from deploy/, the operator under its ServiceAccount")
        self.kubectl("apply", "-f", str(REPO_ROOT / "crds" / "imagepatch.dev_imagepatchpolicies.yaml"))
        self.kubectl("apply", "-f", str(REPO_ROOT / "crds" / "imagepatch.dev_imagepatches.yaml"))
        # Until the API server has written a CRD's first conditions, `kubectl wait` fails at
        # once (".status.conditions accessor error") rather than waiting: ask again until then.
        wait_for(lambda: self.kubectl("wait", "--for=condition=Established", "crd", "--all",
                                      "--timeout=60s", check=False),
                 timeout=90, what="the CRDs to be Established")
        install_rbac(self.cluster)
        self.operator = OperatorProcess(
            kubeconfig=service_account_kubeconfig(self.cluster, self.work / "operator.kubeconfig"),
            log_path=self.work / "operator.log",
            extra_args=["--registry-endpoint", f"{ECR}=http://{self.registry.host}",
                        "--aws-region", REGION, "--events-queue-url", queue,
                        "--detect-tick", "1"],
            extra_env={**self.moto.env(), "AWS_ENDPOINT_URL": self.moto.endpoint_url})
        self.operator.start()
        say("operator running (log: " + str(self.work / "operator.log") + ")")

        step("Building base v1 and payments-api FROM it with buildah")
        self.buildah = Buildah(self.registry, self.work / "buildah")
        base_v1 = make_base_image(self.registry, "base", "1", marker="v1")
        app_v1 = self.buildah.build_app(base_v1, "payments-api", "1", pinned=False)
        say(f"base:1 = {base_v1.digest[:19]}…, payments-api:1 = {app_v1.digest[:19]}…")

        step("Deploying payments-api to staging and prod, opted in to the policy")
        self.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
                    "metadata": {"name": self.policy},
                    "spec": {"namespaceSelector": {"matchLabels": {"imagepatch-demo": "true"}},
                             "baseImages": {"checkInterval": "1h"},
                             "rebuild": {"strategy": "external", "timeout": "10m"},
                             "rollout": {"progressDeadlineSeconds": 60, "healthyFor": "5s",
                                         "maxRestarts": 0, "waves": [
                                             {"name": "staging", "soak": "5s", "namespaceSelector":
                                              {"matchLabels": {"stage": "staging"}}},
                                             {"name": "prod", "namespaceSelector":
                                              {"matchLabels": {"stage": "prod"}}}]},
                             "maintenanceWindow": {"schedule": "*/5 * * * *", "duration": "1h",
                                                   "cutoff": "10m", "timezone": "UTC"}}})
        for stage in ("staging", "prod"):
            self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": f"demo-{stage}", "labels": {"imagepatch-demo": "true", "stage": stage}}})
            self.apply(self.deployment(f"demo-{stage}"))
        for stage in ("staging", "prod"):
            self.wait(lambda s=stage: self.state(f"demo-{s}").get("state") == "Compliant",
                      f"{stage} to be evaluated")
        say("both workloads Compliant (base current, nothing over the baseline)")

        step("A patched base (v2) is pushed and announced on EventBridge → SQS")
        base_v2 = make_base_image(self.registry, "base", "1", marker="v2")
        self.push_event("base", base_v2.digest)

        def ci_rebuild(patch: str) -> None:
            tag = self.pushed_tag(patch)
            say(f"  CI rebuilds payments-api on the new base and pushes payments-api:{tag}")
            say("  (a new tag: ECR's immutable tags refuse a push over payments-api:1)")
            self.buildah.build_app(base_v2, "payments-api", tag, pinned=False)

        good = self.follow(exclude=set(), until=("Succeeded", "RolledBack", "Failed"),
                           on_building=ci_rebuild)
        new_digest = good["status"]["targetDigest"]
        verification = good["status"].get("verification", {})
        say(f"verification {verification.get('result')}: {verification.get('message')} "
            f"(built on {verification.get('baseDigest', '')[:19]}…, base v2)")
        say(f"staging and prod now run payments-api:{good['status']['rebuild']['tag']}"
            f"@{new_digest[:19]}…")

        step("Base v3 is pushed; this time the rebuilt app crashes on start")
        base_v3 = make_base_image(self.registry, "base", "1", marker="v3")
        # The demo's stand-in for a broken release: kwok crash-loops pods of this digest.
        bad = self.buildah.build_app(base_v3, "payments-api", "candidate", pinned=False,
                                     files={"app.txt": "broken release\n"})
        for stage in ("staging", "prod"):
            self.kubectl("patch", "deployment", "payments-api", "-n", f"demo-{stage}", "--type",
                         "merge", "-p", json.dumps({"spec": {"template": {"metadata": {"labels": {
                             "sim.imagepatch.dev/crashloop-digest": bad.digest.split(":")[1][:16]}}}}}))
            self.wait(lambda s=stage: self.rolled(f"demo-{s}"), f"{stage} to settle")
        self.push_event("base", base_v3.digest)

        def ci_publishes_the_broken_build(patch: str) -> None:
            tag = self.pushed_tag(patch)
            say(f"  CI publishes the new build as payments-api:{tag}")
            body, media_type, _ = self.registry.get_manifest("payments-api", bad.digest)
            self.registry.put_manifest("payments-api", tag, body, media_type)

        bad_patch = self.follow(exclude={good["metadata"]["name"]},
                                until=("Succeeded", "RolledBack", "Failed"),
                                on_building=ci_publishes_the_broken_build)
        say(f"result: {bad_patch['status']['phase']}")
        for ev in self.get("events", "-n", "demo-staging")["items"]:
            if ev["reason"] in ("RollingBack", "RolledBack"):
                say(f"  Event on staging/payments-api: {ev['type']} {ev['reason']}: "
                    f"{ev['message'][:120]}")
        staging, prod = self.image("demo-staging"), self.image("demo-prod")
        say(f"staging restored to {staging.split('@')[-1][:19]}…; prod untouched at "
            f"{prod.split('@')[-1][:19]}… (never received the bad digest)")
        if bad.digest in prod or bad.digest in staging:
            raise SystemExit("demo failed: a workload is left on the bad digest")

        step("Compliance summary (imagepatch report)")
        self.kubectl("annotate", "imagepatchpolicy", self.policy, "--overwrite",
                     f"imagepatch.dev/requestedAt={time.time()}")
        for stage in ("staging", "prod"):
            self.wait(lambda s=stage: self.state(f"demo-{s}").get("state") == "Failed",
                      f"{stage} to show the failed patch")
        report = subprocess.run(
            [sys.executable, "-m", "imagepatch", "report", "--kubeconfig",
             str(self.cluster.kubeconfig), "--policy", self.policy],
            capture_output=True, text=True, timeout=60)
        print(report.stdout or report.stderr)
        say("demo complete")

    def pushed_tag(self, patch: str) -> str:
        """The tag the patch's rebuild goes to (status.rebuild.tag): what CI reads."""
        return self.wait(
            lambda: self.get("imagepatch", patch).get("status", {}).get("rebuild", {}).get("tag"),
            f"{patch}'s rebuild tag")

    def rolled(self, ns: str) -> bool:
        d = self.get("deployment", "payments-api", "-n", ns)
        st = d.get("status", {})
        return (st.get("observedGeneration") == d["metadata"]["generation"]
                and st.get("updatedReplicas") == st.get("availableReplicas") == st.get("replicas") == 3)

    def deployment(self, ns: str) -> dict:
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "payments-api", "namespace": ns, "annotations": {
                "imagepatch.dev/policy": self.policy,
                "imagepatch.dev/base-image": f"{ECR}/base:1"}},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 60,
                     "selector": {"matchLabels": {"app": "payments-api"}},
                     "template": {"metadata": {"labels": {"app": "payments-api"}},
                                  "spec": {"containers": [{"name": "app",
                                                           "image": f"{ECR}/payments-api:1"}]}}},
        }

    def close(self) -> None:
        for part in (self.operator, self.cluster):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # keep cleaning up the rest
                    print(f"cleanup: {exc}", file=sys.stderr)
        for part in (self.registry, self.moto):
            if part is not None:
                part.stop()
        if self.buildah is not None:
            self.buildah.cleanup()


def main() -> int:
    keep = os.environ.get("IMAGEPATCH_DEMO_KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix=f"imagepatch-demo-{uuid.uuid4().hex[:4]}-"))
    demo = Demo(work)
    try:
        demo.run()
    finally:
        demo.close()
        if not keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        step(f"cleaned up ({'kept ' + str(work) if keep else 'all processes stopped'}); "
             f"total {time.monotonic() - T0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
