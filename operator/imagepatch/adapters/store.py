"""A read store fed by the watches the operator already runs (issue 21 item 2).

kopf watches ImagePatchPolicies, ImagePatches and the four workload kinds;
``handlers.py`` hands every watch event to ``WatchStore``. ``StoredKube`` is
the Kubernetes adapter (``adapters.kube.Kube``) with its readers answered from
that store: detection's listing of policies and ImagePatches on every tick,
the planner's gets and its claims (``list_imagepatches``), and target
discovery's listing of opted-in workloads cost no request once the store is
primed. Callers keep calling the same methods; only ``handlers.configure``
chooses this class.

Freshness, honestly:

- **Not primed yet: the API answers.** kopf does not say when its first
  listing is complete, so a kind's first read goes to the API server, and
  that full listing primes the store. Watch events that arrived meanwhile win
  over the listing (by resourceVersion), and an object deleted meanwhile is
  not brought back by the listing.
- **Read-your-writes.** Every write the operator makes through this adapter
  puts the object, as the API server returned it, into the store; a watch
  event older than it (by resourceVersion) that arrives later is ignored. A
  delete leaves a tombstone until a later listing.
- **Level-based.** A listing older than ``RELIST_SECONDS`` is made again
  through the API (a watch can die without a word, nolar/kopf#787); what the
  new listing lacks and nothing touched since is dropped.
- resourceVersions are compared as integers when both are (etcd's always
  are); two that are not comparable let the later arrival win.

What the store does not serve:

- **Secrets.** The RBAC (``deploy/rbac.yaml``, the chart's Role) grants only
  ``get`` on Secrets in the operator's namespace. ``resourceNames`` cannot
  restrict ``list``/``watch``, so a watch of the policy Secrets would need a
  grant to read every Secret in that namespace; ``get_secret`` stays a GET of
  the named Secret (one per referenced Secret per detection pass).
- **Whole workloads.** A workload is kept slim (identity, annotations, the
  selector, each container's name and image: what target discovery reads);
  ``get_workload`` (a rollout's read before it writes, and the health gate's
  status) still goes to the API server, so a precondition is never written
  from a cached copy.

Returned objects are copies: a caller may change what it gets without
changing the store.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from imagepatch.adapters.kube import DEFAULT_REQUEST_TIMEOUT, Kube
from imagepatch.core import gitops
from imagepatch.core.kinds import CONTAINER_LISTS, CRONJOB, KINDS
from imagepatch.model.names import POLICY_ANNOTATION, PREFIX

# Seconds after which a kind's next listing goes to the API again (a level-based
# resync: a watch can die silently, nolar/kopf#787); a detection tick lists
# policies and ImagePatches, so each is re-read about this often.
RELIST_SECONDS = 300.0
# Tombstones (deleted keys) kept until a listing begun after them; the oldest
# go first beyond this many.
MAX_TOMBSTONES = 1024


def _version(body: Mapping[str, Any]) -> int | None:
    raw = (body.get("metadata") or {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def _not_newer(version: int | None, than: int | None) -> bool:
    """Whether an object at ``version`` is not newer than one at ``than`` (comparable only)."""
    return version is not None and than is not None and version <= than


def _older(version: int | None, than: int | None) -> bool:
    """Whether an object at ``version`` is older than one at ``than`` (comparable only)."""
    return version is not None and than is not None and version < than


class Shelf:
    """One resource type's objects by key: what the watch and our own writes left.

    ``primed`` once a full listing went in; before, readers ask the API.
    ``listed_at`` (monotonic) is when the last listing went in: listings are
    repeated now and then (``StoredKube.relist_after``), because a watch that
    died silently (nolar/kopf#787) would otherwise leave the store stale for
    good; an object the new listing lacks, and no event or write touched
    since the listing began, is dropped.
    """

    def __init__(self) -> None:
        self.objects: dict[Hashable, dict[str, Any]] = {}
        self.primed = False
        self.listed_at: float | None = None
        # Each change gets a number: what a listing may drop is what it predates.
        self._seq = 0
        self._touched: dict[Hashable, int] = {}
        # key -> (resourceVersion it was deleted at, change number): an older copy
        # (in a listing begun before the delete, or a late event) must not come back.
        self._gone: dict[Hashable, tuple[int | None, int]] = {}

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def put(self, key: Hashable, body: dict[str, Any]) -> None:
        """Keep ``body`` unless what is kept (or a tombstone) is newer."""
        version = _version(body)
        if key in self._gone:
            if _not_newer(version, self._gone[key][0]):
                return
            del self._gone[key]  # re-created since
        held = self.objects.get(key)
        if held is not None and _older(version, _version(held)):
            return  # a late event: what we hold (our own write, say) is newer
        self.objects[key] = body
        self._touched[key] = self._next()

    def deleted(self, key: Hashable, version: int | None) -> None:
        """The object is gone: a DELETED event, or our own delete (its precondition's version)."""
        held = self.objects.get(key)
        if held is not None and _older(version, _version(held)):
            return  # a stale DELETED of an object re-created since
        self.objects.pop(key, None)
        self._touched.pop(key, None)
        self._gone[key] = (version, self._next())
        while len(self._gone) > MAX_TOMBSTONES:
            del self._gone[next(iter(self._gone))]

    def begin_listing(self) -> int:
        """Call before asking the API for a full listing; pass the answer to ``prime``."""
        return self._seq

    def prime(
        self, listing: Iterable[tuple[Hashable, dict[str, Any]]], *, since: int, now: float
    ) -> None:
        """A full listing from the API, begun at change ``since``: fills every key no
        newer event holds, and drops what it lacks unless touched since it began."""
        listed = set()
        for key, body in listing:
            listed.add(key)
            self.put(key, body)
        for key in [k for k in self.objects if k not in listed
                    and self._touched.get(k, 0) <= since]:
            del self.objects[key]
            self._touched.pop(key, None)
        # Deletes the listing already reflects need no tombstone any more.
        self._gone = {k: gone for k, gone in self._gone.items() if gone[1] > since}
        self.primed = True
        self.listed_at = now

    def get(self, key: Hashable) -> dict[str, Any] | None:
        held = self.objects.get(key)
        return copy.deepcopy(held) if held is not None else None

    def values(self) -> list[dict[str, Any]]:
        ordered = sorted(self.objects.items(), key=lambda kv: str(kv[0]))
        return [copy.deepcopy(body) for _, body in ordered]


def _lean(body: Mapping[str, Any]) -> dict[str, Any]:
    """A policy or ImagePatch as kept: without ``managedFields`` (nothing reads them)."""
    kept = dict(body)
    meta = dict(kept.get("metadata") or {})
    meta.pop("managedFields", None)
    kept["metadata"] = meta
    return kept


def slim_workload(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What target discovery reads of a workload: identity, annotations, the
    selector, and each container's name and image, at its kind's template path."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    template = (
        ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        if kind == CRONJOB
        else spec.get("template") or {}
    )
    pod_spec = template.get("spec") or {}
    lists = {
        key: [{"name": c.get("name"), "image": c.get("image")} for c in pod_spec.get(key) or ()
              if isinstance(c, Mapping)]
        for key in CONTAINER_LISTS
        if pod_spec.get(key)
    }
    slim_template = {"spec": lists}
    slim_spec: dict[str, Any] = (
        {"jobTemplate": {"spec": {"template": slim_template}}}
        if kind == CRONJOB
        else {"selector": spec.get("selector") or {}, "template": slim_template}
    )
    if isinstance(spec.get("workloadRef"), Mapping):  # a Rollout's (core.workload_ref)
        slim_spec["workloadRef"] = dict(spec["workloadRef"])
    return {
        "kind": kind,
        # Flux's and Argo CD's claims too: they decide whether it is patched (core.gitops).
        "metadata": gitops.keep_claims(meta, {
            # generation: a person's own template change is told from imagepatch's
            # by it (core.user_rollback).
            **{k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "generation")
               if k in meta},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                            if k.startswith(PREFIX)},
        }),
        "spec": slim_spec,
    }


