"""The command line: parse flags, call one library function, render. The one error boundary."""

from __future__ import annotations

import atexit
import gc
import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from imgctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ImgctlError

if TYPE_CHECKING:  # the library is imported lazily, per command, to keep start-up fast
    from imgctl.config import LoadedConfig
    from imgctl.plan import Options, Plan
    from imgctl.results import ReleaseResult
    from imgctl.retry import RetryPolicy

app = typer.Typer(
    name="imgctl",
    help="Build, tag, push and verify Docker images from one declarative file.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: loading rich to draw it costs ~0.1 s of start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)

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


def _options(
    nightly: bool, only: list[str] | None, no_deps: bool, no_push: bool, pull: bool, no_cache: bool, loaded: LoadedConfig,
    skip_unchanged: bool = False, builder: str = "auto", platforms: list[str] | None = None, stage: str = "all",
) -> Options:
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


OnlyOption = Annotated[Optional[list[str]], typer.Option("--only", help="Only this image (repeatable), with its dependencies.")]
NoDepsOption = Annotated[bool, typer.Option("--no-deps", help="With --only: leave out the dependencies.")]
NightlyOption = Annotated[bool, typer.Option("--nightly", help="Nightly rebuild: nightly_tags, fresh base images, no cache.")]
PlatformOption = Annotated[Optional[list[str]], typer.Option("--platform", help="Build for this platform (os/arch[/variant]; repeatable, or a comma list) instead of the config's platforms.")]


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
    resolved = api.plan(loaded, version=version, options=_options(nightly, only, no_deps, False, False, False, loaded,
                                                                 platforms=platform))
    if matrix:
        from imgctl.render.plan import plan_matrix

        typer.echo(json.dumps(plan_matrix(resolved, "platform" if by_platform else "group")))
        return
    typer.echo(json.dumps(plan_to_dict(resolved), indent=2) if as_json else plan_text(resolved))


@app.command()
def release(
    config: ConfigOption = None,
    version: VersionOption = None,
    nightly: NightlyOption = False,
    only: OnlyOption = None,
    no_deps: NoDepsOption = False,
    platform: PlatformOption = None,
    platform_job: Annotated[bool, typer.Option("--platform-job", help="One runner's share of a multi-platform release: build and push the --platform images of each multi-platform image under their own tags, and move no tag.")] = False,
    merge: Annotated[bool, typer.Option("--merge", help="After the platform jobs: build no multi-platform image; assemble each one's index from its platforms in the registry, then move its tags (and release the other images).")] = False,
    no_push: Annotated[bool, typer.Option("--no-push", help="Build and tag only.")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="Refresh base images before building.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build without the build cache.")] = False,
    skip_unchanged: Annotated[bool, typer.Option("--skip-unchanged", help="No build, no push for an image whose registry tags hold the same inputs.")] = False,
    builder: Annotated[Optional[Builder], typer.Option("--builder", envvar="IMGCTL_BUILDER", help="auto (BuildKit where the engine has it), classic (the builder docker-py drives) or buildkit (sessions, secrets, SSH; no container and commit per instruction) [default: the config's builder, auto].", show_default=False)] = None,
    jobs: Annotated[Optional[int], typer.Option("-j", "--jobs", min=1, help="Builds at once; pushes overlap them and do not count [default: twice the CPU count, at least 4].")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Start no new image after the first failure.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Turn warnings (e.g. secret-looking build args) into errors.")] = False,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for another run of this config.")] = 0.0,
    push_timeout: Annotated[float, typer.Option("--push-timeout", min=1, help="Seconds a push may go silent before it is cancelled and retried.")] = 300.0,
    retry_window: Annotated[Optional[float], typer.Option("--retry-window", min=0, max=3600, help="Seconds each registry operation retries transient failures for (5xx, 429, resets, timeouts) [default: the config's retry.window, 90].", show_default=False)] = None,
    stop_timeout: Annotated[float, typer.Option("--stop-timeout", min=0, help="On SIGINT/SIGTERM, seconds running pushes get to finish.")] = 60.0,
    private_docker_config: Annotated[bool, typer.Option("--private-docker-config", help="Use an empty temporary docker config (ignore ~/.docker).")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write what was released, per image, registry and tag, as JSON.")] = None,
    log_dir: Annotated[Optional[Path], typer.Option("--log-dir", help="Keep each image's full build log here [default: a new temporary folder].")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="auto, plain or json (one event per line on stdout).")] = Output.auto,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the summary.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More detail.")] = False,
) -> None:
    """Build, tag, push and verify every image of the config, in dependency order."""
    import contextlib

    from imgctl import api
    from imgctl.errors import UsageError
    from imgctl.events import Warning as WarningEvent
    from imgctl.render.plan import plan_text

    loaded = api.load(config)
    options = _options(nightly, only, no_deps, no_push, pull, no_cache, loaded, skip_unchanged,
                       builder.value if builder else loaded.config.builder, platform,
                       "platform-job" if platform_job else "merge" if merge else "all")
    if platform_job and merge:
        raise UsageError("--platform-job and --merge are two different jobs: pass one")
    resolved = api.plan(loaded, version=version, options=options)
    warnings = api.secret_build_args(resolved)
    if strict and warnings:
        raise UsageError(warnings[0] + (f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""),
                         hint="--strict refuses this; rename the build arg or drop --strict.")
    if dry_run:
        typer.echo(plan_text(resolved))
        return
    from imgctl.render.select import Screen

    policy = _policy(loaded, retry_window)
    engine = api.new_engine(push_timeout=push_timeout)
    resolved = api.with_builder(resolved, engine)  # the GitHub renderer numbers steps as the builder does
    screen = Screen(output.value, verbosity=-1 if quiet else (1 if verbose else 0), plan=resolved, log_dir=log_dir)
    cancelled = _cancel_on_signals()
    with api.private_docker_config() if private_docker_config else contextlib.nullcontext():
        with screen.live():
            for message in warnings:
                screen.emit(WarningEvent(message=message))
            result = api.release(
                resolved, screen.emit, jobs=jobs, fail_fast=fail_fast, lock_timeout=lock_timeout,
                grace_seconds=stop_timeout, engine=engine, policy=policy,
                cancelled=cancelled,
            )
    screen.finish(result)
    if report is not None:
        _write_report(report, result, resolved)
    raise typer.Exit(result.exit_code)


