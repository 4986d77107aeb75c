"""Leader election on a coordination.k8s.io Lease, as client-go does it.

kopf's peering pauses peers by priority; it is not leader election. So
``imagepatch run`` holds a Lease in the operator's namespace before it starts
kopf, and a second replica stands by:

* **acquire**: create the Lease, or take it over once its holder has not
  renewed it for ``lease_duration`` *as observed on our own clock* (the time
  we last saw the record change, never the holder's timestamps: clocks skew);
  a released Lease (empty holder) is taken at once;
* **hold**: renew every ``renew_period``; if no renewal succeeded for
  ``renew_deadline`` (shorter than the lease, so we stop before anyone can
  take over), or someone else holds it, leadership is lost and the caller
  exits non-zero, as controller-runtime does; the pod restarts as a standby;
* **release** on a clean shutdown (empty holder), so a rolling update hands
  over at once instead of after a lease duration.

Every write is an update with the read ``resourceVersion``: two candidates
racing for an expired Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from imagepatch.adapters.errors import AdapterError, ConflictError
from imagepatch.adapters.kube import Kube

log = logging.getLogger("imagepatch.leader")


class LeadershipLost(Exception):
    """This replica no longer holds the Lease; it must stop acting now."""


def _micro_time(when: dt.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElector:
    kube: Kube
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    renew_period: float = 5.0
    retry_period: float = 2.0
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def __post_init__(self) -> None:
        if not self.renew_deadline < self.lease_duration:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self._observed: Mapping[str, Any] | None = None  # the record as last read
        self._observed_at = 0.0  # our clock when it last changed
        self.holder = ""  # the holder as last read

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        now = _micro_time(self.wall())
        lease = await self.kube.get_lease(self.namespace, self.name)
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": mine}
            try:
                created = await self.kube.create_lease(self.namespace, body)
            except ConflictError:
                return False
            self._observe(created)
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(lease)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if self.monotonic() < self._observed_at + duration:
                return False  # held, and renewed within its duration as far as we saw
        if holder == self.identity:
            mine["acquireTime"] = spec.get("acquireTime") or now
            mine["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        else:
            mine["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": mine}
        try:
            updated = await self.kube.replace_lease(self.namespace, body)
        except ConflictError:
            return False  # another candidate wrote first
        self._observe(updated)
        return True

    def _observe(self, lease: Mapping[str, Any]) -> None:
        """Note when the record last changed, on our clock (any write bumps its version)."""
        record = {"version": (lease.get("metadata") or {}).get("resourceVersion"),
                  **(lease.get("spec") or {})}
        if record != self._observed:
            self._observed = record
            self._observed_at = self.monotonic()
        self.holder = str(record.get("holderIdentity") or "")

    async def _attempt(self) -> bool:
        try:
            attempt = self.try_acquire_or_renew()
            return await asyncio.wait_for(attempt, timeout=self.retry_period * 2)
        except (AdapterError, TimeoutError) as exc:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, exc or "timed out")
            return False

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        logged = ""
        while not await self._attempt():
            if self.holder != logged:
                log.info("standing by: Lease %s/%s is held by %s",
                         self.namespace, self.name, self.holder or "nobody")
                logged = self.holder
            # Jitter, so standbys do not all try in the same instant.
            await asyncio.sleep(self.retry_period * (1.0 + 0.2 * random.random()))
        log.info("became the leader: Lease %s/%s held by %s",
                 self.namespace, self.name, self.identity)

    async def hold(self) -> None:
        """Renew until leadership is lost; then raise ``LeadershipLost``."""
        last_renewed = self.monotonic()
        period = self.renew_period
        while True:
            await asyncio.sleep(period)
            if await self._attempt():
                last_renewed, period = self.monotonic(), self.renew_period
                continue
            if self.holder and self.holder != self.identity:
                raise LeadershipLost(f"Lease {self.namespace}/{self.name} is held by {self.holder}")
            if self.monotonic() - last_renewed >= self.renew_deadline:
                raise LeadershipLost(
                    f"could not renew Lease {self.namespace}/{self.name} "
                    f"for {self.renew_deadline:.0f}s"
                )
            period = self.retry_period

    async def release(self) -> None:
        """Hand the Lease over at once (a clean shutdown); best effort."""
        try:
            lease = await self.kube.get_lease(self.namespace, self.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            body = {**lease, "spec": {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}}
            await self.kube.replace_lease(self.namespace, body)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except AdapterError as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)


async def serve_standby_probe(endpoint: str) -> Any:
    """Answer the liveness probe while standing by (kopf serves it once leading).

    A standby is alive: it must not be restarted for waiting. Returns the
    aiohttp runner; ``await runner.cleanup()`` frees the port for kopf.
    """
    import aiohttp.web  # kopf's own dependency

    parts = urllib.parse.urlsplit(endpoint)

    async def healthy(_: Any) -> Any:
        return aiohttp.web.json_response({"standby": True})

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", healthy)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80)
    await site.start()
    return runner


async def run_as_leader(
    elector: LeaderElector,
    operator: Callable[[], Awaitable[Any]],
    *,
    standby_probe: str | None = None,
    lost: Callable[[int], Any] | None = None,
) -> None:
    """Stand by until the Lease is ours, then run ``operator`` while holding it.

    While standing by, ``standby_probe`` (the liveness endpoint) answers, so
    the kubelet does not restart a healthy standby. When the operator returns
    (a clean shutdown), the Lease is released. When leadership is lost,
    ``lost(1)`` is called at once (default: ``os._exit``): another replica
    may be acting already, so nothing may finish in parallel with it, as
    controller-runtime does.
    """
    import os

    runner = await serve_standby_probe(standby_probe) if standby_probe else None
    try:
        await elector.acquire()
    finally:
        if runner is not None:
            await runner.cleanup()
    acting = asyncio.ensure_future(operator())
    holding = asyncio.ensure_future(elector.hold())
    await asyncio.wait({acting, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding.done():
        reason = holding.exception() if not holding.cancelled() else None
        log.error("leader election lost: %s; exiting", reason)
        logging.shutdown()
        (lost or os._exit)(1)
        acting.cancel()
        await asyncio.gather(acting, return_exceptions=True)
        return
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
    await elector.release()
    acting.result()
