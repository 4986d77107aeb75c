"""reconcile/writeback.py's pull request step and the owner handed to it, no Git server.

In-memory stand-ins of our own adapters only.

The token comes from pullRequest's Secret in the operator's namespace; the
forge's answer (or its refusal, as a GitForge* reason) goes back to the
planner in the GitResult, never raised. The forge's HTTP shape is
tests/unit/test_writeback_forge.py's business; the commit before it is
tests/integration/test_git_writeback.py's.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from typing import Any

import pytest

from imagepatch.adapters import forge
from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.core import gitops
from imagepatch.core.rollout import GitResult, GitWrite, Workload
from imagepatch.model.imagepatch import Target, parse_imagepatch
from imagepatch.model.policy import parse_policy_spec
from imagepatch.reconcile import rollouts
from imagepatch.reconcile.writeback import GitWriter

URL = "https://github.com/team/apps.git"
WEB = Target(namespace="default", name="web", container="web")
ASK = GitWrite(target=WEB, image="registry.test/app:1.1@sha256:" + "b" * 64,
               previous="registry.test/app:1.0", pull_request=True)
PATCH = parse_imagepatch({"metadata": {"name": "web-fix"}, "spec": {
    "image": "registry.test/app", "policy": "p", "reason": "Vulnerable"}})


class Secrets:
    """The one Kube call GitWriter makes."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        data = self.secrets.get(f"{namespace}/{name}")
        if data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


class Forge:
    """adapters.forge.open_pull_request's stand-in: remembers the calls, answers or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    async def __call__(self, provider: str, **kw: Any) -> forge.PullRequest:
        self.calls.append({"provider": provider, **kw})
        if self.error is not None:
            raise self.error
        return forge.PullRequest(number=7, url="https://github.com/team/apps/pull/7",
                                 created=len(self.calls) == 1)


def policy(**write_back: Any):
    return parse_policy_spec({"namespaceSelector": {}, "rollout": {
        "mode": "GitWriteBack", "gitWriteBack": {
            "url": URL, "secretRef": {"name": "git"}, "pushBranch": "imagepatch/web",
            "pullRequest": {"provider": "GitHub", "tokenSecretRef": {"name": "forge"},
                            "apiURL": "https://ghe.example.com/api/v3"},
            **write_back}}})


def run(opener: Forge, secrets: dict[str, dict[str, str]] | None = None, spec: Any = None):
    kube = Secrets({"ops/forge": {"token": "t0ken"}} if secrets is None else secrets)
    writer = GitWriter(kube, "ops", open_pull_request=opener)  # type: ignore[arg-type]
    return asyncio.run(writer.run(ASK, patch=PATCH, policy=policy() if spec is None else spec))


def test_the_request_is_opened_from_the_push_branch_with_the_token():
    opener = Forge()
    done = run(opener)
    assert (done.pull_request_url, done.pull_request_number) == (
        "https://github.com/team/apps/pull/7", 7)
    assert not done.reason and not done.pull_request_reason and not done.revert
    [call] = opener.calls
    assert (call["provider"], call["repository_url"], call["token"], call["head"], call["base"],
            call["api_url"]) == ("GitHub", URL, "t0ken", "imagepatch/web", "main",
                                 "https://ghe.example.com/api/v3")
    assert "default/web" in call["title"] and "Imagepatch-Patch: web-fix" in call["body"]
    again = run(opener)  # the forge adapter finds the open one: the same request
    assert again.pull_request_url == done.pull_request_url


def test_a_forge_refusal_is_its_reason_never_raised():
    refused = run(Forge(ConfigurationError("GitHub refused the token (401)",
                                           reason="GitForgeAuthFailed")))
    assert refused.pull_request_reason == "GitForgeAuthFailed" and not refused.pull_request_url
    assert "401" in refused.pull_request_message and "t0ken" not in refused.pull_request_message
    down = run(Forge(TransientError("GitHub answered 503", reason="GitForgeUnavailable")))
    assert down.pull_request_reason == "GitForgeUnavailable"
    other = run(Forge(ConfigurationError("odd", reason="Something")))
    assert other.pull_request_reason == "GitForgeRejected"


def test_a_missing_or_empty_token_secret_says_which_field():
    opener = Forge()
    missing = run(opener, secrets={})
    assert missing.pull_request_reason == "GitForgeAuthFailed"
    assert "ops/forge" in missing.pull_request_message and (
        "pullRequest.tokenSecretRef" in missing.pull_request_message)
    empty = run(opener, secrets={"ops/forge": {"user": "x"}})
    assert empty.pull_request_reason == "GitForgeAuthFailed" and "no key token" in (
        empty.pull_request_message)
    assert opener.calls == []


def test_no_request_without_its_settings_or_the_mode():
    opener = Forge()
    plain = parse_policy_spec({"namespaceSelector": {}, "rollout": {
        "mode": "GitWriteBack", "gitWriteBack": {"url": URL, "secretRef": {"name": "git"}}}})
    none = run(opener, spec=plain)
    assert not none.pull_request_url and not none.pull_request_reason
    gone = run(opener, spec=parse_policy_spec({"namespaceSelector": {}}))
    assert gone.pull_request_reason == "GitForgeRejected" and "GitWriteBack" in (
        gone.pull_request_message)
    assert opener.calls == []


# --- reconcile/rollouts.py: the workload's GitOps owner goes with the write-back ------------

class Writer:
    """GitWriter's stand-in: remembers the owner it was handed."""

    def __init__(self) -> None:
        self.owners: list[gitops.Owner | None] = []

    async def run(self, act: GitWrite, *, patch: Any, policy: Any,
                  owner: gitops.Owner | None = None) -> GitResult:
        self.owners.append(owner)
        return GitResult(target=act.target, sha="c" * 40)


