"""glibc's allocator, told to keep fewer arenas (issue 21 item 3: bounded memory).

glibc gives each thread that allocates an arena of its own, up to eight per
core. The operator's Kubernetes calls run in ``asyncio.to_thread`` workers
(``adapters.kube``), each parsing listings of hundreds of objects, so each
worker's arena keeps the high-water mark of the largest response it parsed,
and the process's RSS is the sum of those peaks. Two arenas share the freed
space instead. ``MALLOC_ARENA_MAX`` in the environment does the same and wins:
this only applies when it is not set, and does nothing off glibc.

Measured at 1,000 workloads and not kept (docs/benchmarks.md, "Giving memory
back to the system"): ``malloc_trim(0)`` every 5 s with a fixed mmap
threshold took the peak down by 1-3 MiB, within the noise of two runs, for
23-33 ms of the event loop per trim and up to 0.36 s/min more idle CPU: RSS
right after a trim stayed within 1 MiB of the peak, so there is little free
glibc memory to give back. ``PYTHONMALLOC=malloc`` (every Python object from
glibc, so that trimming could reach what pymalloc's arenas hold) raised the
peak from 185 to 197 MiB and made a detection pass 38% slower.
"""

from __future__ import annotations

import ctypes
import logging
import os

# mallopt(3): the parameter number of M_ARENA_MAX in glibc's malloc.h.
M_ARENA_MAX = -8
DEFAULT_ARENAS = 2
log = logging.getLogger("imagepatch.malloc")


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; True if applied."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the environment said so already, before any thread started
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to tune
        return False
    applied = bool(libc.mallopt(M_ARENA_MAX, arenas))
    if applied:
        log.debug("malloc arenas capped at %d", arenas)
    return applied
