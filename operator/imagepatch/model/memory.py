"""The operator's memory of a workload: what it decides from, kept where tenants cannot write.

Tenants own requests, the operator owns memory (DESIGN.md, v0.3). A workload's
annotations are written by its owner, so what detection and the planner
*decide from* is kept in ConfigMaps in the operator's namespace
(``adapters.memory``); the ``imagepatch.dev/state`` and
``imagepatch.dev/failed-digests`` annotations stay as a read-only mirror for
people and are never read back for a decision. This module is the pure part:
one workload's record, its JSON encoding, the ConfigMap (shard) and data key
it lives under, and the bounded updates::

    {"v": 1, "uid": "…", "kind": "Deployment", "namespace": "team-a", "name": "web",
     "state": "BaseImageOutdated", "since": "2026-12-05T12:00:00Z",
     "bases": {"app": {"digest": "sha256:…", "base": "registry/base:1",
                       "baseDigest": "sha256:…"}},
     "failed": [{"digest": "sha256:…", "key": "…", "patch": "app-1a2b3c", "at": "…"},
                {"digest": "sha256:…", "key": "…", "patch": "app-4d5e6f", "at": "…",
                 "reason": "RejectedByUser"}]}

* ``uid``: a workload deleted and created again under the same name is
  another workload; its record starts fresh (:func:`for_workload`).
* ``bases``: per container, the base digest the running digest was taken to
  be built on when its lineage came only from the ``imagepatch.dev/base-image``
  annotation (the image records none): without it a base push could never make
  such a workload outdated.
* ``failed``: the rebuilds that failed their health gate here, and those a
  person rolled back by hand (``reason: RejectedByUser``), newest last, at
  most :data:`FAILED_LIMIT` (the same bound the annotation had).
* ``state``/``since``: the last evaluated state and when it was entered.
* ``seen``: base digest -> when this workload's evaluation first saw it, for
  ``spec.baseImages.approveAfter`` when the registry gives no creation time
  (``core/approval.py``); the newest :data:`SEEN_LIMIT` are kept.
* ``holdWarned``: a fingerprint of the ``imagepatch.dev/hold`` value a
  ``HoldIgnored`` Warning Event was posted for (``core/hold.py``), so an
  unreadable hold is reported once per distinct value, not on every pass.

Sharding: records are spread by a hash of (kind, namespace, name) over
:data:`SHARDS` ConfigMaps, so no object nears etcd's 1.5 MiB limit at 10,000
workloads: a typical record is ~0.4 KiB, the largest (two containers, ten
failed rebuilds) ~4.3 KiB, so the fullest of 128 shards (~100 records) holds
~40 KiB, and ~430 KiB if every record were the largest (``tests/unit/test_memory_model.py``
prints the measured figures).

Reading is tolerant like every reader of stored JSON: a value that is not a
record of this version reads as no record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from imagepatch.model.times import format_time, parse_time

VERSION = 1
SHARDS = 128
FAILED_LIMIT = 10
SEEN_LIMIT = 8
CONFIGMAP_PREFIX = "imagepatch-memory-"
# On each memory ConfigMap: how the operator finds its own (one LIST at start).
MEMORY_LABEL = "imagepatch.dev/memory"
MEMORY_LABEL_VALUE = "v1"

# ConfigMap data keys: [-._a-zA-Z0-9]+, at most 253 characters.
_KEY_UNSAFE = re.compile(r"[^-._a-zA-Z0-9]")
_KEY_LIMIT = 253


@dataclass(frozen=True, kw_only=True, slots=True)
class BaseMemory:
    """The base one container's running digest was taken to be built on."""

    digest: str  # the container's running digest
    base: str  # the base tag the workload annotation named
    base_digest: str  # the base digest then


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadMemory:
    """What the operator remembers of one workload (of one uid)."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    state: str = ""
    since: dt.datetime | None = None
    bases: Mapping[str, BaseMemory] = field(default_factory=dict)
    failed: tuple[Mapping[str, str], ...] = ()
    seen: Mapping[str, dt.datetime] = field(default_factory=dict)
    hold_warned: str = ""

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def empty(self) -> bool:
        return not (self.state or self.bases or self.failed or self.seen or self.hold_warned)


def shard_of(kind: str, namespace: str, name: str, *, shards: int = SHARDS) -> str:
    """The name of the ConfigMap that holds this workload's record (stable across restarts)."""
    digest = hashlib.sha256(f"{kind}/{namespace}/{name}".encode()).digest()
    return f"{CONFIGMAP_PREFIX}{int.from_bytes(digest[:4], 'big') % shards:02d}"


def data_key(kind: str, namespace: str, name: str) -> str:
    """The record's key in its ConfigMap: readable when it fits, else with the name hashed.

    A namespace has no dots, so ``kind.namespace.name`` is unambiguous.
    """
    readable = f"{kind}.{namespace}.{name}"
    if len(readable) <= _KEY_LIMIT and not _KEY_UNSAFE.search(readable):
        return readable
    hashed = hashlib.sha256(name.encode()).hexdigest()[:40]
    return _KEY_UNSAFE.sub("-", f"{kind}.{namespace}.{hashed}")[:_KEY_LIMIT]


