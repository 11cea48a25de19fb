"""Pure planning: config + facts + options become an immutable, ordered release plan.

Nothing here talks to the engine or the network; Dockerfiles are read through a function passed in.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgctl import refs
from imgctl.config import Config, LoadedConfig, RegistryConfig
from imgctl.config_fields import TagSpec
from imgctl.config_problems import format_loc
from imgctl.graph import find_cycle
from imgctl.dockerfile import base_images, split_reference
from imgctl.errors import ConfigError, UsageError
from imgctl.buildsecrets import AgentSource, SecretSource
from imgctl.facts import Facts
from imgctl.platforms import Platform, parse_list

OCI = "org.opencontainers.image."

_MISSING_HINTS = {
    "version": "pass --version X.Y.Z (or run on a git tag vX.Y.Z, or use --nightly)",
    "major": "pass --version X.Y.Z",
    "minor": "pass --version X.Y.Z",
    "patch": "pass --version X.Y.Z",
    "git_sha": "run inside a git repository with a commit, or set GITHUB_SHA",
    "git_short_sha": "run inside a git repository with a commit, or set GITHUB_SHA",
    "branch": "check out a branch (not a detached HEAD), or set GITHUB_REF_NAME",
}


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
class Target:
    """A registry to push to, with the names of the variables holding its credentials."""

    key: str
    host: str
    namespace: str
    username_env: str | None
    password_env: str | None


@dataclass(frozen=True)
class PlannedTag:
    target: str  # Target.key
    host: str
    repository: str  # as the engine names it: host/namespace/name
    api_path: str  # as the registry's HTTP API names it: namespace/name
    tag: str
    floating: bool

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


class TagKinds:
    """The immutable and the floating ones of an image's `tags` (for a release or a promotion)."""

    tags: tuple[PlannedTag, ...]

    @property
    def immutable_tags(self) -> tuple[PlannedTag, ...]:
        return tuple(t for t in self.tags if not t.floating)

    @property
    def floating_tags(self) -> tuple[PlannedTag, ...]:
        return tuple(t for t in self.tags if t.floating)


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

    def groups(self) -> list[list[str]]:
        """Images that can be released apart: the connected parts of the dependency graph."""
        parent = {image.name: image.name for image in self.images}

        def root(name: str) -> str:
            while parent[name] != name:
                name = parent[name]
            return name

        for image in self.images:
            for dep in image.depends_on:
                parent[root(image.name)] = root(dep)
        out: dict[str, list[str]] = {}
        for image in self.images:
            out.setdefault(root(image.name), []).append(image.name)
        return list(out.values())

    def build_order(self) -> dict[str, int]:
        """The rank of each image (0 first) for when more are ready to build than there are slots.

        The longest chain of images still to build after it goes first: that chain bounds when the
        release can end. Then the one with more images waiting on it, then the plan's order.
        """
        children: dict[str, list[str]] = {image.name: [] for image in self.images}
        for image in self.images:
            for dep in image.depends_on:
                children[dep].append(image.name)
        height: dict[str, int] = {}
        below: dict[str, set[str]] = {}
        for image in reversed(self.images):  # the plan lists dependencies first
            kids = children[image.name]
            height[image.name] = 1 + max((height[k] for k in kids), default=-1)
            below[image.name] = set(kids).union(*(below[k] for k in kids))
        position = {image.name: i for i, image in enumerate(self.images)}
        ranked = sorted(position, key=lambda name: (-height[name], -len(below[name]), position[name]))
        return {name: rank for rank, name in enumerate(ranked)}

    def levels(self) -> list[list[str]]:
        """Images grouped by depth in the dependency graph: each level needs only earlier ones."""
        depth: dict[str, int] = {}
        for image in self.images:
            depth[image.name] = 1 + max((depth[d] for d in image.depends_on if d in depth), default=-1)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for image in self.images:
            out[depth[image.name]].append(image.name)
        return out


def template_values(facts: Facts, target: Target, name: str) -> dict[str, str | None]:
    v = facts.version
    return {
        "version": v.text if v else None,
        "major": str(v.major) if v else None,
        "minor": str(v.minor) if v else None,
        "patch": str(v.patch) if v else None,
        "git_sha": facts.git_sha,
        "git_short_sha": facts.git_sha[:7] if facts.git_sha else None,
        "branch": facts.branch,
        "date": facts.date,
        "registry": target.host,
        "namespace": target.namespace,
        "name": name,
    }


# Pure, and a config of a thousand images repeats a handful of templates: each is parsed once.
_template_variables = functools.lru_cache(maxsize=1024)(refs.template_variables)


@functools.lru_cache(maxsize=1024)
def _is_floating(template: str) -> bool:
    """A tag that names no immutable variable moves from release to release."""
    return not (set(_template_variables(template)) & refs.IMMUTABLE_VARIABLES)


def _fill(template: str, values: dict[str, str | None], where: str, texts: dict[str, str] | None = None) -> str:
    """`template` rendered; `texts` is `values` with "" for None, when the caller has it at hand."""
    names = _template_variables(template)
    missing = [n for n in names if values.get(n) is None]
    if missing:
        name = missing[0]
        raise UsageError(
            f"{where}: {template!r} needs {{{name}}}, and no value was given",
            hint=_MISSING_HINTS.get(name, "give a value for it"),
        )
    return refs.render(template, texts if texts is not None else {k: v or "" for k, v in values.items()})


