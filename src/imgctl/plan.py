"""Pure planning: config + facts + options become an immutable, ordered release plan.

Nothing here talks to the engine or the network; Dockerfiles are read through a function passed in.
What the templates become (tags, build args) is plan_tags.py's; the walks of the dependency graph
(cycles, --only, order) are graph.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgctl import graph as graphs
from imgctl import refs
from imgctl.buildsecrets import AgentSource, SecretSource
from imgctl.config import Config, LoadedConfig
from imgctl.config_fields import TagSpec
from imgctl.config_problems import format_loc
from imgctl.dockerfile import base_images, split_reference
from imgctl.errors import ConfigError, UsageError
from imgctl.facts import Facts
from imgctl.plan_tags import PlannedTag, TagKinds, Target, Templates, targets_of
from imgctl.platforms import Platform, parse_list

OCI = "org.opencontainers.image."


@dataclass(frozen=True)
class Options:
    nightly: bool = False
    only: tuple[str, ...] = ()
    with_deps: bool = True
    push: bool = True
    pull: bool = False
    no_cache: bool = False
    skip_unchanged: bool = False
    builder: str = "auto"  # "classic" or "buildkit"; auto: BuildKit where the engine has it (decided at the release)
    platforms: tuple[Platform, ...] = ()  # --platform: every image's, for this run
    stage: str = "all"  # or "platform-job" (push platforms, move no tag) or "merge" (build no multi-platform image)


@dataclass(frozen=True)
class PlannedImage(TagKinds):
    name: str
    context: Path
    dockerfile: str
    target: str | None
    build_args: dict[str, str]
    labels: dict[str, str]
    depends_on: tuple[str, ...]
    inferred_from: tuple[str, ...]
    tags: tuple[PlannedTag, ...]
    held_back: tuple[PlannedTag, ...] = ()
    max_size: int | None = None
    bases: tuple[str, ...] = ()  # the images its FROM lines name, ARGs substituted
    platforms: tuple[Platform, ...] = ()  # none: the engine's own, one image and no index
    secrets: tuple[SecretSource, ...] = ()  # where each build secret's value is (read when the release starts)
    ssh: tuple[AgentSource, ...] = ()
    cache_from: tuple[str, ...] = ()  # images whose layers the build may reuse
    inline_cache: bool = False  # the pushed image carries BuildKit's cache metadata


@dataclass(frozen=True)
class Plan:
    images: tuple[PlannedImage, ...]
    targets: tuple[Target, ...]
    options: Options
    version: str | None
    version_source: str | None
    prerelease: bool
    held_back_reason: str | None = None
    config_path: Path | None = None
    facts: dict[str, str | None] = field(default_factory=dict)

    def image(self, name: str) -> PlannedImage:
        return next(i for i in self.images if i.name == name)

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Each image's dependencies, in the plan's order (dependencies first)."""
        return {image.name: image.depends_on for image in self.images}

    def groups(self) -> list[list[str]]:
        """Images that can be released apart: the connected parts of the dependency graph."""
        return graphs.groups(self.graph())

    def build_order(self) -> dict[str, int]:
        """The rank of each image (0 first) for when more are ready to build than there are slots:
        the longest chain still to build after it first (see graph.build_order)."""
        return graphs.build_order(self.graph())

    def levels(self) -> list[list[str]]:
        """Images grouped by depth in the dependency graph: each level needs only earlier ones."""
        return graphs.levels(self.graph())


