"""adapters/git.py against a real Git server (git http-backend behind basic auth).

Commit and push, the same call again finds the commit by its trailer (no
second commit), a push that loses a race is rebased and pushed (the other
commit stays in history, nothing is force-pushed), and a revert commit.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imagepatch.adapters import forge
from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.adapters.git import Credentials, GitRepository
from imagepatch.core import gitops, writeback
from imagepatch.core.rollout import FailedDigest, GitWrite
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.policy import parse_policy_spec
from imagepatch.reconcile.writeback import GitWriter
from tests.support.forgeserver import ForgeServer
from tests.support.gitserver import GitServer, git

MANIFEST = """\
# the app, delivered by Flux
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: web
          image: registry.test/app:1.0  # keep me
"""
NEW = writeback.NewImage(repository="registry.test/app", tag="1.0", digest="sha256:" + "b" * 64)


def repository(server: GitServer, name: str, cache: Path, password: str = "") -> GitRepository:
    return GitRepository(
        server.repo_url(name),
        credentials=Credentials(username=server.user, password=password or server.password),
        cache_dir=cache,
        author=("imagepatch", "imagepatch@example.test"),
    )


def change(root: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    rel = "apps/web/deploy.yaml"
    result = writeback.edit(rel, (root / rel).read_text(),
                            writeback.Target("registry.test/app", "p"), NEW)
    return ({rel: result.text} if result.changed else {}), result.changes


def commit(repo: GitRepository, patch: str = "web-fix"):
    message = writeback.commit_message(None, patch=patch, workload="default/web", old="x",
                                       new=NEW.reference(), reason="CVE", findings=())
    return repo.commit(branch="main", message=message, change=change,
                       found=lambda m: writeback.patch_trailer(m) == patch)


def history(server: GitServer, name: str, tmp: Path) -> list[str]:
    git("clone", "--quiet", server.repo_url(name, with_credentials=True), str(tmp / "check"),
        home=tmp)
    return git("log", "--format=%H %s", cwd=tmp / "check").splitlines()


@pytest.fixture
def repo_name(git_server: GitServer, request) -> str:
    name = f"wb-{request.node.name.replace('_', '-')[:40]}"
    git_server.create_repo(name)
    git_server.commit(name, {"apps/web/deploy.yaml": MANIFEST}, "the app")
    return name


def test_a_commit_is_pushed_once_and_found_by_its_trailer_after(git_server, repo_name, tmp_path):
    repo = repository(git_server, repo_name, tmp_path / "cache")
    first = commit(repo)
    assert first.created and first.branch == "main"
    # A restarted operator (a fresh cache) finds it by the trailer: no second commit.
    again = commit(repository(git_server, repo_name, tmp_path / "cache2"))
    assert not again.created and again.sha == first.sha
    log = history(git_server, repo_name, tmp_path)
    assert len(log) == 2 and log[0].startswith(first.sha)
    text = git("show", f"{first.sha}:apps/web/deploy.yaml", cwd=tmp_path / "check")
    assert f"image: {NEW.reference()}  # keep me" in text and "# the app" in text
    body = git("log", "-1", "--format=%B", first.sha, cwd=tmp_path / "check")
    assert "Imagepatch-Patch: web-fix" in body
    # The credentials were asked for by git (askpass), never put in a URL on disk.
    config = (repo.work / ".git" / "config").read_text()
    assert git_server.password not in config


def test_a_push_that_loses_a_race_is_rebased_never_forced(git_server, repo_name, tmp_path):
    raced = git_server.before_next_push(repo_name, {"README.md": "someone else\n"}, "other work")
    pushed = commit(repository(git_server, repo_name, tmp_path / "cache"))
    assert raced.is_set() and pushed.created
    log = history(git_server, repo_name, tmp_path)
    # Ours on top of theirs: theirs is still in history.
    assert [line.split(" ", 1)[1] for line in log][:2] == [
        f"imagepatch: default/web to {NEW.reference()}", "other work"]
    assert log[1].startswith(git_server.raced[-1])


def test_a_revert_commit_undoes_the_patch_and_is_found_again(git_server, repo_name, tmp_path):
    repo = repository(git_server, repo_name, tmp_path / "cache")
    pushed = commit(repo)

    def revert():
        return repo.revert(
            branch="main", commit=pushed.sha,
            original=lambda m: writeback.patch_trailer(m) == "web-fix",
            message=writeback.revert_message("x", patch="web-fix", reason="unhealthy"),
            found=lambda m: writeback.revert_trailer(m) == "web-fix")

    reverted = revert()
    assert reverted.created
    assert revert().sha == reverted.sha and not revert().created
    log = history(git_server, repo_name, tmp_path)
    assert len(log) == 3
    assert git("show", "HEAD:apps/web/deploy.yaml", cwd=tmp_path / "check") == MANIFEST


def test_nothing_to_change_makes_no_commit(git_server, repo_name, tmp_path):
    repo = repository(git_server, repo_name, tmp_path / "cache")
    first = commit(repo)
    # Another patch whose edit finds the reference already written: no commit, the head.
    again = commit(repo, patch="other-fix")
    assert not again.created and again.sha == first.sha


def test_wrong_credentials_are_a_configuration_error_without_the_password(
        git_server, repo_name, tmp_path):
    repo = repository(git_server, repo_name, tmp_path / "cache", password="wrong-secret")
    with pytest.raises(ConfigurationError) as raised:
        commit(repo)
    assert raised.value.reason == "GitAuthFailed" and "wrong-secret" not in str(raised.value)


# --- reconcile/writeback.py: the step the planner asks for, with the policy's Secret ----------

class Secrets:
    """The one Kube call GitWriter makes (an in-memory stand-in of our own adapter)."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    async def get_secret(self, namespace: str, name: str):
        data = self.secrets.get(f"{namespace}/{name}")
        if data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