def write_back(metadata: dict[str, Any] | None) -> gitops.Owner | None:
    writer = Writer()
    tools = rollouts.RebuildTools(registry=None, builders={}, git=writer)  # type: ignore[arg-type]
    workload = Workload(target=WEB, deployment=None if metadata is None else {
        "metadata": metadata})
    done = asyncio.run(rollouts._write_back(tools, ASK, PATCH, policy(), workload))
    assert done.sha == "c" * 40
    [owner] = writer.owners
    return owner


def test_an_argo_cd_application_is_the_owner_handed_to_the_writer():
    app = write_back({"annotations": {
        gitops.ARGOCD_TRACKING_ID: "apps_web:apps/Deployment:default/web"}})
    assert app is not None and app.tool is gitops.Tool.ARGO_CD_APPLICATION
    assert (app.namespace, app.name) == ("apps", "web")
    flux = write_back({"labels": {"kustomize.toolkit.fluxcd.io/name": "apps",
                                  "kustomize.toolkit.fluxcd.io/namespace": "flux"}})
    assert flux is not None and flux.tool is gitops.Tool.FLUX_KUSTOMIZATION
    assert write_back({}) is None and write_back(None) is None


def test_a_bad_message_template_is_a_reason_not_a_crash():
    opener = Forge()
    bad = run(opener, spec=policy(messageTemplate="fix {image}"))
    assert bad.pull_request_reason == "GitForgeRejected"
    assert bad.pull_request_message.startswith("spec.rollout.gitWriteBack.messageTemplate: ")
    assert opener.calls == []


# --- what became of the request: polled, and a merged one's commit for the revert ------------

POLL = GitWrite(target=WEB, image=ASK.image, previous=ASK.previous, poll_pull_request=True,
                pull_request_number=7)


class StateOf:
    """adapters.forge.pull_request_state's stand-in."""

    def __init__(self, answer: forge.PullRequestState | Exception) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, provider: str, **kw: Any) -> forge.PullRequestState:
        self.calls.append({"provider": provider, **kw})
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def writer(state_of: StateOf) -> GitWriter:
    return GitWriter(Secrets({"ops/forge": {"token": "t0ken"}}), "ops",  # type: ignore[arg-type]
                     open_pull_request=Forge(), pull_request_state=state_of)


MERGED = forge.PullRequestState(state="merged", url="https://github.com/team/apps/pull/7",
                                merge_commit="e" * 40, merged_at="2026-12-06T01:00:00Z")


