"""The tar stream of a build context: the tree walked in the docker CLI's order, and ustar
headers byte-identical to the CLI's (context.py decides what is walked and sent)."""

from __future__ import annotations

import os
import stat
import struct
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from imgctl.errors import BuildFailed
from imgctl.ignorefile import Matcher

CHUNK = 1 << 20
END_OF_ARCHIVE = bytes(1024)


def walk(root: str, matcher: Matcher) -> Iterator[tuple[str, str, os.stat_result]]:
    """(name in the tar, full path, lstat) in the CLI's order: depth first, names sorted bytewise."""

    def visit(folder: str, prefix: str, parent: list[bool] | None) -> Iterator[tuple[str, str, os.stat_result]]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise BuildFailed(f"cannot read folder {prefix or '.'!r} of the build context {root}: {exc.strerror}") from None
        for entry in entries:
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while walking
                continue
            except OSError as exc:
                raise BuildFailed(f"cannot read {rel!r} in the build context {root}: {exc.strerror}") from None
            is_dir = stat.S_ISDIR(st.st_mode)
            skip, info = matcher.match(rel, parent) if matcher.patterns else (False, None)
            if skip:
                if is_dir and matcher.exclusions and matcher.descend_anyway(rel):
                    yield from visit(entry.path, rel + "/", info)
                continue
            if stat.S_ISSOCK(st.st_mode):  # the CLI cannot archive sockets either
                continue
            yield rel, entry.path, st
            if is_dir:
                yield from visit(entry.path, rel + "/", info)

    return visit(root, "", None)


def open_file(root: str, rel: str, full: str) -> int:
    try:
        return os.open(full, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BuildFailed(f"cannot read {rel!r} in the build context {root}: {exc.strerror}") from None


def _read(fd: int, size: int, root: str, rel: str) -> Iterator[bytes]:
    """Exactly `size` bytes of an open file, in pieces of at most CHUNK."""
    try:
        while size:
            piece = os.read(fd, min(CHUNK, size))
            if not piece:
                raise BuildFailed(f"{rel!r} in the build context {root} shrank while it was being read")
            size -= len(piece)
            yield piece
    except OSError as exc:
        raise BuildFailed(f"cannot read {rel!r} in the build context {root}: {exc.strerror}") from None
    finally:
        os.close(fd)


_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_ZERO8 = b"0000000\0"


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def tar_header(name: str, mode: int, size: int, mtime: int, kind: bytes, linkname: str = "", rdev: int = 0) -> bytes:
    """A ustar header byte-identical to Go's for the common case; tarfile (PAX) for the rest."""
    if name.isascii() and linkname.isascii() and len(name) <= 100 and len(linkname) <= 100 \
            and size < 8**11 and 0 <= mtime < 8**11 and kind not in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        block = bytearray(_USTAR.pack(
            name.encode(), _octal(mode, 8), _ZERO8, _ZERO8, _octal(size, 12), _octal(mtime, 12), b" " * 8,
            kind, linkname.encode(), b"ustar\x0000", b"", b"", _ZERO8, _ZERO8, b"",
        ))
        block[148:156] = b"%06o\0 " % sum(block)
        return bytes(block)
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.mtime, info.type, info.linkname = mode, size, mtime, kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = os.major(rdev), os.minor(rdev)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def root_entry(context: Path) -> bytes:
    """A plain ustar entry for the context folder itself (`./`), for BuildKit to read first.

    BuildKit decides whether a request body is a tar or a lone Dockerfile from its first 1,024
    bytes: a first entry that needs a PAX header (a long or non-ASCII name) does not fit in them,
    and the whole context would be read as a Dockerfile. GNU tar's `tar -cf - .` starts the same way.
    """
    st = os.stat(context)
    return tar_header("./", stat.S_IMODE(st.st_mode), 0, max(0, st.st_mtime_ns // 1_000_000_000), tarfile.DIRTYPE)


_DEVICES = (tarfile.CHRTYPE, tarfile.BLKTYPE)
_KINDS = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFIFO: tarfile.FIFOTYPE,
          stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE}


def tar_chunks(
    root: str, matcher: Matcher, replaced: Mapping[str, bytes] | None = None, *,
    digests: Sequence[Any] = (), marks: dict[str, tuple[int, int, int, int]] | None = None,
) -> Iterator[bytes]:
    """The tar of the walk; a file named in `replaced` is sent with that content (added if absent).

    Each of `digests` (hashlib objects) is fed what the inputs digest covers of each entry, in the
    same pass (snapshot.py). For a name already in `marks`, its entry's (start, end) offsets in
    the stream, mode and mtime are recorded there, so that a replay can put another content in its
    place.
    """
    buf = bytearray()
    sent = 0
    linked: dict[tuple[int, int], str] = {}
    extra = dict(replaced or {})
    for rel, full, st in walk(root, matcher):
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns // 1_000_000_000
        start = sent + len(buf)
        regular = stat.S_ISREG(st.st_mode)
        kind = tarfile.REGTYPE if regular else _KINDS[stat.S_IFMT(st.st_mode)]
        if digests:
            described = f"\0{'f' if regular else kind.decode()} {mode:o} {rel}\0".encode("utf-8", "surrogateescape")
            described += b"%d\0" % st.st_size if regular else b""
            for digest in digests:
                digest.update(described)
        if rel in extra and regular:
            content = extra.pop(rel)
            buf += tar_header(rel, mode, len(content), mtime, tarfile.REGTYPE) + content + bytes(-len(content) % 512)
        elif not regular:
            linkname = os.readlink(full) if kind == tarfile.SYMTYPE else ""
            buf += tar_header(rel + "/" if kind == tarfile.DIRTYPE else rel, mode, 0, mtime, kind, linkname, st.st_rdev)
            tail = os.fsencode(linkname) if kind == tarfile.SYMTYPE else b"%d" % st.st_rdev if kind in _DEVICES else b""
            for digest in digests:
                digest.update(tail)
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in linked:
            buf += tar_header(rel, mode, 0, mtime, tarfile.LNKTYPE, linked[st.st_dev, st.st_ino])
            for piece in _read(open_file(root, rel, full), st.st_size, root, rel) if digests else ():
                for digest in digests:  # the digest covers a link's content as a file's
                    digest.update(piece)
        else:
            if st.st_nlink > 1:
                linked[st.st_dev, st.st_ino] = rel
            buf += tar_header(rel, mode, st.st_size, mtime, tarfile.REGTYPE)
            for piece in _read(open_file(root, rel, full), st.st_size, root, rel):
                for digest in digests:
                    digest.update(piece)
                if len(buf) + len(piece) > CHUNK:  # big pieces go out as they are, not copied
                    if buf:
                        sent += len(buf)
                        yield bytes(buf)
                        buf.clear()
                    sent += len(piece)
                    yield piece
                else:
                    buf += piece
            buf += bytes(-st.st_size % 512)
        if marks is not None and rel in marks and regular:
            marks[rel] = (start, sent + len(buf), mode, mtime)
        if len(buf) >= CHUNK:
            sent += len(buf)
            yield bytes(buf)
            buf.clear()
    for rel, content in extra.items():
        buf += tar_header(rel, 0o600, len(content), 0, tarfile.REGTYPE) + content + bytes(-len(content) % 512)
    buf += END_OF_ARCHIVE
    yield bytes(buf)