WEB = Target(namespace="default", name="web", container="web")


def run(server: GitServer, name: str, cache: Path, act: GitWrite, *, path: str = "apps",
        secrets: dict | None = None, owner: gitops.Owner | None = None,
        opener: Any = None, state_of: Any = None, **write_back: Any):
    policy = parse_policy_spec({"namespaceSelector": {}, "rollout": {
        "mode": "GitWriteBack", "gitWriteBack": {"url": server.repo_url(name), "path": path,
                                                 "secretRef": {"name": "git"}, **write_back}}})
    patch = parse_imagepatch({"metadata": {"name": "web-fix"}, "spec": {
        "image": "registry.test/app", "policy": "p", "reason": "Vulnerable"}})
    kube = Secrets(secrets if secrets is not None else {
        "imagepatch-system/git": {"username": server.user, "password": server.password},
        "imagepatch-system/forge": {"token": "t0ken"}})
    writer = GitWriter(kube, "imagepatch-system", cache,  # type: ignore[arg-type]
                       **({"open_pull_request": opener} if opener else {}),
                       **({"pull_request_state": state_of} if state_of else {}))
    return asyncio.run(writer.run(act, patch=patch, policy=policy, owner=owner))


FORWARD = GitWrite(target=WEB, image=NEW.reference(), previous="registry.test/app:1.0")


def test_the_writer_commits_then_reverts(git_server, repo_name, tmp_path):
    done = run(git_server, repo_name, tmp_path / "c", FORWARD)
    assert done.sha and done.branch == "main" and not done.reason
    failed = FailedDigest(digest=NEW.digest, key="", patch="web-fix", at=None)  # type: ignore[arg-type]
    back = run(git_server, repo_name, tmp_path / "c", GitWrite(
        target=WEB, image="registry.test/app:1.0", previous=NEW.reference(), revert=True,
        commit=done.sha, failed=failed))
    assert back.sha and back.sha != done.sha and not back.reason
    log = history(git_server, repo_name, tmp_path)
    assert len(log) == 3 and log[0].startswith(back.sha)
    body = git("log", "-1", "--format=%B", cwd=tmp_path / "check")
    assert "Imagepatch-Revert: web-fix" in body


