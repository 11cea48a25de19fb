"""The command line: parse flags, call one library function, render. The one error boundary."""

# No `from __future__ import annotations` in the cli modules: typer reads every command's
# annotations at each start, and as strings it would compile and eval each of them (5 of the
# 7 ms it took to build the commands).

import atexit
import gc
import json
import sys
from typing import Annotated, Optional

import typer

# The library is imported lazily, per command, to keep start-up fast; these define options and commands only.
from imgctl.cli_options import ConfigOption, NightlyOption, NoDepsOption, OnlyOption, PlatformOption, VersionOption, plan_options
from imgctl.cli_release import promote, release
from imgctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ImgctlError

app = typer.Typer(
    name="imgctl",
    help="Build, tag, push and verify Docker images from one declarative file.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: loading rich to draw it costs ~0.1 s of start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from imgctl import __version__

        typer.echo(f"imgctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("-V", "--imgctl-version", callback=_version_callback, is_eager=True, help="Print imgctl's version.")
    ] = False,
) -> None:
    pass


@app.command()
def validate(config: ConfigOption = None) -> None:
    """Check the config file: exit 0 if it is valid, 2 with every problem named if not."""
    from imgctl import api

    loaded = api.load(config)
    count = len(loaded.config.images)
    typer.echo(f"{loaded.path}: valid ({count} image{'s' if count != 1 else ''})")


@app.command()
def schema(
    events: Annotated[bool, typer.Option("--events", help="The schema of `release --output json` lines instead.")] = False,
) -> None:
    """Print the config file's JSON Schema (for editors)."""
    if events:
        from imgctl.events import events_json_schema

        typer.echo(json.dumps(events_json_schema(), indent=2))
        return
    from imgctl.config import Config

    typer.echo(json.dumps(Config.model_json_schema(), indent=2))


@app.command()
def plan(
    config: ConfigOption = None,
    version: VersionOption = None,
    nightly: NightlyOption = False,
    only: OnlyOption = None,
    no_deps: NoDepsOption = False,
    platform: PlatformOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (schema imgctl.plan/v1).")] = False,
    matrix: Annotated[bool, typer.Option("--matrix", help="Print a GitHub Actions matrix: one entry per group of images that can build apart.")] = False,
    by_platform: Annotated[bool, typer.Option("--by-platform", help="With --matrix: one entry per platform instead (for `release --platform-job`).")] = False,
) -> None:
    """Show the resolved release without touching the engine."""
    from imgctl import api
    from imgctl.render.plan import plan_text, plan_to_dict

    loaded = api.load(config)
    resolved = api.plan(loaded, version=version, options=plan_options(nightly, only, no_deps, False, False, False, loaded,
                                                                 platforms=platform))
    if matrix:
        from imgctl.render.plan import plan_matrix

        typer.echo(json.dumps(plan_matrix(resolved, "platform" if by_platform else "group")))
        return
    typer.echo(json.dumps(plan_to_dict(resolved), indent=2) if as_json else plan_text(resolved))


app.command()(release)
app.command()(promote)


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="An image of the config, or any local image reference.")],
    tag: Annotated[str, typer.Option("--tag", help="With a config image name: which tag.")] = "latest",
    platform: Annotated[Optional[str], typer.Option(
        "--platform", help="os/arch[/variant]: that platform's image; read from the registry when it is not local.")] = None,
    config: ConfigOption = None,
) -> None:
    """Show an image's layers: size, and the instruction that created each one.

    The local image if there is one (of --platform, if given), else the registry's."""
    from imgctl import api
    from imgctl.errors import UsageError
    from imgctl.platforms import Platform, PlatformError
    from imgctl.units import human_bytes

    try:
        wanted = Platform.parse(platform) if platform else None
    except PlatformError as exc:
        raise UsageError(f"--platform: {exc}") from None
    reference = name
    if "/" not in name and ":" not in name:
        try:
            loaded = api.load(config)
        except ImgctlError:
            loaded = None
        if loaded and name in {i.name for i in loaded.config.images}:
            from imgctl.refs import full_repository

            target = loaded.config.targets()[0]
            reference = f"{full_repository(target.url, target.namespace, name)}:{tag}"
    layers, remote = api.history(api.new_engine(), reference, wanted)
    total = sum(int(layer.get("Size") or 0) for layer in layers)
    where = f" (from the registry{f', {wanted}' if wanted else ''}: compressed sizes)" if remote else ""
    typer.echo(f"{reference}: {len(layers)} layers, {human_bytes(total)}{where}")
    for layer in layers:
        created_by = " ".join(str(layer.get("CreatedBy") or "").split())
        created_by = created_by.removeprefix("/bin/sh -c #(nop) ").removeprefix("/bin/sh -c ")
        typer.echo(f"{human_bytes(int(layer.get('Size') or 0)):>9}  {created_by[:110]}")


@app.command()
def login(
    config: ConfigOption = None,
    registry: Annotated[Optional[str], typer.Option("--registry", help="Only this registry (its name or host).")] = None,
    username: Annotated[Optional[str], typer.Option("-u", "--username", help="With --password-stdin: the user.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password or token from standard input.")] = False,
) -> None:
    """Check the credentials for each configured registry with a real login; builds nothing, stores nothing."""
    from imgctl import api

    loaded = api.load(config)
    password = sys.stdin.read().rstrip("\r\n") if password_stdin else None
    if password_stdin and not password:
        from imgctl.errors import UsageError

        raise UsageError("--password-stdin: standard input was empty")
    for target, creds in api.login(loaded, registry=registry, username=username, password=password):
        if creds is None:
            typer.echo(f"{target.host}: no credentials (set {target.username_env}/{target.password_env}, or `docker login`); anonymous")
        else:
            typer.echo(f"{target.host}: logged in as {creds.username} (credentials from {creds.source})")


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps every expected failure to its exit code and a few lines on stderr."""
    if argv is None:  # the program itself, not a caller in this process
        # At exit the interpreter walks every object the imports made in several garbage collections
        # (0.1-0.15 s after a release here) while nothing is left to collect: hide them from it.
        atexit.register(gc.freeze)
    # typer may vendor click: find its exception classes through a public one.
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="imgctl", standalone_mode=False)
    except ImgctlError as exc:
        from imgctl.auth import redact

        typer.echo(redact(f"error: {exc.message}"), err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click_exception as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, usage_error) else exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        _unexpected(exc)
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


def _unexpected(exc: BaseException) -> None:
    import tempfile
    import traceback

    from imgctl.auth import redact

    with tempfile.NamedTemporaryFile("w", prefix="imgctl-crash-", suffix=".log", delete=False) as log:
        log.write(redact("".join(traceback.format_exception(exc))))
    typer.echo(redact(f"error: an unexpected error has occurred: {type(exc).__name__}: {exc}"), err=True)
    typer.echo(f"hint: the details are in {log.name}; please attach it to a bug report.", err=True)
