"""One exporter hook, several destinations: Security Hub findings and AWS Config evaluations.

Detection calls one ``FindingsExporter`` after each policy's pass
(``reconcile/detection.py``); :class:`FanOut` hands the same results to each
configured destination in turn. One destination's failure (a classified
``AdapterError``) is logged with its name and never keeps the others from
their turn; each sends again on the next pass what it could not send.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

from imagepatch.adapters.errors import AdapterError

__all__ = ["Destination", "FanOut"]

log = logging.getLogger("imagepatch.exporters")


class Destination(Protocol):
    async def export(
        self,
        results_by_policy: Mapping[str, Iterable[Any]],
        *,
        now: dt.datetime,
        opted_out: Collection[tuple[str, str, str]] = (),
    ) -> object: ...


class FanOut:
    """Each named destination gets every export."""

    def __init__(self, destinations: Mapping[str, Destination]) -> None:
        self.destinations = dict(destinations)

    async def export(
        self,
        results_by_policy: Mapping[str, Iterable[Any]],
        *,
        now: dt.datetime,
        opted_out: Collection[tuple[str, str, str]] = (),
    ) -> object:
        # Read once: each destination iterates the results.
        results = {policy: list(items) for policy, items in results_by_policy.items()}
        for name, destination in self.destinations.items():
            try:
                await destination.export(results, now=now, opted_out=opted_out)
            except AdapterError as exc:
                log.warning("%s export of %s failed: %s: %s", name, ", ".join(results),
                            exc.reason, exc)
        return None