def test_the_writer_says_what_to_fix(git_server, repo_name, tmp_path):
    # A file that is not UTF-8 is passed over, not an error.
    work = tmp_path / "raw"
    git("clone", "--quiet", git_server.repo_url(repo_name, with_credentials=True), str(work),
        home=tmp_path)
    (work / "other").mkdir()
    (work / "other/blob.yaml").write_bytes(b"image: \xff\n")
    git("add", "--all", cwd=work, home=tmp_path)
    git("commit", "--quiet", "-m", "not UTF-8", cwd=work, home=tmp_path)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work, home=tmp_path)
    nowhere = run(git_server, repo_name, tmp_path / "a", FORWARD, path="other")
    assert nowhere.reason == "GitImageNotDeclared" and "spec.rollout.gitWriteBack.path" in (
        nowhere.message)
    no_secret = run(git_server, repo_name, tmp_path / "b", FORWARD, secrets={})
    assert no_secret.reason == "GitWriteBackFailed" and "imagepatch-system/git" in (
        no_secret.message)
    git_server.commit(repo_name, {"apps/web/deploy.yaml": MANIFEST.replace(
        "# keep me", '# {"$imagepolicy": "flux-system:app"}')}, "flux automation")
    owned = run(git_server, repo_name, tmp_path / "c", FORWARD)
    assert owned.reason == "FluxImageAutomation" and "Flux image automation owns" in (
        owned.message)
    refused = run(git_server, repo_name, tmp_path / "d", FORWARD, secrets={
        "imagepatch-system/git": {"username": git_server.user, "password": "nope"}})
    assert refused.reason == "GitAuthFailed" and "nope" not in refused.message


def test_the_pull_request_is_opened_after_the_push_to_its_branch(git_server, repo_name, tmp_path):
    calls: list[dict[str, Any]] = []

    async def opener(provider: str, **kw: Any) -> forge.PullRequest:
        calls.append({"provider": provider, **kw})
        return forge.PullRequest(number=3, url="https://forge.test/pr/3", created=True)

    settings = {"pushBranch": "imagepatch/web", "pullRequest": {
        "provider": "GitLab", "tokenSecretRef": {"name": "forge"}}}
    done = run(git_server, repo_name, tmp_path / "c", FORWARD, opener=opener, **settings)
    assert done.sha and done.branch == "imagepatch/web" and not done.reason
    assert (done.pull_request_url, done.pull_request_number) == ("https://forge.test/pr/3", 3)
    [call] = calls
    assert (call["provider"], call["head"], call["base"], call["token"]) == (
        "GitLab", "imagepatch/web", "main", "t0ken")
    # A revert opens no request (the patch's request is the one to close by hand).
    back = run(git_server, repo_name, tmp_path / "c", GitWrite(
        target=WEB, image="registry.test/app:1.0", previous=NEW.reference(), revert=True,
        commit=done.sha), opener=opener, **settings)
    assert back.sha and not back.pull_request_url and len(calls) == 1


def test_a_bad_message_template_fails_the_commit_naming_the_field(git_server, repo_name,
                                                                  tmp_path):
    bad = run(git_server, repo_name, tmp_path / "c", FORWARD, messageTemplate="fix {image}")
    assert bad.reason == "GitWriteBackFailed" and not bad.sha
    assert bad.message.startswith("spec.rollout.gitWriteBack.messageTemplate: unknown")
    assert len(history(git_server, repo_name, tmp_path)) == 1


APP = gitops.Owner(tool=gitops.Tool.ARGO_CD_APPLICATION, namespace="apps", name="web",
                   evidence=gitops.ARGOCD_TRACKING_ID)
OVERRIDE = """\
# written by Argo CD Image Updater before
kustomize:
  images:
    - registry.test/sidecar:2.0
"""


def test_an_argo_cd_application_gets_its_override_file_merged(git_server, repo_name, tmp_path):
    git_server.commit(repo_name, {"apps/.argocd-source-apps_web.yaml": OVERRIDE}, "override")
    done = run(git_server, repo_name, tmp_path / "c", FORWARD, owner=APP,
               argoCD={"sourceType": "Kustomize"})
    assert done.sha and not done.reason
    history(git_server, repo_name, tmp_path)
    text = git("show", "HEAD:apps/.argocd-source-apps_web.yaml", cwd=tmp_path / "check")
    assert "registry.test/sidecar:2.0" in text and f"- {NEW.reference()}" in text
    assert "# written by Argo CD Image Updater before" in text
    # The manifests are not edited: the override is what Argo CD applies.
    assert git("show", "HEAD:apps/web/deploy.yaml", cwd=tmp_path / "check") == MANIFEST
    again = run(git_server, repo_name, tmp_path / "c", FORWARD, owner=APP,
                argoCD={"sourceType": "Kustomize"})
    assert again.sha == done.sha


