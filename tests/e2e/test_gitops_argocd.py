"""Git write-back to an Argo CD Application (issue 22): the override file is committed, Argo CD syncs it.

Given the real Argo CD application-controller and repo-server (built by
tests/cluster/build-argocd.sh, started once per session by the ``argocd``
fixture; the repo-server renders with the ``helm`` and ``kustomize`` that
tests/cluster/build-helm.sh and build-kustomize.sh build), the real Git server
over HTTP with basic auth (a repository Secret gives Argo CD the credentials),
and a Helm chart or a kustomization an Application syncs automatically into a
namespace, a policy with ``rollout.mode: GitWriteBack`` and
``gitWriteBack.argoCD: {sourceType: Helm}`` (or ``Kustomize``) makes the
operator commit the Application's override file, ``.argocd-source-<app>.yaml``,
instead of patching the live Deployment: Helm parameters (``image.repository``
and ``image.tag`` = ``tag@digest``), or a kustomize images entry
(``repo:tag@digest``, which the repo-server passes to ``kustomize edit set
image``):

- forward, for a Helm chart and two kustomizations (the manifest names the
  image by tag; or a bare name the kustomization's ``images:`` entry gives its
  repository and tag): the commit lands on the branch, Argo CD's
  repo-server renders the path with the override, the controller syncs it,
  the health gate passes and the ImagePatch Succeeds; the Deployment's image
  was written by Argo CD (its field manager), never by the operator;
- a crash-looping digest (Helm): the gate fails, the rollback is a revert
  commit (the override file goes away), Argo CD syncs it and the Deployment is
  back on the chart's own tag.

Argo CD compares each Application every 10 s here (``timeout.reconciliation``,
default 180 s plus up to 60 s of jitter: docs/gitops.md says what a user sees
with the defaults). Figures printed: ImagePatch created -> commit recorded ->
Argo CD synced -> Succeeded, and the rollback's.
"""

# The operator and ``given`` are tests/e2e/conftest.py's; the write-back Secret is
# test_gitops_writeback.py's module fixture, imported here: tests taking it as an argument
# "redefine" it for ruff.
# ruff: noqa: F811

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagepatch.core import writeback
from tests.e2e.test_gitops_writeback import FAST_GATE, clone, follow, git_secret  # noqa: F401
from tests.support.argocd import ArgoCD
from tests.support.gitserver import GitServer, git
from tests.support.scenario import Scenario, fake_digest, unique

pytestmark = pytest.mark.kwok


@pytest.fixture(autouse=True)
def applications_deleted(given: Scenario, argocd: ArgoCD) -> Iterator[None]:
    """The test's Applications go before its namespaces (``given``'s cleanup): the session's
    Argo CD must not keep syncing into them."""
    yield
    argocd.cleanup()


def deployment(policy: str, image: str, *, crash_on: str = "") -> str:
    """Deployment ``web`` (annotated with ``policy``) whose container ``app`` runs ``image``."""
    labels = "        app: web\n"
    if crash_on:  # the kwok stages crash-loop the pods that run this digest
        labels += f"        sim.imagepatch.dev/crashloop-digest: \"{crash_on.split(':')[1][:16]}\"\n"
    return ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
            f"  annotations:\n    imagepatch.dev/policy: {policy}\n"
            "spec:\n  replicas: 1\n  progressDeadlineSeconds: 60\n"
            "  selector:\n    matchLabels:\n      app: web\n"
            f"  template:\n    metadata:\n      labels:\n{labels}"
            "    spec:\n      containers:\n        - name: app\n"
            f"          image: {image}\n")


def chart(policy: str, app: str, *, crash_on: str = "") -> dict[str, str]:
    """A Helm chart of Deployment ``web`` whose image is ``image.repository:image.tag``."""
    return {
        "deploy/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        "deploy/values.yaml": f"image:\n  repository: {app}\n  tag: \"1\"\n",
        "deploy/templates/web.yaml": deployment(
            policy, '"{{ .Values.image.repository }}:{{ .Values.image.tag }}"',
            crash_on=crash_on),
    }


KUSTOMIZATION = ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                 "resources:\n  - web.yaml\n")


def kustomization(policy: str, app: str, *, crash_on: str = "") -> dict[str, str]:
    """A kustomization of Deployment ``web``, whose manifest names the image by tag."""
    return {"deploy/kustomization.yaml": KUSTOMIZATION,
            "deploy/web.yaml": deployment(policy, f"{app}:1", crash_on=crash_on)}


