"""Counts of the requests the registry client sends, per registry host.

Every HTTP attempt that leaves the process (retries and token fetches
included) is counted here by the transport, with each classified failure and
each read the digest cache answered. Tests assert "one HEAD per base per
interval" with it, and ``adapters/metrics.py`` exports the same numbers.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

__all__ = ["RequestStats"]


@dataclass
class RequestStats:
    """Counts of requests that left the process, per registry host.

    ``requests[(host, op)]``: every HTTP attempt, retries included, where
    ``op`` is ``head_manifest``, ``get_manifest``, ``get_blob`` or ``token``
    (token fetches are counted under the registry they were for).
    ``errors[(host, reason)]``: classified failures of single attempts.
    ``cache_hits[(host, op)]``: reads answered from the digest cache.
    """

    requests: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    errors: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    cache_hits: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def count(self, host: str | None = None, op: str | None = None) -> int:
        """Requests made, optionally only to ``host`` and/or of kind ``op``."""
        return sum(
            n
            for (h, o), n in self.requests.items()
            if (host is None or h == host) and (op is None or o == op)
        )

    def error_count(self, host: str | None = None, reason: str | None = None) -> int:
        return sum(
            n
            for (h, r), n in self.errors.items()
            if (host is None or h == host) and (reason is None or r == reason)
        )
