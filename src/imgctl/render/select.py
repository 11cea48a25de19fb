"""Choosing the renderer: a live view on a terminal, plain lines elsewhere, JSON for machines,
and GitHub Actions groups, annotations and outputs on top when running there."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgctl.events import Event
from imgctl.plan import Plan
from imgctl.render import github
from imgctl.render.summary import summary_rows, summary_text
from imgctl.run import ReleaseResult


class Screen:
    """Everything the release shows: `emit` during the run (inside `live()`), `finish` after it."""

    def __init__(self, output: str, *, verbosity: int, plan: Plan, log_dir: Path | None = None) -> None:
        self.output = output
        self.log_dir = log_dir
        self._console: Any = None
        inner: Callable[[Event], None]
        if output == "json":
            from imgctl.render.jsonl import JsonRenderer

            inner = JsonRenderer(sys.stdout)
        elif output == "auto" and sys.stderr.isatty():
            from rich.console import Console

            from imgctl.render.console import ConsoleRenderer

            self._console = ConsoleRenderer(Console(stderr=True), verbosity=verbosity, images=[i.name for i in plan.images])
            inner = self._console
        else:
            from imgctl.render.plain import PlainRenderer

            inner = PlainRenderer(sys.stderr, verbosity=verbosity)
        if github.on_github_actions(os.environ):
            github.add_masks(github.secrets_for(plan, os.environ), sys.stderr)
        self._github = github.GitHubRenderer(
            inner, sys.stderr, os.environ, dockerfiles=github.dockerfiles_for(plan),
            groups=output != "json", notes=verbosity >= 0,
        )
        self.emit: Callable[[Event], None] = self._github

    @contextmanager
    def live(self) -> Iterator[None]:
        if self._console is not None:
            self._console.start()
        try:
            yield
        finally:
            self._github.close()
            if self._console is not None:
                self._console.stop()

    def finish(self, result: ReleaseResult) -> None:
        github.write_outputs(result, os.environ)
        if self.output == "json":
            summary = {"type": "summary", "ok": result.ok, "floating": result.floating, "images": summary_rows(result)}
            sys.stdout.write(json.dumps(summary) + "\n")
            sys.stderr.write(summary_text(result) + "\n")
        else:
            sys.stdout.write(summary_text(result) + "\n")
        sys.stdout.flush()
