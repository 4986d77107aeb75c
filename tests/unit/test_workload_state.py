"""The workload-state annotation's model: what detection writes is what the report reads.

Given a workload's recorded state, when it is written with ``to_annotation``
and read with ``from_annotation``, then the same record comes back; the
schema version is written; an annotation without one (written before it
existed) reads as version 1; a newer version, or anything that is not a JSON
object, reads as no record rather than raising; and a field of the wrong type
reads as empty.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagepatch.model.workload_state import (
    SCHEMA_VERSION,
    ContainerState,
    WorkloadState,
    from_annotation,
    to_annotation,
)

SINCE = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
DIGEST = "sha256:" + "1" * 64

APP = ContainerState(
    name="app",
    image="registry.example.com/team/app:1.4",
    digest=DIGEST,
    digest_source="pod",
    base="public.ecr.aws/docker/library/python:3.12",
    base_digest="sha256:" + "a" * 64,
    base_current="sha256:" + "b" * 64,
    lineage="oci-annotation",
    state="BaseImageOutdated",
    reason="BaseImageOutdated",
    message="built on an outdated base",
    findings_over_baseline=2,
    findings_by_severity={"HIGH": 2},
)
RECORD = WorkloadState(
    policy="critical", state="BaseImageOutdated", message="app: outdated", containers=(APP,),
    since=SINCE,
)


def test_written_json_carries_the_schema_version_and_detections_keys():
    body = json.loads(to_annotation(RECORD))
    assert body["schemaVersion"] == SCHEMA_VERSION == 1
    assert body["since"] == "2026-11-27T12:00:00Z"
    assert body["containers"] == [
        {
            "name": "app", "image": APP.image, "digest": DIGEST, "digestSource": "pod",
            "base": APP.base, "baseDigest": APP.base_digest, "baseCurrent": APP.base_current,
            "lineage": "oci-annotation", "state": "BaseImageOutdated",
            "reason": "BaseImageOutdated", "message": "built on an outdated base",
            "findingsOverBaseline": 2, "findingsBySeverity": {"HIGH": 2},
        }
    ]
    assert RECORD.to_annotation() == to_annotation(RECORD)


def test_empty_fields_are_left_out_of_a_container_record():
    assert ContainerState(name="app", state="Unknown").to_record() == {
        "name": "app", "state": "Unknown",
    }
    # A scan that found nothing over the baseline is still a count.
    assert ContainerState(name="app", findings_over_baseline=0).to_record() == {
        "name": "app", "findingsOverBaseline": 0,
    }


def test_an_annotation_written_before_the_schema_version_reads_as_version_1():
    old = json.dumps({
        "policy": "critical", "state": "Compliant", "message": "ok", "since": "2026-11-27T12:00:00Z",
        "containers": [{"name": "app", "digest": DIGEST, "state": "Compliant"}],
    }, sort_keys=True)
    assert from_annotation(old) == WorkloadState(
        policy="critical", state="Compliant", message="ok", since=SINCE,
        containers=(ContainerState(name="app", digest=DIGEST, state="Compliant"),),
    )


@pytest.mark.parametrize("version", [2, 0, "1", None, True, [1]])
def test_another_schema_version_reads_as_no_record(version):
    body = json.loads(to_annotation(RECORD))
    body["schemaVersion"] = version
    assert from_annotation(json.dumps(body)) is None


@pytest.mark.parametrize(
    "raw", [None, "", "not json", "[1, 2]", '"Compliant"', "42", "null", 7, "{", b"{}"],
)
def test_a_missing_or_unreadable_annotation_reads_as_no_record(raw):
    assert from_annotation(raw) is None


def test_fields_of_the_wrong_type_read_as_empty_and_bad_containers_are_skipped():
    raw = json.dumps({
        "policy": 5, "state": ["Compliant"], "message": None, "since": "yesterday",
        "containers": [
            "app", 3, None,
            {"name": 1, "digest": DIGEST, "findingsOverBaseline": "2",
             "findingsBySeverity": {"HIGH": "2", "LOW": 1, "5": 1}},
            {"name": "sidecar", "findingsBySeverity": ["HIGH"]},
        ],
    })
    assert from_annotation(raw) == WorkloadState(
        policy=None, state="", message="", since=None,
        containers=(
            ContainerState(digest=DIGEST, findings_by_severity={"LOW": 1, "5": 1}),
            ContainerState(name="sidecar"),
        ),
    )
    assert from_annotation(json.dumps({"state": "Unknown", "containers": {"a": 1}})) == (
        WorkloadState(policy=None, state="Unknown")
    )


def test_same_as_ignores_only_since():
    assert RECORD.same_as(WorkloadState(
        policy="critical", state="BaseImageOutdated", message="app: outdated", containers=(APP,),
    ))
    assert not RECORD.same_as(WorkloadState(
        policy="critical", state="Vulnerable", message="app: outdated", containers=(APP,), since=SINCE,
    ))


_text = st.text(max_size=40)
_containers = st.builds(
    ContainerState,
    name=_text, image=_text, digest=_text, digest_source=_text, base=_text, base_digest=_text,
    base_current=_text, lineage=_text, state=_text, reason=_text, message=_text,
    findings_over_baseline=st.none() | st.integers(min_value=0, max_value=10_000),
    findings_by_severity=st.dictionaries(
        st.sampled_from(["CRITICAL", "HIGH", "MEDIUM", "LOW"]), st.integers(1, 1000)
    ),
)
_records = st.builds(
    WorkloadState,
    policy=st.none() | _text,
    state=_text,
    message=_text,
    containers=st.lists(_containers, max_size=4).map(tuple),
    # Written to the second, in UTC, as Kubernetes writes times.
    since=st.none() | st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda t: t.replace(microsecond=0)),
)


@given(_records)
def test_what_is_written_reads_back_the_same(record):
    assert from_annotation(to_annotation(record)) == record


@given(st.text(max_size=200))
def test_any_text_reads_as_a_record_or_none_without_raising(raw):
    assert from_annotation(raw) is None or isinstance(from_annotation(raw), WorkloadState)
