"""The operator's memory record (model/memory.py): encoding, shards, bounded updates, pruning.

Also the size figure the sharding rests on: a record's bytes, typical and
worst case, and a shard's at 10,000 workloads (printed, and held well under
etcd's 1.5 MiB per object).
"""

from __future__ import annotations

import collections
import datetime as dt
import json

import pytest

from imagepatch.model import memory as m
from imagepatch.model.memory import BaseMemory, WorkloadMemory

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
D = "sha256:" + "a" * 64
B1, B2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def record(**kw) -> WorkloadMemory:
    return WorkloadMemory(kind="Deployment", namespace="team-a", name="web", uid="u1", **kw)


def full(name: str = "web", containers: int = 2) -> WorkloadMemory:
    """A record as large as it gets in practice: every field set, ten failed rebuilds."""
    r = WorkloadMemory(kind="StatefulSet", namespace="team-payments-prod", name=name,
                       uid="0f8fad5b-d9cb-469f-a165-70867728950e",
                       state="BaseImageOutdated", since=T0)
    for c in range(containers):
        r = m.with_base(r, f"container-{c}", BaseMemory(
            digest=D, base="123456789012.dkr.ecr.us-east-1.amazonaws.com/base/python:3.12",
            base_digest=B1))
    for i in range(m.FAILED_LIMIT):
        key = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4|{D}|BaseImageOutdated|{B2}"
        r = m.with_failed(r, digest="sha256:" + f"{i:064x}", key=key, patch=f"app-{i:010x}",
                          now=T0)
    return r


def test_a_record_survives_encoding() -> None:
    r = full()
    assert m.decode(m.encode(r)) == r
    small = record(state="Compliant", since=T0)
    assert m.decode(m.encode(small)) == small
    warned = m.with_hold_warned(small, "0123456789abcdef")
    assert m.decode(m.encode(warned)) == warned and not record(hold_warned="x").empty
    assert m.with_hold_warned(warned, "0123456789abcdef") is warned
    assert m.with_hold_warned(warned, "").hold_warned == ""


@pytest.mark.parametrize("raw", [
    None, 3, "", "not json", "[]", '{"v": 2, "kind": "Deployment", "namespace": "a", "name": "b"}',
    '{"v": 1, "kind": "Deployment", "namespace": "a"}',
])
def test_anything_but_a_record_of_this_version_reads_as_none(raw) -> None:
    assert m.decode(raw) is None


def test_wrong_types_inside_a_record_read_as_empty() -> None:
    raw = json.dumps({"v": 1, "kind": "Deployment", "namespace": "a", "name": "b", "uid": 7,
                      "state": ["x"], "since": "yesterday",
                      "bases": {"app": {"digest": 1, "base": "b", "baseDigest": B1}, "x": 2},
                      "failed": [{"digest": D, "at": 5}, {"digest": 3}, "x"]})
    r = m.decode(raw)
    assert r is not None
    assert (r.uid, r.state, r.since) == ("", "", None)
    assert r.bases == {"app": BaseMemory(digest="", base="b", base_digest=B1)}
    assert r.failed == ({"digest": D},)
    assert m.decode(json.dumps({"v": 1, "kind": "K", "namespace": "a", "name": "b",
                                "bases": [], "failed": {}})).bases == {}


def test_a_shard_is_stable_and_spreads_workloads_evenly() -> None:
    assert m.shard_of("Deployment", "a", "web") == m.shard_of("Deployment", "a", "web")
    assert m.shard_of("Deployment", "a", "web").startswith(m.CONFIGMAP_PREFIX)
    counts = collections.Counter(
        m.shard_of("Deployment", f"team-{i % 50}", f"app-{i}") for i in range(10_000))
    assert len(counts) == m.SHARDS
    print(f"\n10,000 workloads over {m.SHARDS} shards: {min(counts.values())}.."
          f"{max(counts.values())} records per shard")
    assert max(counts.values()) < 2 * 10_000 / m.SHARDS


def test_the_data_key_is_readable_when_it_fits_and_hashed_when_not() -> None:
    assert m.data_key("Deployment", "team-a", "web") == "Deployment.team-a.web"
    long = m.data_key("Deployment", "team-a", "x" * 253)
    assert len(long) <= 253 and long.startswith("Deployment.team-a.")
    assert long != m.data_key("Deployment", "team-a", "y" * 253)


def test_a_record_of_another_uid_reads_as_fresh() -> None:
    stored = record(state="Failed")
    assert m.for_workload(stored, kind="Deployment", namespace="team-a", name="web",
                          uid="u1") is stored
    fresh = m.for_workload(stored, kind="Deployment", namespace="team-a", name="web", uid="u2")
    assert (fresh.uid, fresh.state, fresh.empty) == ("u2", "", True)
    assert m.for_workload(None, kind="K", namespace="n", name="x", uid="u").identity == (
        "K", "n", "x")


def test_failed_rebuilds_are_bounded_newest_last_and_once_each() -> None:
    r = record()
    for i in range(m.FAILED_LIMIT + 5):
        r = m.with_failed(r, digest=f"sha256:{i:064x}", key="", patch="p", now=T0)
    assert len(r.failed) == m.FAILED_LIMIT
    assert r.failed[-1]["digest"] == f"sha256:{m.FAILED_LIMIT + 4:064x}"
    assert "key" not in r.failed[-1]
    again = m.with_failed(r, digest=r.failed[0]["digest"], key="k", patch="p2", now=T0)
    assert len(again.failed) == m.FAILED_LIMIT
    assert again.failed[-1] == {"digest": r.failed[0]["digest"], "key": "k", "patch": "p2",
                                "at": "2026-12-05T12:00:00Z"}
    assert json.loads(m.failed_mirror(again))[-1]["patch"] == "p2"


def test_since_moves_only_when_the_state_changes() -> None:
    first = m.with_state(record(), state="Compliant", now=T0)
    later = T0 + dt.timedelta(hours=1)
    assert m.with_state(first, state="Compliant", now=later).since == T0
    assert m.with_state(first, state="Failed", now=later).since == later


def test_a_shard_decodes_only_records_under_their_own_key() -> None:
    r = record(state="Compliant")
    data = {m.data_key(*r.identity): m.encode(r), "Deployment.team-a.other": m.encode(r),
            "junk": "{"}
    assert m.decode_shard(data) == {r.identity: r}
    assert m.decode_shard(None) == {}


def test_a_shard_stays_well_under_etcds_object_limit_at_ten_thousand_workloads() -> None:
    typical = record(state="Compliant", since=T0, bases={"app": BaseMemory(
        digest=D, base="123456789012.dkr.ecr.us-east-1.amazonaws.com/base/python:3.12",
        base_digest=B1)})
    sizes = {"typical": typical, "worst": full()}
    per = {k: len(m.data_key(*r.identity)) + len(m.encode(r).encode()) for k, r in sizes.items()}
    counts = collections.Counter(
        m.shard_of("Deployment", f"team-{i % 50}", f"app-{i}") for i in range(10_000))
    per_shard = max(counts.values())  # the fullest shard
    print(f"\nbytes per record: typical {per['typical']}, worst {per['worst']}; fullest shard at "
          f"10,000 workloads ({per_shard} records): typical {per['typical'] * per_shard / 1024:.0f} KiB, all worst "
          f"{per['worst'] * per_shard / 1024:.0f} KiB (etcd limit 1536 KiB)")
    assert per["worst"] * per_shard < 0.5 * 1024 * 1024
