"""``kubectl imagepatch``: the plugin's verbs against the real API server, with RBAC.

The plugin runs as an executable named ``kubectl-imagepatch`` made from the
``[project.scripts]`` entry in pyproject.toml (what pip installs), found on
PATH by the real ``kubectl`` (plugin discovery) and also run directly. It
talks to the API server through a token-only kubeconfig for a ServiceAccount
that may only read everything and patch ImagePatches and policies, so every
verb is checked as a user runs it, not as cluster admin.

* approve/reject write ``spec.approval`` with ``by`` = the authenticated user
  (from a SelfSubjectReview: the ServiceAccount's username, not the
  kubeconfig's context user name); an ended patch is refused; a missing one
  is one line on stderr, exit 1.
* why explains a workload from what the operator recorded (its state
  annotation, the ImagePatch), names the open patch and how to decide it;
  a workload not opted in is said to be so.
* list prints kubectl-like columns of the open patches (-A: all).
* hold writes ``imagepatch.dev/hold`` on the workload (until, reason, ``by`` =
  the authenticated user) only with the user's own right to patch it; a bad
  ``--until`` is refused before anything is written; why shows the hold, or
  why a hand-written one is ignored; release removes it. (That a held
  workload gets no ImagePatch while another of its policy does, and gets one
  once released: tests/e2e/test_hold.py, with the operator running.)
* retrigger sets ``imagepatch.dev/requestedAt`` on the policy.
* completion prints scripts bash and zsh accept; ``kubectl __complete
  imagepatch …`` (what kubectl's own completion runs) completes the verbs
  through ``kubectl_complete-imagepatch``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.integration.test_report import (
    container_record,
    deployment,
    dg,
    imagepatch,
    token_kubeconfig,
)
from tests.support.scenario import unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """``kubectl-imagepatch`` and ``kubectl_complete-imagepatch``, as pip makes them from
    pyproject's [project.scripts] entries."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    bindir = tmp_path_factory.mktemp("plugin-bin")
    for name in ("kubectl-imagepatch", "kubectl_complete-imagepatch"):
        module, _, func = scripts[name].partition(":")
        exe = bindir / name
        exe.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\n"
                       f"sys.exit({func}())\n")
        exe.chmod(0o755)
    return bindir


class Scene:
    def __init__(self, kube, config: Path, user: str) -> None:
        self.kube, self.config, self.user = kube, config, user
        self.tag = unique("plg")
        self.ns, self.policy = f"{self.tag}-shop", f"{self.tag}-critical"

    def apply(self, doc: dict) -> None:
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def status(self, kind: str, name: str, status: dict) -> None:
        self.kube.kubectl("patch", kind, name, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))

    def get(self, *args: str) -> dict:
        return json.loads(self.kube.kubectl("get", *args, "-o", "json"))


