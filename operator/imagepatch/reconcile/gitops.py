"""Detection's hooks for GitOps-managed workloads (``spec.rollout.mode``).

Three calls from ``reconcile/detection.py``, each marked ``# i22-gitops hook``:

- :func:`keep_claims` when a workload body is slimmed for the cache: keeps the
  Flux and Argo CD labels and annotations ``core/gitops.py`` reads (and no
  other foreign metadata);
- :func:`skip` before a workload's patch intents are gathered: why the policy
  does not patch it (a GitOps tool delivers it and the policy leaves the mode
  unset, or the mode is Skip), or None; a skipped workload gets no intent, so
  no ImagePatch ever names it as a target;
- :func:`reported` when its state is recorded: a workload that needs a patch
  but is skipped is recorded as GitOpsManaged (or RolloutSkipped) with why and
  how to enable patching, instead of Vulnerable/BaseImageOutdated with no
  patch ever coming.

The decision itself is pure (``core/gitops.py``); this module only reads the
workload's metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.core import gitops
from imagepatch.core.compliance import State
from imagepatch.model.policy import PolicySpec

__all__ = ["Skip", "keep_claims", "reported", "skip"]

# The states in which the workload would have had a patch (as for RebuildNotAllowed).
_NEEDS_PATCH = (State.VULNERABLE, State.BASE_IMAGE_OUTDATED)


@dataclass(frozen=True, kw_only=True, slots=True)
class Skip:
    reason: str
    message: str


def keep_claims(meta: Mapping[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """``kept`` (slimmed metadata) plus the GitOps claim labels and annotations of ``meta``."""
    for field in ("labels", "annotations"):
        claims = {
            k: v for k, v in (meta.get(field) or {}).items() if k in gitops.CLAIM_KEYS
        }
        if claims:
            kept[field] = {**(kept.get(field) or {}), **claims}
    return kept


def skip(dep: Mapping[str, Any], spec: PolicySpec, policy: str) -> Skip | None:
    """Why ``policy`` does not patch workload ``dep``, or None when it does."""
    refused = gitops.not_patched(dep, spec.rollout.mode, policy)
    return None if refused is None else Skip(reason=refused[0], message=refused[1])


def reported(why: Skip | None, state: State, default: tuple[str, str]) -> tuple[str, str]:
    """The (state, message) to record: ``default`` unless a needed patch is skipped."""
    if why is None or state not in _NEEDS_PATCH:
        return default
    return why.reason, f"{state}, but not patched: {why.message}"
