"""State a tenant can write is not trusted for decisions (issue 20, item 4).

A workload's owner can edit its annotations. The operator's memory (the base
digest it saw for an annotation-lineage image, the rebuilds that failed there,
the last state) lives in ``imagepatch-memory-*`` ConfigMaps in the operator's
namespace; the ``imagepatch.dev/state`` and ``imagepatch.dev/failed-digests``
annotations are only a mirror for people. Given the operator under its shipped
RBAC, a real registry and kwok-simulated workloads:

* a tenant deleting ``imagepatch.dev/state`` after a base push (lineage from
  the ``imagepatch.dev/base-image`` annotation) does not make the workload
  Compliant, nor close its patch;
* a tenant deleting or forging ``imagepatch.dev/failed-digests`` after a
  rollback does not let the failed digest be rolled out again;
* a ``imagepatch.dev/base-image`` annotation naming another base than the one
  the image records is not followed, and the workload's state says so.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from tests.support.images import make_base_image, strip_lineage
from tests.support.operator import (
    NAMESPACE,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}
STATE, FAILED, BASE = "imagepatch.dev/state", "imagepatch.dev/failed-digests", "imagepatch.dev/base-image"


@pytest.fixture(scope="module")
def operator(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_rbac(kube)
    work = tmp_path_factory.mktemp("tenancy-memory")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--registry-endpoint", f"{ECR}=http://{registry.host}", "--detect-tick", "1"],
        metrics=True,  # tests wait on its detection pass counter
    )
    proc.start()
    yield proc
    proc.stop()
    forbidden = proc.forbidden_lines()
    assert not forbidden, "operator hit RBAC denials:\n" + "\n".join(forbidden[:10])


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def state_of(given: Scenario, ns: str, name: str = "web") -> dict:
    raw = (given.get("deployment", name, ns)["metadata"].get("annotations") or {}).get(STATE)
    return json.loads(raw) if raw else {}


def wait_state(given: Scenario, ns: str, *states: str, timeout: float = 60) -> dict:
    def probe():
        st = state_of(given, ns)
        return st if st.get("state") in states else None
    try:
        return wait_for(probe, timeout=timeout, interval=0.5, what=f"{ns}/web in {states}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast state: {json.dumps(state_of(given, ns))}") from None


def wait_rewritten(given: Scenario, ns: str, policy: str) -> dict:
    """Ask for passes until the operator has written its state mirror back on the workload."""
    asked = [0.0]

    def probe():
        st = state_of(given, ns)
        if st:
            return st
        if time.monotonic() - asked[0] > 5:
            retrigger(given, policy)
            asked[0] = time.monotonic()
        return None
    return wait_for(probe, timeout=60, interval=0.5, what=f"{ns}/web's state to be written again")


def retrigger(given: Scenario, policy: str) -> None:
    stamp = dt.datetime.now(dt.UTC).isoformat()
    given.kube.kubectl("annotate", "imagepatchpolicy", policy, "--overwrite",
                       f"imagepatch.dev/requestedAt={stamp}")


def patches_for(given: Scenario, policy: str) -> list[dict]:
    out = json.loads(given.kube.kubectl("get", "imagepatches", "-l", f"imagepatch.dev/policy={policy}",
                                        "-o", "json"))
    return out["items"]


def memory_records(given: Scenario) -> dict[str, dict]:
    """Every record the operator keeps in its namespace, by data key."""
    out = json.loads(given.kube.kubectl("get", "configmaps", "-n", NAMESPACE, "-l",
                                        "imagepatch.dev/memory=v1", "-o", "json"))
    return {k: json.loads(v) for cm in out["items"] for k, v in (cm.get("data") or {}).items()}


def test_deleting_the_state_annotation_after_a_base_push_keeps_the_workload_outdated(
    given, registry, buildah, operator
) -> None:
    """Given an app whose base is known only from the base-image annotation, and a base push
    that made it outdated (its patch waits for approval), when its owner deletes the state
    annotation, then the workload still reads outdated and its patch stays open."""
    base_repo, app_repo = unique("mbase"), unique("mapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = strip_lineage(registry, buildah.build_app(base_v1, app_repo, "1", pinned=False))
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, approval="Manual",
                 rebuild={"strategy": "external"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1@{app.digest}", policy=policy, replicas=1)
    given.kube.kubectl("annotate", "deployment", "web", "-n", ns,
                       f"{BASE}={registry.host}/{base_repo}:1")
    retrigger(given, policy)
    wait_for(lambda: (state_of(given, ns).get("containers") or [{}])[0].get("lineage")
             == "workload-annotation", timeout=60, what="the base to be known from the annotation")
    assert state_of(given, ns)["state"] == "Compliant"

    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    wait_state(given, ns, "Patching")
    [patch] = patches_for(given, policy)
    name = patch["metadata"]["name"]
    given.wait_phase(name, "AwaitingApproval")

    # When the owner erases what the operator wrote on the workload
    given.kube.kubectl("annotate", "deployment", "web", "-n", ns, f"{STATE}-")
    state = wait_rewritten(given, ns, policy)
    # The state is already written again: wait for whole passes that began after
    # this retrigger before reading what they decided.
    passes = operator.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    operator.wait_passes(after=passes)
    state = wait_rewritten(given, ns, policy)
    # Then the operator's memory still says which base the running digest was built on
    assert state["state"] in ("Patching", "BaseImageOutdated"), state
    assert state["containers"][0]["baseDigest"] == base_v1.digest
    [patch] = patches_for(given, policy)
    assert "imagepatch.dev/close" not in (patch["metadata"].get("annotations") or {})
    assert patch["status"]["phase"] == "AwaitingApproval"
    record = memory_records(given)[f"Deployment.{ns}.web"]
    assert record["bases"]["app"]["baseDigest"] == base_v1.digest


@pytest.mark.parametrize("edit", ["deleted", "forged"])
def test_a_failed_digest_stays_failed_whatever_the_owner_does_to_the_annotation(
    given, edit: str
) -> None:
    """Given a patch rolled back on a crashing digest, when the owner deletes (or rewrites)
    the failed-digests annotation and the same digest is proposed again, then it is
    skipped: the memory is the operator's, in its own namespace."""
    app = "registry.local/tenancy/app"
    policy, running, bad = unique("pol"), fake_digest(f"ran-{edit}"), fake_digest(f"bad-{edit}")
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{app}:1", policy=policy, replicas=1, crashloop_on=bad)
    first = unique("patch")
    given.imagepatch(first, image=app, policy=policy, target_digest=bad, tag="1",
                     currentDigest=running)
    done = given.wait_phase(first, "Succeeded", "RolledBack", "Failed")
    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    given.wait_available(ns, "web", 1)
    mirror = json.loads(given.get("deployment", "web", ns)["metadata"]["annotations"][FAILED])
    assert [m["digest"] for m in mirror] == [bad]  # the mirror people read

    if edit == "deleted":
        given.kube.kubectl("annotate", "deployment", "web", "-n", ns, f"{FAILED}-")
    else:
        forged = [{"digest": fake_digest("something-else"), "patch": "x", "at": "2026-01-01T00:00:00Z"}]
        given.kube.kubectl("annotate", "deployment", "web", "-n", ns, "--overwrite",
                           f"{FAILED}={json.dumps(forged)}")
    given.kube.kubectl("delete", "imagepatch", first)  # as history retention would

    again = unique("patch")
    given.imagepatch(again, image=app, policy=policy, target_digest=bad)
    redo = given.wait_phase(again, "Succeeded", "RolledBack", "Failed")
    [entry] = redo["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "DigestFailedBefore"), entry
    assert given.image_of(ns, "web") == f"{app}:1@{running}"
    # The memory is the operator's, in its own namespace.
    assert [m["digest"] for m in memory_records(given)[f"Deployment.{ns}.web"]["failed"]] == [bad]


def test_a_base_image_annotation_does_not_override_the_base_the_image_records(
    given, registry, buildah
) -> None:
    """Given an app whose image records its base, when its owner names another base (a tag
    that never moves) in the base-image annotation, then the image's base is followed, the
    state says the annotation was not used, and a push of the image's base makes it outdated."""
    base_repo, pinned_repo, app_repo = unique("rbase"), unique("frozen"), unique("rapp")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    make_base_image(registry, pinned_repo, "1", marker="frozen")
    app = buildah.build_app(base_v1, app_repo, "1", pinned=False)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, approval="Manual",
                 rebuild={"strategy": "external"})
    ns = given.namespace()
    given.deployment(ns, "web", image=f"{ECR}/{app_repo}:1@{app.digest}", policy=policy, replicas=1)
    given.kube.kubectl("annotate", "deployment", "web", "-n", ns,
                       f"{BASE}={registry.host}/{pinned_repo}:1")
    retrigger(given, policy)

    # Evaluated with the annotation: the state names it (followed or not).
    state = wait_for(lambda: (s := state_of(given, ns)) and pinned_repo in s.get("message", "")
                     and s, timeout=60, what="the annotation to be evaluated", interval=0.5)
    assert state["state"] == "Compliant", state
    [container] = state["containers"]
    assert base_repo in container["base"] and container["lineage"] != "workload-annotation"
    assert "the image's base is followed" in state["message"], state["message"]
    assert pinned_repo in state["message"]

    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)
    outdated = wait_state(given, ns, "Patching", "BaseImageOutdated")
    assert base_repo in outdated["containers"][0]["base"]
    [patch] = patches_for(given, policy)
    assert base_repo in patch["spec"]["evidence"]["baseImage"]["name"]