def test_a_helm_application_in_argo_cds_namespace_gets_a_new_file(git_server, repo_name,
                                                                   tmp_path):
    app = gitops.Owner(tool=gitops.Tool.ARGO_CD_APPLICATION, namespace="", name="web",
                       evidence=gitops.ARGOCD_INSTANCE)
    done = run(git_server, repo_name, tmp_path / "c", FORWARD, owner=app, path="charts/web",
               argoCD={"sourceType": "Helm", "helmTagParameter": "app.tag"})
    assert done.sha and not done.reason
    history(git_server, repo_name, tmp_path)
    text = git("show", "HEAD:charts/web/.argocd-source-web.yaml", cwd=tmp_path / "check")
    assert "name: image.repository" in text and "value: registry.test/app" in text
    assert "name: app.tag" in text and f"value: 1.0@{NEW.digest}" in text
    # A Flux owner under the same policy is refused, saying what to fix (Flux never reads
    # the override file): test_argo_cd_settings_on_a_flux_workload_say_what_to_fix.


def test_a_broken_override_file_says_which(git_server, repo_name, tmp_path):
    git_server.commit(repo_name, {"apps/.argocd-source-apps_web.yaml": "- a list\n"}, "bad")
    broken = run(git_server, repo_name, tmp_path / "c", FORWARD, owner=APP,
                 argoCD={"sourceType": "Kustomize"})
    assert broken.reason == "GitWriteBackFailed"
    assert "apps/.argocd-source-apps_web.yaml" in broken.message and "mapping" in broken.message


# --- adapters/git.py's edges: SSH settings, a server that never answers, no git at all -------

def test_ssh_keys_are_files_only_the_owner_reads_and_host_keys_are_checked(tmp_path):
    repo = GitRepository("git@git.example.test:team/apps.git", cache_dir=tmp_path, credentials=(
        Credentials.from_secret({"identity": "KEY", "known_hosts": "git.example.test ssh-ed25519 AAAA"},
                                signing={"identity": "SIGNING KEY"})))
    repo._write_secrets()
    env = repo._env()
    assert "StrictHostKeyChecking=yes" in env["GIT_SSH_COMMAND"]
    assert f"UserKnownHostsFile={repo.secrets / 'known_hosts'}" in env["GIT_SSH_COMMAND"]
    assert "GIT_ASKPASS" not in env and "KEY" not in " ".join(env.values())
    for name in ("identity", "known_hosts", "signing"):
        assert (repo.secrets / name).stat().st_mode & 0o077 == 0
    assert "<redacted>" in repr(repo.credentials)
    token = Credentials.from_secret({"token": "t0ken"})
    assert (token.username, token.password) == ("x-access-token", "t0ken")


def test_a_server_that_never_answers_is_a_timeout(tmp_path):
    import socket

    from imagepatch.adapters.errors import TransientError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/apps.git"
        repo = GitRepository(url, credentials=Credentials(), cache_dir=tmp_path, timeout=2)
        with pytest.raises(TransientError) as raised:
            repo.commit(branch="main", message="m", found=lambda m: False, change=change)
        assert raised.value.reason == "GitTimeout"
    finally:
        silent.close()