def kustomization_renaming(policy: str, app: str, *, crash_on: str = "") -> dict[str, str]:
    """A kustomization whose ``images:`` entry gives the manifest's bare ``app`` its
    repository and tag (``newName``, ``newTag``): the common kustomize layout."""
    return {"deploy/kustomization.yaml": (f"{KUSTOMIZATION}images:\n  - name: app\n"
                                          f"    newName: {app}\n    newTag: \"1\"\n"),
            "deploy/web.yaml": deployment(policy, "app", crash_on=crash_on)}


# What each test's Application renders: its argoCD.sourceType and the files of its path.
LAYOUTS: dict[str, tuple[str, Callable[..., dict[str, str]]]] = {
    "helm": ("Helm", chart),
    "kustomize-tag": ("Kustomize", kustomization),
    "kustomize-renamed": ("Kustomize", kustomization_renaming),
}


def synced_by_argocd(given: Scenario, argocd: ArgoCD, git_server: GitServer, secret: str, *,
                     layout: str = "helm", crash_on: str = "",
                     apply_timeout: str = "3m") -> tuple[str, str, str, str]:
    """(namespace, repository and Application, policy, app image repository) of a Deployment
    an Argo CD Application syncs from a Helm chart or a kustomization (``LAYOUTS[layout]``)
    in Git."""
    source_type, files = LAYOUTS[layout]
    ns = given.namespace("argowb")
    app = f"registry.local/{unique('argowb')}/app"
    repo = unique("app")  # the policy names the repository before it exists
    policy = unique("pol")
    given.policy(policy, rollout={**FAST_GATE, "mode": "GitWriteBack", "gitWriteBack": {
        "url": git_server.repo_url(repo), "branch": "main", "path": "deploy",
        "secretRef": {"name": secret}, "author": {"name": "imagepatch", "email": "ip@example.test"},
        "applyTimeout": apply_timeout, "argoCD": {"sourceType": source_type}}})
    argocd.deliver_repo(git_server, ns, files(policy, app, crash_on=crash_on), repo=repo)
    dep = given.wait_available(ns, "web", 1)
    assert given.image_of(ns, "web") == f"{app}:1"
    # Argo CD's annotation tracking names the Application (in Argo CD's own namespace).
    tracking = dep["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"]
    assert tracking.startswith(f"{repo}:apps/Deployment:{ns}/web"), tracking
    return ns, repo, policy, app


def image_writers(given: Scenario, ns: str) -> set[str]:
    """The field managers of the Deployment's pod template."""
    live = json.loads(given.kube.kubectl("get", "deployment", "web", "-n", ns, "-o", "json",
                                         "--show-managed-fields"))
    return {m["manager"] for m in live["metadata"].get("managedFields", [])
            if '"f:template"' in json.dumps(m.get("fieldsV1", {}))}


def pinned_by_argocd(given: Scenario, argocd: ArgoCD, git_server: GitServer, secret: str,
                     work: Path, layout: str) -> tuple[str, str, Any]:
    """The forward write-back for ``layout``, checked up to the override file's content:
    (the app's image repository, the reference it pins, that file's YAML), with the
    repository's head checked out in ``work``."""
    ns, repo, policy, app = synced_by_argocd(given, argocd, git_server, secret, layout=layout)
    assert image_writers(given, ns) == {"argocd-controller"}  # Argo CD's apply wrote it
    patch, digest = unique("patch"), fake_digest(f"argocd-writeback-{layout}")
    target = f"{app}:1@{digest}"

    started = time.monotonic()
    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    seen = follow(given, patch, ns, target, started)
    print(f"\n[argocd {layout} writeback] created -> commit {seen.get('commit', -1):.1f}s"
          f" -> Argo CD synced {seen.get('applied', -1):.1f}s -> Succeeded "
          f"{seen.get('Succeeded', -1):.1f}s")

    done = given.get("imagepatch", patch)
    [entry] = done["status"]["rollouts"]
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert (entry["phase"], entry["gitBranch"]) == ("Healthy", "main")
    # The commit is the branch's head, carries the trailer, and writes only the override file.
    clone(git_server, repo, work)
    head = git("rev-parse", "HEAD", cwd=work).strip()
    assert entry["gitCommit"] == head
    assert writeback.patch_trailer(git("log", "-1", "--format=%B", cwd=work)) == patch
    changed = git("show", "--name-only", "--format=", "HEAD", cwd=work).split()
    assert changed == [f"deploy/.argocd-source-{repo}.yaml"]
    # Argo CD synced that commit; the live template carries repo:tag@digest, rendered by Argo CD.
    argocd.wait_synced(repo, head)
    status = argocd.application(repo)["status"]
    assert status["sync"]["revision"] == head
    assert target in status["summary"]["images"]
    assert given.image_of(ns, "web") == target
    # No one but Argo CD wrote the pod template: the operator never edited the Deployment.
    assert image_writers(given, ns) == {"argocd-controller"}
    return app, target, yaml.safe_load((work / changed[0]).read_text())