@pytest.fixture(scope="module")
def scene(kube, crds, tmp_path_factory) -> Scene:
    ns, sa = unique("plugin-user"), "alice"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("create", "serviceaccount", sa, "-n", ns)
    # An approver: reads like `view` (our rules aggregate into it), and may patch
    # ImagePatches and policies; nothing else.
    kube.kubectl("apply", "-f", str(REPO / "deploy" / "view-role.yaml"))
    kube.kubectl("create", "clusterrole", f"{ns}-approver", "--verb=patch,get",
                 "--resource=imagepatches.imagepatch.dev,imagepatchpolicies.imagepatch.dev")
    for role in ("view", f"{ns}-approver"):
        kube.kubectl("create", "clusterrolebinding", f"{ns}-{role}"[:63], f"--clusterrole={role}",
                     f"--serviceaccount={ns}:{sa}")
    who = f"--as=system:serviceaccount:{ns}:{sa}"
    wait_for(lambda: kube.kubectl("auth", "can-i", "list", "imagepatches.imagepatch.dev", who,
                                  check=False).strip() == "yes",
             timeout=60, what="view to aggregate imagepatch-view")
    config = token_kubeconfig(kube, ns, sa, tmp_path_factory.mktemp("alice") / "kubeconfig")
    s = Scene(kube, config, f"system:serviceaccount:{ns}:{sa}")

    kube.kubectl("create", "namespace", s.ns)
    s.apply({"apiVersion": "imagepatch.dev/v1alpha1", "kind": "ImagePatchPolicy",
             "metadata": {"name": s.policy}, "spec": {"namespaceSelector": {},
                                                      "approval": "Manual"}})
    target = {"namespace": s.ns, "kind": "Deployment", "name": "pay", "container": "app"}
    for name, phase in ((f"{s.tag}-pay", "AwaitingApproval"), (f"{s.tag}-web", "Succeeded"),
                        (f"{s.tag}-cart", "AwaitingApproval")):
        s.apply(imagepatch(name, s.policy, "team/pay", dg("0"), "Vulnerable",
                           targetDigest=dg("1"), targets=[target]))
        s.status("imagepatch", name, {"phase": phase, "targetDigest": dg("1")})
    record = {"policy": s.policy, "state": "Patching", "message": "pay: 1 finding over baseline",
              "since": "2026-01-01T00:00:00Z",
              "containers": [container_record("app", "team/pay", dg("0"), "Vulnerable",
                                              "Vulnerable", "CVE-2026-0001 is fixed in 1.0.1",
                                              findingsOverBaseline=1)]}
    s.apply(deployment(s, s.ns, "pay", s.policy, record))
    s.apply(deployment(s, s.ns, "db", None, None))
    return s