def test_without_git_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    repo = GitRepository("https://git.example.test/a.git", credentials=Credentials(),
                         cache_dir=tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        repo.commit(branch="main", message="m", found=lambda m: False, change=change)
    assert raised.value.reason == "GitUnavailable"


def test_a_race_on_the_same_line_is_edited_again_on_the_new_head(git_server, repo_name, tmp_path):
    theirs = MANIFEST.replace("# keep me", "# a teammate's comment")
    raced = git_server.before_next_push(repo_name, {"apps/web/deploy.yaml": theirs}, "theirs")
    pushed = commit(repository(git_server, repo_name, tmp_path / "cache"))
    assert raced.is_set() and pushed.created
    history(git_server, repo_name, tmp_path)
    text = git("show", "HEAD:apps/web/deploy.yaml", cwd=tmp_path / "check")
    assert f"image: {NEW.reference()}  # a teammate's comment" in text


def test_a_push_branch_gets_the_commit_and_the_branch_stays(git_server, repo_name, tmp_path):
    repo = repository(git_server, repo_name, tmp_path / "cache")
    message = writeback.commit_message(None, patch="web-fix", workload="w", old="x",
                                       new=NEW.reference(), reason="CVE", findings=("CVE-1",))

    def push() -> object:
        return repo.commit(branch="main", push_branch="imagepatch/web", message=message,
                           change=change, found=lambda m: writeback.patch_trailer(m) == "web-fix")

    first = push()
    assert first.created and first.branch == "imagepatch/web"
    again = push()
    assert not again.created and again.sha == first.sha
    heads = git("ls-remote", "--heads", git_server.repo_url(repo_name, with_credentials=True),
                home=tmp_path)
    assert f"{first.sha}\trefs/heads/imagepatch/web" in heads
    assert f"{first.sha}\trefs/heads/main" not in heads


def test_a_missing_branch_is_a_configuration_error(git_server, repo_name, tmp_path):
    repo = repository(git_server, repo_name, tmp_path / "cache")
    with pytest.raises(ConfigurationError) as raised:
        repo.commit(branch="release", message="m", found=lambda m: False, change=change)
    assert raised.value.reason == "GitBranchNotFound" and "'release'" in str(raised.value)
    with pytest.raises(ConfigurationError):
        repo.revert(branch="release", commit="0" * 40, original=lambda m: False, message="m",
                    found=lambda m: False)


def test_commits_are_signed_with_the_ssh_signing_key(git_server, repo_name, tmp_path):
    import subprocess

    key = tmp_path / "signing"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    repo = GitRepository(git_server.repo_url(repo_name), cache_dir=tmp_path / "cache",
                         credentials=Credentials.from_secret(
                             {"username": git_server.user, "password": git_server.password},
                             signing={"identity": key.read_text()}))
    pushed = commit(repo)
    history(git_server, repo_name, tmp_path)
    raw = git("cat-file", "commit", pushed.sha, cwd=tmp_path / "check")
    assert "gpgsig -----BEGIN SSH SIGNATURE-----" in raw
    allowed = tmp_path / "allowed"
    allowed.write_text(f"imagepatch@example.test {(tmp_path / 'signing.pub').read_text()}")
    verified = git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", "--raw",
                   pushed.sha, cwd=tmp_path / "check")
    assert verified is not None


# --- a merged pull request's revert: merge commit, squash, rebase; deep history --------------

PR_SETTINGS = {"pushBranch": "imagepatch/web", "pullRequest": {
    "provider": "GitHub", "tokenSecretRef": {"name": "forge"}}}


def merge(server: GitServer, name: str, tmp: Path, how: str) -> str:
    """Merge imagepatch/web into main as a forge's button does; the commit on main."""
    work = tmp / f"merge-{how}"
    git("clone", "--quiet", server.repo_url(name, with_credentials=True), str(work), home=tmp)
    git("checkout", "--quiet", "main", cwd=work, home=tmp)
    if how == "squash":  # GitHub's squash: one new commit, the PR's title as its message
        git("merge", "--quiet", "--squash", "origin/imagepatch/web", cwd=work, home=tmp)
        git("commit", "--quiet", "-m", "Bump web (#3)", cwd=work, home=tmp)
    else:  # a merge commit
        git("merge", "--quiet", "--no-ff", "-m", "Merge pull request #3",
            "origin/imagepatch/web", cwd=work, home=tmp)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work, home=tmp)
    return git("rev-parse", "HEAD", cwd=work, home=tmp).strip()


def revert_act(commit: str, **kw: Any) -> GitWrite:
    return GitWrite(target=WEB, image="registry.test/app:1.0", previous=NEW.reference(),
                    revert=True, commit=commit, **kw)


