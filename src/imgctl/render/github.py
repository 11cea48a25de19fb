"""GitHub Actions: log groups, error annotations, secret masks, step outputs and the job summary.

Everything here writes GitHub's *workflow commands* (`::group::`, `::error ...::`, `::add-mask::`)
or appends to the files the runner names in `$GITHUB_OUTPUT` and `$GITHUB_STEP_SUMMARY`. Nothing
here changes what a release does; off GitHub (GITHUB_ACTIONS is not `true`) the renderer only
passes events through.

Log groups and concurrent builds
--------------------------------
Several images build at once, and the inner renderer prints their lines as they come, interleaved.
GitHub's groups cannot nest or interleave: a `::group::` line collapses everything up to the next
`::endgroup::`, whoever printed it. So the renderer holds each running image's events back and
hands them to the inner renderer in one piece, between `::group::<image>` and `::endgroup::`,
when the image is done, fails or is skipped. Meanwhile a one-line note per milestone (started,
built, pushed) is printed live, so a long build never looks stuck; retries and warnings are shown
live too, and an image's failure is printed after its group, not inside it, so that it is seen
without expanding anything. The alternative (opening a group at the first line of an image and
closing it when another image speaks) would make one fragment of a group per switch between
images: unreadable with two builds running. Events after an image's group is closed (the floating
tags, pushed one at a time once every image has succeeded) pass straight through.

Output names
------------
`<name>-digest` per image: step output names may hold only letters, digits, `-` and `_`, so every
other character of the image name (`/` and `.`) becomes `_`: image `team/web.app` gives output
`team_web_app-digest`. Names that start with a digit need the index syntax:
`steps.release.outputs['1app-digest']`. If two images map to the same key, neither is written
(read the `digests` map instead).
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from imgctl import events as ev
from imgctl.auth import redact
from imgctl.dockerfile import instructions, logical_lines
from imgctl.results import DONE
from imgctl.units import human_bytes

if TYPE_CHECKING:
    from imgctl.plan import Plan
    from imgctl.results import ReleaseResult

__all__ = [
    "GitHubRenderer",
    "add_masks",
    "dockerfile_line",
    "dockerfiles_for",
    "escape_data",
    "escape_property",
    "on_github_actions",
    "output_key",
    "release_outputs",
    "secrets_for",
    "step_summary",
    "workflow_command",
    "write_outputs",
]

# Build output kept per image before it is printed as a group anyway (a "part"), so that a huge
# build log cannot grow memory without bound.
MAX_BUFFERED = 10_000
# Intermediate layer statuses: the plain renderer throttles "Pushing" by wall-clock time, so
# replayed later they would print one meaningless fraction per layer; the others print nothing.
_TRANSIENT_LAYER_STATUS = frozenset({"Pushing", "Preparing", "Waiting"})
_ANNOTATION_TAIL = 10
# Tag statuses whose reference the registry holds, confirmed, after the release: "unchanged" is a
# re-run that found this very image already there under that tag (nothing needed pushing).
IN_REGISTRY = ("pushed", "unchanged")


def on_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


# -- workflow commands -------------------------------------------------------------------------


def escape_data(value: str) -> str:
    """The message of a workflow command: `%`, CR and LF are escaped (as @actions/core does)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A property value of a workflow command: also `:` and `,`, which would end the value."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str = "", **properties: str | int | None) -> str:
    """One `::name k=v,k=v::message` line (no newline); properties that are None are left out."""
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def add_masks(secrets: Iterable[str], out: TextIO) -> None:
    """Ask the runner to mask each secret in the rest of the job's log (empty values are skipped)."""
    seen: set[str] = set()
    for secret in secrets:
        if secret and secret not in seen:
            seen.add(secret)
            out.write(workflow_command("add-mask", secret) + "\n")
    out.flush()


# -- what the plan knows ---------------------------------------------------------------------


def dockerfiles_for(plan: Plan) -> dict[str, Path]:
    """Image name -> its Dockerfile, for the annotations of failed builds."""
    return {image.name: image.context / image.dockerfile for image in plan.images}


def secrets_for(plan: Plan, environ: Mapping[str, str]) -> list[str]:
    """The registry passwords/tokens the plan's targets will read from the environment."""
    return [environ[t.password_env] for t in plan.targets if t.password_env and environ.get(t.password_env)]


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


# -- the renderer ----------------------------------------------------------------------------