def make_plan(
    loaded: LoadedConfig,
    facts: Facts,
    options: Options,
    read_text: Callable[[Path], str] = lambda p: p.read_text(encoding="utf-8", errors="replace"),
) -> Plan:
    config = loaded.config
    targets = targets_of(config)
    by_key = {t.key: t for t in targets}
    version = facts.version
    prerelease = bool(version and version.is_prerelease)

    templates = Templates(facts, targets, prerelease=prerelease)
    rendered: dict[str, dict[str, Any]] = {}
    for index, image in enumerate(config.images):
        image_targets = [by_key[k] for k in image.registries] if image.registries else list(targets)
        where = format_loc(("images", index))
        inputs = templates.build_inputs(image, image_targets[0], where)
        entries: Sequence[str | TagSpec] = config.nightly_tags if options.nightly else image.tags
        field_name = "nightly_tags" if options.nightly else f"{where}.tags"
        tags, held = templates.tags(image.name, entries, image_targets, field_name=field_name, where=where)
        rendered[image.name] = {"config": image, "build_args": inputs.build_args, "labels": inputs.labels, "tags": tags,
                                "held": held, "cache_from": inputs.cache_from}

    repos = {
        (t.host if not refs.is_docker_hub(t.host) else "docker.io", t.api_path): name
        for name, r in rendered.items() for t in r["tags"] + r["held"]
    }
    inferred: dict[str, list[str]] = {}
    bases: dict[str, tuple[str, ...]] = {}
    texts_by_path: dict[tuple[str, str], str] = {}  # read once: a thousand images may share one Dockerfile
    for name, r in rendered.items():
        image = r["config"]
        if (image.context, image.dockerfile) not in texts_by_path:
            texts_by_path[image.context, image.dockerfile] = read_text(loaded.base_dir / image.context / image.dockerfile)
        found = []
        bases[name] = tuple(base_images(texts_by_path[image.context, image.dockerfile], r["build_args"]))
        for base in bases[name]:
            dep = repos.get(split_reference(base))
            if dep and dep != name and dep not in found:
                found.append(dep)
        inferred[name] = found

    graph = {name: list(dict.fromkeys(list(r["config"].depends_on) + inferred[name])) for name, r in rendered.items()}
    cycle = graphs.find_cycle(graph)
    if cycle:
        raise ConfigError(f"dependency cycle (FROM lines included): {' -> '.join(cycle)}")

    selected = _select(graph, options)
    order = graphs.topological(graph, [i.name for i in config.images], selected)
    oci = _oci_labels(config, facts)
    contexts: dict[str, Path] = {}
    images = []
    for name in order:
        r = rendered[name]
        image = r["config"]
        labels = (oci | {OCI + "title": name} if oci is not None else {}) | r["labels"]
        if image.context not in contexts:
            contexts[image.context] = (loaded.base_dir / image.context).resolve()
        images.append(
            PlannedImage(
                name=name, context=contexts[image.context], dockerfile=image.dockerfile,
                target=image.target, build_args=r["build_args"], labels=labels,
                depends_on=tuple(d for d in graph[name] if d in selected),
                inferred_from=tuple(d for d in inferred[name] if d not in image.depends_on),
                tags=tuple(r["tags"]), held_back=tuple(r["held"]), max_size=image.max_size, bases=bases[name],
                platforms=_platforms_of(parse_list(image.platforms or config.platforms or []), options),
                secrets=tuple(
                    SecretSource(key, env=source.env, file=(loaded.base_dir / source.file).resolve() if source.file else None)
                    for key, source in image.secrets.items()
                ),
                ssh=tuple(_agent(entry, loaded.base_dir) for entry in image.ssh),
                cache_from=r["cache_from"], inline_cache=image.inline_cache,
            )
        )
    _check_platforms(images, repos)
    return Plan(
        images=tuple(images), targets=targets, options=options,
        version=version.text if version else None, version_source=facts.version_source,
        prerelease=prerelease,
        held_back_reason=f"pre-release {version.text}" if prerelease and version else None,
        config_path=loaded.path,
        facts={"git_sha": facts.git_sha, "branch": facts.branch, "date": facts.date, "created": facts.created},
    )


def _agent(entry: str | dict[str, str], base_dir: Path) -> AgentSource:
    """`default` (or another id) served by $SSH_AUTH_SOCK, or {id: path of an agent's socket}."""
    if isinstance(entry, str):
        return AgentSource(entry)
    (key, path), = entry.items()
    return AgentSource(key, (base_dir / path).resolve())


def _platforms_of(own: tuple[Platform, ...], options: Options) -> tuple[Platform, ...]:
    """--platform replaces an image's platforms, except in a platform job, where it picks the
    ones of each multi-platform image this job builds, and in the merge job, which builds none."""
    if options.stage == "platform-job":
        return tuple(p for p in own if p in options.platforms) if options.platforms else own
    if options.stage == "merge":
        return own
    return options.platforms or own


def _check_platforms(images: list[PlannedImage], repos: dict[tuple[str, str], str]) -> None:
    """A multi-platform image builds each platform FROM its base's build for that platform: the
    base must be built for every one of them, and named through a build arg (which imgctl points
    at that platform's build; a FROM line naming it outright would take the engine's own)."""
    by_name = {image.name: image for image in images}
    for image in images:
        if not image.platforms:
            continue
        for base in image.bases:
            dep = repos.get(split_reference(base))
            if dep is None or dep == image.name or dep not in by_name:
                continue
            missing = [str(p) for p in image.platforms if p not in by_name[dep].platforms]
            if missing:
                raise ConfigError(
                    f"image {image.name} builds for {', '.join(missing)} FROM {dep}, which is not built for "
                    f"{'it' if len(missing) == 1 else 'them'}",
                    hint=f"Give {dep} those platforms too (a top-level `platforms:` applies to every image).",
                )
            if base not in image.build_args.values():
                raise ConfigError(
                    f"image {image.name}: a FROM line names {base} outright; with several platforms, name it "
                    "through a build arg (ARG BASE / FROM ${BASE}), which imgctl points at each platform's build",
                )


def _oci_labels(config: Config, facts: Facts) -> dict[str, str] | None:
    """The OCI labels every image shares (each adds its title last), or None with `oci_labels: false`."""
    if not config.oci_labels:
        return None
    version = facts.version.text if facts.version else f"nightly-{facts.date}"
    labels = {
        OCI + "created": facts.created,
        OCI + "revision": facts.git_sha,
        OCI + "version": version,
        OCI + "source": facts.source_url,
    }
    return {k: v for k, v in labels.items() if v}


def _select(graph: dict[str, list[str]], options: Options) -> set[str]:
    if not options.only:
        return set(graph)
    unknown = [n for n in options.only if n not in graph]
    if unknown:
        raise UsageError(f"--only {unknown[0]}: no such image", hint=f"Images: {', '.join(graph)}")
    return graphs.with_dependencies(graph, options.only) if options.with_deps else set(options.only)
