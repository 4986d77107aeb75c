"""An ImagePatch read for the report and retention: parsed once, placed in time, or refused.

Given ImagePatches as the API serves them (and some no CRD would admit),
when they are read with ``read_patch``, then a well-formed one gets its
timeline and a malformed one reads as None; the report then leaves it out
with a warning naming it, and history retention never deletes it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imagepatch.core.patch_timeline import read_patch, ready_condition, repository
from imagepatch.core.report import build_report, history_series
from imagepatch.core.retention import retention

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
DIGEST = "sha256:" + "1" * 64


def body(name: str = "p1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-11-27T10:00:00Z"},
        "spec": {"image": "registry.example.com/team/web:1.4", "policy": "critical",
                 "reason": "BaseImageOutdated", "currentDigest": DIGEST, **spec},
        "status": {"phase": "Succeeded", "history": [
            {"phase": "Succeeded", "at": "2026-11-27T11:00:00Z"}]},
    }


def test_a_well_formed_patch_is_read_with_its_model_and_timeline():
    patch = read_patch({**body(), "spec": {**body()["spec"], "targetDigest": DIGEST,
                                           "evidence": {"findings": [{"id": "CVE-1"}, "x", {}]},
                                           "targets": [{"namespace": "shop", "name": "web",
                                                        "container": "app"}]}})
    assert patch is not None
    assert (patch.name, patch.policy, patch.image) == ("p1", "critical", "registry.example.com/team/web")
    assert (patch.phase, patch.result, patch.active) == ("Succeeded", "Succeeded", False)
    assert patch.target_digest == DIGEST and patch.finding_ids == ("CVE-1",)
    assert patch.targets() == {("Deployment", "shop", "web")}  # kind, namespace, name
    assert [p for _, p in patch.timeline] == ["Pending", "Succeeded"]
    assert patch.ended == dt.datetime(2026, 11, 27, 11, 0, tzinfo=dt.UTC) == patch.last_activity


@pytest.mark.parametrize(
    "malformed",
    [
        {"spec": {"policy": "critical"}},  # no image
        {"spec": {"image": "web", "policy": "critical", "currentDigest": "latest"}},
        {"spec": {"image": "web", "policy": "critical"}, "status": {"phase": "Exploded"}},
        {"spec": {"image": "web", "policy": "critical"}, "status": {"history": ["x"]}},
        {"spec": {"image": "web", "policy": "critical"},
         "status": {"rollouts": [{"namespace": "a", "name": "b", "container": "c", "wave": "x"}]}},
        {"spec": {"image": "web", "policy": "critical", "evidence": {"findings": 5}}},
    ],
)
def test_a_malformed_patch_reads_as_none(malformed):
    assert read_patch({"metadata": {"name": "bad"}, **malformed}) is None


def test_the_report_leaves_a_malformed_patch_out_with_a_warning_and_retention_keeps_it():
    bad = {"metadata": {"name": "bad", "creationTimestamp": "2026-11-27T10:00:00Z"},
           "spec": {"policy": "critical"}, "status": {"phase": "Succeeded"}}
    report = build_report(policies=[], workloads=[], imagepatches=[body(), bad], now=NOW,
                          warnings=["listed"])
    assert [p.name for p in report.patches] == ["p1"]
    assert report.warnings == ("listed", "ImagePatch 'bad' is malformed and left out")
    assert retention([body(), bad], keep_count=0, max_age=None, now=NOW) == ["p1"]
    assert history_series([bad], now=NOW) == ("day", ())


def test_ready_condition_and_repository_read_what_others_wrote_leniently():
    conditions = ("junk", {"type": "Other"}, {"type": "Ready", "message": "ok"})
    assert ready_condition(conditions) == {"type": "Ready", "message": "ok"}
    assert ready_condition(()) == {}
    assert repository("python:3") == "docker.io/library/python"
    assert repository("NOT A REF") == "NOT A REF"


def test_a_terminal_patch_with_no_time_at_all_has_no_end_and_counts_in_no_bucket():
    timeless = {"metadata": {"name": "old"},
                "spec": {"image": "web", "policy": "critical"}, "status": {"phase": "Failed"}}
    patch = read_patch(timeless)
    assert patch is not None
    assert (patch.ended, patch.result, patch.timeline, patch.last_activity) == (None, "Failed", (), None)
    # Retention counts it as the oldest: chosen by age, as before.
    assert retention([timeless], keep_count=None, max_age=dt.timedelta(days=1), now=NOW) == ["old"]
