"""Recognise workloads a GitOps tool delivers, and decide how a policy rolls them.

Flux and Argo CD mark the objects they apply with labels and annotations:

- Flux's kustomize-controller: labels ``kustomize.toolkit.fluxcd.io/name`` and
  ``kustomize.toolkit.fluxcd.io/namespace`` (the Kustomization);
- Flux's helm-controller: labels ``helm.toolkit.fluxcd.io/name`` and
  ``helm.toolkit.fluxcd.io/namespace`` (the HelmRelease);
- Argo CD: the label ``argocd.argoproj.io/instance`` (label tracking with that
  key) or the annotation ``argocd.argoproj.io/tracking-id``
  (``<app>:<group>/<kind>:<namespace>/<name>``, where ``<app>`` is
  ``<namespace>_<name>`` for an Application outside Argo CD's own namespace).

Patching such a workload in the cluster is undone by the tool's next
reconcile (Flux) or self-heal (Argo CD), so by default imagepatch leaves it
alone and says which tool owns it, and how to enable Git write-back.
``spec.rollout.mode`` overrides that: ``Patch`` patches the live object,
``GitWriteBack`` commits the new image to the repository the tool delivers
from (``core/rollout/writeback.py``).

The labels are the tenant's to write, so they are read as a *claim*: a
workload that claims an owner is only ever patched less (skipped), never
allowed anything it was not allowed before. A claimed owner whose name is not
a Kubernetes name is no claim at all (no tool writes one), and it is never
copied into a message.

Pure: reads the label and annotation mappings it is given.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.core import reasons
from imagepatch.core.compliance import State
from imagepatch.model.policy import PolicySpec, RolloutMode

__all__ = [
    "CLAIM_KEYS",
    "Skip",
    "keep_claims",
    "reported",
    "skip",
    "Owner",
    "Tool",
    "mode_for",
    "not_patched",
    "owner_of",
    "skip_message",
]

FLUX_KUSTOMIZE_NAME = "kustomize.toolkit.fluxcd.io/name"
FLUX_KUSTOMIZE_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
FLUX_HELM_NAME = "helm.toolkit.fluxcd.io/name"
FLUX_HELM_NAMESPACE = "helm.toolkit.fluxcd.io/namespace"
ARGOCD_INSTANCE = "argocd.argoproj.io/instance"
ARGOCD_TRACKING_ID = "argocd.argoproj.io/tracking-id"

# Every label or annotation key read here: detection keeps these (and only
# these) of a workload's metadata besides its own.
CLAIM_KEYS: frozenset[str] = frozenset(
    {
        FLUX_KUSTOMIZE_NAME,
        FLUX_KUSTOMIZE_NAMESPACE,
        FLUX_HELM_NAME,
        FLUX_HELM_NAMESPACE,
        ARGOCD_INSTANCE,
        ARGOCD_TRACKING_ID,
    }
)

# A DNS-1123 subdomain (Kustomization, HelmRelease and Application names are).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# A namespace (DNS-1123 label).
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class Tool(enum.StrEnum):
    """The kind of object that owns a GitOps-managed workload."""

    FLUX_KUSTOMIZATION = "Flux Kustomization"
    FLUX_HELM_RELEASE = "Flux HelmRelease"
    ARGO_CD_APPLICATION = "Argo CD Application"


@dataclass(frozen=True, kw_only=True, slots=True)
class Owner:
    """The GitOps object a workload claims to be delivered by.

    ``namespace`` is empty when the claim does not say (an Argo CD
    Application in Argo CD's own namespace; a Flux label set without its
    namespace twin). ``evidence`` is the label or annotation read.
    """

    tool: Tool
    namespace: str
    name: str
    evidence: str

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.tool} {where}"


def _name(value: object) -> str:
    return value if isinstance(value, str) and _NAME.fullmatch(value) else ""


def _namespace(value: object) -> str:
    return value if isinstance(value, str) and _NAMESPACE.fullmatch(value) else ""


def _flux(
    labels: Mapping[str, object], tool: Tool, name_key: str, namespace_key: str
) -> Owner | None:
    name = _name(labels.get(name_key))
    if not name:
        return None
    return Owner(
        tool=tool, namespace=_namespace(labels.get(namespace_key)), name=name, evidence=name_key
    )


def _argo_app(app: str, evidence: str) -> Owner | None:
    # Applications in any namespace are named <namespace>_<name>; "_" is in
    # neither a namespace nor a name, so the split is unambiguous.
    namespace, sep, name = app.partition("_")
    if not sep:
        namespace, name = "", app
    elif not _namespace(namespace):
        return None
    if not _name(name):
        return None
    return Owner(tool=Tool.ARGO_CD_APPLICATION, namespace=namespace, name=name, evidence=evidence)


def owner_of(labels: Mapping[str, object], annotations: Mapping[str, object]) -> Owner | None:
    """The GitOps object ``labels``/``annotations`` claim owns the workload, or None.

    Flux's Kustomization is read first, then its HelmRelease, then Argo CD's
    tracking annotation and label: each names the object that applies this
    workload directly (a HelmRelease applied by a Kustomization marks the
    workload with the HelmRelease only).
    """
    for tool, name_key, namespace_key in (
        (Tool.FLUX_KUSTOMIZATION, FLUX_KUSTOMIZE_NAME, FLUX_KUSTOMIZE_NAMESPACE),
        (Tool.FLUX_HELM_RELEASE, FLUX_HELM_NAME, FLUX_HELM_NAMESPACE),
    ):
        owner = _flux(labels, tool, name_key, namespace_key)
        if owner is not None:
            return owner
    tracking = annotations.get(ARGOCD_TRACKING_ID)
    if isinstance(tracking, str) and ":" in tracking:
        owner = _argo_app(tracking.split(":", 1)[0], ARGOCD_TRACKING_ID)
        if owner is not None:
            return owner
    instance = labels.get(ARGOCD_INSTANCE)
    if isinstance(instance, str):
        return _argo_app(instance, ARGOCD_INSTANCE)
    return None


def mode_for(owner: Owner | None, configured: RolloutMode | None) -> RolloutMode:
    """How the policy rolls a workload: its ``rollout.mode``, else Skip if managed, else Patch."""
    if configured is not None:
        return configured
    return RolloutMode.SKIP if owner is not None else RolloutMode.PATCH


def skip_message(owner: Owner | None, configured: RolloutMode | None, policy: str) -> str:
    """Why a workload the policy skips is not patched, and how to have it patched."""
    if owner is None:
        return (
            f"ImagePatchPolicy {policy!r} sets spec.rollout.mode: Skip: imagepatch reports "
            "this workload but does not patch it"
        )
    owned = f"delivered by {owner.describe()} (its {owner.evidence} says so)"
    if configured is RolloutMode.SKIP:
        return f"{owned}; ImagePatchPolicy {policy!r} sets spec.rollout.mode: Skip"
    return (
        f"{owned}: a patch of the live object would be undone by the tool's next sync, so "
        "imagepatch leaves it alone. To have imagepatch commit the new image to Git for the "
        f"tool to apply, set spec.rollout.mode: GitWriteBack and spec.rollout.gitWriteBack "
        f"(url, branch, path, secretRef) on ImagePatchPolicy {policy!r}; or set "
        "spec.rollout.mode: Patch to patch the live object anyway"
    )


def not_patched(
    workload: Mapping[str, object], configured: RolloutMode | None, policy: str
) -> tuple[str, str] | None:
    """(reason, message) when ``policy`` does not patch ``workload``, else None.

    Detection asks it before proposing a patch, and the rollout again before
    patching a target (an ImagePatch made by hand, or before the workload
    became managed, must not patch it either).
    """
    meta = workload.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    labels, annotations = meta.get("labels"), meta.get("annotations")
    owner = owner_of(
        labels if isinstance(labels, Mapping) else {},
        annotations if isinstance(annotations, Mapping) else {},
    )
    if mode_for(owner, configured) in (RolloutMode.PATCH, RolloutMode.GIT_WRITE_BACK):
        return None  # GitWriteBack: the new image is committed, not patched (rollout.writeback)
    reason = reasons.GITOPS_MANAGED if owner is not None else reasons.ROLLOUT_SKIPPED
    return reason, skip_message(owner, configured, policy)


# -- detection's use: what is kept of a workload, which get no patch, what is recorded --

# The states in which the workload would have had a patch (as for RebuildNotAllowed).
_NEEDS_PATCH = (State.VULNERABLE, State.BASE_IMAGE_OUTDATED)


@dataclass(frozen=True, kw_only=True, slots=True)
class Skip:
    """Why a policy does not patch a workload (a GitOps tool delivers it, or mode Skip)."""

    reason: str
    message: str


def keep_claims(meta: Mapping[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """``kept`` (slimmed metadata) plus the GitOps claim labels and annotations of ``meta``
    (and no other foreign metadata)."""
    for field in ("labels", "annotations"):
        claims = {k: v for k, v in (meta.get(field) or {}).items() if k in CLAIM_KEYS}
        if claims:
            kept[field] = {**(kept.get(field) or {}), **claims}
    return kept


def skip(workload: Mapping[str, Any], spec: PolicySpec, policy: str) -> Skip | None:
    """Why ``policy`` does not patch ``workload``, or None when it does. A skipped
    workload gets no patch intent, so no ImagePatch ever names it as a target."""
    refused = not_patched(workload, spec.rollout.mode, policy)
    return None if refused is None else Skip(reason=refused[0], message=refused[1])


def reported(why: Skip | None, state: State, default: tuple[str, str]) -> tuple[str, str]:
    """The (state, message) to record: ``default`` unless a needed patch is skipped, then
    GitOpsManaged (or RolloutSkipped) with why and how to enable patching."""
    if why is None or state not in _NEEDS_PATCH:
        return default
    return why.reason, f"{state}, but not patched: {why.message}"
