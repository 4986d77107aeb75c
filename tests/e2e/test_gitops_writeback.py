"""Git write-back (issue 22 item 2): the new image is committed to Git, Flux applies it.

Given the real Flux source-controller and kustomize-controller, the real Git
server over HTTP with basic auth, and a Deployment Flux delivers from a
kustomization whose ``images:`` entry sets the tag, a policy with
``rollout.mode: GitWriteBack`` makes the operator commit ``newTag`` + ``digest``
(trailer ``Imagepatch-Patch: <patch>``) instead of patching the live object:

- forward: the commit lands on the branch, Flux applies it, the health gate
  passes, the ImagePatch Succeeds and the live template carries repo:tag@digest;
- a crash-looping digest: the gate fails, the rollback is a revert commit,
  Flux applies it and the Deployment is back on the old image;
- a concurrent commit (the test Git server commits one itself at the moment
  the operator's push arrives, so that push is not a fast-forward): the
  operator rebases and pushes again; the other commit stays in history.

Figures printed: ImagePatch created -> commit recorded -> Flux applied ->
Succeeded, and the rollback's.
"""

# The Flux controllers, the operator and the scenario are test_gitops_flux.py's module
# fixtures, imported here; tests taking them as arguments "redefine" them for ruff.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagepatch.core import writeback
from tests.e2e.test_gitops_flux import detector, flux, given  # noqa: F401 - shared fixtures
from tests.support.flux import Flux
from tests.support.forgeserver import ForgeServer
from tests.support.gitserver import GitServer, git
from tests.support.operator import NAMESPACE
from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

FAST_GATE = {"progressDeadlineSeconds": 60, "healthyFor": "3s", "maxRestarts": 0}


@pytest.fixture(scope="module")
def git_secret(kube, git_server: GitServer) -> Iterator[str]:
    """The write-back credentials, a Secret in the operator's namespace."""
    name = unique("git-writeback")
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": name, "namespace": NAMESPACE},
              "data": {k: base64.b64encode(v.encode()).decode() for k, v in
                       {"username": git_server.user, "password": git_server.password}.items()}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(secret))
    yield name
    kube.kubectl("delete", "secret", name, "-n", NAMESPACE, "--wait=false", check=False)


def files(ns: str, policy: str, app: str, *, crash_on: str = "") -> dict[str, str]:
    """A kustomization setting the tag of ``app`` (``images:``), and the Deployment."""
    labels = "        app: web\n"
    if crash_on:
        labels += f"        sim.imagepatch.dev/crashloop-digest: \"{crash_on.split(':')[1][:16]}\"\n"
    return {
        "deploy/kustomization.yaml": (
            "# delivered by Flux; imagepatch writes the digest\n"
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            "resources:\n"
            "  - web.yaml\n"
            "images:\n"
            f"  - name: {app}\n"
            '    newTag: "1"  # the release\n'
        ),
        "deploy/web.yaml": (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
            f"  namespace: {ns}\n  annotations:\n    imagepatch.dev/policy: {policy}\n"
            "spec:\n  replicas: 1\n  progressDeadlineSeconds: 60\n"
            "  selector:\n    matchLabels:\n      app: web\n"
            f"  template:\n    metadata:\n      labels:\n{labels}"
            f"    spec:\n      containers:\n        - name: app\n          image: {app}\n"
        ),
    }


def write_back_policy(given: Scenario, git_server: GitServer, repo: str, secret: str) -> str:
    policy = unique("pol")
    given.policy(policy, rollout={**FAST_GATE, "mode": "GitWriteBack", "gitWriteBack": {
        "url": git_server.repo_url(repo), "branch": "main", "path": "deploy",
        "secretRef": {"name": secret}, "author": {"name": "imagepatch", "email": "ip@example.test"},
        "applyTimeout": "3m"}})
    return policy


def delivered(given: Scenario, flux: Flux, git_server: GitServer, secret: str, *,
              crash_on: str = "") -> tuple[str, str, str, str]:
    """(namespace, repository, policy, app image repository) of a Flux-delivered Deployment."""
    ns = given.namespace("gitwb")
    app = f"registry.local/{unique('gitwb')}/app"
    repo = unique("app")  # the policy names the repository before it exists
    policy = write_back_policy(given, git_server, repo, secret)
    flux.deliver_repo(git_server, ns, files(ns, policy, app, crash_on=crash_on), repo=repo)
    given.wait_available(ns, "web", 1)
    assert given.image_of(ns, "web") == f"{app}:1"
    return ns, repo, policy, app


