"""One loop per unfinished ImagePatch: reconcile, then sleep until due or woken.

The planner says when it next needs to look (a gate poll, a soak's end, a
window's opening) or that only a person can move it on (``None``: approval).
Each unfinished ImagePatch gets one asyncio task that reconciles, then sleeps
for exactly that long, capped by a level-based resync. A watch event wakes it
at once when a person changes the object (its ``generation``, i.e. the spec,
or its annotations); its own status writes do not. So a patch that waits
costs no API calls between its due times, and there is exactly one actor per
ImagePatch: a name never has two tasks.

The loop ends when a watch event shows the patch finished (a terminal
phase) or deleted. An operator started with ``--namespace`` runs no loop for
an ImagePatch that lists a target outside its namespaces (``in_scope``):
ImagePatches are cluster-scoped, and one whose workloads this operator cannot
see is not its to move (it would read them as gone).

A loop that raises outside its reconcile is restarted by the supervisor
(``reconcile.supervisor``) under the kind ``patch-loop``; what is kept per
patch name is dropped when its patch is deleted. This module knows asyncio
and the object's shape; what a reconcile does is the ``reconcile`` callable's
business.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagepatch.adapters import metrics
from imagepatch.model.imagepatch import TERMINAL_PHASES
from imagepatch.model.names import LAST_HANDLED_ANNOTATION
from imagepatch.reconcile.supervisor import Supervisor

log = logging.getLogger("imagepatch.loops")

# Annotations that machinery (not a person) writes; they must not wake a loop.
IGNORED_ANNOTATIONS = ("kopf.zalando.org/", LAST_HANDLED_ANNOTATION)

Reconcile = Callable[[str], Awaitable[float | None]]


def wake_key(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a person changes: the spec (generation) and the annotations."""
    meta = body.get("metadata") or {}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(IGNORED_ANNOTATIONS)
    }
    return (meta.get("generation"), tuple(sorted(annotations.items())))


def is_finished(body: Mapping[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in TERMINAL_PHASES


def in_scope(body: Mapping[str, Any], watches: Callable[[str], bool]) -> bool:
    """Is every target the patch lists in a watched namespace? ``watches`` is
    ``Kube.watches`` (the ``--namespace`` scope). A patch a person left without
    targets is in scope: its targets are the opted-in containers this operator sees."""
    targets = (body.get("spec") or {}).get("targets") or ()
    return all(watches(str(t.get("namespace") or "")) for t in targets)


@dataclass
class _Loop:
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    key: tuple[Any, ...] = ()
    stop: bool = False
    policy: str = ""


class PatchLoops:
    """The set of per-ImagePatch loops, fed by watch events (``observe``)."""

    def __init__(
        self, reconcile: Reconcile, *, resync: float = 300.0, supervisor: Supervisor | None = None,
        watches: Callable[[str], bool] = lambda _namespace: True,
    ) -> None:
        """``watches``: is a namespace in this operator's ``--namespace`` scope?"""
        self.reconcile = reconcile
        self.watches = watches
        self.resync = resync
        self.supervisor = supervisor or Supervisor()
        self.loops: dict[str, _Loop] = {}
        self.passes: dict[str, int] = {}  # name -> reconciles run (for tests and logs)
        self.policy_generations: dict[str, Any] = {}  # policy -> the generation last seen

    def running(self) -> set[str]:
        return {n for n, lp in self.loops.items() if lp.task is not None and not lp.task.done()}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on an ImagePatch (kopf calls this on the event loop)."""
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        loop = self.loops.get(name)
        alive = loop is not None and loop.task is not None and not loop.task.done()
        foreign = not in_scope(body, self.watches)
        if foreign and loop is None:
            log.debug("ImagePatch %s targets a namespace outside --namespace: not ours", name)
        if event_type == "DELETED" or is_finished(body) or foreign:
            if loop is not None and alive:
                loop.stop = True
                loop.wake.set()
            if event_type == "DELETED":
                self.passes.pop(name, None)
                self.supervisor.forget(f"imagepatch/{name}")
            return
        key = wake_key(body)
        policy = str((body.get("spec") or {}).get("policy") or "")
        if loop is None or not alive:
            loop = _Loop(key=key, policy=policy)
            self.loops[name] = loop
            loop.task = self.supervisor.spawn(
                "patch-loop", functools.partial(self._run, name, loop), name=f"imagepatch/{name}"
            )
            return
        loop.stop = False  # unfinished again (a finished event was stale)
        loop.policy = policy
        if key != loop.key:
            loop.key = key
            loop.wake.set()

    def observe_policy(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on an ImagePatchPolicy: a spec change wakes its patches.

        Un-suspending a policy, switching its approval mode or fixing its
        window must not wait for the resync. Its status writes (detection
        counts workloads every pass) do not change the generation.
        """
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        generation = None if event_type == "DELETED" else meta.get("generation")
        seen = name in self.policy_generations
        previous = self.policy_generations.get(name)
        if generation is None:
            self.policy_generations.pop(name, None)
        else:
            self.policy_generations[name] = generation
        if not seen and event_type is None:
            return  # the initial listing: the loops start by reconciling anyway
        if seen and previous == generation:
            return
        for loop in self.loops.values():
            if loop.policy == name and loop.task is not None and not loop.task.done():
                loop.wake.set()

    async def _run(self, name: str, loop: _Loop) -> None:
        while not loop.stop:
            self.passes[name] = self.passes.get(name, 0) + 1
            try:
                after = await self.reconcile(name)
            except Exception:  # the reconcile maps its errors; this is a last resort
                log.exception("ImagePatch %s: reconcile raised; retrying after the resync", name)
                after = self.resync
            metrics.record_patch_reconcile()
            if loop.stop:
                break
            timeout = self.resync if after is None else max(0.0, min(after, self.resync))
            try:
                await asyncio.wait_for(loop.wake.wait(), timeout=timeout)
            except TimeoutError:
                pass
            loop.wake.clear()
        if self.loops.get(name) is loop:
            del self.loops[name]

    async def aclose(self) -> None:
        """Stop every loop (at shutdown); a reconcile in flight is cancelled."""
        tasks = [lp.task for lp in self.loops.values() if lp.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.loops.clear()
