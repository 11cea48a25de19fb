"""The build context: what `docker build` sends, streamed as a tar while the tree is walked.

docker-py writes the whole context to a temp file before the upload starts; this module yields the
tar in chunks instead, so the engine starts receiving at once and memory stays flat. The rules
are the docker CLI's (ignorefile.ReadAll, patternmatcher, archive.TarWithOptions) rather than
docker-py's, which match case-insensitively. The tar headers are those of the CLI since 23.0 (uid/gid
0, no user names, mtime in whole seconds, hard links as links): the classic builder's cache key for
COPY/ADD hashes those headers, so imgctl's builds and the CLI's share the cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import re
import stat
import struct
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from imgctl.dockerfile import with_labels
from imgctl.errors import BuildFailed

CHUNK = 1 << 20
GENERATED_DOCKERFILE = ".imgctl.Dockerfile"  # the Dockerfile with the labels in it; the engine drops it
_SIMPLE_PATTERN = re.compile(r"^(?:\*\*/)?(\*?[A-Za-z0-9._-]+)$")  # name, *.ext, **/*.ext: a name to borrow

# Characters the patternmatcher escapes; everything else goes into the regexp as written.
_ESCAPE = frozenset(".+()|{}$")


class _Pattern:
    """One .dockerignore line, matched like github.com/moby/patternmatcher."""

    def __init__(self, text: str) -> None:
        self.exclusion = text.startswith("!")
        if self.exclusion:
            if len(text) == 1:
                raise BuildFailed('.dockerignore: illegal exclusion pattern: "!"')
            text = text[1:]
        self.text = text
        self.kind, self.regex = _compile(text)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        return self.regex.fullmatch(path) is not None  # type: ignore[union-attr]


def _compile(text: str) -> tuple[str, re.Pattern[str] | None]:
    out: list[str] = []
    kind = "exact"
    pos, n, step = 0, len(text), 0
    while pos < n:
        ch = text[pos]
        pos += 1
        if ch == "*":
            if pos < n and text[pos] == "*":
                pos += 1
                if pos < n and text[pos] == "/":
                    pos += 1
                if pos >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regexp"
                else:
                    out.append("(.*/)?")
                    kind = "regexp"
                if step == 0:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regexp"
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in _ESCAPE:
            out.append("\\" + ch)
        elif ch == "\\":
            if pos >= n:
                raise BuildFailed(f".dockerignore: bad pattern {text!r} (ends with a backslash)")
            out.append("\\" + text[pos])
            pos += 1
            kind = "regexp"
        elif ch in "[]":
            out.append(ch)
            kind = "regexp"
        else:
            out.append(ch)
        step += 1
    try:
        regex = re.compile("".join(out))  # compiled now: the CLI refuses a bad pattern up front
    except re.error as exc:
        raise BuildFailed(f".dockerignore: bad pattern {text!r}: {exc}") from None
    return kind, regex if kind == "regexp" else None


class _Matcher:
    def __init__(self, lines: list[str]) -> None:
        self.patterns = [_Pattern(_clean(line)) for line in (s.strip() for s in lines) if line]
        self.exclusions = any(p.exclusion for p in self.patterns)

    def match(self, path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
        """MatchesUsingParentResults: `parent` holds the results of the enclosing directory."""
        matched = False
        info = []
        for i, pattern in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                hit = pattern.match(path)
                if not hit and not parent:
                    hit = _ancestor_matches(pattern, path)
            info.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, info

    def matches_or_parent(self, path: str) -> bool:
        return self.match(path, None)[0]

    def descend_anyway(self, directory: str) -> bool:
        """An excluded folder is still walked when an exception (`!dir/file`) lies inside it."""
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def _ancestor_matches(pattern: _Pattern, path: str) -> bool:
    parts = path.split("/")[:-1]
    return any(pattern.match("/".join(parts[: i + 1])) for i in range(len(parts)))


def _clean(path: str) -> str:
    """Go's filepath.Clean (posixpath.normpath keeps a leading '//', Go does not)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def read_dockerignore(data: bytes) -> list[str]:
    """The patterns of a .dockerignore, as the docker CLI reads them."""
    patterns = []
    for number, raw in enumerate(data.split(b"\n")):
        if number == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        line = raw.removesuffix(b"\r").decode("utf-8", "surrogateescape")
        if line.startswith("#"):  # only in the first column, as the CLI does
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = _clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


class _Context:
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
        name = _clean(dockerfile.replace(os.sep, "/"))
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

    def matcher(self, always: tuple[str, ...]) -> _Matcher:
        """The .dockerignore rules, except that the paths in `always` are sent whatever they say."""
        lines = list(self.ignored)
        for path in dict.fromkeys(always):
            if _Matcher(lines).matches_or_parent(path):
                lines.append("!" + path)
        return _Matcher(lines)

    def plain_matcher(self) -> _Matcher:
        """What a plain build sends. The CLI always sends .dockerignore and the Dockerfile; the
        engine reads them, then drops those that .dockerignore names. If the Dockerfile is a
        symlink, its target is sent too, so the engine can follow it."""
        return self.matcher((".dockerignore", self.name, self.resolved))

    def dockerfile_text(self) -> bytes:
        try:
            with open(os.path.join(self.root, self.resolved), "rb") as f:
                return f.read()
        except OSError as exc:
            raise BuildFailed(f"cannot read the Dockerfile {self.name!r} in {self.context}: {exc.strerror}") from None