def test_a_squash_merged_request_is_reverted_through_the_forges_merge_commit(
        git_server, repo_name, tmp_path):
    asked: list[dict[str, Any]] = []

    async def state_of(provider: str, **kw: Any) -> forge.PullRequestState:
        asked.append({"provider": provider, **kw})
        return forge.PullRequestState(state="merged", url="https://forge.test/pr/3",
                                      merge_commit=squashed, merged_at="2026-12-06T02:00:00Z")

    async def opener(provider: str, **kw: Any) -> forge.PullRequest:
        return forge.PullRequest(number=3, url="https://forge.test/pr/3", created=True)

    done = run(git_server, repo_name, tmp_path / "c", FORWARD, opener=opener, **PR_SETTINGS)
    squashed = merge(git_server, repo_name, tmp_path, "squash")
    git_server.commit(repo_name, {"README.md": "later work\n"}, "later work")
    # The poll says merged, by which commit and when.
    polled = run(git_server, repo_name, tmp_path / "c", GitWrite(
        target=WEB, image=NEW.reference(), previous="registry.test/app:1.0",
        poll_pull_request=True, pull_request_number=3), state_of=state_of, **PR_SETTINGS)
    assert (polled.pull_request_state, polled.merge_commit, polled.merged_at) == (
        "merged", squashed, "2026-12-06T02:00:00Z")
    assert (asked[0]["number"], asked[0]["token"], asked[0]["provider"]) == (3, "t0ken", "GitHub")
    # The revert, after a restart that lost the merge commit: asked of the forge again.
    back = run(git_server, repo_name, tmp_path / "fresh", revert_act(
        done.sha, pull_request_number=3, why="web/web: CrashLoopBackOff"), state_of=state_of,
        **PR_SETTINGS)
    assert back.sha and back.branch == "main" and not back.reason and len(asked) == 2
    log = history(git_server, repo_name, tmp_path)
    assert log[0].startswith(back.sha) and log[2].startswith(squashed)
    assert git("show", "HEAD:apps/web/deploy.yaml", cwd=tmp_path / "check") == MANIFEST
    body = git("log", "-1", "--format=%B", cwd=tmp_path / "check")
    assert "CrashLoopBackOff" in body and "Imagepatch-Revert: web-fix" in body


def test_a_request_merged_with_a_merge_commit_reverts_the_patchs_commit_or_the_merge(
        git_server, repo_name, tmp_path):
    async def opener(provider: str, **kw: Any) -> forge.PullRequest:
        return forge.PullRequest(number=3, url="https://forge.test/pr/3", created=True)

    done = run(git_server, repo_name, tmp_path / "c", FORWARD, opener=opener, **PR_SETTINGS)
    merged = merge(git_server, repo_name, tmp_path, "merge")
    # The trailer is on the branch (through the merge's second parent): that commit is undone.
    back = run(git_server, repo_name, tmp_path / "c", revert_act(done.sha, merge_commit=merged),
               **PR_SETTINGS)
    assert back.sha and not back.reason
    log = history(git_server, repo_name, tmp_path)
    assert log[0].startswith(back.sha) and log[1].startswith(merged)
    assert git("show", "HEAD:apps/web/deploy.yaml", cwd=tmp_path / "check") == MANIFEST
    # A merge commit itself is undone against its first parent (git revert -m 1).
    other = repository(git_server, repo_name, tmp_path / "direct")
    git_server.commit(repo_name, {"apps/web/deploy.yaml": MANIFEST.replace("1.0", "2.0")},
                      "2.0", branch="feature")
    work = tmp_path / "merge-feature"
    git("clone", "--quiet", git_server.repo_url(repo_name, with_credentials=True), str(work),
        home=tmp_path)
    git("merge", "--quiet", "--no-ff", "-X", "theirs", "-m", "Merge feature", "origin/feature",
        cwd=work, home=tmp_path)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work, home=tmp_path)
    merge_sha = git("rev-parse", "HEAD", cwd=work, home=tmp_path).strip()
    undone = other.revert(branch="main", commit=merge_sha, original=lambda m: False,
                          message=writeback.revert_message("Merge feature", patch="feature",
                                                           reason="unhealthy"),
                          found=lambda m: writeback.revert_trailer(m) == "feature")
    assert undone.created
    git("fetch", "--quiet", "origin", cwd=work, home=tmp_path)
    assert "2.0" not in git("show", "origin/main:apps/web/deploy.yaml", cwd=work, home=tmp_path)


