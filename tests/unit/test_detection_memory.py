"""Detection reads the failed-digest memory a rollback left in the operator's memory.

The workload's ``imagepatch.dev/failed-digests`` annotation is a mirror a
tenant can edit: it is never read for the decision.
"""

from __future__ import annotations

import json

from imagepatch.core.compliance import Assessment, ContainerFacts, State, intent_for
from imagepatch.core.detection.report import with_failed_memory as _with_failed_memory
from imagepatch.core.rollout import FAILED_ANNOTATION
from imagepatch.model.memory import WorkloadMemory

REPO = "registry.local/app"
RUNNING, OLD_BASE, NEW_BASE = ("sha256:" + c * 64 for c in "abc")
BAD = "sha256:" + "d" * 64

FACTS = ContainerFacts(container="app", image=f"{REPO}:1", repository=REPO, digest=RUNNING,
                       base_name="registry.local/base:1", base_digest=OLD_BASE,
                       base_current=NEW_BASE)
OUTDATED = Assessment(state=State.BASE_IMAGE_OUTDATED, reason="BaseImageOutdated", message="m")


def remembered(*failed: dict) -> WorkloadMemory:
    return WorkloadMemory(kind="Deployment", namespace="ns", name="web", uid="u", failed=failed)


def workload(*mirror: dict) -> dict:
    return {"metadata": {"annotations": {FAILED_ANNOTATION: json.dumps(list(mirror))}}}


def test_a_container_whose_patch_failed_here_reads_failed_naming_the_rebuild() -> None:
    key = intent_for(FACTS, OUTDATED).key
    [(_, assessment)] = _with_failed_memory(
        [(FACTS, OUTDATED)], workload(),
        remembered({"digest": BAD, "key": key, "patch": "p1", "at": "t"}))
    assert (assessment.state, assessment.reason) == (State.FAILED, "RebuildFailedBefore")
    assert BAD in assessment.message and "p1" in assessment.message


def test_another_key_or_no_memory_leaves_the_assessment_alone() -> None:
    for record in (remembered({"digest": BAD, "key": "other", "patch": "p1"}), remembered()):
        assert _with_failed_memory([(FACTS, OUTDATED)], {"metadata": {}}, record) == [
            (FACTS, OUTDATED)
        ]


def test_the_annotation_a_tenant_edits_is_not_the_memory() -> None:
    key = intent_for(FACTS, OUTDATED).key
    entry = {"digest": BAD, "key": key, "patch": "p1", "at": "t"}
    # Erased on the workload: still Failed, from the operator's memory.
    [(_, kept)] = _with_failed_memory([(FACTS, OUTDATED)], workload(), remembered(entry))
    assert kept.state == State.FAILED
    # Forged on the workload: nothing the operator remembers.
    [(_, forged)] = _with_failed_memory([(FACTS, OUTDATED)], workload(entry), remembered())
    assert forged == OUTDATED