def plugin(scene: Scene, bindir: Path, *args: str, via_kubectl: bool = False,
           check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["KUBECONFIG"] = str(scene.config)
    if via_kubectl and args[0] == "__complete":  # kubectl's completion of `kubectl imagepatch`
        argv = [scene.kube.kubectl_bin, args[0], "imagepatch", *args[1:]]
    elif via_kubectl:  # kubectl finds kubectl-imagepatch on PATH
        argv = [scene.kube.kubectl_bin, "imagepatch", *args]
    else:
        argv = [str(bindir / "kubectl-imagepatch"), *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stderr}")
    return res


def test_approve_through_kubectl_records_the_authenticated_user(scene, plugin_path) -> None:
    name = f"{scene.tag}-pay"
    res = plugin(scene, plugin_path, "approve", name, "--reason", "CVE fix", via_kubectl=True)
    assert f"{name} approved by {scene.user}" in res.stdout
    approval = scene.get("imagepatch", name)["spec"]["approval"]
    # The ServiceAccount's username, from the API server; the kubeconfig's context
    # user is called "imagepatch-local".
    assert approval == {"decision": "Approved", "by": scene.user, "reason": "CVE fix"}


def test_reject_needs_a_reason_and_records_it(scene, plugin_path) -> None:
    name = f"{scene.tag}-cart"
    res = plugin(scene, plugin_path, "reject", name, check=False)
    assert res.returncode == 2 and "--reason" in res.stderr
    plugin(scene, plugin_path, "reject", name, "--reason", "breaks checkout")
    approval = scene.get("imagepatch", name)["spec"]["approval"]
    assert approval == {"decision": "Rejected", "by": scene.user, "reason": "breaks checkout"}


def test_an_ended_or_missing_patch_is_refused(scene, plugin_path) -> None:
    res = plugin(scene, plugin_path, "approve", f"{scene.tag}-web", check=False)
    assert res.returncode == 1 and "has ended (Succeeded)" in res.stderr
    assert "approval" not in scene.get("imagepatch", f"{scene.tag}-web")["spec"]
    res = plugin(scene, plugin_path, "approve", f"{scene.tag}-nope", check=False)
    assert res.returncode == 1 and "not found" in res.stderr and "Traceback" not in res.stderr


def test_why_explains_state_evidence_and_the_open_patch(scene, plugin_path) -> None:
    res = plugin(scene, plugin_path, "why", "deploy/pay", "-n", scene.ns, via_kubectl=True)
    out = res.stdout
    assert f"Deployment {scene.ns}/pay is Patching" in out
    assert f"Policy: {scene.policy}." in out
    assert "CVE-2026-0001 is fixed in 1.0.1" in out
    assert "findings over the policy's baseline: 1" in out
    # The newest patch that concerns it: cart, awaiting approval, rejected above or not.
    assert "patch: " + f"{scene.tag}-" in out

    res = plugin(scene, plugin_path, "why", "deploy/db", "-n", scene.ns)
    assert "is not opted in" in res.stdout
    res = plugin(scene, plugin_path, "why", "deploy/ghost", "-n", scene.ns, check=False)
    assert res.returncode == 1 and "not found" in res.stderr
    res = plugin(scene, plugin_path, "why", "pod/pay", check=False)
    assert res.returncode == 2 and "KIND/NAME" in res.stderr


def test_why_says_how_to_decide_a_patch_awaiting_approval(scene, plugin_path) -> None:
    name = f"{scene.tag}-late"
    scene.apply(imagepatch(name, scene.policy, "team/pay", dg("0"), "Vulnerable",
                           targetDigest=dg("2"),
                           targets=[{"namespace": scene.ns, "kind": "Deployment", "name": "pay",
                                     "container": "app"}]))
    scene.status("imagepatch", name, {"phase": "AwaitingApproval", "targetDigest": dg("2")})
    out = plugin(scene, plugin_path, "why", "deployment/pay", "-n", scene.ns).stdout
    assert f"Open patch: {name}, AwaitingApproval" in out
    assert f"kubectl imagepatch approve {name}" in out


def test_list_shows_open_patches_like_kubectl_get(scene, plugin_path) -> None:
    out = plugin(scene, plugin_path, "list", "--policy", scene.policy, via_kubectl=True).stdout
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "POLICY", "PHASE", "PROGRESS", "IMAGE", "TARGETS", "AGE"]
    names = {r.split()[0] for r in rows}
    assert f"{scene.tag}-pay" in names and f"{scene.tag}-web" not in names
    row = next(r for r in rows if r.startswith(f"{scene.tag}-pay "))
    assert f"deployment/{scene.ns}/pay" in row and "AwaitingApproval" in row
    out = plugin(scene, plugin_path, "list", "-A", "--policy", scene.policy).stdout
    assert f"{scene.tag}-web " in out and "Succeeded" in out


def test_retrigger_sets_the_annotation_the_operator_honours(scene, plugin_path) -> None:
    res = plugin(scene, plugin_path, "retrigger", scene.policy, via_kubectl=True)
    value = scene.get("imagepatchpolicy", scene.policy)["metadata"]["annotations"][
        "imagepatch.dev/requestedAt"]
    assert value and value in res.stdout
    res = plugin(scene, plugin_path, "retrigger", f"{scene.tag}-none", check=False)
    assert res.returncode == 1 and "not found" in res.stderr


def test_report_and_completion(scene, plugin_path) -> None:
    out = plugin(scene, plugin_path, "report", "--policy", scene.policy, "-o", "json").stdout
    assert {w["name"] for w in json.loads(out)["workloads"]} == {"pay"}
    for shell, checker in (("bash", "bash"), ("zsh", "zsh")):
        script = plugin(scene, plugin_path, "completion", shell).stdout
        assert "kubectl-imagepatch" in script and "approve" in script
        if shutil.which(checker):
            subprocess.run([checker, "-n"], input=script, text=True, check=True)


def test_kubectl_completes_the_plugins_arguments(scene, plugin_path) -> None:
    """kubectl (1.26+) asks kubectl_complete-imagepatch, found on PATH, for candidates."""
    out = plugin(scene, plugin_path, "__complete", "re", via_kubectl=True).stdout
    assert out.splitlines()[:4] == ["reject", "release", "report", "retrigger"]
    out = plugin(scene, plugin_path, "__complete", "why", "st",
                 via_kubectl=True).stdout
    assert "sts/" in out.splitlines() and "statefulset/" in out.splitlines()
    out = plugin(scene, plugin_path, "__complete", "hold", "dep", via_kubectl=True).stdout
    assert out.splitlines()[:2] == ["deploy/", "deployment/"]


