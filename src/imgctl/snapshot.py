"""A build context read once: the inputs digest of what the build reads, and the tar it sends.

An image carries its inputs digest as a label (--skip-unchanged compares it), and labels go in
the build request, before its body: the digest must be known before the context is uploaded.
So the walk that hashes the files also keeps the tar it makes (in memory up to SPOOL_MEMORY, then
in an unnamed temporary file, as docker-py keeps its whole context tar in one), and the build
replays that tar instead of walking and reading the tree a second time.

When the digest may make the build unnecessary (--skip-unchanged), a context too big for memory
is hashed only: most such images are reused, and the few that are not are walked again for the
build, rather than every one being copied to disk for nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from imgctl.context import CheckedContext
from imgctl.tarstream import CHUNK, END_OF_ARCHIVE, tar_chunks, tar_header
from imgctl.ignorefile import clean

SPOOL_MEMORY = 8 << 20  # per context being built; a release builds a few at once
SPOOL_WAITING = 1 << 20  # per context hashed for --skip-unchanged: it may wait for a build slot


class Snapshot:
    """One walk of a context: `digests` (one per set of facts given), and the tar, kept."""

    def __init__(self, checked: CheckedContext, digests: list[str], spool: _Spool | None,
                 marks: dict[str, tuple[int, int, int, int]]) -> None:
        self.checked = checked
        self.digests = digests
        self._spool = spool
        self._marks = marks

    def tar(self, replaced: Mapping[str, bytes] | None = None) -> Iterator[bytes] | None:
        """The tar the walk made, a file of `replaced` in place of the walked one (or added at the
        end, as context.tar_chunks does); None if the tar was not kept."""
        if self._spool is None:
            return None
        extra = dict(replaced or {})
        cuts = sorted((self._marks[name], name) for name in extra if name in self._marks and self._marks[name][0] >= 0)
        return self._replay(cuts, extra)

    def _replay(self, cuts: list[tuple[tuple[int, int, int, int], str]], extra: dict[str, bytes]) -> Iterator[bytes]:
        assert self._spool is not None
        at = 0
        for (start, end, mode, mtime), name in cuts:
            yield from self._spool.read(at, start)
            content = extra.pop(name)
            yield tar_header(name, mode, len(content), mtime, b"0") + content + bytes(-len(content) % 512)
            at = end
        yield from self._spool.read(at, self._spool.size - len(END_OF_ARCHIVE))
        tail = b"".join(tar_header(name, 0o600, len(content), 0, b"0") + content + bytes(-len(content) % 512)
                        for name, content in extra.items())
        yield tail + END_OF_ARCHIVE

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def snapshot(
    context: Path, dockerfile: str, facts: Sequence[tuple[Mapping[str, str], Mapping[str, str]]], *, keep: str,
) -> Snapshot:
    """Walk the context once: the inputs digest for each (build facts, base digests) of `facts`
    (a multi-platform image has one per platform), and the tar, kept as `keep` says: "all",
    "memory" (kept only if it fits in SPOOL_WAITING) or "none". Raises BuildFailed for a context the build
    could not send, naming the path."""
    checked = CheckedContext(Path(context), dockerfile)
    digests = [_start(dockerfile, args, bases) for args, bases in facts]
    spool = _Spool(keep)
    marks = {".dockerignore": (-1, -1, 0, 0)}  # where it lies, for a build that sends another in its place
    for chunk in tar_chunks(checked.root, checked.plain_matcher(), digests=digests, marks=marks):
        spool.write(chunk)
    spool.finish()
    return Snapshot(checked, ["sha256:" + d.hexdigest() for d in digests], spool if spool.kept else None, marks)


def inputs_digest(
    context: Path, dockerfile: str, build_args: Mapping[str, str], base_digests: Mapping[str, str]
) -> str:
    """sha256 of everything a build reads: the files sent (names, types, modes, contents, link
    targets), which Dockerfile, the build args and the base images' digests. Not mtimes, owners
    or ignored files."""
    return snapshot(context, dockerfile, [(build_args, base_digests)], keep="none").digests[0]


def _start(dockerfile: str, build_args: Mapping[str, str], base_digests: Mapping[str, str]) -> hashlib._Hash:
    digest = hashlib.sha256(b"imgctl-inputs/v1\0")
    digest.update(json.dumps([clean(dockerfile), sorted(build_args.items()), sorted(base_digests.items())]).encode())
    return digest


class _Spool:
    """Bytes written once, then read by any number of readers at once (os.pread: no shared offset)."""

    def __init__(self, keep: str) -> None:
        self._spill = keep == "all"  # else kept in memory only, or ("none") not at all
        self._memory: bytearray | None = bytearray() if keep != "none" else None
        self._file: IO[bytes] | None = None
        self.size = 0
        self.kept = keep != "none"

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if not self.kept:
            return
        if self._file is None and self.size > (SPOOL_MEMORY if self._spill else SPOOL_WAITING):
            if not self._spill:
                self.kept, self._memory = False, None
                return
            self._file = tempfile.TemporaryFile(prefix="imgctl-context-")  # unnamed: gone with the process
            self._file.write(self._memory or b"")
            self._memory = None
        if self._file is not None:
            self._file.write(data)
        else:
            assert self._memory is not None
            self._memory += data

    def read(self, start: int, end: int) -> Iterator[bytes]:
        if self._memory is not None:
            for at in range(start, end, CHUNK):
                yield bytes(self._memory[at:min(at + CHUNK, end)])
            return
        assert self._file is not None
        fd = self._file.fileno()
        while start < end:
            piece = os.pread(fd, min(CHUNK, end - start), start)
            if not piece:
                raise OSError(f"the spooled build context ended at {start} of {end} bytes")
            start += len(piece)
            yield piece

    def finish(self) -> None:
        if self._file is not None:
            self._file.flush()  # readers read the file, not its buffer

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._memory = self._file = None