def test_write_back_commits_the_override_file_and_argocd_syncs_it(
    given: Scenario, argocd: ArgoCD, git_server: GitServer, git_secret: str, tmp_path
) -> None:
    work = tmp_path / "check"
    app, target, override = pinned_by_argocd(given, argocd, git_server, git_secret, work, "helm")
    tag_at_digest = target.removeprefix(f"{app}:")
    # Helm parameters, as strings: the chart's values file is untouched.
    assert {p["name"]: (p["value"], p["forceString"]) for p in override["helm"]["parameters"]} == {
        "image.repository": (app, True), "image.tag": (tag_at_digest, True)}
    assert (work / "deploy/values.yaml").read_text().endswith('tag: "1"\n')


@pytest.mark.parametrize("layout", ["kustomize-tag", "kustomize-renamed"])
def test_write_back_to_a_kustomize_application_sets_its_images_override(
    given: Scenario, argocd: ArgoCD, git_server: GitServer, git_secret: str, tmp_path,
    layout: str
) -> None:
    work = tmp_path / "check"
    _, target, override = pinned_by_argocd(given, argocd, git_server, git_secret, work, layout)
    # Argo CD's kustomize images override: one entry, the image as the workload runs it pinned
    # to tag@digest; the repo-server runs `kustomize edit set image <entry>`. A kustomization
    # with its own entry for the bare name gets this one after it, and kustomize applies them
    # in order (app -> repo:1 -> repo:1@digest). The commit touched nothing else
    # (pinned_by_argocd checks).
    assert override == {"kustomize": {"images": [target]}}


def test_a_crash_looping_digest_is_rolled_back_by_a_revert_argocd_syncs(
    given: Scenario, argocd: ArgoCD, git_server: GitServer, git_secret: str, tmp_path
) -> None:
    digest = fake_digest("argocd-writeback-crash")
    ns, repo, policy, app = synced_by_argocd(given, argocd, git_server, git_secret,
                                             crash_on=digest)
    patch = unique("patch")

    started = time.monotonic()
    given.imagepatch(patch, image=app, policy=policy, target_digest=digest)
    seen = follow(given, patch, ns, f"{app}:1@{digest}", started)
    print(f"\n[argocd writeback] created -> commit {seen.get('commit', -1):.1f}s -> synced "
          f"{seen.get('applied', -1):.1f}s -> revert {seen.get('revert', -1):.1f}s -> "
          f"revert synced {seen.get('reverted', -1):.1f}s -> RolledBack "
          f"{seen.get('RolledBack', -1):.1f}s (rollback "
          f"{seen.get('RolledBack', -1) - seen.get('applied', 0):.1f}s after the sync)")

    done = given.get("imagepatch", patch)
    [entry] = done["status"]["rollouts"]
    assert done["status"]["phase"] == "RolledBack", done["status"]
    assert entry["reason"] == "CrashLoopBackOff" and entry["gitRevert"]
    assert digest in done["status"]["failedDigests"]
    work = clone(git_server, repo, tmp_path / "check")
    log = git("log", "--format=%H", cwd=work).split()
    assert log[:2] == [entry["gitRevert"], entry["gitCommit"]]  # the revert, on top
    assert writeback.revert_trailer(git("log", "-1", "--format=%B", cwd=work)) == patch
    assert not (work / f"deploy/.argocd-source-{repo}.yaml").exists()  # the file was new
    # Argo CD synced the revert: the chart's own tag again, written by Argo CD alone.
    argocd.wait_synced(repo, entry["gitRevert"])
    assert given.image_of(ns, "web") == f"{app}:1"
    assert image_writers(given, ns) == {"argocd-controller"}
    # Posted after the phase is written: wait for it.
    assert "RolledBack" in [e["reason"] for e in given.wait_events(ns, "web", "RolledBack")]
