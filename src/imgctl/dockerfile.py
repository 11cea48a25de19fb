"""Just enough Dockerfile reading: the images a Dockerfile builds FROM, where its instructions
start, and a copy that sets an image's labels in one LABEL instruction."""

from __future__ import annotations

import functools
import re

from imgctl.refs import is_docker_hub

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def logical_lines(text: str) -> list[str]:
    """Instructions with continuations joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation: Docker skips blank and comment lines there
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current)
    return lines


def escape_character(text: str) -> str:
    """The escape character: a backslash unless an `# escape=` parser directive says otherwise."""
    for raw in text.splitlines():  # parser directives come first, before any blank line or instruction
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            return match.group(2)
    return "\\"


def instructions(text: str) -> list[tuple[int, str]]:
    """(1-based line where it starts, text as the classic builder prints it) per instruction.

    Mirrors the builder: parser directives and comments are not instructions, continuation lines
    are joined without the escape character, comment lines inside a continuation are dropped.
    """
    escape = escape_character(text)
    out: list[tuple[int, str]] = []
    start: int | None = None
    current = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if start is None:
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        elif stripped.startswith("#"):
            continue
        if raw.rstrip().endswith(escape):
            current += raw.rstrip()[:-1]
            continue
        out.append((start, current + raw))
        start, current = None, ""
    if start is not None and current.strip():
        out.append((start, current))
    return out


def with_labels(text: str, labels: dict[str, str], target: str | None) -> str | None:
    """The Dockerfile with one LABEL instruction setting `labels` at the end of the stage built.

    The classic builder turns each build label into an instruction of its own, and every
    instruction costs a container and a commit; one LABEL line costs one. The line goes at the end
    of the file, or before the stage after `target`, so no instruction that is built moves. None
    when that cannot be done exactly: a key or value that LABEL cannot carry verbatim, a last line
    that continues, no FROM, or a target that is not there.
    """
    escape = escape_character(text)
    if not labels or any(not _LABEL_KEY.match(k) for k in labels):
        return None
    if any(not v.isprintable() for v in labels.values()):  # newlines, tabs and the like
        return None
    found = instructions(text)
    froms = [(line, words) for line, words in ((n, body.split()) for n, body in found) if words and words[0].upper() == "FROM"]
    lines = text.splitlines(keepends=True)
    last = next((s for s in map(str.strip, reversed(lines)) if s and not s.startswith("#")), "")
    if not froms or last.endswith(escape):  # a continuation would swallow the new line
        return None
    at = len(lines)
    if target is not None:
        named = [i for i, (_, words) in enumerate(froms) if len(words) >= 4 and words[-2].upper() == "AS"
                 and words[-1].lower() == target.lower()]
        if not named:
            return None
        if named[0] + 1 < len(froms):
            at = froms[named[0] + 1][0] - 1

    def quoted(value: str) -> str:  # inside double quotes, only ", $ and the escape character are special
        for special in (escape, '"', "$"):
            value = value.replace(special, escape + special)
        return f'"{value}"'

    line = "LABEL " + " ".join(f"{key}={quoted(value)}" for key, value in labels.items()) + "\n"
    if at == len(lines) and not lines[-1].endswith(("\n", "\r")):
        line = "\n" + line
    return "".join(lines[:at]) + line + "".join(lines[at:])


def expand(value: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        current = variables.get(name, "")
        op = match.group("op")
        if op == "-":
            return current or match.group("word")
        if op == "+":
            return match.group("word") if current else ""
        return current

    return _VAR.sub(replace, value)


@functools.lru_cache(maxsize=256)
def _arg_and_from_lines(text: str) -> tuple[tuple[str, str], ...]:
    """(keyword, rest) of the ARG and FROM instructions, in order: all that base_images reads.

    Memoized: a plan of a thousand images that share one Dockerfile parses it once.
    """
    found = []
    for line in logical_lines(text):
        keyword, _, rest = line.replace("\t", " ").partition(" ")
        keyword = keyword.upper()
        if keyword in ("ARG", "FROM"):
            found.append((keyword, rest))
    return tuple(found)


def base_images(text: str, build_args: dict[str, str]) -> list[str]:
    """The images the Dockerfile's FROM lines name, with ARGs substituted; stages named earlier excluded."""
    variables: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for keyword, rest in _arg_and_from_lines(text):
        if keyword == "ARG" and not seen_from:
            for item in rest.split():
                name, eq, default = item.partition("=")
                # A default may use the ARGs declared before it: ARG BASE=${REGISTRY}/base
                value = build_args.get(name, expand(default.strip("\"'"), variables) if eq else variables.get(name, ""))
                variables[name] = value
        elif keyword == "FROM":
            seen_from = True
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                continue
            image = expand(words[0], variables)
            # Only stages named by earlier FROM lines: `FROM alpine AS alpine` still pulls alpine.
            if image.lower() not in stages and image != "scratch" and image:
                images.append(image)
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2].lower())
    return images


def split_reference(reference: str) -> tuple[str, str]:
    """(registry host, repository path) of an image reference, Docker Hub names normalised."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", name
    if is_docker_hub(host):  # every alias, as the docker CLI names them all docker.io
        host = "docker.io"
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return host, path