def _prepare(context: Path, dockerfile: str) -> tuple[str, _Matcher]:
    """Resolve the context and its Dockerfile; build the matcher. Every error names the path."""
    checked = _Context(context, dockerfile)
    return checked.root, checked.plain_matcher()


def _walk(root: str, matcher: _Matcher) -> Iterator[tuple[str, str, os.stat_result]]:
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


def _header(name: str, mode: int, size: int, mtime: int, kind: bytes, linkname: str = "", rdev: int = 0) -> bytes:
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
    return _header("./", stat.S_IMODE(st.st_mode), 0, max(0, st.st_mtime_ns // 1_000_000_000), tarfile.DIRTYPE)


_KINDS = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFIFO: tarfile.FIFOTYPE,
          stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE}


def stream_context(context: Path, dockerfile: str) -> Iterator[bytes]:
    """The context as a tar, in chunks of about 1 MiB, produced while walking the tree.

    Checks the context and the Dockerfile now (raising BuildFailed before anything is sent);
    an unreadable file raises BuildFailed from the iterator, naming it.
    """
    root, matcher = _prepare(Path(context), dockerfile)
    return _tar_chunks(root, matcher)


def build_context(
    context: Path, dockerfile: str, labels: Mapping[str, str], target: str | None, *, fold_labels: bool = True
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
    """
    checked = _Context(Path(context), dockerfile)
    if labels and fold_labels:
        try:
            folded = with_labels(checked.dockerfile_text().decode("utf-8"), dict(labels), target)
        except UnicodeDecodeError:
            folded = None
        name, ignore_file = _dockerfile_slot(checked) if folded is not None else (None, None)
        if folded is not None and name is not None:
            replaced = {name: folded.encode()} | ({".dockerignore": ignore_file} if ignore_file is not None else {})
            # The Dockerfile itself is sent only if the build would see it: the engine reads the copy.
            return _tar_chunks(checked.root, checked.matcher((".dockerignore",)), replaced), name, {}
    return _tar_chunks(checked.root, checked.plain_matcher()), dockerfile, dict(labels)


def _dockerfile_slot(checked: _Context) -> tuple[str | None, bytes | None]:
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
    matcher = _Matcher(checked.ignored)
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


def _tar_chunks(root: str, matcher: _Matcher, replaced: Mapping[str, bytes] | None = None) -> Iterator[bytes]:
    """The tar of the walk; a file named in `replaced` is sent with that content (added if absent)."""
    buf = bytearray()
    linked: dict[tuple[int, int], str] = {}
    extra = dict(replaced or {})
    for rel, full, st in _walk(root, matcher):
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns // 1_000_000_000
        if rel in extra and stat.S_ISREG(st.st_mode):
            content = extra.pop(rel)
            buf += _header(rel, mode, len(content), mtime, tarfile.REGTYPE) + content + bytes(-len(content) % 512)
        elif not stat.S_ISREG(st.st_mode):
            kind = _KINDS[stat.S_IFMT(st.st_mode)]
            linkname = os.readlink(full) if kind == tarfile.SYMTYPE else ""
            buf += _header(rel + "/" if kind == tarfile.DIRTYPE else rel, mode, 0, mtime, kind, linkname, st.st_rdev)
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in linked:
            buf += _header(rel, mode, 0, mtime, tarfile.LNKTYPE, linked[st.st_dev, st.st_ino])
        else:
            if st.st_nlink > 1:
                linked[st.st_dev, st.st_ino] = rel
            buf += _header(rel, mode, st.st_size, mtime, tarfile.REGTYPE)
            for piece in _read(_open(root, rel, full), st.st_size, root, rel):
                if len(buf) + len(piece) > CHUNK:  # big pieces go out as they are, not copied
                    if buf:
                        yield bytes(buf)
                        buf.clear()
                    yield piece
                else:
                    buf += piece
            buf += bytes(-st.st_size % 512)
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    for rel, content in extra.items():
        buf += _header(rel, 0o600, len(content), 0, tarfile.REGTYPE) + content + bytes(-len(content) % 512)
    buf += bytes(1024)
    yield bytes(buf)


# -- what the image is built from ------------------------------------------------------------

def inputs_digest(
    context: Path, dockerfile: str, build_args: Mapping[str, str], base_digests: Mapping[str, str]
) -> str:
    """sha256 of everything a build reads: the files sent (names, types, modes, contents, link
    targets), which Dockerfile, the build args and the base images' digests. Not mtimes, owners
    or ignored files."""
    root, matcher = _prepare(Path(context), dockerfile)
    digest = hashlib.sha256(b"imgctl-inputs/v1\0")
    digest.update(json.dumps([_clean(dockerfile), sorted(build_args.items()), sorted(base_digests.items())]).encode())
    for rel, full, st in _walk(root, matcher):
        kind = "f" if stat.S_ISREG(st.st_mode) else _KINDS[stat.S_IFMT(st.st_mode)].decode()
        digest.update(f"\0{kind} {stat.S_IMODE(st.st_mode):o} {rel}\0".encode("utf-8", "surrogateescape"))
        if kind == "f":
            digest.update(b"%d\0" % st.st_size)
            for piece in _read(_open(root, rel, full), st.st_size, root, rel):
                digest.update(piece)
        elif kind == tarfile.SYMTYPE.decode():
            digest.update(os.fsencode(os.readlink(full)))
        elif kind in ("3", "4"):
            digest.update(b"%d" % st.st_rdev)
    return "sha256:" + digest.hexdigest()
