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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from imgctl.dockerfile import with_labels
from imgctl.ignorefile import Matcher, clean, read_dockerignore
from imgctl.errors import BuildFailed
from imgctl.tarstream import open_file, tar_chunks, walk

if TYPE_CHECKING:
    from imgctl.snapshot import Snapshot

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

    def samewalk(self, always: tuple[str, ...]) -> bool:
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


def context_files(context: Path, dockerfile: str) -> list[tuple[str, Path]]:
    """Every entry the build context sends (files, folders, symlinks), as (name, path), in tar order.

    Like the CLI, every regular file is opened once, so an unreadable file fails here, by name.
    """
    root, matcher = _prepare(Path(context), dockerfile)
    found = []
    for rel, full, st in walk(root, matcher):
        if stat.S_ISREG(st.st_mode):
            os.close(open_file(root, rel, full))
        found.append((rel, Path(full)))
    return found


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
            replay = snapshot.tar(replaced) if snapshot is not None and checked.samewalk(always) else None
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