def test_a_revert_older_than_the_clone_depth_deepens_the_history(git_server, repo_name, tmp_path,
                                                                  monkeypatch):
    from imagepatch.adapters import git as git_adapter
    monkeypatch.setattr(git_adapter, "DEPTH", 5)
    monkeypatch.setattr(git_adapter, "MAX_DEPTH", 40)
    pushed = commit(repository(git_server, repo_name, tmp_path / "a"))
    work = tmp_path / "busy"
    git("clone", "--quiet", git_server.repo_url(repo_name, with_credentials=True), str(work),
        home=tmp_path)
    for i in range(12):  # more than DEPTH commits on top, none touching the patch's file
        (work / "README.md").write_text(f"{i}\n")
        git("add", "README.md", cwd=work, home=tmp_path)
        git("commit", "--quiet", "-m", f"busy {i}", cwd=work, home=tmp_path)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work, home=tmp_path)

    def revert(cache: str, *, patch: str = "web-fix", commit: str = pushed.sha):
        return repository(git_server, repo_name, tmp_path / cache).revert(
            branch="main", commit=commit,
            original=lambda m: writeback.patch_trailer(m) == patch,
            message=writeback.revert_message("x", patch=patch, reason="unhealthy"),
            found=lambda m: writeback.revert_trailer(m) == patch)

    # A fresh clone sees 5 commits: neither the trailer nor the commit; deepened, reverted.
    back = revert("fresh")
    assert back.created
    check = tmp_path / "check"
    history(git_server, repo_name, tmp_path)
    assert git("show", "HEAD:apps/web/deploy.yaml", cwd=check) == MANIFEST
    # Beyond MAX_DEPTH it stops deepening, and says the revert failed.
    for i in range(45):
        git_server.commit(repo_name, {"README.md": f"more {i}\n"}, f"more {i}")
    with pytest.raises(ConfigurationError) as raised:
        revert("fresh2", patch="gone", commit=pushed.sha)
    assert raised.value.reason == "GitRevertFailed"
    assert "not in the last 40 commits of main" in str(raised.value)


def test_argo_cd_settings_on_a_flux_workload_say_what_to_fix(git_server, repo_name, tmp_path):
    flux = gitops.Owner(tool=gitops.Tool.FLUX_KUSTOMIZATION, namespace="flux-system",
                        name="apps", evidence=gitops.FLUX_KUSTOMIZE_NAME)
    refused = run(git_server, repo_name, tmp_path / "c", FORWARD, owner=flux,
                  argoCD={"sourceType": "Kustomize"})
    assert refused.reason == "ArgoCDSettingsOnFluxWorkload" and not refused.sha
    assert "Flux Kustomization flux-system/apps" in refused.message
    assert "Remove argoCD from the policy" in refused.message
    assert len(history(git_server, repo_name, tmp_path)) == 1


def test_the_forge_that_cannot_say_is_the_polls_reason(git_server, repo_name, tmp_path):
    async def down(provider: str, **kw: Any) -> forge.PullRequestState:
        raise TransientError("GitHub at api.github.com: 502", reason="GitForgeUnavailable")

    polled = run(git_server, repo_name, tmp_path / "c", GitWrite(
        target=WEB, image=NEW.reference(), previous="registry.test/app:1.0",
        poll_pull_request=True, pull_request_number=3), state_of=down, **PR_SETTINGS)
    assert (polled.pull_request_reason, polled.pull_request_state) == ("GitForgeUnavailable", "")
    no_settings = run(git_server, repo_name, tmp_path / "c", GitWrite(
        target=WEB, image=NEW.reference(), previous="registry.test/app:1.0",
        poll_pull_request=True, pull_request_number=3), state_of=down)
    assert no_settings.pull_request_reason == "GitForgeRejected"


# --- the whole review against the forge API stand-in (tests/support/forgeserver.py) ----------

@pytest.fixture(scope="module")
def forge_server(git_server: GitServer):
    server = ForgeServer.start(git_server)
    yield server
    server.stop()


@pytest.mark.parametrize(("provider", "method"), [("GitHub", "squash"), ("GitLab", "squash"),
                                                  ("GitHub", "merge")])
