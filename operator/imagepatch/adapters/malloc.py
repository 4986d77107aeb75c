"""glibc's allocator, told to keep fewer arenas and to give freed memory back (issue 21 item 3).

Part of the operator's memory is the allocator's high-water mark of
short-lived data (watch event bodies, listings parsed by the Kubernetes
client in ``asyncio.to_thread`` workers, ``adapters.kube``). Three things
keep it down (together about 3 MiB of the peak at 1,000 workloads; most of
the rest is the imports and live state, docs/benchmarks.md):

* **Fewer arenas.** glibc gives each thread that allocates an arena of its
  own, up to eight per core, so each worker's arena kept the peak of the
  largest response it parsed and RSS was the sum of those peaks. Two arenas
  share the freed space instead. ``MALLOC_ARENA_MAX`` in the environment does
  the same and wins.
* **A fixed mmap threshold.** glibc raises its mmap threshold each time a
  large mmapped block is freed (up to 32 MiB), after which multi-megabyte
  response bodies are carved out of the heap and their pages stay resident
  once freed. Fixing it at glibc's default (128 KiB) keeps every large
  buffer in a mapping of its own, unmapped when freed.
  ``MALLOC_MMAP_THRESHOLD_`` in the environment wins.
* **Trimming.** glibc returns freed heap memory to the system only from the
  top of the main heap; ``malloc_trim(0)`` also releases the free pages in
  the middle of every arena (``madvise(MADV_DONTNEED)``). ``Trimmer`` calls
  it every few seconds from the event loop, so a detection pass's transient
  listings do not stay resident until the next one reuses them. One trim
  took 23-33 ms on the loaded 2-core bench machine (logged at debug level);
  the operator's idle CPU stayed at 0.42 s/min against 0.40.

Python's own small-object allocator (pymalloc) keeps its 1 MiB arenas until
every object in one is gone, and trimming cannot reach them. Running with
``PYTHONMALLOC=malloc`` (every object from glibc) was measured and not kept:
RSS at 1,000 workloads rose from 185 to 197 MiB and a detection pass took
38% longer (glibc's per-block headers cost more than pymalloc's
fragmentation; docs/benchmarks.md, "Giving memory back to the system").

Everything here does nothing off glibc (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from typing import Any

# mallopt(3): parameter numbers from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
DEFAULT_ARENAS = 2
DEFAULT_MMAP_THRESHOLD = 128 * 1024
# Seconds between two trims: one detection tick (core of the transient work).
TRIM_EVERY_SECONDS = 5.0
log = logging.getLogger("imagepatch.malloc")


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; True if applied."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the environment said so already, before any thread started
    libc = _libc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(M_ARENA_MAX, arenas))
    if applied:
        log.debug("malloc arenas capped at %d", arenas)
    return applied


def fix_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Keep blocks of ``threshold`` bytes and more in their own mappings; True if applied."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


def trim() -> bool:
    """Give glibc's free pages back to the system; True if some memory was released."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


class Trimmer:
    """Calls ``trim`` at most once per ``every`` seconds, from the event loop."""

    def __init__(self, every: float = TRIM_EVERY_SECONDS) -> None:
        self.every = every
        self.trims = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            # On the loop, not in a worker thread: a few milliseconds, and a
            # thread of its own would only add an arena to trim.
            trim()
            self.trims += 1
            log.debug("malloc_trim took %.1f ms", (time.perf_counter() - started) * 1000)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.every)
            except TimeoutError:
                pass
