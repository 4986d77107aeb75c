"""The registry client's cache of immutable, digest-addressed reads.

What is read by digest (manifests, configs, HEADs by digest) never changes,
so it is kept in a bounded LRU for good; what is read by tag never enters it,
since tags move. Keys are ``(credential scope, kind, api host, repository,
digest)``: the scope (``credential_scope``: anonymous, ECR, or a fingerprint
of a policy's credentials) keeps what one team read with its login from being
served to another team's workload that names the same digest.
"""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["_LRU"]


class _LRU:
    """A small LRU of immutable, digest-addressed registry reads."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: collections.OrderedDict[tuple[str, ...], Any] = collections.OrderedDict()

    def get(self, key: tuple[str, ...]) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, ...], value: Any) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
