"""baseImages.approveAfter: when a new base digest may be adopted (core/approval.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagepatch.core import reasons
from imagepatch.core.approval import FIRST_SEEN, REGISTRY, base_approval
from imagepatch.core.compliance import ContainerFacts, State, assess_container
from imagepatch.model import memory as memory_model
from imagepatch.model.policy import PolicySpec, parse_policy_spec

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def ago(hours: float) -> dt.datetime:
    return NOW - hours * H


@pytest.mark.parametrize(
    ("name", "kwargs", "approved", "eligible_at", "counted_from"),
    [
        ("no delay approves at once", dict(approve_after=dt.timedelta(0), created=NOW), True, None, ""),
        ("created long enough ago", dict(approve_after=72 * H, created=ago(80)), True, ago(8), REGISTRY),
        ("exactly old enough is approved", dict(approve_after=72 * H, created=ago(72)), True, NOW, REGISTRY),
        ("created too recently waits", dict(approve_after=72 * H, created=ago(1)), False, ago(1) + 72 * H, REGISTRY),
        # No creation time in the registry: counted from our own first sighting.
        ("no creation time: first seen", dict(approve_after=1 * H, created=None, first_seen=ago(0.5)),
         False, ago(0.5) + H, FIRST_SEEN),
        ("no creation time, seen long ago", dict(approve_after=1 * H, created=None, first_seen=ago(2)),
         True, ago(1), FIRST_SEEN),
        # A creation time in the future (skewed or forged) cannot make a digest old.
        ("future creation time: first seen", dict(approve_after=1 * H, created=NOW + 24 * H,
         first_seen=NOW), False, NOW + H, FIRST_SEEN),
        # Our first sighting is never later than now.
        ("first seen in the future reads as now", dict(approve_after=1 * H, created=None,
         first_seen=NOW + 5 * H), False, NOW + H, FIRST_SEEN),
        # A base that fixes a finding at or over the baseline is adopted at once.
        ("fixes a finding", dict(approve_after=72 * H, created=ago(1), fixes_finding=True), True, None, ""),
    ],
)
def test_base_approval(name, kwargs, approved, eligible_at, counted_from):
    kwargs.setdefault("first_seen", NOW)
    decision = base_approval(now=NOW, **kwargs)
    assert (decision.approved, decision.eligible_at, decision.counted_from) == (
        approved, eligible_at, counted_from), name


def test_the_message_says_when_and_from_what():
    recent = base_approval(approve_after=H, created=ago(0.25), first_seen=NOW, now=NOW)
    assert recent.message("registry.local/base:3") == (
        "base registry.local/base:3 has a new digest, created in the registry at "
        "2026-12-05T11:45:00Z; it is adopted from 2026-12-05T12:45:00Z (spec.baseImages.approveAfter)"
    )
    unseen = base_approval(approve_after=H, created=None, first_seen=NOW, now=NOW)
    assert "first seen by imagepatch at 2026-12-05T12:00:00Z" in unseen.message("b:1")


@given(st.integers(0, 10_000), st.integers(-10_000, 10_000), st.integers(0, 10_000))
def test_approved_exactly_from_the_eligible_time(delay_minutes, created_minutes, seen_minutes):
    decision = base_approval(
        approve_after=dt.timedelta(minutes=delay_minutes),
        created=NOW - dt.timedelta(minutes=created_minutes),
        first_seen=NOW - dt.timedelta(minutes=seen_minutes),
        now=NOW,
    )
    if decision.eligible_at is not None:
        assert decision.approved == (NOW >= decision.eligible_at)
        assert decision.published_at is not None and decision.published_at <= NOW


# -- how a held base is assessed ---------------------------------------------------------

def facts(**kw) -> ContainerFacts:
    base = dict(container="app", image="r/app:1", repository="r/app", digest="sha256:" + "a" * 64,
                base_name="r/base:3", base_digest="sha256:" + "1" * 64, base_current="sha256:" + "2" * 64)
    return ContainerFacts(**{**base, **kw})


SPEC: PolicySpec = parse_policy_spec({"namespaceSelector": {}, "baseImages": {"approveAfter": "72h"}})


def test_a_held_base_is_compliant_with_the_reason_and_time():
    assessment = assess_container(facts(base_pending="adopted from 2026-12-08T12:00:00Z"), SPEC)
    assert (assessment.state, assessment.reason) == (State.COMPLIANT, reasons.BASE_NOT_YET_APPROVED)
    assert "2026-12-08T12:00:00Z" in assessment.message


def test_an_approved_base_is_outdated_as_before():
    assert assess_container(facts(), SPEC).state == State.BASE_IMAGE_OUTDATED


def test_approve_after_parses_as_a_go_duration():
    assert SPEC.base_images.approve_after == 72 * H
    assert parse_policy_spec({"namespaceSelector": {}}).base_images.approve_after == dt.timedelta(0)


# -- the first sighting is the operator's memory -------------------------------------------

def test_first_seen_is_kept_once_bounded_and_round_trips():
    record = memory_model.WorkloadMemory(kind="Deployment", namespace="t", name="w", uid="u")
    assert record.empty
    first = memory_model.with_seen(record, "sha256:1", NOW)
    assert not first.empty
    assert memory_model.with_seen(first, "sha256:1", NOW + H) is first  # never moves later
    many = first
    for i in range(2, 20):
        many = memory_model.with_seen(many, f"sha256:{i}", NOW + i * H)
    assert len(many.seen) == memory_model.SEEN_LIMIT and "sha256:19" in many.seen
    assert "sha256:1" not in many.seen  # the oldest go first
    assert memory_model.decode(memory_model.encode(many)) == many


def test_an_unreadable_first_seen_time_reads_as_absent():
    raw = memory_model.encode(memory_model.with_seen(
        memory_model.WorkloadMemory(kind="Deployment", namespace="t", name="w"), "sha256:1", NOW))
    forged = raw.replace("2026-12-05T12:00:00Z", "yesterday")
    decoded = memory_model.decode(forged)
    assert decoded is not None and decoded.seen == {}
