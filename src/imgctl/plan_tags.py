"""What an image's templates become: its tags at each registry it is pushed to (immutable or
floating, floating ones held back for a pre-release), and its build args, labels and cache_from.

Pure, like the rest of planning: the values come from the run's facts and each registry.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from imgctl import refs
from imgctl.config import Config, RegistryConfig
from imgctl.config_fields import TagSpec
from imgctl.config_image import ImageConfig
from imgctl.errors import ConfigError, UsageError
from imgctl.facts import Facts

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


def targets_of(config: Config) -> tuple[Target, ...]:
    def one(reg: RegistryConfig) -> Target:
        auth = reg.auth
        return Target(
            key=reg.key, host=reg.url, namespace=reg.namespace,
            username_env=auth.username_env if auth else None, password_env=auth.password_env if auth else None,
        )

    return tuple(one(reg) for reg in config.targets())


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


@dataclass(frozen=True)
class BuildInputs:
    build_args: dict[str, str]
    labels: dict[str, str]
    cache_from: tuple[str, ...]


class Templates:
    """The config's templates filled in for one run, with each target's values worked out once."""

    def __init__(self, facts: Facts, targets: Sequence[Target], *, prerelease: bool) -> None:
        self.prerelease = prerelease
        self._args = {t.key: _Values(facts, t, for_tags=False) for t in targets}
        self._tags = {t.key: _Values(facts, t, for_tags=True) for t in targets}

    def build_inputs(self, image: ImageConfig, target: Target, where: str) -> BuildInputs:
        """Its build args, labels and cache_from, with the values of `target` (its first registry)."""
        if not (image.build_args or image.labels or image.cache_from):
            return BuildInputs({}, {}, ())
        values, texts = self._args[target.key].of(image.name)
        return BuildInputs(
            build_args={k: _fill(v, values, f"{where}.build_args.{k}", texts) for k, v in image.build_args.items()},
            labels={k: _fill(v, values, f"{where}.labels.{k}", texts) for k, v in image.labels.items()},
            cache_from=tuple(_fill(v, values, f"{where}.cache_from[{i}]", texts) for i, v in enumerate(image.cache_from)),
        )

    def tags(
        self, name: str, entries: Sequence[str | TagSpec], targets: Sequence[Target], *, field_name: str, where: str,
    ) -> tuple[list[PlannedTag], list[PlannedTag]]:
        """(tags, held back) of image `name` at each of `targets`; `entries` are its tag templates,
        read from `field_name`. Floating tags of a pre-release are held back."""
        tags: list[PlannedTag] = []
        held: list[PlannedTag] = []
        references: set[str] = set()
        for target in targets:
            values, texts = self._tags[target.key].of(name)
            repository = refs.full_repository(target.host, target.namespace, name)
            api_path = refs.repository_path(target.host, target.namespace, name)
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
                (held if floating and self.prerelease else tags).append(planned)
        return tags, held