class _Values:
    """The template values of one target, worked out once for all the images (each only adds its name)."""

    def __init__(self, facts: Facts, target: Target, *, for_tags: bool) -> None:
        self.values = template_values(facts, target, "")
        if for_tags and self.values["branch"]:
            self.values["branch"] = refs.sanitize_tag_part(self.values["branch"])
        self.texts = {k: v or "" for k, v in self.values.items()}

    def of(self, name: str) -> tuple[dict[str, str | None], dict[str, str]]:
        return self.values | {"name": name}, self.texts | {"name": name}


def targets_of(config: Config) -> tuple[Target, ...]:
    def one(reg: RegistryConfig) -> Target:
        auth = reg.auth
        return Target(
            key=reg.key, host=reg.url, namespace=reg.namespace,
            username_env=auth.username_env if auth else None, password_env=auth.password_env if auth else None,
        )

    return tuple(one(reg) for reg in config.targets())


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

    arg_values = {t.key: _Values(facts, t, for_tags=False) for t in targets}
    tag_values = {t.key: _Values(facts, t, for_tags=True) for t in targets}
    rendered: dict[str, dict[str, Any]] = {}
    for index, image in enumerate(config.images):
        image_targets = [by_key[k] for k in image.registries] if image.registries else list(targets)
        where = format_loc(("images", index))
        build_args: dict[str, str] = {}
        labels: dict[str, str] = {}
        cache_from: tuple[str, ...] = ()
        if image.build_args or image.labels or image.cache_from:
            values, texts = arg_values[image_targets[0].key].of(image.name)
            build_args = {k: _fill(v, values, f"{where}.build_args.{k}", texts) for k, v in image.build_args.items()}
            labels = {k: _fill(v, values, f"{where}.labels.{k}", texts) for k, v in image.labels.items()}
            cache_from = tuple(_fill(v, values, f"{where}.cache_from[{i}]", texts) for i, v in enumerate(image.cache_from))
        entries: Sequence[str | TagSpec] = config.nightly_tags if options.nightly else image.tags
        field_name = "nightly_tags" if options.nightly else f"{where}.tags"
        tags: list[PlannedTag] = []
        held: list[PlannedTag] = []
        references: set[str] = set()
        for target in image_targets:
            values, texts = tag_values[target.key].of(image.name)
            repository = refs.full_repository(target.host, target.namespace, image.name)
            api_path = refs.repository_path(target.host, target.namespace, image.name)
            for tag_index, entry in enumerate(entries):
                template = entry.tag if isinstance(entry, TagSpec) else entry
                text = _fill(template, values, f"{field_name}[{tag_index}]", texts)
                if not refs.TAG_RE.match(text):
                    raise ConfigError(f"{field_name}[{tag_index}]: {template!r} renders to {text!r}, which is not a valid Docker tag")
                floating = entry.floating if isinstance(entry, TagSpec) else _is_floating(template)
                planned = PlannedTag(
                    target=target.key, host=target.host, repository=repository, api_path=api_path,
                    tag=text, floating=floating,
                )
                if len(repository) > refs.MAX_REPOSITORY_LENGTH:
                    raise ConfigError(f"{where}.name: repository {repository!r} is longer than 255 characters")
                if planned.reference in references:
                    continue  # e.g. "{version}" and "{major}.{minor}.{patch}" render alike
                references.add(planned.reference)
                (held if floating and prerelease else tags).append(planned)
        rendered[image.name] = {"config": image, "build_args": build_args, "labels": labels, "tags": tags, "held": held,
                                "cache_from": cache_from}

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
    cycle = find_cycle(graph)
    if cycle:
        raise ConfigError(f"dependency cycle (FROM lines included): {' -> '.join(cycle)}")

    selected = _select(graph, options)
    order = _topological(graph, [i.name for i in config.images], selected)
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
    chosen = set(options.only)
    if options.with_deps:
        stack = list(chosen)
        while stack:
            for dep in graph[stack.pop()]:
                if dep not in chosen:
                    chosen.add(dep)
                    stack.append(dep)
    return chosen


def _topological(graph: dict[str, list[str]], config_order: list[str], selected: set[str]) -> list[str]:
    """Dependencies first; otherwise the order of the config file.

    Each step takes the first image in config order whose dependencies are all placed: Kahn's
    algorithm with the ready images in a heap by config position, O(n log n). (It was the same
    rule as a scan of the remaining images from the start after each step: O(n²).)
    """
    position = {name: i for i, name in enumerate(config_order) if name in selected}
    waiting = {name: 0 for name in position}  # dependencies not yet placed
    dependents: dict[str, list[str]] = {name: [] for name in position}
    for name in position:
        for dep in dict.fromkeys(graph[name]):
            if dep in position:
                waiting[name] += 1
                dependents[dep].append(name)
    ready = [position[name] for name in position if not waiting[name]]
    heapq.heapify(ready)
    done: list[str] = []
    while ready:
        name = config_order[heapq.heappop(ready)]
        done.append(name)
        for child in dependents[name]:
            waiting[child] -= 1
            if not waiting[child]:
                heapq.heappush(ready, position[child])
    return done
