"""The build context: what `docker build` sends, streamed as a tar while the tree is walked.

docker-py writes the whole context to a temp file before the upload starts; this module yields the
tar in chunks instead, so the engine starts receiving at once and memory stays flat. The rules
are the docker CLI's (its .dockerignore reading and matching are in ignorefile.py;
archive.TarWithOptions here). The tar headers are those of the CLI since 23.0 (uid/gid
0, no user names, mtime in whole seconds, hard links as links): the classic builder's cache key for
COPY/ADD hashes those headers, so imgctl's builds and the CLI's share the cache.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgctl.dockerfile import with_labels
from imgctl.ignorefile import Matcher, clean, read_dockerignore
from imgctl.errors import BuildFailed

if TYPE_CHECKING:
    from imgctl.snapshot import Snapshot

CHUNK = 1 << 20
END_OF_ARCHIVE = bytes(1024)
GENERATED_DOCKERFILE = ".imgctl.Dockerfile"  # the Dockerfile with the labels in it; the engine drops it
_SIMPLE_PATTERN = re.compile(r"^(?:\*\*/)?(\*?[A-Za-z0-9._-]+)$")  # name, *.ext, **/*.ext: a name to borrow



class CheckedContext:
    """A checked build context: its real root, the Dockerfile's name and real path, .dockerignore."""

    def __init__(self, context: Path, dockerfile: str) -> None:
        """Every error names the path."""
        try:
            root = os.path.realpath(context, strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BuildFailed(f"build context {context} is a symlink loop") from None
            raise BuildFailed(f"build context {context} does not exist") from None
        if not os.path.isdir(root):
            raise BuildFailed(f"build context {context} is a file; it must be a folder")
        name = clean(dockerfile.replace(os.sep, "/"))
        if name.startswith("/") or name == ".." or name.startswith("../"):
            raise BuildFailed(f"the Dockerfile {dockerfile!r} is outside the build context {context}")
        try:
            target = os.path.realpath(os.path.join(root, name), strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BuildFailed(f"the Dockerfile {dockerfile!r} in {context} is a symlink loop") from None
            raise BuildFailed(f"Dockerfile {dockerfile!r} not found in the build context {context}") from None
        resolved = os.path.relpath(target, root)
        if resolved == ".." or resolved.startswith("../") or not os.path.isfile(target):
            raise BuildFailed(f"the Dockerfile {dockerfile!r} in {context} is not a file inside the context")
        try:
            with open(os.path.join(root, ".dockerignore"), "rb") as f:
                self.ignore_file: bytes | None = f.read()
        except FileNotFoundError:
            self.ignore_file = None
        except OSError as exc:
            raise BuildFailed(f"cannot read .dockerignore in {context}: {exc.strerror}") from None
        self.context, self.root, self.name, self.resolved = context, root, name, resolved
        self.ignored = read_dockerignore(self.ignore_file) if self.ignore_file is not None else []

    def matcher(self, always: tuple[str, ...]) -> Matcher:
        """The .dockerignore rules, except that the paths in `always` are sent whatever they say."""
        return Matcher(self._lines(always))

    def _lines(self, always: tuple[str, ...]) -> list[str]:
        lines = list(self.ignored)
        for path in dict.fromkeys(always):
            if Matcher(lines).matches_or_parent(path):
                lines.append("!" + path)
        return lines

    def plain_matcher(self) -> Matcher:
        """What a plain build sends. The CLI always sends .dockerignore and the Dockerfile; the
        engine reads them, then drops those that .dockerignore names. If the Dockerfile is a
        symlink, its target is sent too, so the engine can follow it."""
        return self.matcher(self._plain)

    @property
    def _plain(self) -> tuple[str, ...]:
        return (".dockerignore", self.name, self.resolved)

    def same_walk(self, always: tuple[str, ...]) -> bool:
        """Does matcher(always) send what plain_matcher() sends? (Unless .dockerignore names the Dockerfile.)"""
        return self._lines(always) == self._lines(self._plain)

    def dockerfile_text(self) -> bytes:
        try:
            with open(os.path.join(self.root, self.resolved), "rb") as f:
                return f.read()
        except OSError as exc:
            raise BuildFailed(f"cannot read the Dockerfile {self.name!r} in {self.context}: {exc.strerror}") from None


def _prepare(context: Path, dockerfile: str) -> tuple[str, Matcher]:
    """Resolve the context and its Dockerfile; build the matcher. Every error names the path."""
    checked = CheckedContext(context, dockerfile)
    return checked.root, checked.plain_matcher()


def _walk(root: str, matcher: Matcher) -> Iterator[tuple[str, str, os.stat_result]]:
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


def _open(root: str, rel: str, full: str) -> int:
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


def context_files(context: Path, dockerfile: str) -> list[tuple[str, Path]]:
    """Every entry the build context sends (files, folders, symlinks), as (name, path), in tar order.

    Like the CLI, every regular file is opened once, so an unreadable file fails here, by name.
    """
    root, matcher = _prepare(Path(context), dockerfile)
    found = []
    for rel, full, st in _walk(root, matcher):
        if stat.S_ISREG(st.st_mode):
            os.close(_open(root, rel, full))
        found.append((rel, Path(full)))
    return found


# -- the tar stream --------------------------------------------------------------------------

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


def stream_context(context: Path, dockerfile: str) -> Iterator[bytes]:
    """The context as a tar, in chunks of about 1 MiB, produced while walking the tree.

    Checks the context and the Dockerfile now (raising BuildFailed before anything is sent);
    an unreadable file raises BuildFailed from the iterator, naming it.
    """
    root, matcher = _prepare(Path(context), dockerfile)
    return tar_chunks(root, matcher)


def build_context(
    context: Path, dockerfile: str, labels: Mapping[str, str], target: str | None, *, fold_labels: bool = True,
    snapshot: Snapshot | None = None,
) -> tuple[Iterator[bytes], str, dict[str, str]]:
    """What a build sends: the context tar, the Dockerfile to name, the labels left to pass as build labels.

    The classic builder makes one step (a container and a commit) per build label. So, when it
    can, imgctl puts them in one LABEL line of a copy of the Dockerfile (dockerfile.with_labels),
    sent under a name that the .dockerignore sent with it leaves out: the engine drops such a file
    before the build sees the context, as it does for the file the docker CLI adds when its
    Dockerfile comes from outside the context. The build sees exactly the context a plain build
    of the folder sees; when that cannot be arranged, the labels go as build labels. BuildKit
    (`fold_labels=False`) makes no step of its own for labels, and leaves a `.dockerignore` in
    what the build sees even when it lists itself: there the labels always go as build labels.

    With a `snapshot` of the context (taken for its inputs digest), the tar is replayed from it
    rather than walked again, wherever the walk would have been the same.
    """
    checked = snapshot.checked if snapshot is not None else CheckedContext(Path(context), dockerfile)
    if labels and fold_labels:
        try:
            folded = with_labels(checked.dockerfile_text().decode("utf-8"), dict(labels), target)
        except UnicodeDecodeError:
            folded = None
        name, ignore_file = _dockerfile_slot(checked) if folded is not None else (None, None)
        if folded is not None and name is not None:
            replaced = {name: folded.encode()} | ({".dockerignore": ignore_file} if ignore_file is not None else {})
            # The Dockerfile itself is sent only if the build would see it: the engine reads the copy.
            always = (".dockerignore",)
            replay = snapshot.tar(replaced) if snapshot is not None and checked.same_walk(always) else None
            return replay or tar_chunks(checked.root, checked.matcher(always), replaced), name, {}
    replay = snapshot.tar() if snapshot is not None else None
    return replay or tar_chunks(checked.root, checked.plain_matcher()), dockerfile, dict(labels)


def _dockerfile_slot(checked: CheckedContext) -> tuple[str | None, bytes | None]:
    """(name, .dockerignore to send in place of the folder's, if any) for a generated Dockerfile
    that the engine drops unseen; (None, None) if there is no such name.

    First a name that the folder's .dockerignore already leaves out and the folder does not hold
    (`*.log` gives `imgctl.log`): nothing else changes. Else GENERATED_DOCKERFILE, added to a
    .dockerignore that leaves itself out (a build never sees it), or to one imgctl adds.
    """
    def free(name: str) -> bool:
        return not os.path.lexists(os.path.join(checked.root, name))

    listed = GENERATED_DOCKERFILE.encode() + b"\n"
    if checked.ignore_file is None:
        return (GENERATED_DOCKERFILE, b".dockerignore\n" + listed) if free(GENERATED_DOCKERFILE) else (None, None)
    matcher = Matcher(checked.ignored)
    for line in checked.ignored:
        simple = _SIMPLE_PATTERN.match(line)  # read alike by every engine version's matcher
        name = simple.group(1).replace("*", "imgctl") if simple else ""
        if name in ("", ".", "..", ".dockerignore"):
            continue
        if matcher.matches_or_parent(name) and free(name):
            return name, None
    if matcher.matches_or_parent(".dockerignore") and free(GENERATED_DOCKERFILE) \
            and not os.path.islink(os.path.join(checked.root, ".dockerignore")):
        return GENERATED_DOCKERFILE, checked.ignore_file + b"\n" + listed
    return None, None


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
    for rel, full, st in _walk(root, matcher):
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
            for piece in _read(_open(root, rel, full), st.st_size, root, rel) if digests else ():
                for digest in digests:  # the digest covers a link's content as a file's
                    digest.update(piece)
        else:
            if st.st_nlink > 1:
                linked[st.st_dev, st.st_ino] = rel
            buf += tar_header(rel, mode, st.st_size, mtime, tarfile.REGTYPE)
            for piece in _read(_open(root, rel, full), st.st_size, root, rel):
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
