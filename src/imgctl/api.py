"""The library's entry points, one per command; the CLI only parses flags and renders."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from typing import TYPE_CHECKING, Any

from imgctl import startup
from imgctl.auth import Credentials, find_credentials, remember_secret
from imgctl.config import LoadedConfig, find_config, load_config
from imgctl.errors import UsageError
from imgctl.facts import gather, with_version
from imgctl.lock import run_lock
from imgctl.plan import Options, Plan, Target, make_plan

if TYPE_CHECKING:  # docker-py and requests load only for commands that talk to the engine
    from imgctl.events import Event
    from imgctl.platforms import Platform
    from imgctl.engine import Engine
    from imgctl.retry import RetryPolicy
    from imgctl.run import ReleaseResult

__all__ = ["new_engine", "load", "plan", "with_builder", "release", "login", "promote", "history", "secret_build_args", "private_docker_config"]


def new_engine(*, push_timeout: float = 300.0) -> Engine:
    from imgctl.engine import Engine

    return Engine(push_timeout=push_timeout)

_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|(?:^|_)KEY(?:$|_)|CREDENTIAL|PRIVATE", re.I)


def load(config: Path | None) -> LoadedConfig:
    return load_config(find_config(config))


def plan(loaded: LoadedConfig, *, version: str | None, options: Options) -> Plan:
    facts = gather(loaded.base_dir, version=version, want_version=not options.nightly or version is not None)
    return make_plan(loaded, facts, options)


def promotion_plans(loaded: LoadedConfig, *, from_version: str, version: str) -> tuple[Plan, Plan]:
    """The plans of the version promoted and of the one it becomes: the checkout's facts are
    read once for both (only the version differs)."""
    facts = gather(loaded.base_dir, version=version)
    return (make_plan(loaded, with_version(facts, from_version, source="--from"), Options()),
            make_plan(loaded, facts, Options()))


def secret_build_args(the_plan: Plan) -> list[str]:
    """Warnings for build args whose names look like secrets: their values stay in `docker history`."""
    return [
        f"{image.name}: build arg {name} looks like a secret; its value stays visible in `docker history` "
        "of the pushed image (use a build secret or a runtime variable instead)"
        for image in the_plan.images
        for name in image.build_args
        if _SECRET_NAME.search(name)
    ]


def with_builder(the_plan: Plan, engine: Engine) -> Plan:
    """The plan with its builder decided: "auto" is BuildKit where the engine has it."""
    if the_plan.options.builder != "auto":
        return the_plan
    options = dataclasses.replace(the_plan.options, builder=engine.builder("auto"))
    return dataclasses.replace(the_plan, options=options)


def release(
    the_plan: Plan,
    emit: Callable[[Event], None],
    *,
    jobs: int | None = None,
    fail_fast: bool = False,
    lock_timeout: float = 0.0,
    grace_seconds: float = 60.0,
    engine: Engine | None = None,
    policy: RetryPolicy | None = None,
    cancelled: threading.Event | None = None,
) -> ReleaseResult:
    from imgctl.run import Release

    assert the_plan.config_path is not None
    engine = engine or new_engine()
    startup.done()
    the_plan = with_builder(the_plan, engine)
    with run_lock(the_plan.config_path, timeout=lock_timeout):
        runner = Release(
            the_plan, engine, emit, jobs=jobs, fail_fast=fail_fast, policy=policy,
            grace_seconds=grace_seconds, cancelled=cancelled,
        )
        return runner.run()


def promote(
    plan_from: Plan,
    plan_to: Plan,
    emit: Callable[[Event], None],
    *,
    from_registry: str | None = None,
    to_registry: tuple[str, ...] = (),
    lock_timeout: float = 0.0,
    policy: RetryPolicy | None = None,
    cancelled: threading.Event | None = None,
) -> ReleaseResult:
    """Point `plan_to.version`'s tags at what the release of `plan_from.version` holds, no build
    (see imgctl.promote). Holds the config's run lock, as a release does: both move floating tags."""
    from imgctl.promote import promote as run_promotion

    startup.done()
    assert plan_to.config_path is not None
    with run_lock(plan_to.config_path, timeout=lock_timeout):
        return run_promotion(
            plan_from, plan_to, emit, from_registry=from_registry, to_registry=to_registry, policy=policy,
            cancelled=cancelled, insecure=lambda: new_engine().insecure_registries(),
        )


def login(
    loaded: LoadedConfig, *, registry: str | None = None, username: str | None = None, password: str | None = None,
    engine: Engine | None = None,
) -> list[tuple[Target, Credentials | None]]:
    """Check the credentials of every configured registry (or one) with a real login; build nothing."""
    from imgctl.plan import targets_of

    targets = targets_of(loaded.config)
    if registry is not None:
        targets = tuple(t for t in targets if registry in (t.key, t.host))
        if not targets:
            raise UsageError(f"--registry {registry}: no such registry in the config")
    if password is not None and len(targets) > 1:
        raise UsageError("--password-stdin needs --registry when the config has several registries")
    engine = engine or new_engine()
    engine.connect()
    checked: list[tuple[Target, Credentials | None]] = []
    for target in targets:
        if password is not None:
            remember_secret(password)
            user = username or (os.environ.get(target.username_env, "") if target.username_env else "")
            if not user:
                raise UsageError("--password-stdin needs a username: pass --username or set " + (target.username_env or "it"))
            creds: Credentials | None = Credentials(user, password, "standard input")
        else:
            creds = find_credentials(target.host, target.username_env, target.password_env)
        if creds is not None:
            engine.login(target.host, creds)
        checked.append((target, creds))
    return checked


@contextmanager
def private_docker_config() -> Iterator[Path]:
    """Run with an empty, temporary docker config: no stored credentials, no credential helpers."""
    folder = Path(tempfile.mkdtemp(prefix="imgctl-docker-config-"))
    (folder / "config.json").write_text(json.dumps({}))
    previous = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def history(engine: Engine, reference: str, platform: Platform | None) -> tuple[list[dict[str, Any]], bool]:
    """The layers of the local image; with a platform, of the local image if it is that
    platform's (tried first under its per-platform tag, `TAG-os-arch`), else the registry's.
    Also whether they came from the registry."""
    from imgctl.auth import find_credentials
    from imgctl.dockerfile import split_reference
    from imgctl.indexes import platform_of
    from imgctl.registry import RegistryClient
    from imgctl.remote_history import history_from_registry

    if platform is None:  # the local image, or "no local image": a typo must not go asking Docker Hub
        return engine.history(reference), False
    name, at, digest = reference.partition("@")
    tail = name.rsplit("/", 1)[-1]
    tagged = ":" in tail
    local = [reference]
    if not at:
        local.insert(0, f"{reference}-{platform.suffix}" if tagged else f"{reference}:latest-{platform.suffix}")
    for candidate in local:
        found = engine.inspect(candidate)  # {} if absent, or if the engine does not answer
        stated = platform_of({"os": found.get("Os"), "architecture": found.get("Architecture"), "variant": found.get("Variant")})
        if found and stated == platform:
            return engine.history(candidate), False
    host, path = split_reference(reference)
    ref = digest if at else (tail.rsplit(":", 1)[1] if tagged else "latest")
    client = RegistryClient(host, find_credentials(host, None, None))
    return history_from_registry(client, path, ref, platform), True
