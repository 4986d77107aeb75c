"""GitOps: a workload Flux delivers from Git is recognised and left alone (issue 22 item 1).

Given the real Flux source-controller and kustomize-controller (built by
tests/cluster/build-flux.sh) and a real Git server over HTTP with basic auth
(tests/support/gitserver.py), a GitRepository and a Kustomization deliver an
opted-in Deployment into the test cluster. kustomize-controller labels it
``kustomize.toolkit.fluxcd.io/name``/``namespace``.

When its base image moves, detection records it as GitOpsManaged, naming the
Kustomization and how to enable patching, and opens no ImagePatch for it;
an ImagePatch made by hand leaves it alone too (Skipped, GitOpsManaged). Before
``rollout.mode`` existed imagepatch patched it, only for Flux to put the Git
image back on its next reconcile. With ``rollout.mode: Patch`` the operator
patches it like any other workload; what Flux's next reconcile does to that
patch is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.test_tenancy_identity import app_on, patches_for, retrigger
from tests.support.flux import Flux
from tests.support.gitserver import GitServer
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, operator_running
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

FAST_GATE = {"progressDeadlineSeconds": 60, "healthyFor": "3s", "maxRestarts": 0}


@pytest.fixture(scope="module")
def flux(kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    started = time.monotonic()
    running = Flux.start(kube, tmp_path_factory.mktemp("flux"))
    print(f"\n[flux] controllers ready in {time.monotonic() - started:.1f}s")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def detector(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator for this module (named so: tests/e2e/test_gitops_writeback.py imports
    ``detector`` and ``given`` from here)."""
    with operator_running(kube, tmp_path_factory.mktemp("gitops-operator")) as proc:
        yield proc


@pytest.fixture
def given(kube, detector) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def state_of(given: Scenario, ns: str) -> dict:
    raw = (given.get("deployment", "web", ns)["metadata"].get("annotations") or {}).get(
        "imagepatch.dev/state")
    return json.loads(raw) if raw else {}


def wait_state(given: Scenario, ns: str, state: str) -> dict:
    try:
        return wait_for(lambda: (st := state_of(given, ns)).get("state") == state and st,
                        timeout=60, interval=0.5, what=f"{ns}/web {state}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast state: {state_of(given, ns)}") from None


def manifest(namespace: str, policy: str, image: str) -> str:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace,
                     "annotations": {"imagepatch.dev/policy": policy}},
        "spec": {"replicas": 1, "progressDeadlineSeconds": 60,
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
    }
    return json.dumps(deployment, indent=1)


def delivered_by_flux(given: Scenario, flux: Flux, git_server: GitServer, policy: str,
                      image: str) -> str:
    """Given a namespace whose Deployment ``web`` Flux applied from Git; the namespace."""
    ns = given.namespace("gitops")
    flux.deliver_repo(git_server, ns, {"deploy/web.yaml": manifest(ns, policy, image)})
    dep = given.wait_available(ns, "web", 1)
    labels = dep["metadata"]["labels"]
    assert labels["kustomize.toolkit.fluxcd.io/name"] == "apps"
    assert labels["kustomize.toolkit.fluxcd.io/namespace"] == ns
    # source-controller fetched it with the Secret's credentials, from the real server.
    assert any(r.user == git_server.user and "git-upload-pack" in r.path and r.status == 200
               for r in git_server.requests)
    return ns


def test_a_flux_delivered_deployment_is_left_alone_naming_its_kustomization(
    given: Scenario, flux: Flux, git_server: GitServer, registry
) -> None:
    # Given an image on base v1, and a Deployment of it that Flux delivers from Git
    base_repo, app_repo = unique("fbase"), unique("fapp")
    app_on(registry, app_repo, make_base_image(registry, base_repo, "1", marker="v1"))
    image = f"{registry.host}/{app_repo}:1"
    policy = unique("pol")
    given.policy(policy, rollout=FAST_GATE, baseImages={"checkInterval": "1h"})
    ns = delivered_by_flux(given, flux, git_server, policy, image)
    wait_state(given, ns, "Compliant")

    # When its base moves
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)

    # Then the Deployment is recorded as owned by its Kustomization, with how to enable
    # patching, and no patch is opened for it
    state = wait_state(given, ns, "GitOpsManaged")
    print(f"\n[state] {state['message']}")
    assert state["message"].startswith(
        f"BaseImageOutdated, but not patched: delivered by Flux Kustomization {ns}/apps")
    assert "spec.rollout.mode: Patch" in state["message"]
    assert patches_for(given, policy) == []

    # and an ImagePatch made by hand for its image leaves it alone as well
    patch = unique("patch")
    given.imagepatch(patch, image=f"{registry.host}/{app_repo}", policy=policy,
                     target_digest=fake_digest("gitops"))
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")
    [entry] = done["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "GitOpsManaged"), entry
    assert f"Flux Kustomization {ns}/apps" in entry["message"]
    assert given.image_of(ns, "web") == image
    # Events: detection's (the state) and the rollout's Warning (the skipped target).
    # The rollout posts its Warning after it writes the phase: wait for it.
    given.wait_events(ns, "web", "GitOpsManaged", type="Warning")
    events = [e for e in given.events(ns, "web") if e["reason"] == "GitOpsManaged"]
    assert {e["type"] for e in events} == {"Normal", "Warning"}, events
    assert all(f"Flux Kustomization {ns}/apps" in e["message"] for e in events)


def test_with_mode_patch_the_operator_patches_it_and_flux_reconciles_after(
    given: Scenario, flux: Flux, git_server: GitServer
) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("gitops-patch")
    app = f"registry.local/{unique('gitops')}/app"
    given.policy(policy, rollout={**FAST_GATE, "mode": "Patch"})
    ns = delivered_by_flux(given, flux, git_server, policy, f"{app}:1")

    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    # The operator patched the live object (the only behaviour before rollout.mode existed).
    [entry] = done["status"]["rollouts"]
    assert entry["phase"] != "Skipped", entry
    assert entry["targetImage"] == f"{app}:1@{digest}"
    assert "Patched" in [e["reason"] for e in given.events(ns, "web")]
    # What Flux's next reconcile does to it (printed, not asserted: it is Flux's behaviour).
    requested = dt.datetime.now(dt.UTC).isoformat()
    given.kube.kubectl("annotate", "kustomization", "apps", "-n", ns, "--overwrite",
                       f"reconcile.fluxcd.io/requestedAt={requested}")
    wait_for(lambda: json.loads(given.kube.kubectl(
        "get", "kustomization", "apps", "-n", ns, "-o", "json"))["status"].get(
            "lastHandledReconcileAt") == requested, timeout=60, what="Flux's next reconcile")
    print(f"\n[flux] patch {done['status']['phase']} ({entry['phase']}: {entry.get('reason')}); "
          f"after Flux's next reconcile the Deployment runs {given.image_of(ns, 'web')!r} "
          f"(patched: {app}:1@{digest})")