def clone(git_server: GitServer, repo: str, where: Path) -> Path:
    git("clone", "--quiet", git_server.repo_url(repo, with_credentials=True), str(where),
        home=where.parent)
    return where


def follow(given: Scenario, patch: str, ns: str, image: str, started: float) -> dict[str, float]:
    """Seconds from ``started`` to each milestone, until the patch ends."""
    seen: dict[str, float] = {}

    def probe():
        status = given.get("imagepatch", patch).get("status") or {}
        now = time.monotonic() - started
        entry = (status.get("rollouts") or [{}])[0]
        if entry.get("gitCommit"):
            seen.setdefault("commit", now)
        if given.image_of(ns, "web") == image:
            seen.setdefault("applied", now)
        if entry.get("gitRevert"):
            seen.setdefault("revert", now)
        if seen.get("revert") and given.image_of(ns, "web") != image:
            seen.setdefault("reverted", now)
        if status.get("phase") in ("Succeeded", "RolledBack", "Failed"):
            seen[status["phase"]] = now
            return status
        return None

    wait_for(probe, timeout=240, interval=0.25, what=f"{patch} to end")
    return seen


def test_write_back_commits_flux_applies_and_the_patch_succeeds(
    given: Scenario, flux: Flux, git_server: GitServer, git_secret: str, tmp_path
) -> None:
    ns, repo, policy, app = delivered(given, flux, git_server, git_secret)
    patch, digest = unique("patch"), fake_digest("writeback")
    target = f"{app}:1@{digest}"

    started = time.monotonic()
    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    seen = follow(given, patch, ns, target, started)
    print(f"\n[writeback] created -> commit {seen.get('commit', -1):.1f}s -> Flux applied "
          f"{seen.get('applied', -1):.1f}s -> Succeeded {seen.get('Succeeded', -1):.1f}s")

    done = given.get("imagepatch", patch)
    [entry] = done["status"]["rollouts"]
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert (entry["phase"], entry["gitBranch"]) == ("Healthy", "main")
    # The commit is the branch's head, carries the trailer, and keeps the file's comments.
    work = clone(git_server, repo, tmp_path / "check")
    head = git("rev-parse", "HEAD", cwd=work).strip()
    assert entry["gitCommit"] == head
    assert writeback.patch_trailer(git("log", "-1", "--format=%B", cwd=work)) == patch
    kustomization = (work / "deploy/kustomization.yaml").read_text()
    assert "# delivered by Flux" in kustomization and digest in kustomization
    # Flux applied that commit; the live template carries repo:tag@digest.
    flux.wait_applied(ns, "apps", head)
    assert given.image_of(ns, "web") == target
    # No one patched the live object: Flux's kustomize-controller is its image's only manager.
    live = json.loads(given.kube.kubectl("get", "deployment", "web", "-n", ns, "-o", "json",
                                         "--show-managed-fields"))
    managers = {m["manager"] for m in live["metadata"].get("managedFields", [])
                if "f:spec" in json.dumps(m.get("fieldsV1", {}))}
    assert "kustomize-controller" in managers and not any("imagepatch" in m for m in managers)


