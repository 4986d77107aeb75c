"""``spec.rebuild.allowed``: which rebuilds a workload's annotation may ask for (issue #16)."""

from __future__ import annotations

import pytest

from imagepatch.model import SpecError, parse_policy_spec
from imagepatch.model.policy import AllowedRebuilds, RebuildStrategy

SELECTOR = {"matchLabels": {"imagepatch.dev/enabled": "true"}}


def rebuild_of(rebuild: dict):
    return parse_policy_spec({"namespaceSelector": SELECTOR, "rebuild": rebuild}).rebuild


def test_parses_strategies_projects_and_templates() -> None:
    rebuild = rebuild_of({"strategy": "external", "allowed": {
        "strategies": ["codebuild", "job"], "codebuildProjects": ["team-a-*", "shared"],
        "jobTemplates": ["buildah-rebuild"]}})
    assert rebuild.allowed == AllowedRebuilds(
        strategies=(RebuildStrategy.CODEBUILD, RebuildStrategy.JOB),
        codebuild_projects=("team-a-*", "shared"), job_templates=("buildah-rebuild",))


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        ("codebuild:team-a-api", True),       # a glob match
        ("codebuild:shared", True),
        ("codebuild:team-b-api", False),      # outside the globs
        ("job:buildah-rebuild", True),
        ("job:other-template", False),
        ("rebase", False),                    # strategy not listed
        ("external", False),                  # not even the policy's own, once allowed is set
        ("kaniko:x", False),                  # no such strategy
    ],
)
def test_requests_inside_allowed_only(requested: str, allowed: bool) -> None:
    rebuild = rebuild_of({"strategy": "external", "allowed": {
        "strategies": ["codebuild", "job"], "codebuildProjects": ["team-a-*", "shared"],
        "jobTemplates": ["buildah-rebuild"]}})
    assert (rebuild.refusal(requested) is None) is allowed


def test_refusal_names_the_field_to_change() -> None:
    rebuild = rebuild_of({"strategy": "codebuild", "codebuild": {"project": "payments"},
                          "allowed": {"strategies": ["codebuild"], "codebuildProjects": ["payments"]}})
    assert "spec.rebuild.allowed.codebuildProjects" in rebuild.refusal("codebuild:admin-deploy")
    assert "spec.rebuild.allowed.strategies" in rebuild.refusal("job:anything")
    templates = rebuild_of({"strategy": "external", "allowed": {"strategies": ["job"], "jobTemplates": ["a"]}})
    assert "spec.rebuild.allowed.jobTemplates" in templates.refusal("job:b")
    assert "names no strategy" in templates.refusal("docker:build")


def test_default_allows_only_the_policys_own_strategy_project_and_template() -> None:
    codebuild = rebuild_of({"strategy": "codebuild", "codebuild": {"project": "payments"}})
    assert codebuild.allowed is None
    assert codebuild.refusal("codebuild:payments") is None
    assert codebuild.refusal("codebuild") is None  # no project: the policy's own
    assert "codebuildProjects" in codebuild.refusal("codebuild:other")
    refused = codebuild.refusal("rebase")
    assert "spec.rebuild.allowed.strategies" in refused and "default: only codebuild" in refused

    job = rebuild_of({"strategy": "job", "job": {"template": "buildah-rebuild"}})
    assert job.refusal("job:buildah-rebuild") is None
    assert "jobTemplates" in job.refusal("job:privileged-build")

    external = rebuild_of({})
    assert external.refusal("external") is None
    assert external.refusal("codebuild:anything") is not None


@pytest.mark.parametrize(
    ("allowed", "field"),
    [
        ({"strategies": ["docker"]}, "spec.rebuild.allowed.strategies[0]"),
        ({"strategies": "codebuild"}, "spec.rebuild.allowed.strategies"),
        ({"strategies": ["codebuild"], "codebuildProjects": ["bad name!"]}, "spec.rebuild.allowed.codebuildProjects[0]"),
        ({"strategies": ["job"], "jobTemplates": ["Not_A_Name"]}, "spec.rebuild.allowed.jobTemplates[0]"),
        ({"codebuildProjects": ["team-a-*"]}, "spec.rebuild.allowed.strategies"),  # projects without codebuild
        ({"strategies": ["codebuild"], "jobTemplates": ["a"]}, "spec.rebuild.allowed.strategies"),
        ("everything", "spec.rebuild.allowed"),
    ],
)
def test_malformed_allowed_names_the_field(allowed, field: str) -> None:
    with pytest.raises(SpecError) as err:
        rebuild_of({"strategy": "external", "allowed": allowed})
    assert err.value.field == field


def test_an_override_is_its_own_patch_and_the_default_keeps_its_key() -> None:
    from imagepatch.core.compliance import PatchIntent, with_rebuild_override

    intent = PatchIntent(name="app-0123456789", key="r/app:1|sha256:a|BaseImageOutdated|sha256:b",
                         image="r/app", current_digest="sha256:a", reason="BaseImageOutdated",
                         evidence={}, tag="1")
    assert with_rebuild_override(intent, "") is intent
    rebase = with_rebuild_override(intent, "rebase")
    codebuild = with_rebuild_override(intent, "codebuild:team-a")
    assert len({intent.key, rebase.key, codebuild.key}) == 3
    assert len({intent.name, rebase.name, codebuild.name}) == 3
    assert rebase == with_rebuild_override(intent, "rebase"), "stable: re-evaluation finds the same patch"
    assert rebase.name.startswith("app-") and len(rebase.name) <= 63
