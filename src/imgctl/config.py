"""The config file: pydantic models, where it is found, and loading it with errors that name the field."""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag, ValidationError,
    field_validator, model_validator,
)

from imgctl import refs
from imgctl.errors import ConfigError
from imgctl.platforms import Platform
from imgctl.retry import DEFAULT_WINDOW
from imgctl.yamlload import Positions, read_yaml

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_KEYS = frozenset(
    {"password", "passwd", "pass", "token", "secret", "api_key", "apikey", "access_token", "auth_token",
     "identitytoken", "credentials", "auth_config"}
)
CONFIG_ENV = "IMGCTL_CONFIG"
DEFAULT_LOCATIONS = (Path("imgctl.yaml"), Path("config/imgctl.yaml"))


def _scalar_to_str(value: Any) -> Any:
    # YAML reads `1.10` as the float 1.1 and `yes` as True: refuse the lossy case, spell out the rest.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError("a number with a decimal point loses digits in YAML; write the value in quotes")
    return value


ScalarStr = Annotated[str, BeforeValidator(_scalar_to_str)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, description="The NAME of an environment variable")]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.I)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """`200MB`, `1.5GB`, `512MiB` or a number of bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: write e.g. 200MB, 1.5GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Model):
    """Names of environment variables that hold the credentials, never the credentials themselves."""

    username_env: EnvName = "DOCKERHUB_USERNAME"
    password_env: EnvName = "DOCKERHUB_TOKEN"


# Memoized (the check is pure): 1,000 images repeat a handful of templates; a failure is not cached.
@functools.lru_cache(maxsize=1024)
def _check_template(value: str) -> str:
    try:
        refs.template_variables(value)
    except refs.TemplateError as exc:
        raise ValueError(str(exc)) from None
    return value


# Checked item by item, so that an error names the one bad entry (`tags[2]`, `build_args.BASE`).
Template = Annotated[str, BeforeValidator(_scalar_to_str), Field(min_length=1), AfterValidator(_check_template)]


@functools.lru_cache(maxsize=1024)
def _check_tag(value: str) -> str:
    # Render with stand-in values so that literal text no tag can hold is refused now, not mid-release.
    sample = refs.render(value, dict.fromkeys(refs.TEMPLATE_VARIABLES, "x"))
    if not refs.TAG_RE.match(sample):
        raise ValueError(f"{value!r} is not a valid Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    return value


TagText = Annotated[Template, AfterValidator(_check_tag)]


class TagSpec(_Model):
    """A tag with its classification forced: `floating: true` waits for the whole release."""

    tag: TagText
    floating: bool


def _tag_kind(value: Any) -> str:
    return "spec" if isinstance(value, (dict, TagSpec)) else "text"


# Chosen by the input's shape, so a bad entry gets the one error that fits it, not one per alternative.
TagEntry = Annotated[Annotated[TagText, Tag("text")] | Annotated[TagSpec, Tag("spec")], Discriminator(_tag_kind)]
_TAG_KINDS = ("text", "spec")


class RegistryConfig(_Model):
    name: str = Field(default="", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str
    namespace: str = ""
    auth: AuthConfig | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_registry(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_namespace(value)

    @property
    def key(self) -> str:
        return self.name or self.url


def _check_registry(value: str) -> str:
    if "://" in value or not refs.REGISTRY_RE.match(value):
        raise ValueError(f"{value!r} is not a registry host[:port] (no scheme, no path), e.g. docker.io or 127.0.0.1:5000")
    return value


def _check_namespace(value: str) -> str:
    if value and not refs.REPOSITORY_RE.match(value):
        raise ValueError(f"{value!r} is not a valid namespace: lowercase letters, digits and . _ - separators, / between parts")
    return value


def _platforms(value: Any) -> Any:
    """Each entry checked against the os/arch[/variant] grammar; kept as written, in order."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value  # pydantic says what it expected
    for entry in value:
        if isinstance(entry, str):
            Platform.parse(entry)  # a PlatformError is a ValueError: pydantic names the field
    return value


Platforms = Annotated[list[str], BeforeValidator(_platforms), Field(min_length=1, max_length=32)]


class SecretConfig(_Model):
    """Where a build secret's value is: an environment variable, or a file (relative to the
    config's folder). Never the value itself."""

    env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, description="The variable holding the value.")
    file: str | None = Field(default=None, min_length=1, description="The file holding the value, relative to the config.")

    @model_validator(mode="after")
    def _one(self) -> SecretConfig:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable's name) or file (a path): never the value itself")
        return self