def _named(body: dict[str, Any]) -> tuple[Hashable, dict[str, Any]]:
    """A policy's or an ImagePatch's store entry: by name, lean."""
    return body["metadata"]["name"], _lean(body)


def _opted_in(body: Mapping[str, Any]) -> bool:
    return POLICY_ANNOTATION in ((body.get("metadata") or {}).get("annotations") or {})


def _workload_key(kind: str, body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    return (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class WatchStore:
    """Policies, ImagePatches and opted-in workloads (slim), as the watches report them."""

    def __init__(self) -> None:
        self.policies = Shelf()
        self.imagepatches = Shelf()
        self.workloads = {kind: Shelf() for kind in KINDS}

    # -- watch events (from handlers.py) ---------------------------------------------
    # kopf reports its initial listing as events of type None: they are additions.

    def observe_policy(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self._observe(self.policies, event_type, body)

    def observe_imagepatch(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self._observe(self.imagepatches, event_type, body)

    def observe_workload(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        shelf = self.workloads.get(kind)
        if shelf is None or not (body.get("metadata") or {}).get("name"):
            return
        key = _workload_key(kind, body)
        if event_type == "DELETED" or not _opted_in(body):
            # Opting out removes it from what target discovery may find.
            shelf.deleted(key, _version(body))
            return
        shelf.put(key, slim_workload(kind, body))

    @staticmethod
    def _observe(shelf: Shelf, event_type: str | None, body: Mapping[str, Any]) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if event_type == "DELETED":
            shelf.deleted(name, _version(body))
        else:
            shelf.put(name, _lean(body))


class StoredKube(Kube):
    """``Kube`` whose readers answer from a ``WatchStore`` once it is primed."""

    def __init__(
        self, api_client: Any = None, *, namespaces: Sequence[str] = (),
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT, store: WatchStore | None = None,
        relist_after: float = RELIST_SECONDS, monotonic: Callable[[], float] = time.monotonic,
        argo_rollouts: bool = False,
    ) -> None:
        """``relist_after``: seconds after which a kind's next listing asks the API again."""
        super().__init__(api_client, namespaces=namespaces, request_timeout=request_timeout,
                         argo_rollouts=argo_rollouts)
        self.store = store if store is not None else WatchStore()
        self.relist_after = relist_after
        self.monotonic = monotonic

    async def _listed(
        self,
        shelf: Shelf,
        fetch: Callable[[], Awaitable[list[dict[str, Any]]]],
        entry: Callable[[dict[str, Any]], tuple[Hashable, dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """Everything on ``shelf``, listed through the API first when it is not
        primed or its last listing is older than ``relist_after``."""
        at = shelf.listed_at
        if not shelf.primed or at is None or self.monotonic() - at >= self.relist_after:
            since = shelf.begin_listing()
            listing = await fetch()
            shelf.prime((entry(b) for b in listing), since=since, now=self.monotonic())
        return shelf.values()

    # -- policies ----------------------------------------------------------------

    async def get_policy(self, name: str) -> dict[str, Any] | None:
        if self.store.policies.primed:
            return self.store.policies.get(name)
        return await super().get_policy(name)

    async def list_policies(self) -> list[dict[str, Any]]:
        return await self._listed(self.store.policies, super().list_policies, _named)

    async def write_policy_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        written = await super().write_policy_status(name, status)
        self.store.policies.put(name, _lean(written))
        return written

    # -- ImagePatches -------------------------------------------------------------

    async def get_imagepatch(self, name: str) -> dict[str, Any] | None:
        if self.store.imagepatches.primed:
            return self.store.imagepatches.get(name)
        return await super().get_imagepatch(name)

    async def list_imagepatches(self, *, label_selector: str = "") -> list[dict[str, Any]]:
        if label_selector:  # not kept by label: the API selects
            return await super().list_imagepatches(label_selector=label_selector)
        return await self._listed(self.store.imagepatches, super().list_imagepatches, _named)

    def _wrote(self, written: Mapping[str, Any] | None) -> None:
        if written is not None:
            self.store.imagepatches.put(written["metadata"]["name"], _lean(written))

    async def create_imagepatch(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        created = await super().create_imagepatch(body)
        self._wrote(created)
        return created

    async def annotate_imagepatch(
        self, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any] | None:
        written = await super().annotate_imagepatch(name, annotations)
        self._wrote(written)
        return written

    async def set_imagepatch_targets(
        self, name: str, targets: list[dict[str, Any]], *, resource_version: str
    ) -> dict[str, Any] | None:
        written = await super().set_imagepatch_targets(
            name, targets, resource_version=resource_version
        )
        self._wrote(written)
        return written

    async def write_imagepatch_status(
        self, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        written = await super().write_imagepatch_status(
            name, status, resource_version=resource_version
        )
        self._wrote(written)
        return written

    async def remove_imagepatch_finalizer(
        self, name: str, finalizers: Sequence[str], finalizer: str
    ) -> dict[str, Any] | None:
        written = await super().remove_imagepatch_finalizer(name, finalizers, finalizer)
        self._wrote(written)
        return written

    async def delete_imagepatch(self, name: str, *, resource_version: str) -> bool:
        deleted = await super().delete_imagepatch(name, resource_version=resource_version)
        if deleted:
            version = int(resource_version) if resource_version.isdigit() else None
            self.store.imagepatches.deleted(name, version)
        return deleted

    # -- workloads (slim; see the module docstring) ---------------------------------

    async def list_opted_in(self, kind: str, policy: str) -> list[dict[str, Any]]:
        shelf = self.store.workloads.get(kind)
        if shelf is None:  # not a kind we patch: the adapter says so
            return await super().list_opted_in(kind, policy)
        listed = await self._listed(
            shelf, lambda: self.list_all_opted_in(kind, keep=lambda b: slim_workload(kind, b)),
            lambda b: (_workload_key(kind, b), slim_workload(kind, b)),
        )
        return [w for w in listed if w["metadata"]["annotations"].get(POLICY_ANNOTATION) == policy]

    def _wrote_workload(self, kind: str, written: Mapping[str, Any] | None) -> None:
        if written is not None:
            self.store.observe_workload(kind, "MODIFIED", written)

    async def annotate_workload(
        self, kind: str, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any] | None:
        written = await super().annotate_workload(kind, namespace, name, annotations)
        self._wrote_workload(kind, written)
        return written

    async def set_container_image(
        self,
        namespace: str,
        name: str,
        *,
        container: str,
        image: str,
        resource_version: str,
        annotations: Mapping[str, str] | None = None,
        allow_unpinned: bool = False,
        kind: str = "Deployment",
        container_list: str = "containers",
    ) -> dict[str, Any]:
        written = await super().set_container_image(
            namespace, name, container=container, image=image,
            resource_version=resource_version, annotations=annotations,
            allow_unpinned=allow_unpinned, kind=kind, container_list=container_list,
        )
        self._wrote_workload(kind, written)
        return written
