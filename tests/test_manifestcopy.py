"""manifestcopy's side-by-side blob copies (pure logic; tests/test_promote.py copies real
images, whose config and layer go this way, between real registries)."""

from __future__ import annotations

import threading
import time

import pytest

from imgctl.manifestcopy import _each

BLOBS = [(f"sha256:{n:064x}", n) for n in range(6)]


def test_blobs_are_copied_side_by_side_up_to_the_limit() -> None:
    running, most, lock = 0, 0, threading.Lock()
    together = threading.Barrier(3, timeout=5)  # passes only if 3 copies run at once

    def copy(digest: str, size: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if size < 3:
            together.wait()
        time.sleep(0.01)
        with lock:
            running -= 1

    _each(copy, BLOBS, 3)
    assert most == 3


def test_one_at_a_time_keeps_the_manifests_order() -> None:
    seen: list[str] = []
    _each(lambda digest, size: seen.append(digest), BLOBS, 1)
    assert seen == [digest for digest, _ in BLOBS]


def test_a_failed_copy_stops_those_not_started_and_is_raised() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def copy(digest: str, size: int) -> None:
        with lock:
            started.append(size)
        if size == 0:
            raise RuntimeError("blob 0 failed")
        time.sleep(0.2)

    with pytest.raises(RuntimeError, match="blob 0 failed"):
        _each(copy, BLOBS, 2)
    assert 0 in started and len(started) < len(BLOBS)  # the last ones never began