def test_a_crash_looping_digest_is_rolled_back_by_a_revert_commit(
    given: Scenario, flux: Flux, git_server: GitServer, git_secret: str, tmp_path
) -> None:
    digest = fake_digest("writeback-crash")
    ns, repo, policy, app = delivered(given, flux, git_server, git_secret, crash_on=digest)
    patch = unique("patch")

    started = time.monotonic()
    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    seen = follow(given, patch, ns, f"{app}:1@{digest}", started)
    print(f"\n[writeback] created -> commit {seen.get('commit', -1):.1f}s -> applied "
          f"{seen.get('applied', -1):.1f}s -> revert {seen.get('revert', -1):.1f}s -> "
          f"revert applied {seen.get('reverted', -1):.1f}s -> RolledBack "
          f"{seen.get('RolledBack', -1):.1f}s (rollback "
          f"{seen.get('RolledBack', -1) - seen.get('applied', 0):.1f}s after the apply)")

    done = given.get("imagepatch", patch)
    [entry] = done["status"]["rollouts"]
    assert done["status"]["phase"] == "RolledBack", done["status"]
    assert entry["reason"] == "CrashLoopBackOff" and entry["gitRevert"]
    work = clone(git_server, repo, tmp_path / "check")
    log = git("log", "--format=%H", cwd=work).split()
    assert log[:2] == [entry["gitRevert"], entry["gitCommit"]]  # the revert, on top
    assert writeback.revert_trailer(git("log", "-1", "--format=%B", cwd=work)) == patch
    assert digest not in (work / "deploy/kustomization.yaml").read_text()
    flux.wait_applied(ns, "apps", entry["gitRevert"])
    assert given.image_of(ns, "web") == f"{app}:1"
    assert digest in done["status"]["failedDigests"]
    # Posted after the phase is written: wait for it.
    assert "RolledBack" in [e["reason"] for e in given.wait_events(ns, "web", "RolledBack")]


def test_a_concurrent_commit_is_rebased_over_never_force_pushed(
    given: Scenario, flux: Flux, git_server: GitServer, git_secret: str, tmp_path
) -> None:
    ns, repo, policy, app = delivered(given, flux, git_server, git_secret)
    patch, digest = unique("patch"), fake_digest("writeback-race")
    # Someone else's commit lands just as the operator's push reaches the server.
    raced = git_server.before_next_push(repo, {"docs/NOTES.md": "a teammate's change\n"},
                                        "a teammate's change")

    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=240)
    assert raced.is_set(), "the operator's push never reached the server"
    assert done["status"]["phase"] == "Succeeded", done["status"]
    [entry] = done["status"]["rollouts"]
    work = clone(git_server, repo, tmp_path / "check")
    log = git("log", "--format=%H %s", cwd=work).splitlines()
    # Ours rebased on top of theirs: theirs is still in history, nothing was force-pushed.
    assert log[0].startswith(entry["gitCommit"])
    assert log[1] == f"{git_server.raced[-1]} a teammate's change"
    assert (work / "docs/NOTES.md").read_text() == "a teammate's change\n"
    pushes = [r for r in git_server.requests if r.path.endswith(f"/{repo}.git/git-receive-pack")]
    assert len(pushes) >= 3  # theirs, our refused push, our rebased push
    assert given.image_of(ns, "web") == f"{app}:1@{digest}"


# --- pullRequest: reviewed on a forge (tests/support/forgeserver.py stands in for GitHub) -----

@pytest.fixture(scope="module")
def forge_server(git_server: GitServer) -> Iterator[ForgeServer]:
    server = ForgeServer.start(git_server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def forge_secret(kube, forge_server: ForgeServer) -> Iterator[str]:
    """The pull request token, a Secret in the operator's namespace."""
    name = unique("forge-token")
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": name, "namespace": NAMESPACE},
              "data": {"token": base64.b64encode(forge_server.token.encode()).decode()}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(secret))
    yield name
    kube.kubectl("delete", "secret", name, "-n", NAMESPACE, "--wait=false", check=False)


def reviewed(given: Scenario, flux: Flux, git_server: GitServer, forge_server: ForgeServer,
             secret: str, token: str, *, crash_on: str = "") -> tuple[str, str, str, str]:
    """``delivered``, with a policy that pushes to imagepatch/web and opens a pull request."""
    ns = given.namespace("gitpr")
    app = f"registry.local/{unique('gitpr')}/app"
    repo = f"team/{unique('app')}"  # owner/name, as the forge names it
    policy = unique("pol")
    given.policy(policy, rollout={**FAST_GATE, "mode": "GitWriteBack", "gitWriteBack": {
        "url": git_server.repo_url(repo), "branch": "main", "path": "deploy",
        "secretRef": {"name": secret}, "author": {"name": "imagepatch", "email": "ip@example.test"},
        "applyTimeout": "3m", "pushBranch": "imagepatch/web",
        "pullRequest": {"provider": "GitHub", "tokenSecretRef": {"name": token},
                        "apiURL": forge_server.github_api}}})
    flux.deliver_repo(git_server, ns, files(ns, policy, app, crash_on=crash_on), repo=repo)
    given.wait_available(ns, "web", 1)
    return ns, repo, policy, app


