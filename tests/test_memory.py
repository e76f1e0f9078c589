"""exporter.memory: glibc is asked to keep big blocks apart, so freed ones leave the process."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from exporter import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_fixed_threshold_for_big_blocks() -> None:
    assert memory.big_blocks_on_their_own() is True


def test_the_threshold_is_mallopts_mmap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """M_MMAP_THRESHOLD is -3 in glibc's malloc.h; another number would set something else."""
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.so.6")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    assert memory.big_blocks_on_their_own() is True
    assert calls == [(-3, 1024 * 1024)]