class GitHubRenderer:
    """Wraps another renderer; on GitHub Actions adds groups per image and error annotations.

    `inner` and `out` should write to the same stream (the runner reads workflow commands from
    stdout and stderr alike, but two streams may be merged out of order). With `groups=False`
    (for `--output json`, whose stdout must stay one JSON object per line) events go to `inner`
    live, untouched, and only the annotations are written to `out`. Call `close()` when the
    release returns, or is interrupted, to print what is still held back.
    """

    def __init__(
        self,
        inner: Callable[[ev.Event], None],
        out: TextIO,
        environ: Mapping[str, str],
        *,
        dockerfiles: Mapping[str, Path] | None = None,
        groups: bool = True,
        notes: bool = True,
        buildkit: bool = False,
    ) -> None:
        self.inner = inner
        self.out = out
        self.environ = environ
        self.enabled = on_github_actions(environ)
        self.dockerfiles = dict(dockerfiles or {})
        self.groups = groups
        self.notes = notes
        self.buildkit = buildkit  # how the build steps are numbered
        self._lock = threading.RLock()
        self._held: dict[str, list[ev.Event]] = {}  # image -> its events, while the image runs
        self._parts: dict[str, int] = {}
        self._steps: dict[str, ev.BuildStep] = {}

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            if isinstance(event, ev.BuildStep) and event.image:
                self._steps[event.image] = event
            if not self.enabled:
                self.inner(event)
                return
            if not self.groups:
                self.inner(event)
                self._annotate(event)
                return
            self._grouped(event)

    def close(self) -> None:
        """Print every image's held-back events (an interrupted release leaves some)."""
        with self._lock:
            for image in list(self._held):
                self._print_group(image, "unfinished")

    # -- grouping ----------------------------------------------------------------------------

    def _grouped(self, event: ev.Event) -> None:
        image = event.image
        if image is None or isinstance(event, (ev.Retrying, ev.Warning)):
            self.inner(event)  # not one image's log, or must be seen now
            self._annotate(event)
            return
        if isinstance(event, ev.ImageStarted):
            if image in self._held:
                self._print_group(image, "unfinished")
            self._held[image] = [event]
            self._parts.pop(image, None)
            self._note(image, "started; its log follows as one group when it is done")
            return
        if image not in self._held:  # e.g. floating tags, pushed after the image's group closed
            self.inner(event)
            self._annotate(event)
            return
        if isinstance(event, ev.ImageDone):
            self._held[image].append(event)
            self._print_group(image, "done")
        elif isinstance(event, ev.ImageFailed):
            self._print_group(image, f"FAILED ({event.stage})")
            self.inner(event)  # after the group: the error is seen without expanding it
            self._annotate(event)
        elif isinstance(event, ev.ImageSkipped):
            self._held[image].append(event)
            self._print_group(image, "skipped")
        else:
            if isinstance(event, ev.LayerProgress) and event.status in _TRANSIENT_LAYER_STATUS:
                return
            self._held[image].append(event)
            if isinstance(event, ev.BuildDone):
                self._note(image, f"built in {event.seconds:.1f}s")
            elif isinstance(event, ev.PushDone):
                self._note(image, f"pushed {event.reference}")
            elif isinstance(event, ev.TagAdded):
                self._note(image, f"tagged {event.reference}")
            elif isinstance(event, ev.Unchanged):
                self._note(image, f"unchanged {event.reference}")
            if len(self._held[image]) >= MAX_BUFFERED:
                self._parts[image] = self._parts.get(image, 0) + 1
                self._print_group(image, f"log, part {self._parts[image]}", keep_open=True)

    def _print_group(self, image: str, outcome: str, *, keep_open: bool = False) -> None:
        held = self._held.pop(image, [])
        if keep_open:
            self._held[image] = []
        part = self._parts.get(image)
        if part and not keep_open:
            outcome = f"{outcome}, part {part + 1}"
        # Build output cannot start a workflow command of its own: the inner renderer prefixes
        # every line with "image | ", and the runner only reads commands at the start of a line.
        self._write(workflow_command("group", redact(f"{image}: {outcome}")))
        for event in held:
            self.inner(event)
        self._write("::endgroup::")

    def _note(self, image: str, text: str) -> None:
        if self.notes:
            self._write(redact(f"{image} | {text}"))

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    # -- annotations -------------------------------------------------------------------------

    def _annotate(self, event: ev.Event) -> None:
        if isinstance(event, ev.ImageFailed):
            self._write(self.error_annotation(event))
        elif isinstance(event, ev.Warning):
            title = f"imgctl: {event.image}" if event.image else "imgctl"
            self._write(workflow_command("warning", redact(event.message), title=title))

    def error_annotation(self, event: ev.ImageFailed) -> str:
        """The `::error` line for a failed image, pointing at the Dockerfile line when known."""
        image = event.image or "?"
        file: str | None = None
        line: int | None = None
        title = f"imgctl: {image} failed ({event.stage})"
        path = self.dockerfiles.get(image)
        step = self._steps.get(image) if event.stage == "build" else None
        if path is not None and event.stage == "build":
            file = _annotation_path(path, self.environ)
            if step is not None:
                title += f" at step {step.step}/{step.total}"
                try:
                    text = Path(path).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    text = None
                if text is not None:
                    line = dockerfile_line(text, step.step, step.total, step.instruction, buildkit=self.buildkit)
        message = event.error
        tail = [t for t in event.output[-_ANNOTATION_TAIL:] if t.strip()]
        if tail:
            message += "\n" + "\n".join(tail)
        return workflow_command("error", redact(message), file=file, line=line, title=redact(title))


