"""The library's entry points, one per command; the CLI only parses flags and renders."""

from __future__ import annotations

from pathlib import Path

from imgctl.config import LoadedConfig, find_config, load_config
from imgctl.engine import Engine
from imgctl.events import Event
from imgctl.facts import gather
from imgctl.plan import Options, Plan, make_plan
from imgctl.retry import RetryPolicy
from imgctl.run import Release, ReleaseResult
from imgctl.lock import run_lock
from collections.abc import Callable


def load(config: Path | None) -> LoadedConfig:
    return load_config(find_config(config))


def plan(loaded: LoadedConfig, *, version: str | None, options: Options) -> Plan:
    facts = gather(loaded.base_dir, version=version, want_version=not options.nightly or version is not None)
    return make_plan(loaded, facts, options)


def release(
    the_plan: Plan,
    emit: Callable[[Event], None],
    *,
    jobs: int | None = None,
    fail_fast: bool = False,
    lock_timeout: float = 0.0,
    engine: Engine | None = None,
    policy: RetryPolicy | None = None,
) -> ReleaseResult:
    assert the_plan.config_path is not None
    with run_lock(the_plan.config_path, timeout=lock_timeout):
        runner = Release(the_plan, engine or Engine(), emit, jobs=jobs, fail_fast=fail_fast, policy=policy)
        return runner.run()