def test_the_poll_asks_the_forge_with_the_token_and_hands_back_its_answer():
    state_of = StateOf(MERGED)
    done = asyncio.run(writer(state_of).run(POLL, patch=PATCH, policy=policy()))
    assert (done.pull_request_state, done.merge_commit, done.merged_at) == (
        "merged", "e" * 40, "2026-12-06T01:00:00Z")
    assert not done.sha and not done.reason and not done.pull_request_reason
    [call] = state_of.calls
    assert (call["provider"], call["number"], call["token"], call["api_url"]) == (
        "GitHub", 7, "t0ken", "https://ghe.example.com/api/v3")


def test_a_poll_the_forge_cannot_answer_is_its_reason():
    down = StateOf(TransientError("GitHub answered 503", reason="GitForgeUnavailable"))
    done = asyncio.run(writer(down).run(POLL, patch=PATCH, policy=policy()))
    assert (done.pull_request_reason, done.pull_request_state) == ("GitForgeUnavailable", "")
    odd = StateOf(ConfigurationError("odd", reason="Something"))
    assert asyncio.run(writer(odd).run(POLL, patch=PATCH, policy=policy())
                       ).pull_request_reason == "GitForgeRejected"


def test_the_merge_commit_is_the_recorded_one_else_asked_else_none():
    wb = policy().rollout.git_write_back
    assert wb is not None
    revert = GitWrite(target=WEB, image=ASK.previous, previous=ASK.image, revert=True,
                      commit="c" * 40, pull_request_number=7)
    state_of = StateOf(MERGED)
    ask = writer(state_of)._merge_commit
    assert asyncio.run(ask(wb, revert)) == "e" * 40 and len(state_of.calls) == 1
    recorded = replace(revert, merge_commit="f" * 40)
    assert asyncio.run(ask(wb, recorded)) == "f" * 40 and len(state_of.calls) == 1
    assert asyncio.run(ask(wb, replace(revert, pull_request_number=0))) == ""
    still_open = StateOf(forge.PullRequestState(state="open"))
    assert asyncio.run(writer(still_open)._merge_commit(wb, revert)) == ""
    down = StateOf(TransientError("503", reason="GitForgeUnavailable"))
    assert asyncio.run(writer(down)._merge_commit(wb, revert)) == ""  # best effort
    plain = parse_policy_spec({"namespaceSelector": {}, "rollout": {
        "mode": "GitWriteBack", "gitWriteBack": {"url": URL, "secretRef": {"name": "git"}}}})
    assert plain.rollout.git_write_back is not None
    assert asyncio.run(writer(state_of)._merge_commit(plain.rollout.git_write_back, revert)) == ""
    # _state on a policy without pullRequest (a revert asks it only with one) says so.
    with pytest.raises(ConfigurationError, match="no longer sets"):
        asyncio.run(writer(state_of)._state(plain.rollout.git_write_back, 7))


def test_argo_cd_settings_on_a_flux_workload_are_refused_before_any_git_call():
    flux = gitops.Owner(tool=gitops.Tool.FLUX_KUSTOMIZATION, namespace="flux", name="apps",
                        evidence="kustomize.toolkit.fluxcd.io/name")
    spec = policy(argoCD={"sourceType": "Kustomize"})
    commit = replace(ASK, pull_request=False)
    kube = Secrets({})  # no Secret at all: the refusal comes first
    writer = GitWriter(kube, "ops", open_pull_request=Forge())  # type: ignore[arg-type]
    done = asyncio.run(writer.run(commit, patch=PATCH, policy=spec, owner=flux))
    assert done.reason == "ArgoCDSettingsOnFluxWorkload" and not done.transient
    assert done.message.startswith("Flux Kustomization flux/apps delivers this workload")
    assert "spec.rollout.gitWriteBack.argoCD" in done.message and not done.sha
    # A revert undoes what was written whatever the policy says now: it goes on to the
    # credentials (missing here), never stopped by the mismatch.
    revert = replace(commit, revert=True, commit="c" * 40)
    undone = asyncio.run(writer.run(revert, patch=PATCH, policy=spec, owner=flux))
    assert (undone.reason, undone.revert) == ("GitWriteBackFailed", True)
    assert undone.message.startswith("Secret ops/git (spec.rollout.gitWriteBack) not found")
