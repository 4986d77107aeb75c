"""Custom resources parsed into frozen, typed dataclasses.

This is the bottom layer: it imports only the standard library (enforced by
import-linter, see pyproject.toml), and everything above it (``core/``,
``reconcile``) works on these objects instead of raw dicts. A bad field raises
:class:`SpecError`, whose message starts with the field's full path.

Modules: ``names`` (the API group, version and every ``imagepatch.dev/*``
key), ``times`` (the clock, RFC 3339 formatting and parsing), ``errors``
(SpecError), ``durations`` (Go-style duration strings), ``policy``
(ImagePatchPolicy), ``imagepatch`` (ImagePatch spec and recorded status),
``workload_state`` (the ``imagepatch.dev/state`` annotation on workloads).
The package re-exports the policy names; import the others from their module.
"""

from imagepatch.model.durations import format_duration, parse_duration
from imagepatch.model.errors import SpecError
from imagepatch.model.policy import (
    ApprovalMode,
    BaseImages,
    CodeBuildSettings,
    ImagePatchPolicy,
    JobSettings,
    LabelSelector,
    LabelSelectorRequirement,
    MaintenanceWindow,
    OnTargetFailure,
    PolicySpec,
    Rebuild,
    RebuildStrategy,
    RegistryCredentials,
    Rollout,
    RolloutMode,
    SelectorOperator,
    Severity,
    Vulnerabilities,
    VulnerabilitySource,
    Wave,
    parse_label_selector,
    parse_policy,
    parse_policy_spec,
)

__all__ = [
    "ApprovalMode",
    "OnTargetFailure",
    "BaseImages",
    "CodeBuildSettings",
    "ImagePatchPolicy",
    "JobSettings",
    "LabelSelector",
    "LabelSelectorRequirement",
    "MaintenanceWindow",
    "PolicySpec",
    "Rebuild",
    "RebuildStrategy",
    "RegistryCredentials",
    "Rollout",
    "RolloutMode",
    "SelectorOperator",
    "Severity",
    "SpecError",
    "Vulnerabilities",
    "VulnerabilitySource",
    "Wave",
    "format_duration",
    "parse_duration",
    "parse_label_selector",
    "parse_policy",
    "parse_policy_spec",
]