def in_review(given: Scenario, patch: str) -> dict:
    """The target's entry once the forge said its request is open."""
    def probe():
        status = given.get("imagepatch", patch).get("status") or {}
        entry = (status.get("rollouts") or [{}])[0]
        return entry if entry.get("gitPullRequestState") == "Open" else None
    return wait_for(probe, timeout=120, interval=0.25, what=f"{patch}'s pull request in review")


def test_a_squash_merged_request_is_applied_and_its_crash_reverted_on_the_branch(
    given: Scenario, flux: Flux, git_server: GitServer, git_secret: str,
    forge_server: ForgeServer, forge_secret: str, tmp_path
) -> None:
    digest = fake_digest("writeback-pr")
    ns, repo, policy, app = reviewed(given, flux, git_server, forge_server, git_secret,
                                     forge_secret, crash_on=digest)
    patch = unique("patch")
    started = time.monotonic()
    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    entry = in_review(given, patch)
    opened = time.monotonic() - started
    pull = forge_server.find(repo, "imagepatch/web")
    assert pull is not None and entry["gitPullRequestNumber"] == pull.number
    assert entry["gitBranch"] == "imagepatch/web" and entry["phase"] == "Patching"
    status = given.get("imagepatch", patch)["status"]
    reconciling = [c for c in status["conditions"] if c["type"] == "Reconciling"]
    assert reconciling and reconciling[0]["reason"] == "PullRequestOpen"
    assert f"waiting for review of {entry['gitPullRequest']}" in reconciling[0]["message"]
    assert given.image_of(ns, "web") == f"{app}:1"  # nothing applied before the merge

    squash = forge_server.merge(repo, pull.number, "squash")  # the trailer is gone now
    merged = time.monotonic() - started
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=240)
    print(f"\n[writeback-pr] created -> request open {opened:.1f}s -> merged {merged:.1f}s -> "
          f"{done['status']['phase']} {time.monotonic() - started:.1f}s")
    [entry] = done["status"]["rollouts"]
    assert done["status"]["phase"] == "RolledBack", done["status"]
    assert entry["reason"] == "CrashLoopBackOff" and entry["gitRevert"]
    work = clone(git_server, repo, tmp_path / "check")
    log = git("log", "--first-parent", "--format=%H", "main", cwd=work).split()
    assert log[:2] == [entry["gitRevert"], squash]  # the revert, on main, of the squash
    body = git("log", "-1", "--format=%B", cwd=work)
    assert writeback.revert_trailer(body) == patch and "CrashLoopBackOff" in body
    assert digest not in (work / "deploy/kustomization.yaml").read_text()
    flux.wait_applied(ns, "apps", entry["gitRevert"])
    assert given.image_of(ns, "web") == f"{app}:1"
    assert [p.number for p in forge_server.pulls if p.repo == repo] == [pull.number]


def test_a_request_closed_without_a_merge_ends_the_patch_with_nothing_applied(
    given: Scenario, flux: Flux, git_server: GitServer, git_secret: str,
    forge_server: ForgeServer, forge_secret: str, tmp_path
) -> None:
    ns, repo, policy, app = reviewed(given, flux, git_server, forge_server, git_secret,
                                     forge_secret)
    patch, digest = unique("patch"), fake_digest("writeback-pr-closed")
    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    entry = in_review(given, patch)
    forge_server.close(repo, entry["gitPullRequestNumber"])
    done = given.wait_phase(patch, "Succeeded", "RolledBack", "Failed", timeout=180)
    [entry] = done["status"]["rollouts"]
    assert done["status"]["phase"] == "Failed", done["status"]
    assert (entry["reason"], entry["gitPullRequestState"]) == ("PullRequestClosed", "Closed")
    assert "nothing is rolled back" in entry["message"] and "gitRevert" not in entry
    work = clone(git_server, repo, tmp_path / "check")
    assert len(git("log", "--format=%H", "main", cwd=work).split()) == 1  # main untouched
    assert git("ls-remote", "--heads", "origin", "imagepatch/web", cwd=work).strip()  # left
    assert given.image_of(ns, "web") == f"{app}:1"
