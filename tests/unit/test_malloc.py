"""adapters.malloc: the arena cap applies on glibc unless the environment set it."""

from __future__ import annotations

import ctypes

import pytest

from imagepatch.adapters import malloc


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert malloc.limit_arenas() is False


def test_applied_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    try:
        ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("not glibc")
    assert malloc.limit_arenas() is True


def test_nothing_to_do_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)

    def no_libc(name: str) -> None:
        raise OSError(name)

    monkeypatch.setattr(malloc.ctypes, "CDLL", no_libc)
    assert malloc.limit_arenas() is False
