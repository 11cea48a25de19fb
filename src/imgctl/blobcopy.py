"""Copying a blob from one repository into another, registry to registry, without the engine:
one blob per call (manifestcopy.py copies manifests whole, several blobs side by side).

Each blob is asked for with a HEAD first and skipped when the destination has it; within one
registry it is mounted from a repository that holds it
(`POST /v2/<dst>/blobs/uploads/?mount=<digest>&from=<repo>`, with one token for pull on that
repository and pull,push on the destination); otherwise it is streamed:
the source's GET (asked for while the destination starts the upload) is read a chunk at a time
into a monolithic upload PUT of known length, so a layer of any size costs a chunk of memory. A
registry that refuses a mount answers with a normal upload (202), and the blob is streamed into that.

Only RegistryClient's public methods are used (`send` for the blob requests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import requests

from imgctl.errors import AuthFailed, RegistryError
from imgctl.registry import RegistryClient
from imgctl.registry_auth import Scope, reason, retry_after

T = TypeVar("T")
CHUNK = 1 << 20  # bytes read from the source and written to the destination at a time
Retrying = Callable[[str, Callable[[], T]], T]  # (what, operation) -> its result, retried as the caller likes


@dataclass(frozen=True)
class Repo:
    """One repository at one registry, and the client that talks to that registry."""

    client: RegistryClient
    path: str

    @property
    def where(self) -> str:
        return f"{self.client.host}/{self.path}"

    def same_registry(self, other: Repo) -> bool:
        return self.client.host == other.client.host

    def same_repository(self, other: Repo) -> bool:
        return self.same_registry(other) and self.path == other.path


@dataclass
class KnownBlobs:
    """Where each blob is known to be, per registry: a blob copied into one repository this run
    is mounted, not streamed again, into the next repository of that registry that needs it. One
    copy of a blob into a registry at a time: a second image needing the same layer there waits
    for the first copy, then mounts it."""

    _where: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _copying: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    def claim(self, host: str, digest: str) -> threading.Lock:
        with self._lock:
            return self._copying.setdefault((host, digest), threading.Lock())

    def add(self, repo: Repo, digest: str) -> None:
        with self._lock:
            self._where.setdefault((repo.client.host, digest), repo.path)

    def find(self, host: str, digest: str) -> str | None:
        with self._lock:
            return self._where.get((host, digest))


@dataclass(frozen=True)
class BlobMoved:
    """What became of one blob: `present` (the destination had it), `mounted` or `streamed`."""

    digest: str
    size: int
    how: str


def direct(what: str, operation: Callable[[], T]) -> T:
    """A `Retrying` that tries once."""
    return operation()


# -- one blob ----------------------------------------------------------------------------------


def _check(response: requests.Response, repo: Repo, doing: str, ok: tuple[int, ...]) -> requests.Response:
    """The response if its status is one of `ok`; else imgctl's error for it (5xx/429 transient)."""
    if response.status_code in ok:
        return response
    host, status = repo.client.host, response.status_code
    response.close()
    if status in (401, 403):
        raise AuthFailed(f"registry {host} refused {repo.client.auth.who} {doing}")
    if status == 429 or status >= 500:
        raise RegistryError(f"registry {host} answered {status} {doing}", transient=True,
                            retry_after=retry_after(response))
    raise RegistryError(f"registry {host} answered {status} {doing}")


def blob_size(repo: Repo, digest: str) -> int | None:
    """The size of blob `digest` in `repo` (a HEAD, nothing downloaded); None if it is not there."""
    response = repo.client.send("HEAD", f"/v2/{repo.path}/blobs/{digest}", ((repo.path, "pull"),))
    _check(response, repo, f"checking blob {digest} in {repo.path}", (200, 404))
    if response.status_code == 404:
        return None
    try:
        return int(response.headers.get("Content-Length", ""))
    except ValueError:
        return -1  # there, of a size it did not say


def mount_blob(repo: Repo, digest: str, from_path: str) -> str | None:
    """Mount blob `digest` into `repo` from repository `from_path` of the same registry: None
    once mounted; else the Location of the upload the registry started instead (it may not allow
    the mount, or not find the blob there), for the blob to be streamed into."""
    scopes: tuple[Scope, ...] = ((repo.path, "pull,push"), (from_path, "pull"))
    response = repo.client.send("POST", f"/v2/{repo.path}/blobs/uploads/", scopes,
                                params={"mount": digest, "from": from_path}, headers={"Content-Length": "0"})
    _check(response, repo, f"mounting blob {digest} into {repo.path} from {from_path}", (201, 202))
    if response.status_code == 201:
        return None
    return _location(response, repo)


