"""One operator, many teams: a target is its kind, namespace, name and container (issue 20, item 1).

Given the operator under its shipped RBAC on the local cluster, a real
registry, and a policy that lets workloads ask only for team A's Job
template; when a base moves:

* a Deployment ``web`` that asks for another team's template is refused
  (``RebuildNotAllowed``), and the patch opened for a plain CronJob ``web``
  of the same namespace, running the same image, carries the policy's default
  rebuild, never the refused template;
* a patch opened for an allowed template is not built once the admin has
  taken the template back before the build starts: it ends ``Failed`` with
  ``RebuildNotAllowed`` and nothing is built or rolled out.

Approval is Manual, so nothing builds until a test approves it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from tests.support.images import _json_bytes, _push_platform_manifest, make_base_image
from tests.support.operator import OperatorProcess, operator_running
from tests.support.registry import OCI_MANIFEST, sha256_digest
from tests.support.scenario import Scenario, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

TEAM_A, TEAM_B = "team-a-build", "team-b-build"


def governed(templates: list[str]) -> dict:
    """The policy's rebuild: external by default; workloads may ask for these Job templates."""
    return {"strategy": "external",
            "allowed": {"strategies": ["external", "job"], "jobTemplates": templates}}


@pytest.fixture(scope="module")
def operator(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator for this module (the e2e ``given`` fixture runs against it)."""
    with operator_running(kube, tmp_path_factory.mktemp("identity-detector")) as proc:
        yield proc


def app_on(registry, repo: str, base) -> str:
    """Push ``repo:1``, an image whose manifest records ``base`` (as buildah would)."""
    manifest, _ = _push_platform_manifest(registry, repo, f"app-{repo}", "amd64", None, "oci")
    doc = json.loads(manifest)
    doc["annotations"] = {"org.opencontainers.image.base.name": base.ref,
                          "org.opencontainers.image.base.digest": base.digest}
    body = _json_bytes(doc)
    registry.put_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
    return registry.put_manifest(repo, "1", body, OCI_MANIFEST)


def state_of(given: Scenario, kind: str, ns: str, name: str) -> dict:
    obj = given.get(kind.lower(), name, ns)
    raw = (obj["metadata"].get("annotations") or {}).get("imagepatch.dev/state")
    return json.loads(raw) if raw else {}


def wait_state(given: Scenario, kind: str, ns: str, name: str, *states: str) -> dict:
    def probe():
        st = state_of(given, kind, ns, name)
        return st if st.get("state") in states else None
    try:
        return wait_for(probe, timeout=60, interval=0.5, what=f"{kind} {ns}/{name} in {states}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast state: {json.dumps(state_of(given, kind, ns, name))}") from None


def patches_for(given: Scenario, policy: str) -> list[dict]:
    out = json.loads(given.kube.kubectl("get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}",
                                        "-o", "json"))
    return out["items"]


def retrigger(given: Scenario, policy: str) -> None:
    stamp = dt.datetime.now(dt.UTC).isoformat()
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={stamp}")


def annotate_rebuild(given: Scenario, kind: str, ns: str, name: str, value: str) -> None:
    given.kube.kubectl("annotate", kind.lower(), name, "-n", ns, "--overwrite",
                       f"imagepatch.dev/rebuild={value}")


def test_a_refused_rebuild_never_rides_on_the_patch_of_a_cronjob_with_the_same_name(
    given, registry
) -> None:
    # Given a policy that allows only team A's template, and one image on base v1
    base_repo, app_repo = unique("ibase"), unique("iapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app_on(registry, app_repo, base_v1)
    image = f"{registry.host}/{app_repo}:1"
    policy = unique("pol")
    given.policy(policy, approval="Manual", baseImages={"checkInterval": "1h"},
                 rebuild=governed([TEAM_A]))
    ns = given.namespace()
    # and a Deployment `web` whose team names another team's template (seen first) ...
    given.workload("Deployment", ns, "web", image=image, policy=policy, replicas=1)
    annotate_rebuild(given, "Deployment", ns, "web", f"job:{TEAM_B}")
    wait_state(given, "Deployment", ns, "web", "Compliant")
    # ... and a plain CronJob `web` in the same namespace, running the same image
    given.workload("CronJob", ns, "web", image=image, policy=policy, schedule="0 3 1 1 *",
                   suspend=True)
    wait_state(given, "CronJob", ns, "web", "Compliant")

    # When the base moves
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)

    # Then the CronJob's patch carries the policy's default, never the refused template
    [patch] = wait_for(lambda: patches_for(given, policy), timeout=60, what="the CronJob's patch")
    print("patch spec:", json.dumps(patch["spec"], sort_keys=True))
    assert patch["spec"]["rebuild"] == {"strategy": "external"}
    assert TEAM_B not in json.dumps(patch["spec"])
    assert [(t["kind"], t["namespace"], t["name"], t["container"])
            for t in patch["spec"]["targets"]] == [("CronJob", ns, "web", "app")]
    assert wait_state(given, "CronJob", ns, "web", "Patching")["state"] == "Patching"
    # and the Deployment is refused, says which field to change, and is not being patched
    refused = wait_state(given, "Deployment", ns, "web", "RebuildNotAllowed")
    assert TEAM_B in refused["message"] and "spec.rebuild.allowed.jobTemplates" in refused["message"]


def test_a_template_taken_back_before_the_build_starts_is_not_built(given, registry) -> None:
    # Given a Deployment that asks for team A's template, which the policy allows
    base_repo, app_repo = unique("ibase"), unique("iapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app_on(registry, app_repo, base_v1)
    image = f"{registry.host}/{app_repo}:1"
    policy = unique("pol")
    given.policy(policy, approval="Manual", baseImages={"checkInterval": "1h"},
                 rebuild=governed([TEAM_A]))
    ns = given.namespace()
    given.workload("Deployment", ns, "web", image=image, policy=policy, replicas=1)
    annotate_rebuild(given, "Deployment", ns, "web", f"job:{TEAM_A}")
    wait_state(given, "Deployment", ns, "web", "Compliant")
    # and a patch opened for it when the base moved, waiting for approval
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    [patch] = wait_for(lambda: patches_for(given, policy), timeout=60, what="the patch")
    name = patch["metadata"]["name"]
    assert patch["spec"]["rebuild"] == {"strategy": "job", "jobTemplate": TEAM_A}
    given.wait_phase(name, "AwaitingApproval", timeout=60)

    # When the admin takes the template back, and then someone approves the patch
    given.policy(policy, approval="Manual", baseImages={"checkInterval": "1h"},
                 rebuild=governed(["team-c-build"]))
    given.approve(name)

    # Then the build never starts: Failed, RebuildNotAllowed, naming the template and the field
    done = given.wait_phase(name, "Failed", "Succeeded", "RolledBack", "Closed", timeout=60)
    status = done["status"]
    print("status:", json.dumps({k: status.get(k) for k in ("phase", "rebuild", "conditions")}))
    assert status["phase"] == "Failed"
    stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
    assert stalled["reason"] == "RebuildNotAllowed"
    assert TEAM_A in stalled["message"] and "spec.rebuild.allowed.jobTemplates" in stalled["message"]
    assert not status.get("rebuild", {}).get("buildId"), "no build was started"
    # and nothing was rolled out
    assert given.image_of(ns, "web") == image
    assert not status.get("targetDigest")
