"""GitHub Actions: the renderer that groups each image's log and annotates failures, and what
the command line sets up for it (the secrets to mask, the Dockerfiles to point at).

Everything GitHub reads is a *workflow command* (github_commands.py) or a line appended to the
files the runner names in `$GITHUB_OUTPUT` and `$GITHUB_STEP_SUMMARY` (github_outputs.py); the
annotations are github_annotations.py's. Nothing here changes what a release does; off GitHub
(GITHUB_ACTIONS is not `true`) the renderer only passes events through.

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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from imgctl import events as ev
from imgctl.auth import redact
from imgctl.render import github_annotations
from imgctl.render.github_commands import add_masks, on_github_actions, workflow_command
from imgctl.render.github_outputs import write_outputs

if TYPE_CHECKING:
    from imgctl.plan import Plan

# What render/select.py sets GitHub Actions up with: add_masks and write_outputs are defined in
# github_commands.py and github_outputs.py, and reached from here with the rest.
__all__ = [
    "GitHubRenderer",
    "add_masks",
    "dockerfiles_for",
    "on_github_actions",
    "secrets_for",
    "write_outputs",
]

# Build output kept per image before it is printed as a group anyway (a "part"), so that a huge
# build log cannot grow memory without bound.
MAX_BUFFERED = 10_000
# Intermediate layer statuses: the plain renderer throttles "Pushing" by wall-clock time, so
# replayed later they would print one meaningless fraction per layer; the others print nothing.
_TRANSIENT_LAYER_STATUS = frozenset({"Pushing", "Preparing", "Waiting"})


# -- what the plan knows ---------------------------------------------------------------------


def dockerfiles_for(plan: Plan) -> dict[str, Path]:
    """Image name -> its Dockerfile, for the annotations of failed builds."""
    return {image.name: image.context / image.dockerfile for image in plan.images}


def secrets_for(plan: Plan, environ: Mapping[str, str]) -> list[str]:
    """The registry passwords/tokens the plan's targets will read from the environment."""
    return [environ[t.password_env] for t in plan.targets if t.password_env and environ.get(t.password_env)]


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
            self._write(github_annotations.warning_annotation(event))

    def error_annotation(self, event: ev.ImageFailed) -> str:
        """The `::error` line for a failed image, pointing at the Dockerfile line when known."""
        image = event.image or "?"
        return github_annotations.error_annotation(
            event, dockerfile=self.dockerfiles.get(image), step=self._steps.get(image), environ=self.environ,
            buildkit=self.buildkit,
        )