@app.command()
def promote(
    from_version: Annotated[str, typer.Option("--from", help="The version released already (e.g. 1.4.0-rc.2): what its tags hold is promoted.")],
    version: Annotated[str, typer.Option("--version", help="The version to promote to (e.g. 1.4.0): the tags its release would push move.")],
    config: ConfigOption = None,
    from_registry: Annotated[Optional[str], typer.Option("--from-registry", help="Copy from this registry (its name in `registries:`, or its host) to the others [default: within each registry].")] = None,
    to_registry: Annotated[Optional[list[str]], typer.Option("--to-registry", help="Only to this registry (its name or host; repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would move and stop.")] = False,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for another run of this config.")] = 0.0,
    retry_window: Annotated[Optional[float], typer.Option("--retry-window", min=0, max=3600, help="Seconds each registry operation retries transient failures for [default: the config's retry.window, 90].", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write what was promoted, per image, registry and tag, as JSON.")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="auto, plain or json (one event per line on stdout).")] = Output.auto,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the summary.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More detail.")] = False,
) -> None:
    """Point a version's tags at the images an earlier release pushed (1.4.0-rc.2 -> 1.4.0, 1.4, latest), without building."""
    from imgctl import api
    from imgctl.plan import Options
    from imgctl.promote import plan_promotion, promotion_text

    loaded = api.load(config)
    plan_from = api.plan(loaded, version=from_version, options=Options())
    plan_to = api.plan(loaded, version=version, options=Options())
    targets = tuple(to_registry or ())
    promotion = plan_promotion(plan_from, plan_to, from_registry=from_registry, to_registry=targets)
    if dry_run:
        typer.echo(promotion_text(promotion))
        return
    from imgctl.render.select import Screen

    policy = _policy(loaded, retry_window)
    screen = Screen(output.value, verbosity=-1 if quiet else (1 if verbose else 0), plan=plan_to)
    cancelled = _cancel_on_signals()
    with screen.live():
        result = api.promote(plan_from, plan_to, screen.emit, from_registry=from_registry, to_registry=targets,
                             lock_timeout=lock_timeout, policy=policy, cancelled=cancelled)
    screen.finish(result)
    if report is not None:
        _write_report(report, result, plan_to, promoted_from=plan_from.version)
    raise typer.Exit(result.exit_code)


def _policy(loaded: LoadedConfig, window: float | None) -> RetryPolicy:
    from imgctl.retry import RetryPolicy

    return RetryPolicy(window=loaded.config.retry.window if window is None else window)


def _write_report(path: Path, result: ReleaseResult, plan: Plan, **extra: object) -> None:
    from imgctl.render.summary import report_dict

    path.write_text(json.dumps({**report_dict(result, plan), **extra}, indent=2) + "\n")


def _cancel_on_signals():  # type: ignore[no-untyped-def]
    """SIGINT/SIGTERM: the first asks the release to stop cleanly, the second stops at once."""
    import signal
    import threading

    cancelled = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if cancelled.is_set():
            raise KeyboardInterrupt
        cancelled.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return cancelled


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
