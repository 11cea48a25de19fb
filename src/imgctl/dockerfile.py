"""Just enough Dockerfile reading to find the images a Dockerfile builds FROM."""

from __future__ import annotations

import re

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


def base_images(text: str, build_args: dict[str, str]) -> list[str]:
    """The images the Dockerfile's FROM lines name, with ARGs substituted; stages named earlier excluded."""
    variables: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for line in logical_lines(text):
        keyword, _, rest = line.replace("\t", " ").partition(" ")
        keyword = keyword.upper()
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
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return host, path
