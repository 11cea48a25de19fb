"""The command line's options that several commands share, and the plan options they make."""

# No `from __future__ import annotations`: see cli.py. Names imported for annotations only are quoted.

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from imgctl.config import LoadedConfig
    from imgctl.plan import Options

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("-c", "--config", help="Config file [default: $IMGCTL_CONFIG, ./imgctl.yaml, ./config/imgctl.yaml]"),
]
VersionOption = Annotated[
    Optional[str], typer.Option("--version", help="Release version X.Y.Z [default: the CI tag, or `git describe`]")
]


class Output(str, Enum):
    auto = "auto"
    plain = "plain"
    json = "json"


class Builder(str, Enum):
    auto = "auto"
    classic = "classic"
    buildkit = "buildkit"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="auto, plain or json (one event per line on stdout).")]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the summary.")]
VerboseOption = Annotated[bool, typer.Option("-v", "--verbose", help="More detail.")]
LockTimeoutOption = Annotated[float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for another run of this config.")]
OnlyOption = Annotated[Optional[list[str]], typer.Option("--only", help="Only this image (repeatable), with its dependencies.")]
NoDepsOption = Annotated[bool, typer.Option("--no-deps", help="With --only: leave out the dependencies.")]
NightlyOption = Annotated[bool, typer.Option("--nightly", help="Nightly rebuild: nightly_tags, fresh base images, no cache.")]
PlatformOption = Annotated[Optional[list[str]], typer.Option("--platform", help="Build for this platform (os/arch[/variant]; repeatable, or a comma list) instead of the config's platforms.")]


def plan_options(
    nightly: bool, only: list[str] | None, no_deps: bool, no_push: bool, pull: bool, no_cache: bool, loaded: "LoadedConfig",
    skip_unchanged: bool = False, builder: str = "auto", platforms: list[str] | None = None, stage: str = "all",
) -> "Options":
    """The plan's options from the flags of `plan` and `release`."""
    from imgctl.errors import UsageError
    from imgctl.plan import Options
    from imgctl.platforms import PlatformError, parse_list

    try:
        chosen = parse_list(platforms or [])
    except PlatformError as exc:
        raise UsageError(f"--platform: {exc}") from None
    return Options(
        nightly=nightly, only=tuple(only or ()), with_deps=not no_deps, push=not no_push,
        pull=pull or nightly, no_cache=no_cache or (nightly and not loaded.config.nightly_cache),
        skip_unchanged=skip_unchanged, builder=builder, platforms=chosen, stage=stage,
    )
