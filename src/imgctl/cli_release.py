"""The commands that move tags in registries, `release` and `promote`, and what they share: the
retry policy, the handling of SIGINT/SIGTERM, the --report file. Registered on the app by cli.py."""

# No `from __future__ import annotations`: see cli.py. Names imported for annotations only are quoted.

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from imgctl.cli_options import (
    Builder, ConfigOption, LockTimeoutOption, NightlyOption, NoDepsOption, OnlyOption, Output, OutputOption, PlatformOption,
    QuietOption, VerboseOption, VersionOption, plan_options,
)

if TYPE_CHECKING:  # the library is imported lazily, per command, to keep start-up fast
    from imgctl.config import LoadedConfig
    from imgctl.plan import Plan
    from imgctl.results import ReleaseResult
    from imgctl.retry import RetryPolicy


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
    lock_timeout: LockTimeoutOption = 0.0,
    push_timeout: Annotated[float, typer.Option("--push-timeout", min=1, help="Seconds a push may go silent before it is cancelled and retried.")] = 300.0,
    retry_window: Annotated[Optional[float], typer.Option("--retry-window", min=0, max=3600, help="Seconds each registry operation retries transient failures for (5xx, 429, resets, timeouts) [default: the config's retry.window, 90].", show_default=False)] = None,
    stop_timeout: Annotated[float, typer.Option("--stop-timeout", min=0, help="On SIGINT/SIGTERM, seconds running pushes get to finish.")] = 60.0,
    private_docker_config: Annotated[bool, typer.Option("--private-docker-config", help="Use an empty temporary docker config (ignore ~/.docker).")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write what was released, per image, registry and tag, as JSON.")] = None,
    log_dir: Annotated[Optional[Path], typer.Option("--log-dir", help="Keep each image's full build log here [default: a new temporary folder].")] = None,
    output: OutputOption = Output.auto,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Build, tag, push and verify every image of the config, in dependency order."""
    import contextlib

    from imgctl import api
    from imgctl.errors import UsageError
    from imgctl.events import Warning as WarningEvent
    from imgctl.render.plan import plan_text

    loaded = api.load(config)
    options = plan_options(nightly, only, no_deps, no_push, pull, no_cache, loaded, skip_unchanged,
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


def promote(
    from_version: Annotated[str, typer.Option("--from", help="The version released already (e.g. 1.4.0-rc.2): what its tags hold is promoted.")],
    version: Annotated[str, typer.Option("--version", help="The version to promote to (e.g. 1.4.0): the tags its release would push move.")],
    config: ConfigOption = None,
    from_registry: Annotated[Optional[str], typer.Option("--from-registry", help="Copy from this registry (its name in `registries:`, or its host) to the others [default: within each registry].")] = None,
    to_registry: Annotated[Optional[list[str]], typer.Option("--to-registry", help="Only to this registry (its name or host; repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would move and stop.")] = False,
    lock_timeout: LockTimeoutOption = 0.0,
    retry_window: Annotated[Optional[float], typer.Option("--retry-window", min=0, max=3600, help="Seconds each registry operation retries transient failures for [default: the config's retry.window, 90].", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write what was promoted, per image, registry and tag, as JSON.")] = None,
    log_dir: Annotated[Optional[Path], typer.Option("--log-dir", help="Keep each image's log here [default: none; nothing is built].")] = None,
    output: OutputOption = Output.auto,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Point a version's tags at the images an earlier release pushed (1.4.0-rc.2 -> 1.4.0, 1.4, latest), without building."""
    from imgctl import api
    from imgctl.promote_plan import plan_promotion, promotion_text

    loaded = api.load(config)
    plan_from, plan_to = api.promotion_plans(loaded, from_version=from_version, version=version)
    targets = tuple(to_registry or ())
    promotion = plan_promotion(plan_from, plan_to, from_registry=from_registry, to_registry=targets)
    if dry_run:
        typer.echo(promotion_text(promotion))
        return
    from imgctl.render.select import Screen

    policy = _policy(loaded, retry_window)
    screen = Screen(output.value, verbosity=-1 if quiet else (1 if verbose else 0), plan=plan_to, log_dir=log_dir,
                    keep_logs=log_dir is not None)
    cancelled = _cancel_on_signals()
    with screen.live():
        result = api.promote(plan_from, plan_to, screen.emit, from_registry=from_registry, to_registry=targets,
                             lock_timeout=lock_timeout, policy=policy, cancelled=cancelled)
    screen.finish(result)
    if report is not None:
        _write_report(report, result, plan_to, promoted_from=plan_from.version)
    raise typer.Exit(result.exit_code)


def _policy(loaded: "LoadedConfig", window: float | None) -> "RetryPolicy":
    from imgctl.retry import RetryPolicy

    return RetryPolicy(window=loaded.config.retry.window if window is None else window)


def _write_report(path: Path, result: "ReleaseResult", plan: "Plan", **extra: object) -> None:
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
