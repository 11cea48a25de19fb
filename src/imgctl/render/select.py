"""Choosing the renderer: a live view on a terminal, plain lines elsewhere, JSON for machines,
and GitHub Actions groups, annotations and outputs on top when running there. Each image's full
log goes to a file of its own whatever is shown."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgctl.errors import UsageError
from imgctl.events import Event
from imgctl.plan import Plan
from imgctl.render import github
from imgctl.render.logs import BuildLogs
from imgctl.render.summary import print_summary, summary_rows, summary_text
from imgctl.results import ReleaseResult


class Screen:
    """Everything the release shows: `emit` during the run (inside `live()`), `finish` after it."""

    def __init__(
        self, output: str, *, verbosity: int, plan: Plan, log_dir: Path | None = None, keep_logs: bool = True,
    ) -> None:
        """`keep_logs`: each image's log in `log_dir` (default: a new temporary folder); promote,
        which builds nothing, keeps one only in a folder it is given."""
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
            groups=output != "json", notes=verbosity >= 0, buildkit=plan.options.builder == "buildkit",
        )
        # Outermost: the GitHub renderer holds an image's events back until it ends, but the log
        # file must be written as they happen (a hung or killed build still leaves its log).
        self.logs: BuildLogs | None = None
        try:
            self.logs = BuildLogs(self._github, log_dir) if keep_logs else None
        except OSError as exc:
            raise UsageError(f"--log-dir {log_dir}: cannot create the folder: {exc.strerror or exc}") from None
        self.emit: Callable[[Event], None] = self.logs or self._github

    @contextmanager
    def live(self) -> Iterator[None]:
        if self._console is not None:
            self._console.start()
        try:
            yield
        finally:
            self._github.close()
            if self.logs is not None:
                self.logs.close()
            if self._console is not None:
                self._console.stop()

    def finish(self, result: ReleaseResult) -> None:
        if self.logs is not None:
            self.logs.close()
        github.write_outputs(result, os.environ)
        folder = self.logs.folder if self.logs is not None else None
        if self.output == "json":
            summary = {"type": "summary", "ok": result.ok, "floating": result.floating, "logs": str(folder) if folder else None,
                       "images": summary_rows(result)}
            sys.stdout.write(json.dumps(summary) + "\n")
            sys.stderr.write(summary_text(result, log_dir=folder) + "\n")
        elif self.output == "auto" and sys.stdout.isatty():
            from rich.console import Console

            print_summary(result, Console(), log_dir=folder)
        else:
            sys.stdout.write(summary_text(result, log_dir=folder) + "\n")
        sys.stdout.flush()
