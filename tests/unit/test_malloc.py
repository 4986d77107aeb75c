"""adapters.malloc: glibc's tuning applies unless the environment set it, and does nothing off glibc."""

from __future__ import annotations

import asyncio
import ctypes

import pytest

from imagepatch.adapters import malloc


def glibc() -> None:
    try:
        ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("not glibc")


@pytest.fixture
def no_libc(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> None:
        raise OSError(name)

    monkeypatch.setattr(malloc.ctypes, "CDLL", refuse)


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert malloc.limit_arenas() is False
    assert malloc.fix_mmap_threshold() is False


def test_applied_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    glibc()
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert malloc.limit_arenas() is True
    assert malloc.fix_mmap_threshold() is True


def test_trim_releases_freed_memory_on_glibc() -> None:
    glibc()
    # Many small blocks from glibc (bytearray buffers above pymalloc's 512-byte
    # limit, below the mmap threshold), then freed: free pages inside the heap.
    blocks = [bytearray(4096) for _ in range(4096)]
    del blocks[:-1]  # the last one stays, so the heap's top is not free
    assert malloc.trim() is True


def test_nothing_to_do_off_glibc(monkeypatch: pytest.MonkeyPatch, no_libc: None) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert malloc.limit_arenas() is False
    assert malloc.fix_mmap_threshold() is False
    assert malloc.trim() is False


def test_the_trimmer_trims_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(malloc, "trim", lambda: calls.append(1) or True)

    async def scenario() -> int:
        stop = asyncio.Event()
        trimmer = malloc.Trimmer(every=0.01)
        task = asyncio.create_task(trimmer.run(stop))
        while trimmer.trims < 3:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        return trimmer.trims

    assert asyncio.run(scenario()) == len(calls) >= 3