SECRET_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# `default`, another id served by $SSH_AUTH_SOCK, or {id: path of an agent's socket}
SshEntry = Annotated[str, StringConstraints(pattern=SECRET_ID)] | dict[Annotated[str, StringConstraints(pattern=SECRET_ID)], str]


class ImageConfig(_Model):
    name: str
    context: str = "."
    dockerfile: str = "Dockerfile"
    target: str | None = None
    build_args: dict[str, Template] = Field(default_factory=dict)
    labels: dict[str, Template] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    tags: Annotated[list[TagEntry], Field(min_length=1)] = Field(default_factory=lambda: ["{version}"])
    registries: list[str] | None = None
    max_size: Annotated[int | None, BeforeValidator(lambda v: parse_size(v) if isinstance(v, str) else v)] = Field(
        default=None, gt=0, description="Fail the image before it is pushed if it is larger, e.g. 200MB."
    )
    platforms: Platforms | None = Field(
        default=None, description="Build for these platforms (os/arch[/variant]) and push an image index; replaces the top-level platforms."
    )
    secrets: dict[Annotated[str, StringConstraints(pattern=SECRET_ID)], SecretConfig] = Field(
        default_factory=dict, description="Build secrets by id (RUN --mount=type=secret,id=ID): {env: VAR} or {file: PATH}; BuildKit only."
    )
    ssh: list[SshEntry] = Field(
        default_factory=list, description="SSH agents (RUN --mount=type=ssh): default ($SSH_AUTH_SOCK), or {id: agent socket}; BuildKit only."
    )
    cache_from: list[Template] = Field(
        default_factory=list, description="Images whose layers the build may reuse (templates); a missing one is no error."
    )
    inline_cache: bool = Field(default=False, description="Embed BuildKit cache metadata in the pushed image, for cache_from.")

    @field_validator("ssh")
    @classmethod
    def _one_agent_each(cls, value: list[Any]) -> list[Any]:
        for entry in value:
            if isinstance(entry, dict) and len(entry) != 1:
                raise ValueError("each entry is `default`, an id, or one {id: path of an agent's socket}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not refs.REPOSITORY_RE.match(value):
            raise ValueError(f"{value!r} is not a valid repository name: lowercase letters, digits and . _ - separators, / between parts")
        return value

    @field_validator("build_args")
    @classmethod
    def _arg_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or any(c.isspace() or c == "=" for c in key):
                raise ValueError(f"{key!r} is not a valid build arg name")
        return value


class RetryConfig(_Model):
    """How long imgctl keeps retrying a registry that fails transiently (5xx, 429, resets, timeouts)."""

    window: float = Field(
        default=DEFAULT_WINDOW, ge=0, le=3600, allow_inf_nan=False,
        description="Seconds each operation retries for, from its first failure (0: no retries); --retry-window overrides it.",
    )

    @field_validator("window", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, bool):  # pydantic would read `true` as 1 second
            raise ValueError("must be a number of seconds, e.g. 90")
        return value


def _retry_mapping(value: Any) -> Any:
    if not isinstance(value, (dict, RetryConfig)):
        raise ValueError("must be a mapping, e.g. `retry: {window: 90}` (seconds)")
    return value


class Config(_Model):
    """An imgctl config file. Paths are relative to the file's folder."""

    registry: str = refs.DOCKER_HUB
    namespace: str = ""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    registries: list[RegistryConfig] | None = Field(
        default=None, min_length=1, description="Push to several registries; replaces registry/namespace/auth."
    )
    images: Annotated[list[ImageConfig], Field(min_length=1)]
    nightly_tags: Annotated[list[TagEntry], Field(min_length=1)] = Field(
        default_factory=lambda: ["nightly", "nightly-{date}"]
    )
    nightly_cache: bool = Field(default=False, description="Let --nightly builds use the build cache.")
    oci_labels: bool = Field(default=True, description="Add the org.opencontainers.image.* labels.")
    builder: Literal["auto", "classic", "buildkit"] = Field(
        default="auto", description="The engine's builder: auto (BuildKit where the engine has it), classic or buildkit; --builder overrides it."
    )
    retry: Annotated[RetryConfig, BeforeValidator(_retry_mapping)] = Field(default_factory=RetryConfig)
    platforms: Platforms | None = Field(
        default=None, description="Every image's platforms (os/arch[/variant]), unless it names its own; --platform overrides both."
    )

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        return _check_registry(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_namespace(value)

    def targets(self) -> list[RegistryConfig]:
        """Every registry to push to, the shorthand `registry`/`namespace`/`auth` included."""
        if self.registries:
            return list(self.registries)
        return [RegistryConfig(name="default", url=self.registry, namespace=self.namespace, auth=self.auth)]


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def find_config(explicit: Path | None, *, cwd: Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """`-c FILE`, else $IMGCTL_CONFIG, else ./imgctl.yaml, else ./config/imgctl.yaml."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    if explicit is not None:
        return explicit
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    for candidate in DEFAULT_LOCATIONS:
        if (cwd / candidate).is_file():
            return cwd / candidate
    raise ConfigError(
        "no config file found",
        hint=f"Pass -c FILE, set ${CONFIG_ENV}, or create ./imgctl.yaml or ./config/imgctl.yaml.",
    )


def load_config(path: Path) -> LoadedConfig:
    """Read, validate and check a config file; raise ConfigError naming every bad field."""
    data, positions = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping with at least an `images:` list")
    problems: list[tuple[tuple[int | str, ...], str, bool]] = list(_secret_keys(data))
    if not problems:
        try:
            config = Config.model_validate(data)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc))
        else:
            problems.extend(_semantic_problems(config, path.parent, data))
    if problems:
        raise ConfigError(_format_problems(path, positions, problems))
    return LoadedConfig(config=config, path=path.resolve())


Problem = tuple[tuple[int | str, ...], str, bool]  # (location, message, points at the key itself)


def _secret_keys(data: dict[str, Any]) -> list[Problem]:
    def walk(value: dict[Any, Any] | list[Any], loc: tuple[int | str, ...], found: list[Problem]) -> None:
        if isinstance(value, dict):
            if loc and loc[-1] in ("build_args", "labels"):
                return  # build args are checked when planning; labels hold no credentials by design
            if loc and loc[-1] == "secrets":  # keys are the secrets' ids; each names where its value is
                for key, item in value.items():
                    if isinstance(item, dict):
                        walk(item, loc + (key,), found)
                return
            for key, item in value.items():
                if isinstance(key, str) and key.lower() in SECRET_KEYS:
                    found.append(
                        (loc + (key,), "secrets never go in the config file: remove this key and put the NAME of an "
                         "environment variable in auth.password_env (and auth.username_env) instead", True)
                    )
                elif isinstance(item, (dict, list)):  # a scalar holds no key
                    walk(item, loc + (key,), found)
        else:
            for index, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    walk(item, loc + (index,), found)

    found: list[Problem] = []
    walk(data, (), found)
    return found


_FIELDS_BY_MODEL = {
    "": Config, "auth": AuthConfig, "images": ImageConfig, "registries": RegistryConfig, "tags": TagSpec,
    "nightly_tags": TagSpec, "retry": RetryConfig, "secrets": SecretConfig,
}


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = _clean_loc(error["loc"])
        kind = error["type"]
        if kind == "invalid_key" and loc:
            loc = loc[:-1] + (str(loc[-1]),)  # a key that is not a string, e.g. `1:`
        if kind == "extra_forbidden":
            problems.append((loc, _unknown_key_message(loc), True))
        elif kind == "missing":
            problems.append((loc, "required key is missing", True))
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind == "string_pattern_mismatch" and loc and str(loc[-1]).endswith("_env"):
                message = "must be the NAME of an environment variable (letters, digits, _), not its value"
            problems.append((loc, message, kind == "invalid_key"))
    return _dedupe(problems)


def _clean_loc(raw: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The location as the user wrote it: without pydantic's union branch names and `[key]` markers."""
    loc: list[int | str] = []
    for part in raw:
        if part == "[key]" and loc:
            loc[-1] = str(loc[-1])  # the bad key itself; as text, mark_of finds its line
        elif part in _TAG_KINDS and len(loc) >= 2 and loc[-2] in ("tags", "nightly_tags") and isinstance(loc[-1], int):
            continue
        else:
            loc.append(part)
    return tuple(loc)


def _unknown_key_message(loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    strings = [str(p) for p in loc[:-1] if isinstance(p, str)]
    if len(strings) >= 2 and strings[-2] == "secrets":  # images[0].secrets.ID.KEY
        if key in ("value", "text", "data"):
            return f"unknown key {key!r}: a secret's value never goes in the config; give {{env: VAR}} or {{file: PATH}}"
        parent = "secrets"
    else:
        parent = strings[-1] if strings else ""
    model = _FIELDS_BY_MODEL.get(parent, Config)
    known = list(model.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key!r}{suggestion}"


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[tuple[int | str, ...], str]] = set()
    result = []
    for loc, message, key in problems:
        if (loc, message) not in seen:
            seen.add((loc, message))
            result.append((loc, message, key))
    return result


def _semantic_problems(config: Config, base_dir: Path, data: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    if config.registries and any(k in data for k in ("registry", "namespace", "auth")):
        problems.append((("registries",), "use either `registries:` or `registry`/`namespace`/`auth`, not both", True))
    targets = config.targets()
    keys = [t.key for t in targets]
    for index, key in enumerate(keys):
        if keys.index(key) != index:
            problems.append((("registries", index, "name"), f"duplicate registry name {key!r}", False))
    for target_index, target in enumerate(targets):
        if refs.is_docker_hub(target.url) and not target.namespace:
            loc: tuple[int | str, ...] = ("registries", target_index) if config.registries else ("registry",)
            problems.append((loc, "Docker Hub needs a `namespace` (your user or organisation)", False))
    names = [image.name for image in config.images]
    first_index: dict[str, int] = {}
    for index, name in enumerate(names):
        first_index.setdefault(name, index)
    folders: dict[tuple[str, str], tuple[str, str] | None] = {}  # (context, dockerfile): what is wrong, if anything
    for index, image in enumerate(config.images):
        where: tuple[int | str, ...] = ("images", index)
        if first_index[image.name] != index:
            problems.append((where + ("name",), f"duplicate image name {image.name!r}", False))
        for dep_index, dep in enumerate(image.depends_on):
            if dep not in first_index:
                problems.append((where + ("depends_on", dep_index), f"unknown image {dep!r}; images: {', '.join(dict.fromkeys(names))}", False))
            elif dep == image.name:
                problems.append((where + ("depends_on", dep_index), "an image cannot depend on itself", False))
        for reg_index, reg in enumerate(image.registries or []):
            if reg not in keys:
                problems.append((where + ("registries", reg_index), f"unknown registry {reg!r}; registries: {', '.join(keys)}", False))
        # Looked at once per folder and file: a thousand images often share one context.
        if (image.context, image.dockerfile) not in folders:
            folders[image.context, image.dockerfile] = _context_problem(base_dir, image.context, image.dockerfile)
        found = folders[image.context, image.dockerfile]
        if found:
            problems.append((where + (found[0],), found[1], False))
    # Self-dependencies are reported above; left in, each would also show up as a cycle `a -> a`.
    cycle = find_cycle({image.name: [d for d in image.depends_on if d != image.name] for image in config.images})
    if cycle:
        index = first_index[cycle[0]]
        problems.append((("images", index, "depends_on"), f"dependency cycle: {' -> '.join(cycle)}", True))
    return problems


def _context_problem(base_dir: Path, context_name: str, dockerfile_name: str) -> tuple[str, str] | None:
    """(field, message) if the context folder or its Dockerfile is not there."""
    context = base_dir / context_name
    if not context.exists():
        return "context", f"context folder {context_name!r} does not exist (relative to {base_dir})"
    if not context.is_dir():
        return "context", f"context {context_name!r} is a file; it must be a folder"
    if not (context / dockerfile_name).is_file():
        return "dockerfile", f"Dockerfile {dockerfile_name!r} not found in context {context_name!r}"
    return None


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in `graph` as a path that ends where it starts, or None.

    A depth-first walk with its own stack, not recursion: a config that lists a chain of a few
    thousand images dependents first must not hit Python's recursion limit.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        path, pending = [root], [iter(graph[root])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:  # every dependency of the path's last node is done
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            elif dep in graph and dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(graph[dep]))
    return None


def _format_problems(path: Path, positions: Positions, problems: list[Problem]) -> str:
    lines = [f"{path}: invalid config ({len(problems)} problem{'s' if len(problems) != 1 else ''})"]
    for loc, message, key in problems:
        mark = positions.mark(loc, key=key)
        where = f"{path.name}:{mark[0]}:{mark[1]}: " if mark else ""
        lines.append(f"  {where}{format_loc(loc) or '(top level)'}: {message}")
    return "\n".join(lines)


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
