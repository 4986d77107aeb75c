"""Detection reads the failed-digest memory a rollback left on the workload."""

from __future__ import annotations

import json

from imagepatch.core.compliance import Assessment, ContainerFacts, State, intent_for
from imagepatch.core.rollout import FAILED_ANNOTATION
from imagepatch.reconcile.detection import _with_failed_memory

REPO = "registry.local/app"
RUNNING, OLD_BASE, NEW_BASE = ("sha256:" + c * 64 for c in "abc")
BAD = "sha256:" + "d" * 64

FACTS = ContainerFacts(container="app", image=f"{REPO}:1", repository=REPO, digest=RUNNING,
                       base_name="registry.local/base:1", base_digest=OLD_BASE,
                       base_current=NEW_BASE)
OUTDATED = Assessment(state=State.BASE_IMAGE_OUTDATED, reason="BaseImageOutdated", message="m")


def workload(*memory: dict) -> dict:
    return {"metadata": {"annotations": {FAILED_ANNOTATION: json.dumps(list(memory))}}}


def test_a_container_whose_patch_failed_here_reads_failed_naming_the_rebuild() -> None:
    key = intent_for(FACTS, OUTDATED).key
    [(_, assessment)] = _with_failed_memory(
        [(FACTS, OUTDATED)], workload({"digest": BAD, "key": key, "patch": "p1", "at": "t"}))
    assert (assessment.state, assessment.reason) == (State.FAILED, "RebuildFailedBefore")
    assert BAD in assessment.message and "p1" in assessment.message


def test_another_key_or_no_memory_leaves_the_assessment_alone() -> None:
    for dep in (workload({"digest": BAD, "key": "other", "patch": "p1"}), {"metadata": {}}):
        assert _with_failed_memory([(FACTS, OUTDATED)], dep) == [(FACTS, OUTDATED)]