def hold_of(scene: Scene, name: str) -> dict | None:
    raw = (scene.get("deployment", name, "-n", scene.ns)["metadata"].get("annotations") or {}).get(
        "imagepatch.dev/hold")
    return json.loads(raw) if raw else None


def test_hold_needs_the_right_to_patch_the_workload_and_records_who(scene, plugin_path) -> None:
    # alice may read everything but patch no Deployment: the API server refuses the hold.
    res = plugin(scene, plugin_path, "hold", "deploy/pay", "-n", scene.ns, check=False)
    assert res.returncode == 1 and "(HTTP 403)" in res.stderr and "Traceback" not in res.stderr
    assert hold_of(scene, "pay") is None
    # Given the right to patch Deployments in the namespace (an app team's),
    scene.kube.kubectl("create", "role", "patch-deployments", "-n", scene.ns, "--verb=patch",
                       "--resource=deployments.apps")
    scene.kube.kubectl("create", "rolebinding", "alice-patch", "-n", scene.ns,
                       "--role=patch-deployments", f"--serviceaccount={scene.user.split(':')[2]}:"
                       f"{scene.user.split(':')[3]}")
    wait_for(lambda: plugin(scene, plugin_path, "hold", "deploy/pay", "-n", scene.ns,
                            "--until", "3d", "--reason", "release freeze",
                            via_kubectl=True, check=False).returncode == 0,
             timeout=30, what="the rolebinding to take effect")
    record = hold_of(scene, "pay")
    assert record is not None and set(record) == {"at", "until", "reason", "by"}
    assert record["by"] == scene.user and record["reason"] == "release freeze"
    at = dt.datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
    until = dt.datetime.fromisoformat(record["until"].replace("Z", "+00:00"))
    assert until - at == dt.timedelta(days=3)

    # why shows it, after the operator's record of the workload
    out = plugin(scene, plugin_path, "why", "deploy/pay", "-n", scene.ns).stdout
    assert out.splitlines()[-1] == (f"Held until {record['until']} by {scene.user}: release "
                                    "freeze: no patch is proposed or rolled out for it until then.")

    # A hold longer than 30 days, or an until that is no time, is refused; nothing changes.
    for until, problem in (("45d", "a hold lasts at most 30 days"), ("friday", "want a duration")):
        res = plugin(scene, plugin_path, "hold", "deploy/pay", "-n", scene.ns, "--until", until,
                     check=False)
        assert res.returncode == 1 and problem in res.stderr, res.stderr
    assert hold_of(scene, "pay") == record

    # release removes it; a second release says there is none
    res = plugin(scene, plugin_path, "release", "deployment/pay", "-n", scene.ns,
                 via_kubectl=True)
    assert "released" in res.stdout and hold_of(scene, "pay") is None
    res = plugin(scene, plugin_path, "release", "deployment/pay", "-n", scene.ns)
    assert "has no hold" in res.stdout
    res = plugin(scene, plugin_path, "release", "deploy/ghost", "-n", scene.ns, check=False)
    assert res.returncode == 1 and "not found" in res.stderr


def test_why_says_why_a_hand_written_hold_is_ignored(scene, plugin_path) -> None:
    scene.kube.kubectl("annotate", "deployment", "db", "-n", scene.ns, "--overwrite",
                       "imagepatch.dev/hold=until friday")
    out = plugin(scene, plugin_path, "why", "deploy/db", "-n", scene.ns).stdout
    assert "is not opted in" in out
    assert "Hold ignored (imagepatch.dev/hold): not JSON" in out
    scene.kube.kubectl("annotate", "deployment", "db", "-n", scene.ns, "imagepatch.dev/hold-")
