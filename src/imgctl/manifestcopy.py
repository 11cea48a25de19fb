"""Copying a manifest whole, registry to registry, without the engine: for an image index
every child manifest first (each with its own blobs), then the index; for an image its config
and layers first, side by side, then the manifest, stored by its digest so that no tag moves
until the promotion says so (unless a tag's PUT comes next, which stores it). blobcopy.py moves
each blob."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from imgctl.blobcopy import BlobMoved, KnownBlobs, Repo, Retrying, copy_blob, direct
from imgctl.errors import VerifyFailed
from imgctl.indexes import sha256_digest
from imgctl.registry import Manifest


def blobs_of(manifest: Manifest) -> list[tuple[str, int]]:
    """(digest, size) of an image manifest's config and layers, in that order; foreign layers
    (which name URLs of their own, and which registries need not hold) are left out."""
    found: list[tuple[str, int]] = []
    for entry in [manifest.data.get("config"), *(manifest.data.get("layers") or [])]:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        if entry.get("urls") and "foreign" in str(entry.get("mediaType") or ""):
            continue
        size = entry.get("size")
        found.append((entry["digest"], int(size) if isinstance(size, int) else -1))
    return found


def read_manifest(repo: Repo, reference: str) -> Manifest | None:
    """The manifest `repo:reference` names, checked to be what its digest says; None if absent."""
    found = repo.client.manifest(repo.path, reference)
    if found is None:
        return None
    actual = sha256_digest(found.body)
    if reference.startswith("sha256:") and actual != reference:
        raise VerifyFailed(f"{repo.where}@{reference} answered a manifest whose digest is {actual}")
    if found.digest and found.digest != actual:
        raise VerifyFailed(f"{repo.where}:{reference} is said to be {found.digest}, but its bytes are {actual}")
    found.digest = actual
    return found


def copy_manifest(
    source: Repo, destination: Repo, manifest: Manifest, *, known: KnownBlobs | None = None,
    retrying: Retrying[Any] = direct, on_blob: Callable[[BlobMoved], None] = lambda moved: None,
    blobs_at_once: int = 1, store: bool = True,
) -> None:
    """Put `manifest` (read from `source`) into `destination` whole, stored by its digest: an
    index's children first (each with its blobs), an image's blobs first, `blobs_at_once` of
    them side by side. Nothing to do within one repository. Each request goes through
    `retrying(what, operation)`. `store=False`: the caller tags `manifest` next, and a tag's
    PUT stores it, so it is not stored by digest first (two requests fewer); children always are."""
    if source.same_repository(destination):
        return
    known = known if known is not None else KnownBlobs()
    if manifest.is_index:
        for child in manifest.children:
            digest = str(child["digest"])
            found = retrying(f"read {source.where}@{digest}", lambda digest=digest: read_manifest(source, digest))
            if found is None:
                raise VerifyFailed(f"{source.where}@{manifest.digest} lists {digest}, which is not in the registry")
            copy_manifest(source, destination, found, known=known, retrying=retrying, on_blob=on_blob,
                          blobs_at_once=blobs_at_once)
    else:
        def copy(digest: str, size: int) -> None:
            on_blob(retrying(f"copy blob {digest} to {destination.where}",
                             lambda: copy_blob(source, destination, digest, size, known)))

        _each(copy, blobs_of(manifest), blobs_at_once)
    if not store:
        return
    there = retrying(f"check {destination.where}@{manifest.digest}",
                     lambda: destination.client.manifest_digest(destination.path, manifest.digest))
    if there == manifest.digest:
        return
    stored = retrying(f"store {destination.where}@{manifest.digest}",
                      lambda: destination.client.put_manifest(destination.path, manifest.digest, manifest.body,
                                                              manifest.media_type))
    if stored != manifest.digest:
        raise VerifyFailed(f"{destination.where} stored {manifest.digest} as {stored}")


def _each(copy: Callable[[str, int], None], blobs: list[tuple[str, int]], at_once: int) -> None:
    """`copy` each blob, `at_once` side by side (as docker push and skopeo upload an image's
    layers); the first failure stops any not yet started and is raised once the running ones end."""
    if at_once <= 1 or len(blobs) <= 1:
        for digest, size in blobs:
            copy(digest, size)
        return
    with ThreadPoolExecutor(max_workers=min(at_once, len(blobs)), thread_name_prefix="imgctl-blob") as pool:
        futures = [pool.submit(copy, digest, size) for digest, size in blobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            wait(futures)
            raise failed.exception()  # type: ignore[misc]
