"""The registry client's cache of immutable, digest-addressed reads, bounded in bytes.

What is read by digest (manifests, configs, HEADs by digest) never changes,
so it is kept in a bounded LRU for good; what is read by tag never enters it,
since tags move. Keys are ``(credential scope, kind, api host, repository,
digest)``: the scope (``credential_scope``: anonymous, ECR, or a fingerprint
of a policy's credentials) keeps what one team read with its login from being
served to another team's workload that names the same digest.

The bound is a total budget in bytes (``--registry-cache-size``, 64 MiB by
default), not a number of entries: registries and images are tenant input,
and 2,048 entries of up to 4 MiB each was a 8 GiB bound on paper. Each
entry is charged its payload (bytes and strings it holds) plus a fixed
overhead; the least recently used entries go first, and an entry larger
than the whole budget is not kept at all.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

__all__ = ["DEFAULT_CACHE_BYTES", "ENTRY_OVERHEAD", "_LRU", "entry_size"]

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
# What an entry costs beyond its payload: the dict slot, the key tuple and the
# objects around the payload (a few hundred bytes in CPython).
ENTRY_OVERHEAD = 512


def _payload(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, (tuple, list)):
        return sum(_payload(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_payload(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0  # numbers, None: inside the overhead


def entry_size(key: tuple[str, ...], value: Any) -> int:
    """What one entry is charged against the budget, in bytes."""
    return ENTRY_OVERHEAD + _payload(key) + _payload(value)


class _LRU:
    """An LRU of immutable, digest-addressed registry reads, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # charged for the entries held now
        self._data: collections.OrderedDict[tuple[str, ...], tuple[int, Any]] = (
            collections.OrderedDict()
        )

    def get(self, key: tuple[str, ...]) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return None
        self._data.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[str, ...], value: Any) -> None:
        size = entry_size(key, value)
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[0]
        if size > self.max_bytes:
            return  # larger than the whole budget (or the cache is off): never kept
        self._data[key] = (size, value)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (evicted, _) = self._data.popitem(last=False)
            self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._data)
