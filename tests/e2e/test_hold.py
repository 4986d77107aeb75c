"""A workload owner's hold, end to end (issue 22 item 5: ``kubectl imagepatch hold``/``release``).

Given the operator under its shipped RBAC on the local cluster, a real
registry, and a policy with Manual approval (so detection's ImagePatches wait
for a decision and nothing is built): two Deployments of the same policy run
two images built on one base.

* ``hold deploy/web`` (the plugin, as the cluster's admin) writes
  ``imagepatch.dev/hold``; when the base moves, detection opens an ImagePatch
  for ``api`` and none for ``web``, whose state reads ``Held`` with until, by
  and reason.
* ``release deploy/web`` removes it; detection's next pass opens the patch
  for ``web``.
* A rollout does not start on a held target: an ImagePatch made by hand
  skips it (``Skipped``, ``Held``) and leaves its image as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_tenancy_identity import app_on, patches_for, retrigger, wait_state
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, operator_running
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

REPO = Path(__file__).resolve().parents[2]
FAST_GATE = {"progressDeadlineSeconds": 60, "healthyFor": "3s", "maxRestarts": 0}


@pytest.fixture(scope="module")
def operator(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator for this module (the e2e ``given`` fixture runs against it)."""
    with operator_running(kube, tmp_path_factory.mktemp("hold-operator"), metrics=True) as proc:
        yield proc


def plugin(given: Scenario, *args: str) -> str:
    """``kubectl imagepatch …`` as the cluster's admin (the CLI's own entry point)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from imagepatch.cli import kubectl_main; "
         "sys.exit(kubectl_main())", *args, "--kubeconfig", str(given.kube.kubeconfig)],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def targets_of(given: Scenario, policy: str) -> set[str]:
    return {t["name"] for p in patches_for(given, policy) for t in p["spec"].get("targets") or []}


def test_a_held_workload_gets_no_patch_until_it_is_released(given: Scenario, registry) -> None:
    # Given two images on base v1, each run by a Deployment of one policy
    base_repo, web_repo, api_repo = unique("hbase"), unique("hweb"), unique("hapi")
    base_v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app_on(registry, web_repo, base_v1)
    app_on(registry, api_repo, base_v1)
    policy = unique("pol")
    given.policy(policy, approval="Manual", baseImages={"checkInterval": "1h"})
    ns = given.namespace()
    given.workload("Deployment", ns, "web", image=f"{registry.host}/{web_repo}:1", policy=policy,
                   replicas=1)
    given.workload("Deployment", ns, "api", image=f"{registry.host}/{api_repo}:1", policy=policy,
                   replicas=1)
    for name in ("web", "api"):
        wait_state(given, "Deployment", ns, name, "Compliant")

    # and web's owner holds it
    out = plugin(given, "hold", "deploy/web", "-n", ns, "--until", "2h",
                 "--reason", "release freeze")
    assert f"deployment {ns}/web held until " in out

    # When the base moves
    make_base_image(registry, base_repo, "1", marker="v2")
    retrigger(given, policy)

    # Then api gets its ImagePatch, and web none: it reads Held, with until, by and reason
    wait_for(lambda: "api" in targets_of(given, policy), timeout=60, interval=0.5,
             what="the ImagePatch for api")
    state = wait_state(given, "Deployment", ns, "web", "Held")
    print(f"\n[state] {state['message']}")
    hold = json.loads(given.get("deployment", "web", ns)["metadata"]["annotations"][
        "imagepatch.dev/hold"])
    assert state["message"].startswith(
        f"BaseImageOutdated, but not patched: held until {hold['until']} by {hold['by']}: "
        "release freeze")
    assert "web" not in targets_of(given, policy)
    why = plugin(given, "why", "deploy/web", "-n", ns)
    assert f"Deployment {ns}/web is Held" in why and f"Held until {hold['until']}" in why

    # When the owner releases it, the next pass opens its patch
    assert "released" in plugin(given, "release", "deploy/web", "-n", ns)
    wait_for(lambda: "web" in targets_of(given, policy), timeout=60, interval=0.5,
             what="the ImagePatch for web after the release")
    assert wait_state(given, "Deployment", ns, "web", "Patching")


def test_a_rollout_does_not_start_on_a_held_target(given: Scenario) -> None:
    # Given a Deployment on hold, and an ImagePatch made by hand for its image
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("hold")
    app = f"registry.local/{unique('held')}/app"
    given.policy(policy, rollout=FAST_GATE)
    ns = given.namespace()
    given.workload("Deployment", ns, "web", image=f"{app}:1", policy=policy, replicas=1)
    plugin(given, "hold", "deploy/web", "-n", ns, "--until", "1h", "--reason", "demo day")

    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed")

    # Then the target is skipped, saying why, and the image is what it was
    [entry] = done["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "Held"), entry
    assert "demo day" in entry["message"]
    assert given.image_of(ns, "web") == f"{app}:1"


def test_an_unreadable_hold_gets_one_warning_event_per_value(given: Scenario, operator) -> None:
    # Given a Deployment of a policy, whose owner writes a hold by hand, wrongly
    policy = unique("pol")
    given.policy(policy, approval="Manual")
    ns = given.namespace()
    given.workload("Deployment", ns, "web", image=f"registry.local/{unique('bad')}/app:1",
                   policy=policy, replicas=1)
    annotate_hold(given, ns, "web", "freeze until friday")

    # Then the workload gets a Warning Event saying what is wrong and how to fix it
    [first] = wait_hold_events(given, ns, "web", 1)
    assert first["type"] == "Warning"
    assert first["involvedObject"]["kind"] == "Deployment"
    assert first["message"].startswith(
        "imagepatch.dev/hold 'freeze until friday' is ignored: not JSON")
    assert "kubectl imagepatch hold KIND/NAME --until 3d" in first["message"]
    print(f"\n[event] {first['reason']}: {first['message']}")

    # When later passes read the same value, and then the owner writes another bad one
    passes = operator.metric("imagepatch_detection_passes_total")
    retrigger(given, policy)
    operator.wait_passes(after=passes)
    retrigger(given, policy)
    operator.wait_passes()
    annotate_hold(given, ns, "web", '{"until": "next week"}')

    # Then there is one Event per value, and the long echo is cut short
    messages = [e["message"] for e in wait_hold_events(given, ns, "web", 2)]
    assert first["message"] in messages
    assert any("'{\"until\": \"next week\"}' is ignored: until: want an RFC 3339 time" in m
               for m in messages), messages
    annotate_hold(given, ns, "web", "x" * 1000)
    [third] = [e["message"] for e in wait_hold_events(given, ns, "web", 3)
               if e["message"] not in messages]
    assert "x" * 77 + "...' is ignored: not JSON" in third and "x" * 78 not in third
    assert len(third) < 512


def annotate_hold(given: Scenario, ns: str, name: str, value: str) -> None:
    given.kube.kubectl("annotate", "deployment", name, "-n", ns, "--overwrite",
                       f"imagepatch.dev/hold={value}")


def wait_hold_events(given: Scenario, ns: str, name: str, count: int) -> list[dict]:
    def probe() -> list[dict] | None:
        found = [e for e in given.events(ns, name) if e.get("reason") == "HoldIgnored"]
        assert len(found) <= count, [e["message"] for e in found]
        return found if len(found) == count else None
    return wait_for(probe, timeout=60, interval=0.5, what=f"{count} HoldIgnored event(s)")
