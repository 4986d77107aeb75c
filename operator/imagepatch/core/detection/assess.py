"""The assess stage of a detection pass: each container's state, from its facts.

Pure. ``core.compliance`` judges one container against the policy; this
module gathers a workload's judged containers into an ``Observation``, the
value the plan and record stages read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.core import compliance
from imagepatch.core.compliance import Assessment, ContainerFacts
from imagepatch.core.detection.workload import kind_of
from imagepatch.model.memory import WorkloadMemory
from imagepatch.model.policy import PolicySpec

TargetKey = tuple[str, str, str, str]  # (kind, namespace, name, container)


@dataclass(frozen=True, kw_only=True, slots=True)
class Observation:
    """One admitted workload as the observe and assess stages left it."""

    workload: Mapping[str, Any]
    assessed: tuple[tuple[ContainerFacts, Assessment], ...]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    memory: WorkloadMemory | None = None  # the operator's memory of it (failed rebuilds)

    @property
    def uid(self) -> str:
        return str(self.workload["metadata"]["uid"])

    def target(self, container: str) -> TargetKey:
        meta = self.workload["metadata"]
        return (kind_of(self.workload), meta["namespace"], meta["name"], container)


def assess_workload(
    workload: Mapping[str, Any],
    facts: Sequence[ContainerFacts],
    spec: PolicySpec,
    *,
    namespace_labels: Mapping[str, str],
    memory: WorkloadMemory | None = None,
) -> Observation:
    """Each container judged against the policy; a note the facts carry (e.g. an
    annotation that was not used) is appended to its message."""
    assessed = []
    for one in facts:
        assessment = compliance.assess_container(one, spec)
        if one.note:
            assessment = replace(assessment, message=f"{assessment.message} ({one.note})")
        assessed.append((one, assessment))
    return Observation(
        workload=workload,
        assessed=tuple(assessed),
        namespace_labels=namespace_labels,
        memory=memory,
    )