def start_upload(repo: Repo) -> str:
    """A new upload into `repo`: the Location to PUT the blob to."""
    response = repo.client.send("POST", f"/v2/{repo.path}/blobs/uploads/", ((repo.path, "pull,push"),),
                                headers={"Content-Length": "0"})
    _check(response, repo, f"starting an upload into {repo.path}", (202,))
    return _location(response, repo)


def _location(response: requests.Response, repo: Repo) -> str:
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"registry {repo.client.host} started an upload into {repo.path} without a Location")
    if "://" not in location:
        location = repo.client.base + ("" if location.startswith("/") else "/") + location
    return location


class _Body:
    """A blob's bytes from the source's response, a chunk at a time, as an upload's body of a
    known length (requests sends an object with a length and an iterator as it comes, with that
    Content-Length, rather than reading it whole)."""

    def __init__(self, response: requests.Response, size: int, where: str) -> None:
        self.response, self.size, self.where = response, size, where
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.response.raw.stream(CHUNK, decode_content=False):
            self.sent += len(chunk)
            if self.sent > self.size:
                raise RegistryError(f"{self.where} sent more than the {self.size} bytes it stated", transient=True)
            yield chunk
        if self.sent != self.size:
            raise RegistryError(f"{self.where} ended after {self.sent} of {self.size} bytes", transient=True)


def stream_blob(source: Repo, destination: Repo, digest: str, size: int, location: str | None = None) -> None:
    """Stream blob `digest` (`size` bytes) from `source` into `destination` (into `location`,
    an upload already started there, if given)."""
    where = f"blob {digest} of {source.where}"
    # The destination's upload is started while the source answers the GET: neither waits for
    # the other, and over a WAN that is a round trip less per blob.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgctl-upload") as starting:
        upload = None if location else starting.submit(start_upload, destination)
        try:
            got = source.client.send("GET", f"/v2/{source.path}/blobs/{digest}", ((source.path, "pull"),), stream=True)
        except BaseException:
            _forget(destination, upload)
            raise
        try:
            url = location or upload.result()  # type: ignore[union-attr]
        except BaseException:
            got.close()
            raise
    try:
        _check(got, source, f"reading {where}", (200,))
        if size < 0:
            size = int(got.headers.get("Content-Length") or -1)
            if size < 0:
                raise RegistryError(f"registry {source.client.host} sent {where} without its length")
        body = _Body(got, size, where)
        scopes: tuple[Scope, ...] = ((destination.path, "pull,push"),)
        try:
            put = destination.client.send(
                "PUT", url, scopes, params={"digest": digest}, data=body if size else b"", resend=False,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        except requests.RequestException as exc:  # a read of the source that failed mid-way
            raise RegistryError(f"copying {where} failed: {reason(exc)}", transient=True) from None
        if put.status_code == 401:  # the token ran out as the body went: a new try, a new token
            put.close()
            raise RegistryError(f"registry {destination.client.host} refused an expired token", transient=True)
        _check(put, destination, f"storing {where} in {destination.path}", (201,))
    except Exception:
        _cancel(destination, url)
        raise
    finally:
        got.close()


def _forget(repo: Repo, upload: Future[str] | None) -> None:
    """Cancel an upload being started for a blob that will not come (its GET failed)."""
    if upload is not None:
        try:
            _cancel(repo, upload.result())
        except Exception:  # noqa: BLE001 - it was never started: nothing to cancel
            pass


def _cancel(repo: Repo, location: str) -> None:
    """Forget an upload that failed (best effort: the registry purges it in time anyway)."""
    try:
        repo.client.send("DELETE", location, ((repo.path, "pull,push"),)).close()
    except Exception:  # noqa: BLE001 - a courtesy, never a failure
        pass


def copy_blob(source: Repo, destination: Repo, digest: str, size: int, known: KnownBlobs | None = None) -> BlobMoved:
    """Put blob `digest` in `destination`: nothing if it is there, a mount within one registry,
    else a stream from `source`."""
    known = known if known is not None else KnownBlobs()
    with known.claim(destination.client.host, digest):
        return _copy_blob(source, destination, digest, size, known)


def _copy_blob(source: Repo, destination: Repo, digest: str, size: int, known: KnownBlobs) -> BlobMoved:
    if blob_size(destination, digest) is not None:
        known.add(destination, digest)
        return BlobMoved(digest, size, "present")
    location: str | None = None
    mount_from = source.path if destination.same_registry(source) else known.find(destination.client.host, digest)
    if mount_from is not None and mount_from != destination.path:
        location = mount_blob(destination, digest, mount_from)
        if location is None:
            known.add(destination, digest)
            return BlobMoved(digest, size, "mounted")
    stream_blob(source, destination, digest, size, location)
    known.add(destination, digest)
    return BlobMoved(digest, size, "streamed")
