"""manifestcopy's side-by-side blob copies and when it stores a manifest by digest (pure logic;
tests/test_promote.py copies real images and indexes this way between real registries)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from imgctl import manifestcopy
from imgctl.blobcopy import BlobMoved, Repo
from imgctl.indexes import sha256_digest
from imgctl.manifestcopy import _each, copy_manifest
from imgctl.registry import DOCKER_MANIFEST, Manifest

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


class _Client:
    """The two manifest calls copy_manifest makes of a destination, recorded (the blobs are
    copy_blob's, replaced below)."""

    def __init__(self, host: str) -> None:
        self.host, self.calls = host, []  # type: ignore[var-annotated]

    def manifest_digest(self, path: str, reference: str) -> str | None:
        self.calls.append(("HEAD", reference))
        return None

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        self.calls.append(("PUT", reference))
        return reference


def _image() -> Manifest:
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"digest": BLOBS[0][0], "size": 1},
                       "layers": [{"digest": d, "size": s} for d, s in BLOBS[1:3]]}).encode()
    return Manifest(body, DOCKER_MANIFEST, sha256_digest(body))


@pytest.mark.parametrize("store", [True, False])
def test_an_image_is_stored_by_digest_unless_a_tag_put_follows(monkeypatch: pytest.MonkeyPatch, store: bool) -> None:
    copied: list[str] = []
    monkeypatch.setattr(manifestcopy, "copy_blob",
                        lambda source, destination, digest, size, known: copied.append(digest) or BlobMoved(digest, size, "streamed"))
    manifest, destination = _image(), _Client("dest:5000")
    copy_manifest(Repo(_Client("src:5000"), "ns/app"), Repo(destination, "ns/app"), manifest,  # type: ignore[arg-type]
                  blobs_at_once=2, store=store)
    assert sorted(copied) == sorted(d for d, _ in BLOBS[:3])  # every blob, whatever the order
    assert destination.calls == ([("HEAD", manifest.digest), ("PUT", manifest.digest)] if store else [])