# -- step outputs and the job summary --------------------------------------------------------


def output_key(name: str) -> str:
    """A step output name for an image: characters other than letters, digits, - and _ become _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _pushed(result: ReleaseResult) -> list[tuple[str, str, str]]:
    """(image, reference, digest) of every tag pushed and confirmed (or found already there)."""
    return [
        (image.name, tag.reference, tag.digest)
        for image in result.images for tag in image.tags
        if tag.status in IN_REGISTRY and tag.digest
    ]


def release_outputs(result: ReleaseResult) -> dict[str, str]:
    """The step outputs: `digests`, `tags` and `<name>-digest` per image with a pushed tag, and
    `platforms` (image -> platform -> its digest and size) for multi-platform images.

    "Pushed" includes tags a re-run found unchanged in the registry: they name the same digest.
    Tags only built, held back, failed or never reached are left out.
    """
    pushed = _pushed(result)
    outputs = {
        "digests": json.dumps({ref: digest for _, ref, digest in pushed}, sort_keys=True),
        "tags": json.dumps([ref for _, ref, _ in pushed]),
    }
    platforms = {
        image.name: {p.platform: {"digest": p.digest, "size": p.size} for p in image.platforms}
        for image in result.images if image.platforms and image.status == "released"
    }
    if platforms:
        outputs["platforms"] = json.dumps(platforms, sort_keys=True)
    keys: dict[str, list[str]] = {}
    for image in result.images:
        keys.setdefault(output_key(image.name) + "-digest", []).append(image.name)
    for key, names in keys.items():
        if len(names) != 1 or key in outputs:
            continue  # two images map to one key: neither is written
        digests = sorted({digest for name, _, digest in pushed if name == names[0]})
        if digests:
            # one digest in practice; should registries ever disagree, every one, space-separated
            outputs[key] = " ".join(digests)
    return outputs


def _append_outputs(path: str, outputs: Mapping[str, str]) -> None:
    with open(path, "a", encoding="utf-8") as file:
        for key, value in outputs.items():
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in value or delimiter in key:
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            file.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else _cell(text)


_TAG_MARK = {
    "pushed": "pushed", "unchanged": "unchanged, already there", "built": "built, not pushed", "held": "held back",
    "failed": "FAILED", "pending": "not pushed",
}


def step_summary(result: ReleaseResult) -> str:
    """Markdown for the job summary: one table row per image, then held-back floating tags."""
    done = sum(1 for i in result.images if i.status in DONE)
    verdict = "interrupted" if result.interrupted else ("succeeded" if result.ok else "failed")
    lines = [
        f"### imgctl release {verdict}: {done}/{len(result.images)} images done",
        "",
        "| Image | Tags | Digest | Size | Result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for image in result.images:
        tags = "<br>".join(f"{_code(t.reference)} ({_TAG_MARK.get(t.status, t.status)})" for t in image.tags) or "-"
        digests = sorted({t.digest for t in image.tags if t.digest and t.status in IN_REGISTRY})
        digest = "<br>".join(_code(d) for d in digests) or "-"
        size = human_bytes(image.size) if image.size else "-"
        outcome = image.status
        if image.status == "failed":
            outcome = f"**failed** ({image.stage or '?'}): {image.error or ''}"
        elif image.status in ("skipped", "interrupted") and image.error:
            outcome = f"{image.status}: {image.error}"
        outcome = redact(outcome if len(outcome) <= 300 else outcome[:297] + "...")
        lines.append(f"| {_cell(image.name)} | {tags} | {digest} | {size} | {_cell(outcome)} |")
    lines.append("")
    if result.floating.startswith("held back"):
        held = [t.reference for i in result.images for t in i.tags if t.status == "held"]
        refs = ", ".join(_code(r) for r in held) or "-"
        reason = result.floating.removeprefix("held back").lstrip(": ")
        lines.append(f"Floating tags held back ({_cell(reason)}), still pointing where they did: {refs}")
        lines.append("")
    if result.retries:
        lines.append(f"Retries used: {result.retries}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_outputs(result: ReleaseResult, environ: Mapping[str, str]) -> dict[str, str]:
    """Append the step outputs to $GITHUB_OUTPUT and the summary to $GITHUB_STEP_SUMMARY.

    Each is written only if its variable is set (the runner sets both). Values use the
    multi-line-safe `name<<DELIMITER` form with a random delimiter. Returns the outputs.
    """
    outputs = release_outputs(result)
    if environ.get("GITHUB_OUTPUT"):
        _append_outputs(environ["GITHUB_OUTPUT"], outputs)
    if environ.get("GITHUB_STEP_SUMMARY"):
        with open(environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as file:
            file.write(step_summary(result))
    return outputs