def for_workload(
    stored: WorkloadMemory | None, *, kind: str, namespace: str, name: str, uid: str
) -> WorkloadMemory:
    """The record of this workload: the stored one if it is of this uid, else a fresh one."""
    if stored is not None and (not uid or stored.uid == uid):
        return stored
    return WorkloadMemory(kind=kind, namespace=namespace, name=name, uid=uid)


def with_failed(
    memory: WorkloadMemory, *, digest: str, key: str, patch: str, now: dt.datetime,
    reason: str = "",
) -> WorkloadMemory:
    """``digest`` remembered as failed here (newest last, at most FAILED_LIMIT entries).

    ``reason``: why, when not its health gate (``RejectedByUser``: a person
    rolled it back by hand, ``core.user_rollback``).
    """
    kept = [e for e in memory.failed if e.get("digest") != digest]
    entry = {"digest": digest, "patch": patch, "at": format_time(now)}
    if key:
        entry["key"] = key
    if reason:
        entry["reason"] = reason
    return replace(memory, failed=(*kept, entry)[-FAILED_LIMIT:])


def with_base(memory: WorkloadMemory, container: str, remembered: BaseMemory) -> WorkloadMemory:
    return replace(memory, bases={**memory.bases, container: remembered})


def with_seen(memory: WorkloadMemory, base_digest: str, now: dt.datetime) -> WorkloadMemory:
    """``base_digest`` first seen at ``now``, unless already remembered (newest SEEN_LIMIT kept)."""
    if base_digest in memory.seen:
        return memory
    kept = sorted(memory.seen.items(), key=lambda item: item[1])[-(SEEN_LIMIT - 1):]
    return replace(memory, seen={**dict(kept), base_digest: now})


def with_state(
    memory: WorkloadMemory, *, state: str, now: dt.datetime
) -> WorkloadMemory:
    """The state recorded; ``since`` moves only when the state changes."""
    if memory.state == state and memory.since is not None:
        return memory
    return replace(memory, state=state, since=now)


def with_hold_warned(memory: WorkloadMemory, fingerprint: str) -> WorkloadMemory:
    """The hold value last reported as ignored (``""``: none is, or it was read again)."""
    if memory.hold_warned == fingerprint:
        return memory
    return replace(memory, hold_warned=fingerprint)


def failed_mirror(memory: WorkloadMemory) -> str:
    """The ``imagepatch.dev/failed-digests`` annotation people read (never read back)."""
    return json.dumps([dict(e) for e in memory.failed], sort_keys=True, separators=(",", ":"))


def encode(memory: WorkloadMemory) -> str:
    body: dict[str, Any] = {
        "v": VERSION,
        "uid": memory.uid,
        "kind": memory.kind,
        "namespace": memory.namespace,
        "name": memory.name,
    }
    if memory.state:
        body["state"] = memory.state
    if memory.since is not None:
        body["since"] = format_time(memory.since)
    if memory.bases:
        body["bases"] = {
            c: {"digest": b.digest, "base": b.base, "baseDigest": b.base_digest}
            for c, b in sorted(memory.bases.items())
        }
    if memory.failed:
        body["failed"] = [dict(e) for e in memory.failed]
    if memory.seen:
        body["seen"] = {d: format_time(t) for d, t in sorted(memory.seen.items())}
    if memory.hold_warned:
        body["holdWarned"] = memory.hold_warned
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def decode(raw: object) -> WorkloadMemory | None:
    """A record as :func:`encode` wrote it; None for anything else."""
    if not isinstance(raw, str):
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        return None
    kind, namespace, name = (_text(body.get(k)) for k in ("kind", "namespace", "name"))
    if not (kind and namespace and name):
        return None
    bases = body.get("bases")
    failed = body.get("failed")
    seen = body.get("seen")
    return WorkloadMemory(
        kind=kind,
        namespace=namespace,
        name=name,
        uid=_text(body.get("uid")),
        state=_text(body.get("state")),
        since=parse_time(body.get("since")),
        bases={
            c: BaseMemory(
                digest=_text(b.get("digest")),
                base=_text(b.get("base")),
                base_digest=_text(b.get("baseDigest")),
            )
            for c, b in (bases.items() if isinstance(bases, dict) else ())
            if isinstance(c, str) and isinstance(b, dict)
        },
        failed=tuple(
            {k: v for k, v in e.items() if isinstance(k, str) and isinstance(v, str)}
            for e in (failed if isinstance(failed, list) else ())
            if isinstance(e, dict) and isinstance(e.get("digest"), str)
        )[-FAILED_LIMIT:],
        seen={
            d: when
            for d, t in (seen.items() if isinstance(seen, dict) else ())
            if isinstance(d, str) and (when := parse_time(t)) is not None
        },
        hold_warned=_text(body.get("holdWarned")),
    )


def decode_shard(data: Mapping[str, Any] | None) -> dict[tuple[str, str, str], WorkloadMemory]:
    """Every readable record of one ConfigMap's ``data``, by workload identity."""
    out: dict[tuple[str, str, str], WorkloadMemory] = {}
    for key, raw in (data or {}).items():
        record = decode(raw)
        if record is not None and data_key(*record.identity) == key:
            out[record.identity] = record
    return out