def test_a_request_is_opened_polled_merged_and_its_merge_reverted_through_the_forge_api(
        git_server, forge_server, tmp_path, provider, method):
    repo = f"team/{provider.lower()}-{method}"
    git_server.create_repo(repo)
    git_server.commit(repo, {"apps/web/deploy.yaml": MANIFEST}, "the app")
    api = forge_server.github_api if provider == "GitHub" else forge_server.gitlab_api
    settings = {"pushBranch": "imagepatch/web", "pullRequest": {
        "provider": provider, "tokenSecretRef": {"name": "forge"}, "apiURL": api}}
    secrets = {"imagepatch-system/git": {"username": git_server.user,
                                         "password": git_server.password},
               "imagepatch-system/forge": {"token": forge_server.token}}

    def step(act: GitWrite, cache: str = "c"):
        return run(git_server, repo, tmp_path / cache, act, secrets=secrets, **settings)

    done = step(FORWARD)
    asked = step(replace(FORWARD, pull_request=True))
    assert (asked.pull_request_number, asked.pull_request_reason) == (1, "")
    assert step(replace(FORWARD, pull_request=True)).pull_request_number == 1  # never a second
    assert [p.number for p in forge_server.pulls if p.repo == repo] == [1]
    poll = replace(FORWARD, poll_pull_request=True, pull_request_number=1)
    assert step(poll).pull_request_state == "open"
    merged = forge_server.merge(repo, 1, method)
    state = step(poll)
    assert (state.pull_request_state, state.merge_commit) == ("merged", merged)
    assert state.merged_at
    # The revert, with nothing recorded of the merge (a restart): asked of the forge again.
    back = step(GitWrite(target=WEB, image="registry.test/app:1.0", previous=NEW.reference(),
                         revert=True, commit=done.sha, pull_request_number=1), cache="fresh")
    assert back.sha and back.branch == "main" and not back.reason
    history(git_server, repo, tmp_path)
    assert git("show", "HEAD:apps/web/deploy.yaml", cwd=tmp_path / "check") == MANIFEST


def test_a_closed_request_and_a_wrong_token_as_the_forge_api_answers(git_server, forge_server,
                                                                     tmp_path):
    repo = "team/closed"
    git_server.create_repo(repo)
    git_server.commit(repo, {"apps/web/deploy.yaml": MANIFEST}, "the app")
    settings = {"pushBranch": "imagepatch/web", "pullRequest": {
        "provider": "GitHub", "tokenSecretRef": {"name": "forge"},
        "apiURL": forge_server.github_api}}
    secrets = {"imagepatch-system/git": {"username": git_server.user,
                                         "password": git_server.password},
               "imagepatch-system/forge": {"token": forge_server.token}}
    run(git_server, repo, tmp_path / "c", FORWARD, secrets=secrets, **settings)
    opened = run(git_server, repo, tmp_path / "c", replace(FORWARD, pull_request=True),
                 secrets=secrets, **settings)
    forge_server.close(repo, opened.pull_request_number)
    poll = replace(FORWARD, poll_pull_request=True, pull_request_number=opened.pull_request_number)
    closed = run(git_server, repo, tmp_path / "c", poll, secrets=secrets, **settings)
    assert closed.pull_request_state == "closed"
    wrong = {**secrets, "imagepatch-system/forge": {"token": "nope"}}
    refused = run(git_server, repo, tmp_path / "c", poll, secrets=wrong, **settings)
    assert refused.pull_request_reason == "GitForgeAuthFailed" and "nope" not in (
        refused.pull_request_message)


def test_a_revert_is_made_even_if_argo_cd_settings_were_added_since(git_server, repo_name,
                                                                    tmp_path):
    flux = gitops.Owner(tool=gitops.Tool.FLUX_KUSTOMIZATION, namespace="flux-system",
                        name="apps", evidence=gitops.FLUX_KUSTOMIZE_NAME)
    done = run(git_server, repo_name, tmp_path / "c", FORWARD, owner=flux)
    back = run(git_server, repo_name, tmp_path / "c", GitWrite(
        target=WEB, image="registry.test/app:1.0", previous=NEW.reference(), revert=True,
        commit=done.sha), owner=flux, argoCD={"sourceType": "Kustomize"})
    assert back.sha and not back.reason
