"""The `imgctl` program's entry point: the console script and `python -m imgctl`. The garbage
collector is held off before the first import (typer's among them), which a library caller of
imgctl.cli.main never meets (startup.py)."""

from imgctl import startup

startup.hold()

from imgctl.cli import main  # noqa: E402

__all__ = ["main"]
