"""spec.rollout.gitWriteBack parsed (model/policy.py); refusals are in tests/data/policies/."""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.model.errors import SpecError
from imagepatch.model.policy import (
    ArgoCDSourceType,
    PullRequestProvider,
    RolloutMode,
    parse_policy,
)


def rollout(write_back: dict, mode: str = "GitWriteBack"):
    body = {"metadata": {"name": "p"},
            "spec": {"namespaceSelector": {}, "rollout": {"mode": mode, "gitWriteBack": write_back}}}
    return parse_policy(body).spec.rollout


def test_every_field_is_read():
    r = rollout({
        "url": "https://git.example.com/team/apps.git", "branch": "release/1", "path": "apps/web",
        "secretRef": {"name": "git-creds"}, "author": {"name": "Bot", "email": "bot@example.com"},
        "messageTemplate": "fix {workload}", "pushBranch": "imagepatch/web",
        "pullRequest": {"provider": "GitLab", "apiURL": "https://gitlab.example.com/api/v4",
                        "tokenSecretRef": {"name": "gitlab"}},
        "signingKey": {"name": "signing"}, "helmValuesKey": "app.image", "applyTimeout": "3m",
    })
    w = r.git_write_back
    assert r.mode is RolloutMode.GIT_WRITE_BACK and w is not None
    assert (w.url, w.branch, w.path, w.secret_name) == (
        "https://git.example.com/team/apps.git", "release/1", "apps/web", "git-creds")
    assert (w.author_name, w.author_email, w.message_template) == ("Bot", "bot@example.com",
                                                                  "fix {workload}")
    assert w.push_branch == "imagepatch/web" and w.pull_request is not None
    assert w.pull_request.provider is PullRequestProvider.GITLAB
    assert w.pull_request.token_secret == "gitlab"
    assert (w.signing_key_secret, w.helm_values_key) == ("signing", "app.image")
    assert w.apply_timeout == dt.timedelta(minutes=3) and not w.ssh
    assert w.describe() == "https://git.example.com/team/apps.git branch imagepatch/web"


def test_defaults_and_ssh_urls():
    w = rollout({"url": "git@github.com:team/apps.git", "secretRef": {"name": "k"}}).git_write_back
    assert w is not None and w.ssh and w.branch == "main" and w.path == "."
    assert w.apply_timeout == dt.timedelta(minutes=10) and w.pull_request is None
    assert w.describe() == "git@github.com:team/apps.git branch main"
    ssh = rollout({"url": "ssh://git@git.example.com:2222/apps.git", "secretRef": {"name": "k"}})
    assert ssh.git_write_back is not None and ssh.git_write_back.ssh


def test_write_back_settings_may_wait_under_another_mode():
    r = rollout({"url": "https://git.example.com/a.git", "secretRef": {"name": "k"}}, mode="Skip")
    assert r.mode is RolloutMode.SKIP and r.git_write_back is not None


@pytest.mark.parametrize(("field", "value", "where"), [
    ("branch", "a..b", "spec.rollout.gitWriteBack.branch"),
    ("author", {"email": "not an email"}, "spec.rollout.gitWriteBack.author.email"),
    ("helmValuesKey", "a..b", "spec.rollout.gitWriteBack.helmValuesKey"),
    ("applyTimeout", "10s", "spec.rollout.gitWriteBack.applyTimeout"),
    ("secretRef", {"name": "Not_A_Name"}, "spec.rollout.gitWriteBack.secretRef.name"),
    ("argoCD", {"sourceType": "Jsonnet"}, "spec.rollout.gitWriteBack.argoCD.sourceType"),
    ("argoCD", {"sourceType": "Helm", "helmImageParameter": "a b"},
     "spec.rollout.gitWriteBack.argoCD.helmImageParameter"),
    ("pullRequest", {"provider": "GitHub", "apiURL": "ftp://x",
                     "tokenSecretRef": {"name": "t"}}, "spec.rollout.gitWriteBack.pullRequest.apiURL"),
])
def test_bad_fields_are_named(field, value, where):
    spec = {"url": "https://git.example.com/a.git", "secretRef": {"name": "k"},
            "pushBranch": "b", field: value}
    with pytest.raises(SpecError) as caught:
        rollout(spec)
    assert caught.value.field == where


def test_argo_cd_override_settings_and_their_defaults():
    bare = rollout({"url": "https://git.example.com/a.git", "secretRef": {"name": "k"},
                    "argoCD": {"sourceType": "Kustomize"}}).git_write_back
    assert bare is not None and bare.argo_cd is not None
    assert (bare.argo_cd.source_type, bare.argo_cd.namespace) == (
        ArgoCDSourceType.KUSTOMIZE, "argocd")
    assert (bare.argo_cd.helm_image_parameter, bare.argo_cd.helm_tag_parameter) == (
        "image.repository", "image.tag")
    helm = rollout({"url": "https://git.example.com/a.git", "secretRef": {"name": "k"},
                    "argoCD": {"sourceType": "Helm", "argoCDNamespace": "gitops",
                               "helmImageParameter": "app.image.repo",
                               "helmTagParameter": "app.image.tag"}}).git_write_back
    assert helm is not None and helm.argo_cd is not None
    assert (helm.argo_cd.source_type, helm.argo_cd.namespace, helm.argo_cd.helm_image_parameter,
            helm.argo_cd.helm_tag_parameter) == (ArgoCDSourceType.HELM, "gitops",
                                                 "app.image.repo", "app.image.tag")
    plain = rollout({"url": "https://git.example.com/a.git", "secretRef": {"name": "k"}})
    assert plain.git_write_back is not None and plain.git_write_back.argo_cd is None
