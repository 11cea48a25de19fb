"""GitHub Actions annotations: a failed image as an `::error` pointing at the Dockerfile line of
the step that failed (when that line is certain), a warning as a `::warning`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from imgctl import events as ev
from imgctl.auth import redact
from imgctl.dockerfile import instructions, logical_lines
from imgctl.render.github_commands import workflow_command

_ANNOTATION_TAIL = 10  # lines of a failed image's output in its annotation


def error_annotation(
    event: ev.ImageFailed, *, dockerfile: Path | None, step: ev.BuildStep | None, environ: Mapping[str, str],
    buildkit: bool = False,
) -> str:
    """The `::error` line for a failed image; `dockerfile` is its Dockerfile, `step` the build
    step it last started, `buildkit` whether BuildKit numbered the steps."""
    image = event.image or "?"
    file: str | None = None
    line: int | None = None
    title = f"imgctl: {image} failed ({event.stage})"
    if dockerfile is not None and event.stage == "build":
        file = _annotation_path(dockerfile, environ)
        if step is not None:
            title += f" at step {step.step}/{step.total}"
            try:
                text = Path(dockerfile).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = None
            if text is not None:
                line = dockerfile_line(text, step.step, step.total, step.instruction, buildkit=buildkit)
    message = event.error
    tail = [t for t in event.output[-_ANNOTATION_TAIL:] if t.strip()]
    if tail:
        message += "\n" + "\n".join(tail)
    return workflow_command("error", redact(message), file=file, line=line, title=redact(title))


def warning_annotation(event: ev.Warning) -> str:
    title = f"imgctl: {event.image}" if event.image else "imgctl"
    return workflow_command("warning", redact(event.message), title=title)


def _normal(text: str) -> str:
    return " ".join(text.split())


def dockerfile_line(dockerfile: str, step: int, total: int, instruction: str, *, buildkit: bool = False) -> int | None:
    """The line where build step `step`/`total` (`instruction`) starts, or None if unsure.

    The classic builder numbers every instruction from the top, ARGs before FROM included; a
    `--target` cuts the stages after it, and the image's labels are appended as extra LABEL steps
    (so `total` says little). Step N is the N-th instruction when that instruction reads the same
    as the step; with BuildKit's numbering, the only instruction that reads the same. Anything else
    (a label step, heredocs, a Dockerfile changed since, an unusual escape) gives None rather than a
    wrong line.
    """
    found = instructions(dockerfile)
    if not (1 <= step <= min(total, len(found))):
        return None
    if len(logical_lines(dockerfile)) != len(found):
        return None  # the two readings disagree: do not guess
    wanted = _normal(instruction).casefold()
    if buildkit:
        # BuildKit numbers only the instructions that run (not FROM, ARG, ENV, LABEL...), stage by
        # stage: the one instruction that reads the same, if there is exactly one.
        same = [line for line, text in found if _normal(text).casefold() == wanted]
        return same[0] if len(same) == 1 else None
    line, text = found[step - 1]
    return line if _normal(text).casefold() == wanted else None


def _annotation_path(path: Path, environ: Mapping[str, str]) -> str:
    """Annotations name files relative to the repository's root (the workspace)."""
    for root in (environ.get("GITHUB_WORKSPACE"), os.getcwd()):
        if root:
            try:
                return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
            except ValueError:
                continue
    return str(path)
