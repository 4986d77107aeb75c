"""The plugin's pure helpers: KIND/NAME, ages and columns like kubectl's, why's wording.

The verbs themselves run against the real API server in
tests/integration/test_kubectl_plugin.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
from types import SimpleNamespace

import pytest

from imagepatch.cli import build_parser
from imagepatch.cli_plugin import (
    _age,
    _targets,
    _workload,
    complete,
    completion_main,
    completion_script,
    explain,
    table,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "kind"), [("deploy/web", "Deployment"),
                                             ("StatefulSet/db", "StatefulSet"),
                                             ("ds/agent", "DaemonSet"), ("cj/nightly", "CronJob")])
def test_workloads_are_named_as_kubectl_names_them(text: str, kind: str) -> None:
    assert _workload(text) == (kind, text.split("/")[1])


@pytest.mark.parametrize("text", ["web", "pod/web", "deploy/"])
def test_other_workload_names_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KIND/NAME"):
        _workload(text)


@pytest.mark.parametrize(("seconds", "age"), [(5, "5s"), (90, "1m"), (7199, "119m"),
                                               (7200, "2h"), (3 * 86400, "3d"), (-3, "0s")])
def test_ages_read_like_kubectls(seconds: int, age: str) -> None:
    created = (NOW - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    assert _age(created, NOW) == age
    assert _age("", NOW) == "<unknown>"


def test_targets_and_columns() -> None:
    t = [{"kind": "Deployment", "namespace": "a", "name": f"w{i}"} for i in range(4)]
    assert _targets({"targets": t[:1]}) == "deployment/a/w0"
    assert _targets({"targets": t}) == "deployment/a/w0,deployment/a/w1 +2"
    assert _targets({}) == "<none>"
    assert table([("NAME", "AGE"), ("long-name", "1d")]) == "NAME        AGE\nlong-name   1d\n"


def _row(**over: object) -> SimpleNamespace:
    base = dict(kind="Deployment", namespace="shop", name="web", policy="critical",
                state="Compliant", reason="Compliant", message="", since=None,
                out_of_compliance_since=None, containers=(), finding_ids=(), last_patch=None)
    return SimpleNamespace(**{**base, **over})


def test_why_in_plain_words() -> None:
    container = SimpleNamespace(name="app", image="r/web:1", digest="sha256:aa", state="Failed",
                                reason="RolledBack", message="crash looping", base="r/base:3",
                                base_outdated=True, base_digest="sha256:b0",
                                base_current="sha256:b1", findings_over_baseline=2)
    patch = SimpleNamespace(name="web-1", phase="RolledBack", at=NOW - dt.timedelta(hours=3),
                            reason="BaseImageOutdated", result="rolled back: crash looping",
                            approval={"decision": "Approved", "by": "bob", "reason": "ok"})
    out = explain(_row(state="Failed", reason="RolledBack", message="rolled back",
                       since=NOW - dt.timedelta(hours=2),
                       out_of_compliance_since=NOW - dt.timedelta(days=2),
                       containers=(container,), finding_ids=("CVE-1",), last_patch=patch),
                  SimpleNamespace(exists=False), NOW)
    assert out.splitlines() == [
        "Deployment shop/web is Failed (since 2026-03-01 10:00:00Z, 2h ago).",
        "Policy: critical (no such policy).",
        "Why: RolledBack: rolled back.",
        "Out of compliance (since 2026-02-27 12:00:00Z, 2d ago).",
        "Container app: r/web:1 (sha256:aa)",
        "  state Failed, RolledBack: crash looping",
        "  base image r/base:3: outdated (built on sha256:b0, latest sha256:b1)",
        "  findings over the policy's baseline: 2",
        "Findings: CVE-1.",
        "Last patch: web-1, RolledBack (since 2026-03-01 09:00:00Z, 3h ago), for "
        "BaseImageOutdated.",
        "  result: rolled back: crash looping",
        "  Approved by bob: ok",
    ]


def test_why_without_a_patch_or_a_reason() -> None:
    out = explain(_row(message="all current"), None, NOW)
    assert "Why: all current." in out and "No ImagePatch concerns it." in out
    plain = explain(_row(policy=""), None, NOW)
    assert "Policy" not in plain and "Why" not in plain


def test_completion_scripts_name_the_program_and_verbs() -> None:
    for shell in ("bash", "zsh"):
        script = completion_script(shell, "kubectl-imagepatch")
        assert "_kubectl_imagepatch" in script and "retrigger" in script
    assert completion_script("zsh", "imagepatch").startswith("#compdef imagepatch")


def test_both_programs_share_the_verbs() -> None:
    args = build_parser("kubectl imagepatch").parse_args(["reject", "p", "--reason", "no"])
    assert (args.decision, args.reason, args.name) == ("Rejected", "no", "p")


@pytest.mark.parametrize(("words", "candidates", "directive"), [
    ([], list(("approve", "reject", "why", "hold", "release", "list", "report", "retrigger",
               "completion", "version")), 4),
    (["a"], ["approve"], 4),
    (["h"], ["hold"], 4),
    (["hold", "d"], ["deploy/", "ds/", "deployment/", "daemonset/"], 6),
    (["release", "st"], ["sts/", "statefulset/"], 6),
    (["hold", "deploy/web", "--u"], ["--until"], 4),
    (["reject", "p", "--re"], ["--reason"], 4),
    (["completion", ""], ["bash", "zsh"], 4),
    (["why", "c"], ["cj/", "cronjob/"], 6),
    (["why", "deploy/"], [], 4),
    (["approve", ""], [], 4),
])
def test_kubectl_completion_candidates(words: list[str], candidates: list[str],
                                       directive: int) -> None:
    assert complete(words) == (candidates, directive)


def test_kubectl_completion_prints_cobras_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert completion_main(["li"]) == 0
    assert capsys.readouterr().out == "list\n:4\n"


def test_completion_scripts_complete_the_kinds_of_hold_and_release() -> None:
    for shell in ("bash", "zsh"):
        script = completion_script(shell, "kubectl-imagepatch")
        assert '" why hold release "' in script and "--until" in script


@pytest.mark.parametrize(("until", "problem"), [
    ("31d", "a hold lasts at most 30 days"),
    ("next week", "want a duration (90m, 12h, 3d, 1w)"),
])
def test_hold_refuses_an_until_before_asking_the_cluster(
    until: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagepatch.cli import main

    # No kubeconfig is read: the refusal comes first.
    assert main(["hold", "deploy/web", "--until", until, "--kubeconfig", "/nonexistent"],
                prog="kubectl imagepatch") == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl imagepatch hold: --until") and problem in err


def test_hold_and_release_name_the_workload() -> None:
    parser = build_parser("kubectl imagepatch")
    args = parser.parse_args(["hold", "sts/db", "-n", "shop", "--reason", "freeze"])
    assert (args.workload, args.namespace, args.until, args.reason) == (
        ("StatefulSet", "db"), "shop", None, "freeze")
    assert parser.parse_args(["release", "cj/nightly"]).workload == ("CronJob", "nightly")


@pytest.mark.parametrize(("kind", "verb", "call"), [
    ("CronJob", "patch", "patch_namespaced_cron_job"),
    ("StatefulSet", "read", "read_namespaced_stateful_set"),
    ("DaemonSet", "patch", "patch_namespaced_daemon_set"),
    ("Deployment", "read", "read_namespaced_deployment"),
])
def test_each_kind_is_read_and_patched_through_its_own_api(kind: str, verb: str,
                                                           call: str) -> None:
    from kubernetes import client

    from imagepatch.cli_plugin import _workload_api

    assert _workload_api(client.ApiClient(), kind, verb).__name__ == call
