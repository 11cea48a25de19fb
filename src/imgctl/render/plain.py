"""Plain lines for logs and pipes: `image | text`, no ANSI codes, layer progress throttled."""

from __future__ import annotations

import time
from typing import TextIO

from imgctl import events as ev
from imgctl.auth import redact
from imgctl.units import human_bytes


class PlainRenderer:
    def __init__(self, out: TextIO, *, verbosity: int = 0, progress_every: float = 5.0) -> None:
        self.out = out
        self.verbosity = verbosity
        self.progress_every = progress_every
        self._last_progress: dict[tuple[str, str], float] = {}

    def __call__(self, event: ev.Event) -> None:
        text = self.format(event)
        if text is not None:
            name = f"{event.image} ({event.platform})" if event.image and event.platform else event.image
            prefix = f"{name} | " if name else ""
            for line in redact(text).splitlines() or [""]:
                self.out.write(f"{prefix}{line}\n")
            self.out.flush()

    def format(self, event: ev.Event) -> str | None:  # noqa: PLR0911 - one branch per event type
        quiet = self.verbosity < 0
        if isinstance(event, ev.ImageFailed):
            tail = "".join(f"\n    {line}" for line in event.output[-15:])
            return f"FAILED ({event.stage}): {event.error}{tail}"
        if isinstance(event, ev.Retrying):
            return f"retry {event.attempt}/{event.attempts - 1} of {event.action} in {event.wait:.1f}s: {event.reason}"
        if isinstance(event, ev.Warning):
            return f"warning: {event.message}"
        if quiet:
            return None
        if isinstance(event, ev.BuildStep):
            return f"Step {event.step}/{event.total} : {event.instruction}"
        if isinstance(event, ev.BuildOutput):
            return event.line if (not event.internal or self.verbosity > 0) else None
        if isinstance(event, ev.ImageStarted):
            return "promoting" if event.action == "promote" else "building"
        if isinstance(event, ev.BuildDone):
            return f"built {event.image_id[:19]} in {event.seconds:.1f}s"
        if isinstance(event, ev.Tagged):
            return f"tagged {event.reference}" if self.verbosity > 0 else None
        if isinstance(event, ev.LoggedIn):
            return f"logged in to {event.registry} as {event.username} (credentials from {event.source})"
        if isinstance(event, ev.PushStarted):
            return f"pushing {event.reference}"
        if isinstance(event, ev.LayerProgress):
            return self._layer(event)
        if isinstance(event, ev.PushDone):
            return f"pushed {event.reference} {event.digest}"
        if isinstance(event, ev.IndexPushed):
            children = ", ".join(f"{p} {c['digest'][:19]}" for p, c in event.platforms.items())
            return f"index {event.repository}@{event.digest} ({children})"
        if isinstance(event, ev.TagAdded):
            return f"tagged {event.reference} {event.digest} in the registry (the image was there: no push)"
        if isinstance(event, ev.Reused):
            return f"inputs unchanged ({event.inputs[:19]}): no build, reusing the image in the registry"
        if isinstance(event, ev.Unchanged):
            return f"unchanged {event.reference} (the registry already holds {event.digest[:19]})"
        if isinstance(event, ev.Verified):
            return f"verified {event.reference} in the registry" if self.verbosity > 0 else None
        if isinstance(event, ev.ImageSkipped):
            return f"skipped: {event.reason}"
        if isinstance(event, ev.FloatingHeld):
            return f"floating tags held back ({event.reason}): {', '.join(event.references)}"
        return None

    def _layer(self, event: ev.LayerProgress) -> str | None:
        key = (event.reference, event.layer)
        if event.finished:
            self._last_progress.pop(key, None)
            return f"  layer {event.layer}: {event.status}"
        if event.status == "Pushing" and event.total:
            now = time.monotonic()
            if now - self._last_progress.get(key, 0.0) < self.progress_every:
                return None
            self._last_progress[key] = now
            return f"  layer {event.layer}: {human_bytes(event.current)}/{human_bytes(event.total)}"
        if event.status.startswith("Retrying"):
            return f"  layer {event.layer}: {event.status}"
        return None
