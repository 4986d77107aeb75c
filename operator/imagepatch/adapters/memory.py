"""Where the operator keeps its memory: ConfigMaps in its own namespace, never a workload.

Tenants own requests, the operator owns memory (DESIGN.md, v0.3): a workload's
owner can edit its annotations, so the base digest detection last saw, the
rebuilds that failed there and the last evaluated state are kept here, in
``imagepatch-memory-<nn>`` ConfigMaps in the operator's namespace (only the
operator and an admin can write them). ``model.memory`` is the record, its
encoding and which ConfigMap (shard) holds it.

* **Loaded once** at start (one LIST with a label selector) and kept in
  memory; every read is from that copy.
* **Written through**: :meth:`OperatorMemory.stage` changes the copy and marks
  the record dirty, :meth:`OperatorMemory.flush` writes each dirty shard in one
  merge patch of its changed keys with a ``resourceVersion`` precondition; on
  a conflict the shard is read again (a LIST by name, so the Role needs no
  ``get``), our dirty keys are laid over it and the write is tried again.
  :meth:`OperatorMemory.put` is stage and flush of that one shard: a failure
  raises, so a caller that must record before acting (a rollback) does not act.
* **Pruned** when the workload is deleted (the watch says so); a workload
  deleted and created again reads as a fresh record (another uid).

Without a ``Kube`` (unit tests of ``reconcile/``) it is an in-process memory.
"""

from __future__ import annotations

import asyncio
import logging

from imagepatch.adapters.errors import AdapterError, ConflictError, NotFoundError
from imagepatch.adapters.kube import Kube
from imagepatch.model import memory as model
from imagepatch.model.memory import WorkloadMemory

log = logging.getLogger("imagepatch.memory")

Identity = tuple[str, str, str]  # kind, namespace, name

# Attempts of one shard write that keeps meeting a conflict.
_ATTEMPTS = 4


class OperatorMemory:
    """The operator's memory of every workload it has evaluated or rolled back."""

    def __init__(self, kube: Kube | None = None, namespace: str = "", *,
                 shards: int = model.SHARDS) -> None:
        self.kube = kube
        self.namespace = namespace
        self.shards = shards
        self.records: dict[Identity, WorkloadMemory] = {}
        self._versions: dict[str, str] = {}  # shard name -> resourceVersion ("" until created)
        self._dirty: dict[str, set[Identity]] = {}  # shard name -> identities to write
        self._locks: dict[str, asyncio.Lock] = {}
        self.loaded = kube is None

    def _shard(self, identity: Identity) -> str:
        return model.shard_of(*identity, shards=self.shards)

    async def load(self) -> int:
        """Read every shard (one LIST); the number of records read."""
        if self.kube is None:
            return len(self.records)
        items = await self.kube.list_configmaps(
            self.namespace, label_selector=f"{model.MEMORY_LABEL}={model.MEMORY_LABEL_VALUE}"
        )
        for item in items:
            meta = item.get("metadata") or {}
            self._versions[meta.get("name", "")] = meta.get("resourceVersion", "")
            for identity, record in model.decode_shard(item.get("data")).items():
                self.records.setdefault(identity, record)
        self.loaded = True
        log.info("operator memory: %d records read from %d ConfigMaps in %s",
                 len(self.records), len(items), self.namespace)
        return len(self.records)

    # -- reads (from the copy) ---------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str, uid: str) -> WorkloadMemory:
        """This workload's record; a fresh one if none, or if it was of another uid."""
        return model.for_workload(
            self.records.get((kind, namespace, name)), kind=kind, namespace=namespace,
            name=name, uid=uid,
        )

    # -- writes ----------------------------------------------------------------------

    def stage(self, record: WorkloadMemory) -> None:
        """Change the copy; the next flush writes it (nothing to do if it is unchanged)."""
        if self.records.get(record.identity) == record:
            return
        self.records[record.identity] = record
        self._dirty.setdefault(self._shard(record.identity), set()).add(record.identity)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The workload is gone: its record is removed at the next flush."""
        identity = (kind, namespace, name)
        if self.records.pop(identity, None) is not None:
            self._dirty.setdefault(self._shard(identity), set()).add(identity)

    async def put(self, record: WorkloadMemory) -> None:
        """Stage and write now; raises a classified ``AdapterError`` if it was not written."""
        self.stage(record)
        await self._flush_shard(self._shard(record.identity))

    async def flush(self) -> None:
        """Write every dirty shard; a shard that fails stays dirty for the next flush."""
        for shard in sorted(self._dirty):
            try:
                await self._flush_shard(shard)
            except AdapterError as exc:
                log.warning("operator memory: %s not written: %s: %s", shard, exc.reason, exc)

    async def _flush_shard(self, shard: str) -> None:
        if self.kube is None:
            self._dirty.pop(shard, None)
            return
        kube = self.kube
        async with self._locks.setdefault(shard, asyncio.Lock()):
            for attempt in range(_ATTEMPTS):
                dirty = set(self._dirty.get(shard, ()))
                if not dirty:
                    return
                data: dict[str, str | None] = {}
                for identity in dirty:
                    record = self.records.get(identity)
                    data[model.data_key(*identity)] = (
                        model.encode(record) if record is not None and not record.empty else None
                    )
                try:
                    version = self._versions.get(shard, "")
                    if version:
                        written = await kube.patch_configmap(
                            self.namespace, shard, data, resource_version=version
                        )
                    else:
                        written = await kube.create_configmap(self.namespace, {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {
                                "name": shard,
                                "namespace": self.namespace,
                                "labels": {
                                    model.MEMORY_LABEL: model.MEMORY_LABEL_VALUE,
                                    "app.kubernetes.io/managed-by": "imagepatch",
                                },
                            },
                            "data": {k: v for k, v in data.items() if v is not None},
                        })
                except ConflictError:
                    log.info("operator memory: %s changed since read (attempt %d); reading it "
                             "again", shard, attempt + 1)
                    await self._reread(shard)
                    continue
                except NotFoundError:
                    # Deleted since read (by an admin): created again with what we hold.
                    log.warning("operator memory: %s was deleted; creating it again", shard)
                    self._versions[shard] = ""
                    self._dirty[shard] = {i for i in self.records if self._shard(i) == shard}
                    continue
                self._versions[shard] = (written.get("metadata") or {}).get(
                    "resourceVersion", "")
                left = self._dirty.get(shard, set()) - dirty
                # A record staged while this write was in flight stays dirty.
                if left:
                    self._dirty[shard] = left
                else:
                    self._dirty.pop(shard, None)
                return
            raise ConflictError(f"ConfigMap {self.namespace}/{shard}: still conflicting after "
                                f"{_ATTEMPTS} attempts", reason="Conflict")

    async def _reread(self, shard: str) -> None:
        """The shard as stored now; records we have not changed are taken from it."""
        assert self.kube is not None
        items = await self.kube.list_configmaps(
            self.namespace, field_selector=f"metadata.name={shard}"
        )
        stored = items[0] if items else {}
        self._versions[shard] = (stored.get("metadata") or {}).get("resourceVersion", "")
        dirty = self._dirty.get(shard, set())
        for identity, record in model.decode_shard(stored.get("data")).items():
            if identity not in dirty:
                self.records[identity] = record
