"""One tenant cannot stall everyone's rollout (issue 20, item 3), on the real cluster.

Given one operator for several teams, each team owning its namespace, its
workloads and their annotations; when one team's CronJob has a schedule that
does not fire soon, one team's Deployment is restarted or crashes mid-rollout,
or one team writes a rebuild annotation of spaces; then another team's
Deployment in the same patch (or of the same image) still gets its patch and
passes its gate, within a bounded time, unless the policy asks for
``rollout.onTargetFailure: StopAll``; and the team at fault is told why.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.test_hostile_detection import app_on, retrigger, state_of
from tests.support.images import make_base_image
from tests.support.operator import OperatorProcess, install_rbac, service_account_kubeconfig
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/tenancy/app"
OLD = f"{APP}:3.0"
FAST_GATE = {"progressDeadlineSeconds": 60, "healthyFor": "3s", "maxRestarts": 0}
TERMINAL = ("Succeeded", "RolledBack", "Failed")


@pytest.fixture(scope="module")
def operator(kube, crds, registry, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator under the shipped RBAC, evaluating every second (for the annotation case)."""
    install_rbac(kube)
    work = tmp_path_factory.mktemp("tenancy")
    proc = OperatorProcess(
        kubeconfig=service_account_kubeconfig(kube, work / "operator.kubeconfig"),
        log_path=work / "operator.log",
        extra_args=["--detect-tick", "1"],
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


def rollouts(given: Scenario, patch: str) -> dict[str, dict]:
    status = given.get("imagepatch", patch).get("status") or {}
    return {f"{r['namespace']}/{r['name']}": r for r in status.get("rollouts") or []}


def test_a_cronjob_that_does_not_run_soon_never_holds_another_teams_deployment(given) -> None:
    # Given: team A's CronJobs, one never firing (30 February) and one daily, hours away;
    # team B's Deployment of the same image. Team A's namespaces sort first: its
    # CronJobs are the first targets of the patch.
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("tenancy-cron")
    given.policy(policy, rollout=FAST_GATE)
    never_ns, daily_ns = given.namespace("a-never"), given.namespace("a-daily")
    team_b = given.namespace("b-team")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
    given.workload("CronJob", never_ns, "report", image=OLD, policy=policy, schedule="0 0 30 2 *")
    given.workload("CronJob", daily_ns, "report", image=OLD, policy=policy,
                   schedule=f"{later.minute} {later.hour} * * *")
    given.deployment(team_b, "web", image=OLD, policy=policy, replicas=1)

    # When: one patch rolls the new digest out to all three.
    began = time.monotonic()
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    # Then: team B's Deployment is patched and passes its gate, in bounded time.
    def b_healthy():
        entry = rollouts(given, patch).get(f"{team_b}/web")
        return entry if entry and entry["phase"] == "Healthy" else None

    wait_for(b_healthy, timeout=90, interval=0.5, what="team B's Deployment patched and healthy")
    print(f"team B's Deployment healthy {time.monotonic() - began:.1f}s after the patch was made")
    assert given.image_of(team_b, "web") == f"{APP}:3.0@{digest}"
    entries = rollouts(given, patch)
    # The never-firing CronJob is left as it was, and says why.
    never = entries[f"{never_ns}/report"]
    assert (never["phase"], never["reason"]) == ("Skipped", "CronJobRunTooFar")
    assert "never fires" in never["message"] and "cronJobTrialRun" in never["message"]
    assert given.template_image("CronJob", never_ns, "report") == OLD
    # The daily one is patched, its gate awaited on the side: the patch is not over.
    daily = entries[f"{daily_ns}/report"]
    assert (daily["phase"], daily["reason"]) == ("Gating", "AwaitingRun")
    assert given.template_image("CronJob", daily_ns, "report") == f"{APP}:3.0@{digest}"
    assert given.get("imagepatch", patch)["status"]["phase"] == "RollingOut"

    # When its owner deletes the daily CronJob, the patch ends and names what was not patched.
    given.kube.kubectl("delete", "cronjob", "-n", daily_ns, "report")
    # (A person's annotation wakes the patch now; otherwise its next look is within 30 s.)
    given.kube.kubectl("annotate", "imagepatch", patch, "--overwrite", "example.com/poke=1")
    done = given.wait_phase(patch, *TERMINAL, timeout=60)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"]["rollouts"])
    message = done["status"]["history"][-1]["message"]
    assert message.startswith("1 of 3 targets patched and healthy")
    assert f"skipped (CronJobRunTooFar): {never_ns}/report/app" in message


def test_a_restart_in_one_namespace_stops_only_that_namespace(given) -> None:
    # Given: team A's two Deployments and team B's one, in one patch (team A first).
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("tenancy-restart")
    given.policy(policy, rollout={**FAST_GATE, "healthyFor": "15s"})
    team_a, team_b = given.namespace("a-team"), given.namespace("b-team")
    given.deployment(team_a, "api", image=OLD, policy=policy, replicas=1)
    given.deployment(team_a, "web", image=OLD, policy=policy, replicas=1)
    given.deployment(team_b, "web", image=OLD, policy=policy, replicas=1)
    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)

    # When: team A restarts its first Deployment while its gate runs.
    wait_for(lambda: rollouts(given, patch).get(f"{team_a}/api", {}).get("phase") == "Gating",
             timeout=60, interval=0.3, what="team A's gate to start")
    given.kube.kubectl("rollout", "restart", "-n", team_a, "deployment/api")
    done = given.wait_phase(patch, *TERMINAL, timeout=120)

    # Then: team A's rollout stopped there; team B's Deployment was still patched.
    entries = rollouts(given, patch)
    assert (entries[f"{team_a}/api"]["phase"], entries[f"{team_a}/api"]["reason"]) == (
        "Failed", "ExternalChange")
    assert (entries[f"{team_a}/web"]["phase"], entries[f"{team_a}/web"]["reason"]) == (
        "Skipped", "ExternalChange")
    assert entries[f"{team_b}/web"]["phase"] == "Healthy", json.dumps(entries)
    assert given.image_of(team_b, "web") == f"{APP}:3.0@{digest}"
    assert given.image_of(team_a, "web") == OLD
    # The patch ends Failed, and its message says what was stopped and why.
    assert done["status"]["phase"] == "Failed"
    message = done["status"]["history"][-1]["message"]
    assert message.startswith(f"{team_a}/api/app: the pod template was changed by someone else")
    assert "1 of 3 targets patched and healthy" in message
    assert f"skipped (ExternalChange): {team_a}/web/app" in message


