""".dockerignore as the docker CLI reads and matches it (ignorefile.ReadAll, patternmatcher).

A build must see exactly the files `docker build` would send, so imgctl follows the CLI's Go code
rather than docker-py's matcher, which matches case-insensitively.
"""

from __future__ import annotations

import posixpath
import re

from imgctl.errors import BuildFailed

# Characters the patternmatcher escapes; everything else goes into the regexp as written.
_ESCAPE = frozenset(".+()|{}$")


class Pattern:
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


class Matcher:
    def __init__(self, lines: list[str]) -> None:
        self.patterns = [Pattern(clean(line)) for line in (s.strip() for s in lines) if line]
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


def _ancestor_matches(pattern: Pattern, path: str) -> bool:
    parts = path.split("/")[:-1]
    return any(pattern.match("/".join(parts[: i + 1])) for i in range(len(parts)))


def clean(path: str) -> str:
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
            line = clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns
