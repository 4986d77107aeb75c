"""GitOps-managed workloads (issue 22 item 1): recognised by the labels Flux and Argo CD
set, skipped by default with a state naming the owner, patched when the policy says so.

The labels are the tenant's: a claim only ever makes imagepatch patch less.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imagepatch.core import gitops, reasons
from imagepatch.core import gitops as hooks
from imagepatch.core.compliance import State
from imagepatch.core.detection.workload import slim as _slim
from imagepatch.core.gitops import Owner, Tool
from imagepatch.model import RolloutMode, parse_policy_spec
from imagepatch.reconcile.detection import Detector
from tests.unit.test_tenancy_identity import KindKube, outdated_registry, workload

KUSTOMIZATION = {"kustomize.toolkit.fluxcd.io/name": "apps",
                 "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
HELM_RELEASE = {"helm.toolkit.fluxcd.io/name": "web", "helm.toolkit.fluxcd.io/namespace": "team"}


# --- core: who claims to own the workload -------------------------------------------------

@pytest.mark.parametrize(("labels", "annotations", "owner"), [
    (KUSTOMIZATION, {}, Owner(tool=Tool.FLUX_KUSTOMIZATION, namespace="flux-system",
                              name="apps", evidence="kustomize.toolkit.fluxcd.io/name")),
    (HELM_RELEASE, {}, Owner(tool=Tool.FLUX_HELM_RELEASE, namespace="team", name="web",
                             evidence="helm.toolkit.fluxcd.io/name")),
    # Flux's name without its namespace twin (or a bad one): the owner's namespace is unknown.
    ({"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "A B"},
     {}, Owner(tool=Tool.FLUX_KUSTOMIZATION, namespace="", name="apps",
               evidence="kustomize.toolkit.fluxcd.io/name")),
    # Argo CD: the tracking annotation, in Argo CD's namespace and in any namespace.
    ({}, {"argocd.argoproj.io/tracking-id": "guestbook:apps/Deployment:default/web"},
     Owner(tool=Tool.ARGO_CD_APPLICATION, namespace="", name="guestbook",
           evidence="argocd.argoproj.io/tracking-id")),
    ({}, {"argocd.argoproj.io/tracking-id": "team-a_guestbook:apps/Deployment:team-a/web"},
     Owner(tool=Tool.ARGO_CD_APPLICATION, namespace="team-a", name="guestbook",
           evidence="argocd.argoproj.io/tracking-id")),
    ({"argocd.argoproj.io/instance": "guestbook"}, {},
     Owner(tool=Tool.ARGO_CD_APPLICATION, namespace="", name="guestbook",
           evidence="argocd.argoproj.io/instance")),
    # A bad tracking id falls back to the instance label.
    ({"argocd.argoproj.io/instance": "shop"}, {"argocd.argoproj.io/tracking-id": "Bad App:x"},
     Owner(tool=Tool.ARGO_CD_APPLICATION, namespace="", name="shop",
           evidence="argocd.argoproj.io/instance")),
    # Flux's Kustomization first: it applies the workload directly.
    ({**KUSTOMIZATION, "argocd.argoproj.io/instance": "shop"}, {},
     Owner(tool=Tool.FLUX_KUSTOMIZATION, namespace="flux-system", name="apps",
           evidence="kustomize.toolkit.fluxcd.io/name")),
])
def test_the_owner_a_workload_claims_is_read_from_the_tools_labels(labels, annotations, owner):
    assert gitops.owner_of(labels, annotations) == owner


@pytest.mark.parametrize(("labels", "annotations"), [
    ({}, {}),
    ({"app.kubernetes.io/instance": "web"}, {}),  # Helm's own label: no GitOps tool
    ({"kustomize.toolkit.fluxcd.io/name": "<b>evil</b>"}, {}),  # not a Kubernetes name
    ({"kustomize.toolkit.fluxcd.io/name": 7}, {}),
    ({"argocd.argoproj.io/instance": "Not_A/Name"}, {}),
    ({"argocd.argoproj.io/instance": "BAD_ns"}, {}),
    ({}, {"argocd.argoproj.io/tracking-id": "no-colon"}),
    ({}, {"argocd.argoproj.io/tracking-id": ":apps/Deployment:ns/web"}),
])
def test_no_or_malformed_claims_name_no_owner(labels, annotations):
    assert gitops.owner_of(labels, annotations) is None


FLUX = Owner(tool=Tool.FLUX_KUSTOMIZATION, namespace="flux-system", name="apps",
             evidence="kustomize.toolkit.fluxcd.io/name")


@pytest.mark.parametrize(("owner", "configured", "mode"), [
    (None, None, RolloutMode.PATCH),  # unmanaged: patched, as before
    (FLUX, None, RolloutMode.SKIP),  # managed: left alone by default
    (FLUX, RolloutMode.PATCH, RolloutMode.PATCH),
    (None, RolloutMode.SKIP, RolloutMode.SKIP),
    (FLUX, RolloutMode.SKIP, RolloutMode.SKIP),
])
def test_the_mode_is_the_policys_else_skip_for_managed_workloads(owner, configured, mode):
    assert gitops.mode_for(owner, configured) is mode


def test_git_write_back_is_not_a_skip():
    managed = {"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}}}
    assert gitops.not_patched(managed, RolloutMode.GIT_WRITE_BACK, "p") is None
    assert gitops.not_patched(managed, None, "p") is not None


def test_skip_messages_name_the_owner_and_how_to_enable_patching():
    default = gitops.skip_message(FLUX, None, "critical")
    assert "Flux Kustomization flux-system/apps" in default
    assert "kustomize.toolkit.fluxcd.io/name" in default
    assert "spec.rollout.mode: Patch" in default and "'critical'" in default
    assert "spec.rollout.mode: GitWriteBack" in default and "gitWriteBack" in default
    chosen = gitops.skip_message(FLUX, RolloutMode.SKIP, "critical")
    assert "Flux Kustomization flux-system/apps" in chosen and "mode: Skip" in chosen
    unmanaged = gitops.skip_message(None, RolloutMode.SKIP, "critical")
    assert "mode: Skip" in unmanaged and "does not patch it" in unmanaged
    argo = Owner(tool=Tool.ARGO_CD_APPLICATION, namespace="", name="shop", evidence="x")
    assert argo.describe() == "Argo CD Application shop"


# --- the policy field ---------------------------------------------------------------------

def test_rollout_mode_is_unset_by_default_and_parsed_when_given():
    assert parse_policy_spec({"namespaceSelector": {}}).rollout.mode is None
    for mode in ("Patch", "Skip"):
        spec = parse_policy_spec({"namespaceSelector": {}, "rollout": {"mode": mode}})
        assert spec.rollout.mode is RolloutMode(mode)


# --- the hooks -----------------------------------------------------------------------------

def test_slimming_keeps_the_claims_and_no_other_foreign_metadata():
    body = workload("Deployment", "web")
    body["metadata"]["labels"] = {**KUSTOMIZATION, "app": "web"}
    body["metadata"]["annotations"].update({"argocd.argoproj.io/tracking-id": "a:b/c:d/e",
                                            "other/annotation": "x"})
    meta = _slim(body)["metadata"]
    assert meta["labels"] == KUSTOMIZATION
    assert meta["annotations"] == {"imagepatch.dev/policy": "a",
                                   "argocd.argoproj.io/tracking-id": "a:b/c:d/e"}
    assert "labels" not in _slim(workload("Deployment", "plain"))["metadata"]


def test_reported_state_changes_only_for_a_skipped_workload_that_needs_a_patch():
    why = hooks.Skip(reason=reasons.GITOPS_MANAGED, message="owned")
    default = ("Vulnerable", "app: 2 findings")
    assert hooks.reported(None, State.VULNERABLE, default) == default
    assert hooks.reported(why, State.COMPLIANT, ("Compliant", "")) == ("Compliant", "")
    assert hooks.reported(why, State.VULNERABLE, default) == (
        "GitOpsManaged", "Vulnerable, but not patched: owned")


# --- detection: the whole pass ------------------------------------------------------------

def detect(rollout: dict[str, Any] | None, *workloads: dict) -> KindKube:
    spec: dict[str, Any] = {"namespaceSelector": {}, **({"rollout": rollout} if rollout else {})}
    kube = KindKube([{"metadata": {"name": "a", "generation": 1, "annotations": {}},
                      "spec": spec}])
    detector = Detector(kube=kube, registry=outdated_registry())
    for body in workloads:
        detector.observe("ADDED", body, kind=body["kind"])
    asyncio.run(detector.evaluate_all())
    return kube


def managed(name: str, labels: dict[str, str]) -> dict:
    body = workload("Deployment", name)
    body["metadata"]["labels"] = labels
    return body


def targets(kube: KindKube) -> list[str]:
    return sorted(t["name"] for p in kube.patches.values() for t in p["spec"]["targets"])


def test_a_flux_managed_workload_is_left_alone_with_a_state_naming_its_kustomization():
    kube = detect(None, managed("flux-web", KUSTOMIZATION), workload("Deployment", "plain"))

    assert targets(kube) == ["plain"]  # the unmanaged one is still patched
    state = kube.state_of("Deployment", "flux-web")
    assert state["state"] == "GitOpsManaged"
    assert state["message"].startswith("BaseImageOutdated, but not patched: delivered by "
                                       "Flux Kustomization flux-system/apps")
    assert "spec.rollout.mode: Patch" in state["message"]
    assert kube.state_of("Deployment", "plain")["state"] != "GitOpsManaged"


def test_mode_patch_patches_a_managed_workload_like_any_other():
    kube = detect({"mode": "Patch"}, managed("flux-web", HELM_RELEASE))
    assert targets(kube) == ["flux-web"]
    assert kube.state_of("Deployment", "flux-web")["state"] != "GitOpsManaged"


def test_mode_skip_reports_every_workload_and_patches_none():
    kube = detect({"mode": "Skip"}, workload("Deployment", "plain"),
                  managed("argo-web", {"argocd.argoproj.io/instance": "shop"}))
    assert targets(kube) == []
    plain = kube.state_of("Deployment", "plain")
    assert plain["state"] == "RolloutSkipped" and "mode: Skip" in plain["message"]
    argo = kube.state_of("Deployment", "argo-web")
    assert argo["state"] == "GitOpsManaged" and "Argo CD Application shop" in argo["message"]


# --- the rollout: a patch made by hand does not patch a managed workload either ------------

@pytest.mark.parametrize(("rollout", "phase", "reason"), [
    ({}, "Skipped", "GitOpsManaged"),
    ({"mode": "Skip"}, "Skipped", "GitOpsManaged"),
    ({"mode": "Patch"}, "Gating", "RollingOut"),
])
def test_the_rollout_skips_a_managed_target_unless_the_policy_patches_it(rollout, phase, reason):
    import datetime as dt

    from imagepatch.reconcile.rollouts import reconcile_imagepatch
    from tests.support.memkube import MemoryKube

    app, digest = "registry.local/app", "sha256:" + "a" * 64
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}, "rollout": rollout})
    dep = kube.add_workload("StatefulSet", "shop", "db", image=f"{app}:1.4", policy="pol")
    dep["metadata"]["labels"] = KUSTOMIZATION
    kube.add_patch("p1", {"image": app, "policy": "pol", "reason": "Manual", "targetDigest": digest})
    for _ in range(3):
        asyncio.run(reconcile_imagepatch(name="p1", kube=kube,
                                         clock=lambda: dt.datetime(2026, 12, 5, 21, tzinfo=dt.UTC)))
    [entry] = kube.patches["p1"]["status"]["rollouts"]
    assert (entry["phase"], entry.get("reason", "")) == (phase, reason), entry
    image = kube.statefulsets[("shop", "db")]["spec"]["template"]["spec"]["containers"][0]["image"]
    if phase == "Skipped":
        assert image == f"{app}:1.4" and kube.calls["set_container_image"] == 0
        assert "Flux Kustomization flux-system/apps" in entry["message"]
        [event] = [e for e in kube.events if e["reason"] == "GitOpsManaged"]
        assert event["type"] == "Warning"
    else:
        assert image == f"{app}:1.4@{digest}"