def test_with_stop_all_one_teams_failed_gate_stops_every_other_team(given) -> None:
    policy, patch, digest = unique("pol"), unique("patch"), fake_digest("tenancy-stopall")
    given.policy(policy, rollout={**FAST_GATE, "onTargetFailure": "StopAll"})
    team_a, team_b = given.namespace("a-team"), given.namespace("b-team")
    given.deployment(team_a, "web", image=OLD, policy=policy, replicas=1, crashloop_on=digest)
    given.deployment(team_b, "web", image=OLD, policy=policy, replicas=1)

    given.imagepatch(patch, image=APP, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, *TERMINAL, timeout=120)

    assert done["status"]["phase"] == "RolledBack", json.dumps(done["status"]["rollouts"])
    entries = rollouts(given, patch)
    assert entries[f"{team_a}/web"]["phase"] == "RolledBack"
    assert (entries[f"{team_b}/web"]["phase"], entries[f"{team_b}/web"]["reason"]) == (
        "Skipped", "EarlierTargetFailed")
    assert given.image_of(team_b, "web") == OLD
    assert f"skipped (EarlierTargetFailed): {team_b}/web/app" in (
        done["status"]["history"][-1]["message"])


def test_a_rebuild_annotation_of_spaces_never_blocks_its_siblings_patch(given, registry) -> None:
    # Given: two Deployments of one image on a base that moved; one asks for a rebuild
    # with an annotation made only of spaces.
    base_repo, app_repo = unique("base"), unique("app")
    base_v1 = make_base_image(registry, base_repo, "3.12", marker="v1")
    app_on(registry, app_repo, base_v1)
    policy = unique("pol")
    given.policy(policy, baseImages={"checkInterval": "1h"}, rebuild={"strategy": "external"})
    ns = given.namespace()
    image = f"{registry.host}/{app_repo}:1"
    given.deployment(ns, "bad", image=image, policy=policy, replicas=1)
    given.deployment(ns, "good", image=image, policy=policy, replicas=1)
    given.kube.kubectl("annotate", "deployment", "-n", ns, "bad", "imagepatch.dev/rebuild=   ")
    make_base_image(registry, base_repo, "3.12", marker="v2")

    # When: the policy is evaluated.
    def patched():
        if state_of(given, ns, "good").get("state") == "Patching":
            return True
        retrigger(given, policy)
        return False

    wait_for(patched, timeout=60, interval=2, what="the sibling's patch")

    # Then: the sibling has its patch, with the policy's rebuild, targeting it alone.
    items = json.loads(given.kube.kubectl("get", "imagepatches", "-l",
                                          f"imagepatch.dev/policy={policy}", "-o", "json"))["items"]
    [patch] = items
    assert patch["spec"]["rebuild"] == {"strategy": "external"}
    assert [(t["namespace"], t["name"]) for t in patch["spec"]["targets"]] == [(ns, "good")]
    # And the workload with the bad annotation is told why, naming the annotation.
    bad = wait_for(lambda: state_of(given, ns, "bad").get("state") == "Unknown"
                   and state_of(given, ns, "bad"), timeout=30, what="the bad one reported")
    assert bad["containers"][0]["reason"] == "InvalidAnnotation"
    assert "imagepatch.dev/rebuild is blank" in bad["containers"][0]["message"]
