"""The registry client's digest cache is bounded in bytes (adapters/registry/cache.py).

Entries are charged their payload plus a fixed overhead; the least recently
used go first once the budget is exceeded, and one larger than the whole
budget is never kept (a 4 MB manifest cannot push out everything else, nor
sit in memory past its use).
"""

from __future__ import annotations

from imagepatch.adapters.registry import RegistryClient
from imagepatch.adapters.registry.cache import _LRU, DEFAULT_CACHE_BYTES, ENTRY_OVERHEAD, entry_size
from imagepatch.adapters.registry.client import ManifestInfo

KiB = 1024


def key(n: int) -> tuple[str, ...]:
    return ("blob", "registry.test", "app", f"sha256:{n:064x}")


def test_entries_are_evicted_least_recently_used_first_once_the_bytes_exceed_the_budget() -> None:
    size = entry_size(key(0), b"x" * (100 * KiB))
    cache = _LRU(max_bytes=3 * size)
    for n in range(3):
        cache.put(key(n), b"x" * (100 * KiB))
    assert len(cache) == 3 and cache.bytes == 3 * size
    assert cache.get(key(0)) is not None  # 0 is now the most recently used
    cache.put(key(3), b"x" * (100 * KiB))
    assert cache.get(key(1)) is None  # the least recently used went
    assert [cache.get(key(n)) is not None for n in (0, 2, 3)] == [True, True, True]
    assert cache.bytes <= cache.max_bytes


def test_one_large_entry_pushes_out_as_many_small_ones_as_its_bytes_need() -> None:
    cache = _LRU(max_bytes=64 * KiB)
    for n in range(40):
        cache.put(key(n), b"s" * KiB)
    assert len(cache) == 40
    cache.put(key(99), b"L" * (40 * KiB))
    assert cache.get(key(99)) is not None
    assert cache.bytes <= 64 * KiB
    assert len(cache) < 40


def test_an_entry_larger_than_the_whole_budget_is_not_cached_and_evicts_nothing() -> None:
    cache = _LRU(max_bytes=64 * KiB)
    cache.put(key(1), b"s" * KiB)
    cache.put(key(2), b"L" * (64 * KiB))
    assert cache.get(key(2)) is None
    assert cache.get(key(1)) is not None
    assert cache.bytes == entry_size(key(1), b"s" * KiB)


def test_replacing_an_entry_charges_it_once_and_a_zero_budget_turns_the_cache_off() -> None:
    cache = _LRU(max_bytes=1024 * KiB)
    cache.put(key(1), b"a" * KiB)
    cache.put(key(1), b"b" * (2 * KiB))
    assert len(cache) == 1 and cache.bytes == entry_size(key(1), b"b" * (2 * KiB))
    off = _LRU(max_bytes=0)
    off.put(key(1), b"a")
    assert len(off) == 0 and off.get(key(1)) is None


def test_every_kind_of_cached_value_is_charged_for_what_it_holds() -> None:
    manifest = (b"m" * 1000, "application/vnd.oci.image.manifest.v1+json")
    head = ManifestInfo("sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json", 1000)
    k = key(1)
    assert entry_size(k, manifest) == ENTRY_OVERHEAD + sum(map(len, k)) + 1000 + len(manifest[1])
    assert entry_size(k, head) == ENTRY_OVERHEAD + sum(map(len, k)) + 71 + len(head.media_type)
    assert entry_size(k, None) == ENTRY_OVERHEAD + sum(map(len, k))


def test_the_client_takes_its_budget_in_bytes_64_mib_by_default() -> None:
    assert RegistryClient()._cache.max_bytes == DEFAULT_CACHE_BYTES == 64 * 1024 * KiB
    assert RegistryClient(cache_bytes=1024)._cache.max_bytes == 1024
