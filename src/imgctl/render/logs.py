"""Each image's full build log in a file of its own, written while the release runs.

The screen shows a tail and CI logs interleave images; the file holds everything one image did:
every build step and output line (the builder's own lines too), pushes, retries and the failure.
Nothing is kept in memory: each line goes straight to the image's file.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from imgctl import events as ev
from imgctl.auth import redact
from imgctl.render.plain import PlainRenderer

_ENDS = (ev.ImageDone, ev.ImageFailed, ev.ImageSkipped)


def log_path(folder: Path, image: str) -> Path:
    # "+" cannot occur in an image name, so two names never share a file ("a/b" vs "a_b").
    return folder / (image.replace("/", "+") + ".log")


class BuildLogs:
    """Wraps a renderer: writes each event of an image to `<folder>/<image>.log`, then passes it on.

    With `folder` None a new temporary folder is made. If a file cannot be written, logging stops,
    `error` says why and the inner renderer gets one warning: a log never fails a release.
    """

    def __init__(self, inner: Callable[[ev.Event], None], folder: Path | None = None) -> None:
        self.inner = inner
        if folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="imgctl-logs-"))
        else:
            self.folder = Path(folder)
            self.folder.mkdir(parents=True, exist_ok=True)
        self.error: str | None = None
        self._files: dict[str, TextIO] = {}
        self._seen: set[str] = set()  # images whose file this run already started
        self._lock = threading.Lock()
        # Only its wording is used: the same lines as plain output, the builder's own included.
        self._format = PlainRenderer(io.StringIO(), verbosity=1).format

    def __call__(self, event: ev.Event) -> None:
        failed = None
        if event.image is not None:
            with self._lock:
                failed = self._write(event.image, event)
        if failed:
            self.inner(ev.Warning(message=f"build logs are incomplete: {failed}"))
        self.inner(event)

    def close(self) -> None:
        with self._lock:
            self._close_files()

    def _close_files(self) -> None:
        for file in self._files.values():
            try:
                file.close()
            except OSError:  # a full disk refuses the last flush; the log is cut short, nothing more
                pass
        self._files.clear()

    def _write(self, image: str, event: ev.Event) -> str | None:
        """Returns the error, the first time writing fails."""
        if self.error is not None:
            return None
        if isinstance(event, ev.ImageFailed):  # without the output: the file holds it already
            text: str | None = f"FAILED ({event.stage}): {event.error}"
        else:
            text = "done" if isinstance(event, ev.ImageDone) else self._format(event)
        try:
            file = self._files.get(image)
            if file is None:
                # A later run into the same folder replaces the file; floating tags pushed after
                # the image's end append to it.
                mode = "a" if image in self._seen else "w"
                file = open(log_path(self.folder, image), mode, encoding="utf-8", errors="backslashreplace", buffering=1)  # noqa: SIM115
                self._files[image] = file
                self._seen.add(image)
            if text is not None:
                for line in redact(text).splitlines() or [""]:
                    file.write(line + "\n")
            if isinstance(event, _ENDS):
                del self._files[image]
                file.close()
        except OSError as exc:
            self.error = f"{log_path(self.folder, image)}: {exc.strerror or exc}"
            self._close_files()
            return self.error
        return None
